"""tools/train.py and tools/test.py end to end on a tiny generated shapes set."""
from __future__ import annotations

import json
import math
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkit.datasets.synthetic import make_shapes

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRAIN = osp.join(REPO, 'tools', 'train.py')
TEST = osp.join(REPO, 'tools', 'test.py')

TINY_CONFIG = """
_base_ = {base!r}
data_root = {data_root!r}
amp = False  # float32 unless a test passes --amp
model = dict(
    backbone=dict(depth=18),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=32),
    bbox_head=dict(in_channels=32, feat_channels=32, stacked_convs=1))
pipeline_train = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True), dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')]
pipeline_test = [
    dict(type='LoadImageFromFile'), dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations'), dict(type='PackDetInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=pipeline_train))
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=pipeline_test))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json', classwise=False)
test_evaluator = val_evaluator
train_cfg = dict(max_epochs={max_epochs}, val_interval=100)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=10))
"""


@pytest.fixture(scope='module')
def shapes_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp('shapes'))
    make_shapes(root, num_train=12, num_val=4, min_size=96, max_size=128, seed=3)
    return root + '/'


def write_config(tmp_path, data_root: str, max_epochs: int) -> str:
    path = osp.join(str(tmp_path), 'tiny.py')
    with open(path, 'w') as f:
        f.write(TINY_CONFIG.format(base=osp.join(REPO, 'configs', 'retinanet_r50_shapes.py'),
                                   data_root=data_root, max_epochs=max_epochs))
    return path


def latest_epoch(work_dir: str) -> int:
    """The epoch of the checkpoint ``work_dir/last_checkpoint`` names (0 when none)."""
    try:
        with open(osp.join(work_dir, 'last_checkpoint')) as f:
            name = osp.basename(f.read().strip())
    except FileNotFoundError:
        return 0
    return int(name[len('epoch_'):-len('.pth')]) if name.startswith('epoch_') else 0


def run(args: list[str], cwd: str, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, **kwargs)


def kill_after_epoch(script: str, config: str, work_dir: str, epoch: int, *options: str,
                     cwd: str, env: dict, log_path: str) -> None:
    """Start ``script config`` training in the background and SIGKILL it once the checkpoint
    of ``epoch`` is complete (output to ``log_path``)."""
    with open(log_path, 'w') as log:
        run = subprocess.Popen([sys.executable, script, config, '--work-dir', work_dir, *options],
                               cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while latest_epoch(work_dir) < epoch and time.time() < deadline:
            assert run.poll() is None, Path(log_path).read_text()[-3000:]
            time.sleep(0.05)
        run.send_signal(signal.SIGKILL)
        run.wait()


def test_killed_run_resumes_to_the_same_weights_and_tests_like_pycocotools(tmp_path,
                                                                           shapes_root):
    """Seeded, deterministic CPU run: SIGKILL after epoch 1, --resume, compare with a run that
    was never interrupted; then tools/test.py on the resumed run's last checkpoint reports the
    mAP pycocotools computes from its --out file. The generator states in the checkpoint
    (RNGStateHook) make the resumed run draw the same flips as the uninterrupted one."""
    config = write_config(tmp_path, shapes_root, max_epochs=3)
    options = ['--cfg-options', 'randomness.seed=7', 'randomness.deterministic=True']
    straight_dir = osp.join(str(tmp_path), 'straight')
    straight = run([TRAIN, config, '--work-dir', straight_dir, *options], cwd=str(tmp_path))
    assert straight.returncode == 0, straight.stderr[-3000:]

    work_dir = osp.join(str(tmp_path), 'killed')
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    kill_after_epoch(TRAIN, config, work_dir, 1, *options, cwd=str(tmp_path), env=env,
                     log_path=osp.join(str(tmp_path), 'killed.log'))
    # mmengine points ``last_checkpoint`` at a checkpoint once it is completely written.
    saved = latest_epoch(work_dir)
    assert 1 <= saved < 3, f'the run was not killed mid-training (epoch {saved})'
    resumed = run([TRAIN, config, '--work-dir', work_dir, '--resume', *options],
                  cwd=str(tmp_path))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    output = resumed.stdout + resumed.stderr
    assert f'resumed epoch: {saved}' in output
    # Training went on from the saved epoch, not from scratch.
    trained_epochs = {int(e) for e in re.findall(r'Epoch\(train\)\s+\[(\d+)\]', output)}
    assert trained_epochs == set(range(saved + 1, 4))

    expected = torch.load(osp.join(straight_dir, 'epoch_3.pth'), map_location='cpu')
    got = torch.load(osp.join(work_dir, 'epoch_3.pth'), map_location='cpu')
    assert got['meta']['epoch'] == 3
    assert got['meta']['iter'] == expected['meta']['iter'] == 18  # 12 images / batch 2
    assert set(got['state_dict']) == set(expected['state_dict'])
    different = [k for k, v in expected['state_dict'].items()
                 if not torch.equal(v, got['state_dict'][k])]
    assert different == []
    # the optimizer's state (the config's AdamW: steps and both moments) too
    states = list(zip(expected['optimizer']['state'].values(),
                      got['optimizer']['state'].values()))
    assert states and all(set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
                          for a, b in states)

    out_json = osp.join(str(tmp_path), 'results.json')
    tested = run([TEST, config, osp.join(work_dir, 'epoch_3.pth'), '--out', out_json,
                  '--work-dir', osp.join(str(tmp_path), 'test')], cwd=str(tmp_path))
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-3000:]
    detections = json.loads(Path(out_json).read_text())
    gt = COCO(shapes_root + 'annotations/instances_val.json')
    assert {d['category_id'] for d in detections} <= set(gt.getCatIds())
    reported = [line for line in (tested.stdout + tested.stderr).splitlines()
                if 'coco/bbox_mAP:' in line][-1]
    reported_map = float(reported.split('coco/bbox_mAP:')[1].split()[0])
    if detections:
        evaluator = COCOeval(gt, gt.loadRes(out_json), 'bbox')
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        assert reported_map == pytest.approx(round(evaluator.stats[0], 3), abs=1e-3)
    else:
        assert reported_map == 0.0


def test_train_without_coco_says_where_it_goes(tmp_path):
    result = run([TRAIN, osp.join(REPO, 'configs', 'retinanet_r50.py')], cwd=str(tmp_path))
    assert result.returncode != 0
    message = result.stderr
    assert 'train_dataloader.dataset.ann_file' in message
    assert 'data/coco/annotations/instances_train2017.json' in message
    assert 'python tools/train.py configs/retinanet_r50_shapes.py' in message
    assert 'Traceback' not in message


def test_unknown_type_names_key_and_close_names(tmp_path, shapes_root):
    config = write_config(tmp_path, shapes_root, max_epochs=1)
    result = run([TRAIN, config, '--cfg-options', 'model.backbone.type=ResNt'],
                 cwd=str(tmp_path))
    assert result.returncode != 0
    assert "model.backbone.type='ResNt'" in result.stderr
    assert "'ResNet'" in result.stderr


def test_wrong_argument_stops_before_training(tmp_path, shapes_root):
    config = write_config(tmp_path, shapes_root, max_epochs=1)
    result = run([TRAIN, config, '--cfg-options', 'model.backbone.depth=eighteen'],
                 cwd=str(tmp_path))
    assert result.returncode != 0
    assert "model.backbone.depth='eighteen': ResNet expects int, got str" in result.stderr
    assert 'Traceback' not in result.stderr and 'Epoch(train)' not in result.stdout


def test_resume_with_missing_checkpoint_is_refused(tmp_path, shapes_root):
    config = write_config(tmp_path, shapes_root, max_epochs=1)
    result = run([TRAIN, config, '--resume', osp.join(str(tmp_path), 'nope.pth')],
                 cwd=str(tmp_path))
    assert result.returncode != 0
    assert 'nope.pth' in result.stderr


def test_resume_without_a_checkpoint_starts_from_load_from(tmp_path, shapes_root):
    """A first run with --resume (a job script that always passes it) fine-tunes from the
    config's load_from instead of starting from random weights."""
    config = write_config(tmp_path, shapes_root, max_epochs=1)
    first = osp.join(str(tmp_path), 'first')
    done = run([TRAIN, config, '--work-dir', first], cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    weights = osp.join(first, 'epoch_1.pth')
    second = osp.join(str(tmp_path), 'second')
    done = run([TRAIN, config, '--work-dir', second, '--resume', '--cfg-options',
                f'load_from={weights}'], cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert f"--resume: no checkpoint in {second} yet; a new run from load_from='{weights}'" in (
        output)
    assert f'Load checkpoint from {weights}' in output and 'resumed epoch' not in output


def test_missing_load_from_is_refused_before_the_model_is_built(tmp_path, shapes_root):
    config = write_config(tmp_path, shapes_root, max_epochs=1)
    result = run([TRAIN, config, '--cfg-options', 'load_from=checkpoints/nope.pth'],
                 cwd=str(tmp_path))
    assert result.returncode != 0
    assert ("load_from='checkpoints/nope.pth': no such checkpoint file (relative to "
            f'{tmp_path})') in result.stderr
    assert 'Traceback' not in result.stderr and 'Epoch(train)' not in result.stdout


def test_amp_on_cpu_trains_in_bfloat16_without_nan(tmp_path, shapes_root):
    config = write_config(tmp_path, shapes_root, max_epochs=2)
    work_dir = osp.join(str(tmp_path), 'amp')
    result = run([TRAIN, config, '--amp', '--work-dir', work_dir], cwd=str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    losses = [float(v) for v in re.findall(r' loss: ([-+0-9.eEnaif]+)', output)]
    assert len(losses) == 12  # 2 epochs x 6 iterations, logged every iteration
    assert all(math.isfinite(v) for v in losses)
    checkpoint = torch.load(osp.join(work_dir, 'epoch_2.pth'), map_location='cpu')
    weights = checkpoint['state_dict']
    assert all(t.dtype == torch.float32 for t in weights.values() if t.is_floating_point())
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_best_checkpoint_and_early_stopping_from_the_config(tmp_path, shapes_root):
    """mmengine's save_best and EarlyStoppingHook through detkit's CheckpointHook: the best
    val mAP's checkpoint is kept, and a run that stops improving ends before max_epochs."""
    config = write_config(tmp_path, shapes_root, max_epochs=6)
    with open(config, 'a') as f:
        f.write("train_cfg = dict(max_epochs=6, val_interval=1)\n"
                "default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=1, "
                "save_best='coco/bbox_mAP', rule='greater'))\n"
                "custom_hooks = [dict(type='EarlyStoppingHook', monitor='coco/bbox_mAP', "
                "rule='greater', min_delta=0.5, patience=2)]\n")
    work_dir = str(tmp_path / 'work')
    done = run([TRAIN, config, '--work-dir', work_dir], cwd=str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # no epoch gains 0.5 mAP over the first: patience 2 stops the run after epoch 3
    assert 'the monitored metric did not improve in the last 2 records' in done.stdout + \
        done.stderr
    assert latest_epoch(work_dir) == 3
    best = sorted(p.name for p in Path(work_dir).glob('best_coco_bbox_mAP_epoch_*.pth'))
    assert len(best) == 1
    state = torch.load(osp.join(work_dir, best[0]), map_location='cpu', weights_only=False)
    assert state['meta']['epoch'] == int(best[0].split('_')[-1][:-len('.pth')])


def test_show_dir_draws_ground_truth_beside_detections(tmp_path, shapes_root):
    from mmengine.config import Config

    from detkit.registry import MODELS
    from detkit.visualization import class_color
    config = write_config(tmp_path, shapes_root, max_epochs=1)
    model = MODELS.build(Config.fromfile(config).model)
    with torch.no_grad():   # prior 0.5: detections everywhere
        model.bbox_head.retina_cls.bias.fill_(0.0)
    checkpoint = str(tmp_path / 'tiny.pth')
    torch.save(dict(state_dict=model.state_dict()), checkpoint)
    show = tmp_path / 'show'
    done = run([TEST, config, checkpoint, '--work-dir', str(tmp_path / 'work'), '--show-dir',
                str(show), '--show-score-thr', '0.2'], cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    gt = COCO(osp.join(shapes_root, 'annotations', 'instances_val.json'))
    drawn = sorted(p.name for p in show.iterdir())
    stems = [osp.splitext(osp.basename(i['file_name']))[0] for i in gt.dataset['images']]
    assert drawn == sorted(stem + '.png' for stem in stems)
    for info, stem in zip(gt.dataset['images'], stems):
        image = cv2.imread(str(show / (stem + '.png')))
        height, width = info['height'], info['width']
        assert image.shape == (height, 2 * width + 4, 3)
        assert (image[:, width:width + 4] == 255).all()            # the white gap
        left, right = image[:, :width], image[:, width + 4:]
        assert not np.array_equal(left, right)                       # detections differ from gt
        for ann in gt.loadAnns(gt.getAnnIds(imgIds=[info['id']], iscrowd=False)):
            x, y, w, h = (int(round(v)) for v in ann['bbox'])
            label = gt.getCatIds().index(ann['category_id'])
            colour = np.array(class_color(label))
            # some pixel of the box's left edge carries the class colour
            edge = left[y + h // 4:y + 3 * h // 4, min(max(x, 0), width - 1)].astype(int)
            assert (np.abs(edge - colour).sum(axis=1) < 60).any()


def test_tensorboard_event_files_hold_losses_lr_and_map(tmp_path, shapes_root):
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    config = write_config(tmp_path, shapes_root, max_epochs=1)
    with open(config, 'a') as f:
        f.write('train_cfg = dict(max_epochs=1, val_interval=1)\n')
    work_dir = tmp_path / 'work'
    done = run([TRAIN, config, '--work-dir', str(work_dir), '--vis-backend', 'local',
                'tensorboard'], cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    events = list(work_dir.glob('*/vis_data/events.out.tfevents.*'))
    assert len(events) == 1 and list(work_dir.glob('*/vis_data/*.json'))   # both backends
    accumulator = EventAccumulator(str(events[0]))
    accumulator.Reload()
    tags = set(accumulator.Tags()['scalars'])
    assert {'loss', 'loss_cls', 'loss_bbox', 'lr', 'coco/bbox_mAP'} <= tags
    losses = [e.value for e in accumulator.Scalars('loss')]
    assert len(losses) == 6 and all(math.isfinite(v) and v > 0 for v in losses)   # 12 images / 2
