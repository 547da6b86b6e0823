"""Crash-safe checkpoints, generator states in checkpoints, non-finite losses."""
from __future__ import annotations

import io
import os
import os.path as osp
import random
from collections import deque
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.fileio import get_file_backend
from mmengine.logging import MessageHub

from detkit.engine import CheckpointHook, atomic_write
from detkit.engine.rng_state_hook import RNGStateHook, capture_rng_state, restore_rng_state
from detkit.registry import HOOKS, MODELS


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / 'epoch_1.pth'
    atomic_write(b'old checkpoint', path)

    def killed(*args):
        raise KeyboardInterrupt  # as if the process died between writing and renaming

    monkeypatch.setattr(os, 'replace', killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(b'new checkpoint, half written', path)
    monkeypatch.undo()
    assert path.read_bytes() == b'old checkpoint'
    assert sorted(os.listdir(tmp_path)) == ['epoch_1.pth']  # no temporary file left
    atomic_write('text', path)
    assert path.read_text() == 'text'
    umask = os.umask(0o022)
    try:
        atomic_write('shared', tmp_path / 'results.json')
    finally:
        os.umask(umask)
    assert (tmp_path / 'results.json').stat().st_mode & 0o777 == 0o644   # not mkstemp's 0o600


class FakeRunner:
    """What CheckpointHook uses of a Runner: work dir, message hub and save_checkpoint."""

    def __init__(self, work_dir: str) -> None:
        self.work_dir = work_dir
        self.message_hub = MessageHub.get_instance(f'fake-{work_dir}')
        self.fail_next_save = False

    def save_checkpoint(self, out_dir, filename, file_client_args=None, backend_args=None,
                        **kwargs):
        backend = get_file_backend(out_dir, backend_args=backend_args)
        payload = b'x' * 1000
        if self.fail_next_save:
            raise KeyboardInterrupt('killed during torch.save')
        backend.put(payload, osp.join(out_dir, filename))


def make_hook(work_dir: str, max_keep: int) -> tuple[CheckpointHook, FakeRunner]:
    hook = HOOKS.build(dict(type='CheckpointHook', interval=1, max_keep_ckpts=max_keep))
    assert type(hook) is CheckpointHook
    runner = FakeRunner(work_dir)
    hook.out_dir = work_dir
    hook.file_backend = get_file_backend(work_dir, backend_args=hook.backend_args)
    hook.keep_ckpt_ids = deque()
    return hook, runner


def test_checkpoint_rotation_deletes_only_after_a_complete_save(tmp_path):
    work_dir = str(tmp_path)
    hook, runner = make_hook(work_dir, max_keep=1)
    hook._save_checkpoint_with_step(runner, 1, meta={})
    assert sorted(os.listdir(work_dir)) == ['epoch_1.pth', 'last_checkpoint']
    runner.fail_next_save = True
    with pytest.raises(KeyboardInterrupt):
        hook._save_checkpoint_with_step(runner, 2, meta={})
    # mmengine would have deleted epoch_1.pth before this save; detkit keeps it
    assert sorted(os.listdir(work_dir)) == ['epoch_1.pth', 'last_checkpoint']
    assert Path(osp.join(work_dir, 'last_checkpoint')).read_text() == osp.join(work_dir,
                                                                          'epoch_1.pth')
    hook, runner = make_hook(work_dir, max_keep=2)
    for step in (1, 2, 3):
        hook._save_checkpoint_with_step(runner, step, meta={})
    assert sorted(os.listdir(work_dir)) == ['epoch_2.pth', 'epoch_3.pth', 'last_checkpoint']
    assert runner.message_hub.get_info('keep_ckpt_ids') == [2, 3]
    assert Path(osp.join(work_dir, 'last_checkpoint')).read_text().endswith('epoch_3.pth')


def test_checkpoints_without_max_keep_are_all_kept(tmp_path):
    work_dir = str(tmp_path)
    hook, runner = make_hook(work_dir, max_keep=-1)
    del hook.keep_ckpt_ids  # mmengine creates it only with max_keep_ckpts > 0
    for step in (1, 2, 3):
        hook._save_checkpoint_with_step(runner, step, meta={})
    assert sorted(os.listdir(work_dir)) == ['epoch_1.pth', 'epoch_2.pth', 'epoch_3.pth',
                                            'last_checkpoint']
    assert Path(osp.join(work_dir, 'last_checkpoint')).read_text().endswith('epoch_3.pth')


def test_generator_states_round_trip_through_a_safe_checkpoint():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leave a cached gaussian in numpy's state
    buffer = io.BytesIO()
    torch.save(dict(rng_state=capture_rng_state()), buffer)
    expected = (random.random(), np.random.standard_normal(4).tolist(),
                torch.rand(4).tolist())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    hook = RNGStateHook()
    hook.after_load_checkpoint(SimpleNamespace(_resume=False), checkpoint)  # load_from: no-op
    assert random.random() != expected[0]
    hook.after_load_checkpoint(SimpleNamespace(_resume=True), checkpoint)
    again = (random.random(), np.random.standard_normal(4).tolist(), torch.rand(4).tolist())
    assert again == expected
    restore_rng_state(checkpoint['rng_state'])
    assert random.random() == expected[0]


@pytest.fixture(scope='module')
def tiny_retinanet():
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                                   'configs', 'retinanet_r50_shapes.py'))
    cfg.model.backbone.depth = 18
    cfg.model.neck.in_channels = [64, 128, 256, 512]
    cfg.model.neck.out_channels = 32
    cfg.model.bbox_head.update(in_channels=32, feat_channels=32, stacked_convs=1,
                               norm_cfg=dict(type='GN', num_groups=8))
    cfg.model.neck.norm_cfg = dict(type='GN', num_groups=8)
    return cfg.model


def test_nonfinite_loss_stops_naming_the_iteration_and_term(tiny_retinanet):
    model = MODELS.build(tiny_retinanet)
    assert model.nonfinite_loss == 'stop'
    MessageHub.get_current_instance().update_info('iter', 6)
    losses = dict(loss_cls=torch.tensor(float('nan')), loss_bbox=torch.tensor(0.5))
    with pytest.raises(FloatingPointError) as info:
        model.parse_losses(losses)
    message = str(info.value)
    assert 'iteration 7' in message and 'loss_cls=nan' in message
    assert 'loss_bbox' not in message and "nonfinite_loss='skip'" in message
    total, log_vars = model.parse_losses(dict(loss_cls=torch.tensor(0.25),
                                              loss_bbox=torch.tensor(0.5)))
    assert float(total) == 0.75 and float(log_vars['loss']) == 0.75


def test_nonfinite_loss_skip_gives_exact_zero_gradients(tiny_retinanet):
    model = MODELS.build(dict(tiny_retinanet, nonfinite_loss='skip'))
    weight = next(model.parameters())
    bad = (weight.sum() * float('inf'))  # the graph itself holds the infinity
    MessageHub.get_current_instance().update_info('iter', 41)
    with pytest.warns(UserWarning, match=r'iteration 42: loss_bbox=inf; the batch is skipped'):
        total, log_vars = model.parse_losses(dict(loss_cls=weight.sum() * 0 + 1.0,
                                                  loss_bbox=bad))
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.count_nonzero(g) == 0 for g in grads)
    assert float(total.detach()) == 0.0 and float(log_vars['nonfinite_skips']) == 1
    assert all(torch.isfinite(v).all() for v in log_vars.values())
    with pytest.raises(ValueError, match="nonfinite_loss='ignore'; expected 'stop' or 'skip'"):
        MODELS.build(dict(tiny_retinanet, nonfinite_loss='ignore'))
