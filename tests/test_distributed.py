"""Two CPU processes (torchrun, gloo) against one process with the same global batch, and the
one private mmengine function that detkit replaces for CPU runs."""
from __future__ import annotations

import json
import os
import os.path as osp
import re
import socket
import subprocess
import sys
from pathlib import Path

import mmengine
import pytest
import torch
import torch.distributed as torch_dist
from mmengine.dist import utils as mmengine_dist_utils

from detkit.datasets.synthetic import make_shapes
from detkit.engine.distributed import (
    MMENGINE_INIT_PYTORCH,
    close_process_group,
    enable_cpu_process_group,
)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRAIN = osp.join(REPO, 'tools', 'train.py')
TEST = osp.join(REPO, 'tools', 'test.py')

# Square images of one size (equal padding in any batch), no flip (flips are drawn per process),
# the plain batch sampler: the 2 processes see exactly the images of the single process's batch.
CONFIG = """
_base_ = {base!r}
data_root = {data_root!r}
model = dict(
    backbone=dict(depth=18),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=64),
    bbox_head=dict(in_channels=64, feat_channels=64, stacked_convs=1))
pipeline_train = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
    dict(type='Resize', scale=(96, 96), keep_ratio=True), dict(type='PackDetInputs')]
pipeline_test = [
    dict(type='LoadImageFromFile'), dict(type='Resize', scale=(96, 96), keep_ratio=True),
    dict(type='LoadAnnotations'), dict(type='PackDetInputs')]
train_dataloader = dict(batch_size={batch}, num_workers=0, persistent_workers=False,
                        batch_sampler=None,
                        dataset=dict(data_root=data_root, pipeline=pipeline_train))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=pipeline_test))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json', classwise=False)
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=100)
param_scheduler = []
# SGD: the quick start's AdamW normalises each step, which magnifies rounding differences
optim_wrapper = dict(optimizer=dict(_delete_=True, type='SGD', lr=0.01, momentum=0.9))
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
randomness = dict(seed=3, deterministic=True)
amp = False  # float32: 2 processes x 2 images must update as 1 x 4 to 1e-4
"""


@pytest.fixture(scope='module')
def shapes_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp('shapes'))
    make_shapes(root, num_train=8, num_val=5, min_size=96, max_size=96, seed=11)
    return root + '/'


def write_config(folder, data_root: str, batch: int) -> str:
    path = osp.join(str(folder), f'batch{batch}.py')
    with open(path, 'w') as f:
        f.write(CONFIG.format(base=osp.join(REPO, 'configs', 'retinanet_r50_shapes.py'),
                              data_root=data_root, batch=batch))
    return path


def run(args: list[str], cwd: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def torchrun(script: str, nproc: int, *args: str) -> list[str]:
    return [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(nproc),
            '--master_port', str(29500 + os.getpid() % 1000), script, *args,
            '--launcher', 'pytorch']


def reported_map(result: subprocess.CompletedProcess) -> float:
    lines = re.findall(r'coco/bbox_mAP: (-?[0-9.]+)', result.stdout + result.stderr)
    assert lines, result.stdout[-2000:]
    return float(lines[-1])


def test_two_processes_train_and_evaluate_like_one(tmp_path, shapes_root):
    single_dir, dist_dir = str(tmp_path / 'single'), str(tmp_path / 'dist')
    run([sys.executable, TRAIN, write_config(tmp_path, shapes_root, 4), '--work-dir',
         single_dir], cwd=str(tmp_path))
    two = run(torchrun(TRAIN, 2, write_config(tmp_path, shapes_root, 2), '--work-dir',
                       dist_dir), cwd=str(tmp_path))
    assert 'Distributed training: True' in two.stdout + two.stderr

    single = torch.load(osp.join(single_dir, 'epoch_1.pth'), map_location='cpu')
    dist = torch.load(osp.join(dist_dir, 'epoch_1.pth'), map_location='cpu')
    assert single['meta']['iter'] == dist['meta']['iter'] == 2  # 8 images, global batch 4
    moved = 0
    for key, value in single['state_dict'].items():
        other = dist['state_dict'][key]
        assert other.shape == value.shape, key
        if value.is_floating_point():
            torch.testing.assert_close(other, value, atol=2e-5, rtol=1e-4, msg=key)
    for a, b in zip(single['optimizer']['state'].values(), dist['optimizer']['state'].values()):
        # the momentum buffers hold the (averaged) gradients of both steps
        torch.testing.assert_close(b['momentum_buffer'], a['momentum_buffer'], atol=1e-5,
                                   rtol=1e-3)
        moved += int(a['momentum_buffer'].abs().sum() > 0)
    assert moved > 10  # the steps changed many parameters

    # Evaluation: every detection kept (score_thr 0), so the comparison is not of empty lists.
    checkpoint = osp.join(single_dir, 'epoch_1.pth')
    test_config = write_config(tmp_path, shapes_root, 4)
    keep_all = ['--cfg-options', 'model.test_cfg.score_thr=0.0']
    one_json, both_json = str(tmp_path / 'one.json'), str(tmp_path / 'both.json')
    one = run([sys.executable, TEST, test_config, checkpoint, '--out', one_json, '--work-dir',
               str(tmp_path / 'test1'), *keep_all], cwd=str(tmp_path))
    both = run(torchrun(TEST, 2, test_config, checkpoint, '--out', both_json, '--work-dir',
                        str(tmp_path / 'test2'), *keep_all), cwd=str(tmp_path))
    one_dets = json.loads(Path(one_json).read_text())
    both_dets = json.loads(Path(both_json).read_text())
    assert len(one_dets) == 5 * 100  # 5 val images, max_per_img 100
    # 5 images over 2 processes: the sampler's padded duplicate is dropped before the metric
    key = lambda d: (d['image_id'], -d['score'], d['category_id'])  # noqa: E731
    for a, b in zip(sorted(one_dets, key=key), sorted(both_dets, key=key)):
        assert (a['image_id'], a['category_id']) == (b['image_id'], b['category_id'])
        assert a['bbox'] == pytest.approx(b['bbox'], abs=1e-3)
        assert a['score'] == pytest.approx(b['score'], abs=1e-6)
    assert len(both_dets) == len(one_dets)
    assert reported_map(both) == reported_map(one)


def test_mmengine_keeps_the_private_function_detkit_replaces():
    where = f'mmengine {mmengine.__version__}: mmengine.dist.utils.{MMENGINE_INIT_PYTORCH}'
    assert callable(getattr(mmengine_dist_utils, MMENGINE_INIT_PYTORCH, None)), (
        f'{where} no longer exists. detkit/engine/distributed.py replaces it so that '
        f'"torchrun ... --launcher pytorch" creates its process group on a machine without '
        f'CUDA; find what init_dist calls now, or a public hook that makes the patch unneeded')
    assert MMENGINE_INIT_PYTORCH in mmengine_dist_utils.init_dist.__code__.co_names, (
        f'{where}: mmengine.dist.init_dist no longer calls it, so detkit\'s replacement '
        f'(detkit/engine/distributed.py) has no effect on CPU distributed runs')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_init_dist_creates_a_gloo_group_without_touching_cuda(monkeypatch):
    # Restored after the test, like everything below.
    monkeypatch.setattr(mmengine_dist_utils, MMENGINE_INIT_PYTORCH,
                        getattr(mmengine_dist_utils, MMENGINE_INIT_PYTORCH))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)

    def set_device(device):
        raise AssertionError(f'torch.cuda.set_device({device}) called on a machine without CUDA')

    monkeypatch.setattr(torch.cuda, 'set_device', set_device)
    # init_dist would otherwise fix this process's start method to 'spawn'.
    monkeypatch.setattr(mmengine_dist_utils.mp, 'get_start_method',
                        lambda allow_none=False: 'fork')
    for name, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
                            MASTER_PORT=str(_free_port())).items():
        monkeypatch.setenv(name, value)

    enable_cpu_process_group()
    enable_cpu_process_group()  # idempotent: still wraps mmengine's own function
    assert getattr(mmengine_dist_utils, MMENGINE_INIT_PYTORCH).__module__ == \
        'detkit.engine.distributed'
    mmengine.dist.init_dist('pytorch', backend='gloo', timeout=60)  # what Runner.setup_env calls
    try:
        assert torch_dist.get_backend() == 'gloo'
        assert (torch_dist.get_rank(), torch_dist.get_world_size()) == (0, 1)
        values = torch.tensor([1.5, -2.0])
        torch_dist.all_reduce(values)
        assert values.tolist() == [1.5, -2.0]
    finally:
        close_process_group()  # what the tools call at the end of a run
    assert not torch_dist.is_initialized()
    close_process_group()  # without a group: nothing to do
