"""Pre-flight config checks: the arguments and simple value types of detkit's classes."""
from __future__ import annotations

import argparse
import copy
import glob
import os.path as osp

import pytest
from mmengine.config import Config

from detkit.engine.config_checks import ConfigOptions, check_config_arguments, load_config

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture(scope='module')
def shapes_cfg() -> dict:
    return Config.fromfile(osp.join(REPO, 'configs', 'retinanet_r50_shapes.py')).to_dict()


@pytest.mark.parametrize('path', sorted(p for p in glob.glob(osp.join(REPO, 'configs', '**',
                                                                         '*.py'), recursive=True)
                                        if '_base_' not in p))
def test_every_shipped_config_passes(path):
    check_config_arguments(Config.fromfile(path).to_dict())


@pytest.mark.parametrize('section, key, value, error, message', [
    (('model', 'backbone'), 'dpeth', 50, KeyError,
     "model.backbone.dpeth: ResNet has no argument 'dpeth'; did you mean 'depth'?"),
    (('train_dataloader', 'dataset'), 'test_mod', True, KeyError,
     "train_dataloader.dataset.test_mod: CocoDataset has no argument 'test_mod'; did you mean "
     "'test_mode'?"),
    (('model', 'backbone'), 'depth', '50', TypeError,
     "model.backbone.depth='50': ResNet expects int, got str"),
    (('model', 'bbox_head'), 'num_classes', 5.0, TypeError,
     'model.bbox_head.num_classes=5.0: RetinaHead expects int, got float'),
    (('model', 'backbone'), 'norm_eval', 'yes', TypeError,
     "model.backbone.norm_eval='yes': ResNet expects bool, got str"),
    (('model', 'bbox_head', 'loss_cls'), 'alpha', '0.25', TypeError,
     "model.bbox_head.loss_cls.alpha='0.25': FocalLoss expects int or float, got str"),
])
def test_wrong_keys_and_values_name_the_key_and_what_is_expected(shapes_cfg, section, key, value,
                                                                  error, message):
    cfg = copy.deepcopy(shapes_cfg)
    target = cfg
    for name in section:
        target = target[name]
    target[key] = value
    with pytest.raises(error) as info:
        check_config_arguments(cfg)
    assert info.value.args[0] == message


def test_pipeline_entries_and_mmengine_classes(shapes_cfg):
    cfg = copy.deepcopy(shapes_cfg)
    cfg['optim_wrapper']['optimizer']['not_an_sgd_argument'] = 1  # torch's class: not checked
    check_config_arguments(cfg)
    cfg['train_dataloader']['dataset']['pipeline'][2]['keep_ration'] = True
    with pytest.raises(KeyError, match=r"train_dataloader.dataset.pipeline.2.keep_ration: "
                                       r"Resize has no argument 'keep_ration'; did you mean "
                                       r"'keep_ratio'"):
        check_config_arguments(cfg)


def test_a_syntax_error_is_named_at_its_file_and_line(tmp_path):
    base = tmp_path / 'base.py'
    base.write_text('model = dict(type="RetinaNet")\nx = [1, 2\n')
    child = tmp_path / 'child.py'
    child.write_text("_base_ = ['./base.py']\nmodel = dict(num_classes=3)\n")
    with pytest.raises(ValueError, match=rf"^{base}:2: '\[' was never closed$"):
        load_config(str(child))                     # in a _base_ file: that file is named
    broken = tmp_path / 'broken.py'
    broken.write_text('a = 1\nb = (2,\n')
    with pytest.raises(ValueError, match=rf"^{broken}:2: '\(' was never closed$"):
        load_config(str(broken))
    with pytest.raises(FileNotFoundError, match='nope.py'):
        load_config(str(tmp_path / 'nope.py'))
    base.write_text('x = [1, 2]\n')
    assert load_config(str(child)).x == [1, 2]


def test_malformed_cfg_options_are_argparse_errors_naming_the_item(capsys):
    parser = argparse.ArgumentParser(prog='train.py')
    parser.add_argument('--cfg-options', nargs='+', action=ConfigOptions)
    args = parser.parse_args(['--cfg-options', 'a.b=3', 'c=[1, 2]', "d=('x', 4)"])
    assert args.cfg_options == {'a.b': 3, 'c': [1, 2], 'd': ('x', 4)}
    for item, words in (('foo', "'foo': expected KEY=VALUE"),
                        ('=3', "'=3': expected KEY=VALUE"),
                        ('n=[1,2', "'n=[1,2': the value '[1,2' is not a number")):
        with pytest.raises(SystemExit) as info:
            parser.parse_args(['--cfg-options', item])
        assert info.value.code == 2
        assert f'train.py: error: --cfg-options {words}' in capsys.readouterr().err
