"""Configs of synthetic data sets draw them when missing; configs of real data sets never do."""
from __future__ import annotations

import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
from mmengine.config import Config

from detkit.engine import GENERATORS, check_data_paths, missing_data_paths, prepare_generated_data
from detkit.engine import generated_data as generated_data_module

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'configs')


def shipped_configs_with_generated_data() -> list[str]:
    paths = sorted(glob.glob(osp.join(CONFIGS, '*.py')))
    return [p for p in paths if Config.fromfile(p).get('generated_data')]


def small(cfg: Config, num_train: int = 6, num_val: int = 2) -> Config:
    cfg.generated_data.num_train, cfg.generated_data.num_val = num_train, num_val
    return cfg


def test_every_generatable_config_draws_what_it_reads(tmp_path, monkeypatch):
    """For each shipped config with generated_data: a known kind, arguments the generator takes,
    and after generation every path of training, validation and test exists."""
    monkeypatch.chdir(tmp_path)
    paths = shipped_configs_with_generated_data()
    names = {osp.basename(p) for p in paths}
    assert {'retinanet_r50_shapes.py', 'retinanet_mobilenetv2_facemask.py',
            'faster_rcnn_mobilenetv2_shapes_partial_softmax.py',
            'faster_rcnn_mobilenetv2_shapes_partial_groupsoftmax.py'} <= names
    lines = []
    for path in paths:
        cfg = small(Config.fromfile(path))
        assert cfg.generated_data.kind in GENERATORS
        prepare_generated_data(cfg, 'train', log=lines.append)
        assert missing_data_paths(cfg, 'train') == []
        assert missing_data_paths(cfg, 'test') == []
    # the two partial-label configs share one set: drawn once
    assert sorted(re.sub(r' in [0-9.]+ s$', '', line) for line in lines) == [
        "data/facemask/ was missing: generated the synthetic 'facemask' data set there "
        "(6 train + 2 val images, seed 0)",
        "data/shapes_partial_plain/ was missing: generated the synthetic 'partial' data set "
        "there (6 train + 2 val images, seed 0)",
        "data/shapes_simple/ was missing: generated the synthetic 'shapes' data set there "
        "(6 train + 2 val images, seed 0)"]
    assert sorted(os.listdir('data')) == ['.facemask.lock', '.shapes_partial_plain.lock',
                                          '.shapes_simple.lock', 'facemask',
                                          'shapes_partial_plain', 'shapes_simple']


def test_generated_once_then_left_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = small(Config.fromfile(osp.join(CONFIGS, 'retinanet_r50_shapes.py')), 4, 3)
    lines = []
    first = prepare_generated_data(cfg, 'train', log=lines.append)
    assert first is not None and first.startswith(
        "data/shapes_simple/ was missing: generated the synthetic 'shapes' data set there (4 "
        "train + 3 val images, seed 0) in ")
    assert lines == [first]
    with open('data/shapes_simple/annotations/instances_train.json') as f:
        assert len(json.load(f)['images']) == 4
    with open('data/shapes_simple/annotations/instances_val.json') as f:
        assert len(json.load(f)['images']) == 3
    before = os.stat('data/shapes_simple/annotations/instances_train.json').st_mtime_ns
    assert prepare_generated_data(cfg, 'train', log=lines.append) is None
    assert prepare_generated_data(cfg, 'test', log=lines.append) is None
    assert os.stat('data/shapes_simple/annotations/instances_train.json').st_mtime_ns == before
    assert len(lines) == 1


def test_an_incomplete_folder_is_not_overwritten(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs('data/shapes_simple/annotations')
    with open('data/shapes_simple/annotations/mine.json', 'w') as f:
        f.write('{}')
    cfg = Config.fromfile(osp.join(CONFIGS, 'retinanet_r50_shapes.py'))
    assert prepare_generated_data(cfg, 'train') is None
    assert os.listdir('data/shapes_simple/annotations') == ['mine.json']
    with pytest.raises(FileNotFoundError, match='train_dataloader.dataset.ann_file'):
        check_data_paths(cfg, 'train')


def test_real_data_sets_are_never_invented(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ('retinanet_r50.py', 'faster_rcnn_r50.py',
                 'faster_rcnn_r50_groupsoftmax_coco_cctsdb.py'):
        cfg = Config.fromfile(osp.join(CONFIGS, name))
        assert 'generated_data' not in cfg
        assert prepare_generated_data(cfg, 'train') is None
    assert os.listdir(tmp_path) == []


def test_data_read_elsewhere_is_not_generated(tmp_path, monkeypatch):
    """A user who points the dataloaders at their own folder gets the missing-path error, not a
    synthetic set at the config's default root."""
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(osp.join(CONFIGS, 'retinanet_r50_shapes.py'))
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = 'mine/'
    cfg.val_evaluator.ann_file = cfg.test_evaluator.ann_file = 'mine/val.json'
    assert prepare_generated_data(cfg, 'train') is None
    assert not osp.exists('data')


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def broken(out_dir: str, **kwargs) -> dict:
        with open(osp.join(out_dir, 'half.json'), 'w') as f:
            f.write('{')
        raise OSError('disk full')

    monkeypatch.setitem(generated_data_module.GENERATORS, 'shapes', broken)
    cfg = Config.fromfile(osp.join(CONFIGS, 'retinanet_r50_shapes.py'))
    with pytest.raises(OSError, match='disk full'):
        prepare_generated_data(cfg, 'train')
    # no half-written set, no temporary folder
    assert os.listdir('data') == ['.shapes_simple.lock']


def test_bad_generated_data_specs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(osp.join(CONFIGS, 'retinanet_r50_shapes.py'))
    cfg.generated_data.kind = 'circles'
    with pytest.raises(KeyError, match=r"generated_data.kind='circles': expected one of "
                                       r"'shapes', 'partial', 'facemask'"):
        prepare_generated_data(cfg, 'train')
    cfg.generated_data.kind = 'shapes'
    cfg.generated_data.num_imgs = 3
    with pytest.raises(TypeError, match=r"generated_data: .*'num_imgs' \(kind='shapes'\)"):
        prepare_generated_data(cfg, 'train')
    assert os.listdir('data') == ['.shapes_simple.lock']
    del cfg.generated_data['root']
    with pytest.raises(KeyError, match='generated_data.root is missing'):
        prepare_generated_data(cfg, 'train')


def test_quick_start_command_generates_then_trains(tmp_path):
    """`python tools/train.py configs/retinanet_r50_shapes.py` in a folder without data/: one
    log line says where, how many images and which seed; then an iteration trains."""
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    result = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'train.py'),
         osp.join(CONFIGS, 'retinanet_r50_shapes.py'), '--cfg-options',
         'generated_data.num_train=4', 'generated_data.num_val=1', 'train_cfg.max_epochs=1',
         'train_cfg.val_interval=10', 'train_dataloader.num_workers=0',
         'train_dataloader.persistent_workers=False', 'default_hooks.checkpoint.interval=10'],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert ("data/shapes_simple/ was missing: generated the synthetic 'shapes' data set there "
            "(4 train + 1 val images, seed 0) in ") in output
    assert 'Epoch(train) [1][1/1]' in output and 'eta: ' in output and 'loss: ' in output
    assert sorted(os.listdir(tmp_path / 'data' / 'shapes_simple')) == ['annotations', 'train',
                                                                   'val']
