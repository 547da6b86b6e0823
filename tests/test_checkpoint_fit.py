"""A checkpoint that cannot be read or does not fit the model stops a tool before it runs,
naming the file and what is wrong (detkit/engine/checkpoint_fit.py, tools/train.py, test.py)."""
from __future__ import annotations

import importlib.util
import os.path as osp
import tempfile
from fractions import Fraction

import pytest
import torch
from mmengine.config import Config

from detkit.datasets.synthetic import make_shapes
from detkit.engine.checkpoint_fit import check_state_fits, read_checkpoint, state_fit
from detkit.registry import MODELS

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

TINY_CONFIG = """
_base_ = {base!r}
data_root = {data_root!r}
amp = False
model = dict(
    backbone=dict(depth=18),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=32),
    bbox_head=dict(in_channels=32, feat_channels=32, stacked_convs=1))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1)
"""


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f'tool_{name}',
                                                  osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp('shapes'))
    make_shapes(root, num_train=2, num_val=2, min_size=96, max_size=96, seed=3)
    path = osp.join(root, 'tiny.py')
    with open(path, 'w') as f:
        f.write(TINY_CONFIG.format(base=osp.join(REPO, 'configs', 'retinanet_r50_shapes.py'),
                                   data_root=root + '/'))
    return path


def write(path, data: bytes) -> str:
    with open(path, 'wb') as f:
        f.write(data)
    return str(path)


def test_unreadable_checkpoints_are_named_with_the_reason(tmp_path):
    torch.save(dict(state_dict=dict(w=torch.ones(3))), tmp_path / 'good.pth')
    good = (tmp_path / 'good.pth').read_bytes()
    cases = [('empty.pth', b'', 'is an empty file'),
             ('text.pth', b'hello\n', 'not a PyTorch checkpoint or is truncated'),
             ('cut.pth', good[:len(good) // 2], 'not a PyTorch checkpoint or is truncated')]
    for name, data, words in cases:
        path = write(tmp_path / name, data)
        with pytest.raises(ValueError, match=words) as info:
            read_checkpoint(path)
        assert repr(path) in str(info.value)
    torch.save(dict(state_dict=dict(w=torch.ones(1)), step=Fraction(1, 3)), tmp_path / 'g.pth')
    with pytest.raises(ValueError, match=r"'.*g.pth' safely: Unsupported global: GLOBAL "
                                         r"fractions.Fraction"):
        read_checkpoint(tmp_path / 'g.pth')       # the safe unpickler's refusal, named
    torch.save([torch.ones(1)], tmp_path / 'list.pth')
    with pytest.raises(ValueError, match="holds a list; expected a state dict"):
        read_checkpoint(tmp_path / 'list.pth')
    torch.save(dict(state_dict=dict(epoch=3)), tmp_path / 'numbers.pth')
    with pytest.raises(ValueError, match='has no state dict of tensors'):
        read_checkpoint(tmp_path / 'numbers.pth')
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        read_checkpoint(tmp_path / 'nope.pth')
    state, meta = read_checkpoint(tmp_path / 'good.pth')
    assert list(state) == ['w'] and torch.equal(state['w'], torch.ones(3)) and meta == {}


def test_state_fit_sorts_keys_by_what_would_load():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    state = {'module.0.weight': torch.zeros(3, 4), '1.weight': torch.zeros(5, 3),
             'extra': torch.zeros(1)}
    state = {k.removeprefix('module.'): v for k, v in state.items()}
    fit = state_fit(model, state)
    assert fit.loaded == ['0.weight']
    assert fit.missing == ['0.bias', '1.bias'] and fit.unexpected == ['extra']
    assert fit.mismatched == ['1.weight: checkpoint (5, 3) vs model (2, 3)']
    with pytest.raises(ValueError, match=r"'w.pth' does not fit the model of config c.py .*"
                                         r"2 keys missing: 0.bias, 1.bias; 1 keys unexpected"):
        check_state_fits(model, state, 'w.pth', 'c.py', exact=True)
    assert check_state_fits(model, state, 'w.pth', 'c.py', exact=False).loaded == ['0.weight']
    with pytest.raises(ValueError, match=r"none of the 1 tensors of checkpoint 'w.pth' fits"):
        check_state_fits(model, {'extra': torch.zeros(1)}, 'w.pth', 'c.py', exact=False)


def test_test_tool_refuses_a_checkpoint_of_another_model(tmp_path, tiny_config):
    test = load_tool('test')
    other = torch.nn.Conv2d(3, 8, 3).state_dict()    # keys 'weight', 'bias': not a detector's
    torch.save(other, tmp_path / 'other.pth')
    with pytest.raises(SystemExit) as info:
        test.main([tiny_config, str(tmp_path / 'other.pth'), '--work-dir', str(tmp_path / 'w')])
    message = str(info.value)
    assert f"checkpoint {str(tmp_path / 'other.pth')!r} does not fit the model" in message
    assert '2 keys unexpected: bias, weight' in message and 'keys missing: ' in message
    text = write(tmp_path / 'text.pth', b'not a checkpoint')
    with pytest.raises(SystemExit, match='not a PyTorch checkpoint or is truncated'):
        test.main([tiny_config, text, '--work-dir', str(tmp_path / 'w')])


def test_test_tool_checks_the_out_folder_before_evaluating(tmp_path, tiny_config):
    test = load_tool('test')
    write(tmp_path / 'afile', b'')
    with pytest.raises(SystemExit, match=r"--out .*afile/res.json'?: cannot create the folder"):
        test.main([tiny_config, write(tmp_path / 'c.pth', b'x'), '--out',
                   str(tmp_path / 'afile' / 'res.json')])
    (tmp_path / 'res.json').mkdir()
    with pytest.raises(SystemExit, match='is a folder'):
        test.main([tiny_config, write(tmp_path / 'c.pth', b'x'), '--out',
                   str(tmp_path / 'res.json')])


def test_train_tool_refuses_load_from_of_which_nothing_fits(tmp_path, tiny_config):
    train = load_tool('train')
    torch.save(dict(state_dict=torch.nn.Conv2d(3, 8, 3).state_dict()), tmp_path / 'other.pth')
    with pytest.raises(SystemExit) as info:
        train.main([tiny_config, '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                    f"load_from={tmp_path / 'other.pth'}"])
    assert "none of the 2 tensors of checkpoint" in str(info.value)
    assert 'other.pth' in str(info.value) and str(tiny_config) in str(info.value)
    assert not osp.exists(tmp_path / 'w' / 'epoch_1.pth')     # stopped before training


def test_a_bad_data_file_found_by_the_runner_is_a_message_not_a_traceback(tmp_path, monkeypatch,
                                                                          tiny_config):
    test = load_tool('test')
    detector = MODELS.build(Config.fromfile(tiny_config).model)   # a checkpoint that fits
    torch.save(dict(state_dict=detector.state_dict()), tmp_path / 'fits.pth')
    broken = write(tmp_path / 'broken.json', b'{"images": [')
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path / 'tmp'))   # where --out stages
    (tmp_path / 'tmp').mkdir()
    with pytest.raises(SystemExit) as info:
        test.main([tiny_config, str(tmp_path / 'fits.pth'), '--work-dir', str(tmp_path / 'w'),
                   '--out', str(tmp_path / 'res.json'),
                   '--cfg-options', f'test_dataloader.dataset.ann_file={broken}'])
    assert str(info.value).startswith(f'tools/test.py {tiny_config}: CocoDataset: {broken} is '
                                      'not a JSON file')
    assert list((tmp_path / 'tmp').iterdir()) == [] and not (tmp_path / 'res.json').exists()
