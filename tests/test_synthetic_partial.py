"""The partial-label shapes set: subsets, categories, determinism, the CLI and its config."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from detkit.datasets import CocoDataset, JointDataset
from detkit.datasets.synthetic import (
    PARTIAL_CLASSES,
    SHAPES_CATEGORIES,
    make_shapes,
    make_shapes_partial,
)
from detkit.evaluation import CocoMetric
from detkit.registry import DATASETS
from detkit.structures import Detections, DetSample

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(num_train=15, num_val=6, min_size=96, max_size=128)
IDS = {c['name']: c['id'] for c in SHAPES_CATEGORIES}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob('*')) if p.is_file()}


def _json(root: Path, name: str) -> dict:
    return json.loads((root / 'annotations' / name).read_text())


@pytest.fixture(scope='module')
def partial_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('shapes_partial')
    make_shapes_partial(str(root), seed=0, **SMALL)
    return root


def test_files_and_determinism(partial_dir, tmp_path):
    files = _files(partial_dir)
    assert sorted(k for k in files if k.startswith('annotations/')) == [
        'annotations/instances_train_a.json', 'annotations/instances_train_b.json',
        'annotations/instances_train_full.json', 'annotations/instances_val.json']
    assert sum(k.startswith('train/') for k in files) == 15
    assert sum(k.startswith('val/') for k in files) == 6
    again = tmp_path / 'again'
    ann_files = make_shapes_partial(str(again), seed=0, **SMALL)
    assert ann_files == {key: str(again / 'annotations' / f'instances_{key}.json')
                         for key in ('train_a', 'train_b', 'val', 'train_full')}
    assert _files(again) == files
    other = _files(Path(make_shapes_partial(str(tmp_path / 'other'), seed=1,
                                            **SMALL)['val']).parents[1])
    name = 'annotations/instances_train_a.json'
    assert other[name] != files[name]
    assert other['train/000000.jpg'] != files['train/000000.jpg']


def test_images_are_the_shapes_images(partial_dir, tmp_path):
    shapes = tmp_path / 'shapes'
    make_shapes(str(shapes), seed=0, **SMALL)
    for split, count in (('train', 15), ('val', 6)):
        for index in range(count):
            name = f'{split}/{index:06d}.jpg'
            assert (partial_dir / name).read_bytes() == (shapes / name).read_bytes(), name
    full = _json(partial_dir, 'instances_train_full.json')
    assert full['images'] == _json(shapes, 'instances_train.json')['images']
    assert full['annotations'] == _json(shapes, 'instances_train.json')['annotations']
    val = _json(partial_dir, 'instances_val.json')
    assert val['annotations'] == _json(shapes, 'instances_val.json')['annotations']


def test_each_subset_annotates_only_its_classes(partial_dir):
    full = _json(partial_dir, 'instances_train_full.json')
    subsets = {s: _json(partial_dir, f'instances_train_{s}.json') for s in ('a', 'b')}
    assert [c['name'] for c in subsets['a']['categories']] == ['circle', 'square', 'triangle']
    assert [c['id'] for c in subsets['a']['categories']] == [1, 2, 4]
    assert [c['name'] for c in subsets['b']['categories']] == ['star', 'cross']
    assert [c['id'] for c in subsets['b']['categories']] == [7, 9]
    # Disjoint halves of train/: A has the first ceil(15 / 2) = 8 images.
    assert [i['id'] for i in subsets['a']['images']] == list(range(1, 9))
    assert [i['id'] for i in subsets['b']['images']] == list(range(9, 16))
    assert {i['file_name'] for i in subsets['a']['images']}.isdisjoint(
        i['file_name'] for i in subsets['b']['images'])
    for subset, data in subsets.items():
        wanted = {IDS[name] for name in PARTIAL_CLASSES[subset]}
        image_ids = {i['id'] for i in data['images']}
        assert {a['category_id'] for a in data['annotations']} == wanted
        # Exactly the full annotations of this subset's images and classes; the others removed.
        assert data['annotations'] == [a for a in full['annotations']
                                       if a['image_id'] in image_ids
                                       and a['category_id'] in wanted]
        removed = [a for a in full['annotations']
                   if a['image_id'] in image_ids and a['category_id'] not in wanted]
        assert removed  # the other classes' objects are in these images, unannotated
    # Both halves hold objects of all five classes (the same image distribution).
    for subset, data in subsets.items():
        image_ids = {i['id'] for i in data['images']}
        assert {a['category_id'] for a in full['annotations']
                if a['image_id'] in image_ids} == set(IDS.values())


def test_val_is_fully_labelled(partial_dir):
    val = _json(partial_dir, 'instances_val.json')
    assert [c['name'] for c in val['categories']] == list(IDS)
    assert len(val['images']) == 6
    assert {a['category_id'] for a in val['annotations']} == set(IDS.values())


def test_cli_partial_subcommand(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        'make_synthetic', REPO / 'tools' / 'misc' / 'make_synthetic.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / 'cli'
    module.main(['partial', '--out', str(out), '--num-train', '3', '--num-val', '1',
                 '--min-size', '96', '--max-size', '96', '--seed', '2'])
    printed = capsys.readouterr().out
    assert 'subset A annotates circle, square, triangle; subset B annotates star, cross' in printed
    assert len(_json(out, 'instances_train_a.json')['images']) == 2
    assert len(_json(out, 'instances_train_b.json')['images']) == 1
    with pytest.raises(ValueError, match='num_train must be >= 2'):
        make_shapes_partial(str(tmp_path / 'one'), num_train=1, num_val=0)
    # --scene plain draws other images from the same seed: plain ones (the benchmark's).
    plain = tmp_path / 'plain'
    module.main(['partial', '--out', str(plain), '--num-train', '3', '--num-val', '1',
                 '--min-size', '96', '--max-size', '96', '--seed', '2', '--scene', 'plain'])
    expected = make_shapes_partial(str(tmp_path / 'api'), num_train=3, num_val=1, min_size=96,
                                   max_size=96, seed=2, scene='plain')
    assert _files(plain) == _files(Path(expected['val']).parents[1])
    assert (plain / 'train' / '000000.jpg').read_bytes() != (out / 'train' /
                                                             '000000.jpg').read_bytes()


def test_config_builds_the_joint_train_set_and_the_union_val_set(partial_dir):
    cfg = Config.fromfile(str(REPO / 'configs' / '_base_' / 'datasets' / 'shapes_partial.py'))
    train_cfg = cfg.train_dataloader['dataset'].to_dict()
    for sub in train_cfg['datasets']:
        sub['data_root'] = str(partial_dir)
    train = DATASETS.build(train_cfg)
    assert isinstance(train, JointDataset) and len(train) == 15
    assert train.metainfo['classes'] == ('circle', 'square', 'triangle', 'star', 'cross')
    assert train.label_groups.tolist() == [[1, 2, 3, 0, 0, 0], [0, 0, 0, 1, 2, 0]]
    sample_b = train[14]['data_samples']
    assert sample_b.dataset_index == 1 and sample_b.label_groups.tolist() == [0, 0, 0, 1, 2, 0]
    assert set(sample_b.gt_labels.tolist()) <= {3, 4}
    assert max(sample_b.img_shape) <= 320

    val_cfg = cfg.val_dataloader['dataset'].to_dict()
    val_cfg.update(data_root=str(partial_dir), pipeline=[])
    val = DATASETS.build(val_cfg)
    assert isinstance(val, CocoDataset) and val.metainfo['classes'] == train.metainfo['classes']
    # Ground truth fed back as detections scores AP 1 for every class: labels in the union
    # order map to the val file's category ids by name.
    metric = CocoMetric(ann_file=str(partial_dir / 'annotations' / 'instances_val.json'),
                        classwise=True)
    metric.dataset_meta = val.metainfo
    samples = []
    for k in range(len(val)):
        info = val.get_data_info(k)
        kept = [i for i in info['instances'] if not i['ignore_flag']]
        samples.append(DetSample(img_id=info['img_id'], ori_shape=(info['height'], info['width']),
                                 pred=Detections(
                                     bboxes=torch.tensor([i['bbox'] for i in kept]).reshape(-1, 4),
                                     scores=torch.ones(len(kept)),
                                     labels=torch.tensor([i['bbox_label'] for i in kept],
                                                         dtype=torch.int64))))
    metric.process({}, samples)
    metrics = metric.compute_metrics(metric.results)
    assert metrics['bbox_mAP'] == pytest.approx(1.0)
    for name in train.metainfo['classes']:
        assert metrics[f'{name}_precision'] == pytest.approx(1.0)
    assert np.isfinite(metrics['bbox_mAP_50'])
