"""Partial labels: plain softmax vs GroupSoftmax, same model, data and schedule, one table.

    python tools/analysis/benchmark_partial_labels.py [--num-train 600] [--epochs 8]
        [--parallel] [--seed 0]

Generates ``data/shapes_partial_plain`` when it is missing (``make_synthetic.py partial --scene
plain``: two training subsets of one image distribution, A labels circle/square/triangle, B labels
star/cross; a fully labelled val set), trains
``configs/faster_rcnn_mobilenetv2_shapes_partial_softmax.py`` and
``configs/faster_rcnn_mobilenetv2_shapes_partial_groupsoftmax.py`` with ``tools/train.py`` (one
after the other, or with ``--parallel`` side by side with one thread each, which uses two cores
better than one run with two threads), evaluates both final checkpoints with ``tools/test.py``
and prints val bbox mAP overall and per class. ``--epochs`` other than the configs' 8 moves the
learning-rate drop with it (x0.1 after 5/6 of the epochs, rounded: the configs' 7 of 8); ``--seed``
sets the training seed of both variants (weights, sampling, augmentation; the data stay the same),
so that repeated runs show how much of a difference is noise.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import re
import subprocess
import sys
import time

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
VARIANTS = ('softmax', 'groupsoftmax')
CLASSES = ('circle', 'square', 'triangle', 'star', 'cross')


def start(args: list[str], log_path: str, threads: int | None = None) -> subprocess.Popen:
    """Start a Python tool from the repository root, its output going to ``log_path``."""
    env = dict(os.environ, PYTHONPATH=REPO)
    if threads:
        env['OMP_NUM_THREADS'] = str(threads)
    log = open(log_path, 'w')
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, args: list[str], log_path: str) -> str:
    """Wait for a started tool; its output, or SystemExit naming the log when it failed."""
    proc.wait()
    output = open(log_path).read()
    if proc.returncode != 0:
        raise SystemExit(f'{" ".join(args)} failed (exit {proc.returncode}); see {log_path}\n'
                         + output[-2000:])
    return output


def run(args: list[str], log_path: str) -> str:
    """Run a Python tool from the repository root, its output going to ``log_path``."""
    return finish(start(args, log_path), args, log_path)


def parse_metrics(output: str) -> dict[str, float]:
    """The last ``coco/...`` numbers a test run printed."""
    metrics = {}
    for key, value in re.findall(r'coco/([\w\- ]+?): (-?[0-9.]+|nan)', output):
        metrics[key] = float(value)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', default='data/shapes_partial_plain')
    parser.add_argument('--num-train', type=int, default=600)
    parser.add_argument('--num-val', type=int, default=100)
    parser.add_argument('--epochs', type=int, default=8)
    parser.add_argument('--seed', type=int, default=0, help='training seed of both variants')
    parser.add_argument('--work-dir', default='work_dirs/partial_labels')
    parser.add_argument('--parallel', action='store_true',
                        help='train both variants at once, one thread each')
    parser.add_argument('--eval-only', action='store_true',
                        help='evaluate the final checkpoints already in --work-dir')
    args = parser.parse_args()
    data = osp.join(REPO, args.data)
    os.makedirs(osp.join(REPO, args.work_dir), exist_ok=True)
    if not osp.exists(osp.join(data, 'annotations', 'instances_val.json')):
        run(['tools/misc/make_synthetic.py', 'partial', '--out', data, '--num-train',
             str(args.num_train), '--num-val', str(args.num_val), '--scene', 'plain'],
            osp.join(REPO, args.work_dir, 'make_synthetic.log'))
    data_root = data.rstrip('/') + '/'
    overrides = [f'train_dataloader.dataset.datasets.0.data_root={data_root}',
                 f'train_dataloader.dataset.datasets.1.data_root={data_root}',
                 f'val_dataloader.dataset.data_root={data_root}',
                 f'test_dataloader.dataset.data_root={data_root}',
                 f'val_evaluator.ann_file={data_root}annotations/instances_val.json',
                 f'test_evaluator.ann_file={data_root}annotations/instances_val.json',
                 f'train_cfg.max_epochs={args.epochs}', f'train_cfg.val_interval={args.epochs}',
                 f'default_hooks.checkpoint.interval={args.epochs}',
                 f'randomness.seed={args.seed}']
    if args.epochs != 8:
        drop = max(1, round(args.epochs * 5 / 6))
        overrides += [f'param_scheduler.1.end={args.epochs}',
                      f'param_scheduler.1.milestones=[{drop}]']
    rows, minutes = {}, {}
    configs = {v: f'configs/faster_rcnn_mobilenetv2_shapes_partial_{v}.py' for v in VARIANTS}
    work_dirs = {v: osp.join(REPO, args.work_dir, v) for v in VARIANTS}
    pending = {}
    for variant in VARIANTS if not args.eval_only else ():
        train_args = ['tools/train.py', configs[variant], '--work-dir', work_dirs[variant],
                      '--cfg-options', *overrides]
        log_path = osp.join(REPO, args.work_dir, f'train_{variant}.log')
        began = time.time()
        proc = start(train_args, log_path, threads=1 if args.parallel else None)
        pending[variant] = (proc, train_args, log_path, began)
        if not args.parallel:
            finish(proc, train_args, log_path)
            minutes[variant] = (time.time() - began) / 60
    for variant, (proc, train_args, log_path, began) in pending.items():
        if variant not in minutes:
            finish(proc, train_args, log_path)
            minutes[variant] = (time.time() - began) / 60
    for variant in VARIANTS:
        output = run(['tools/test.py', configs[variant],
                      osp.join(work_dirs[variant], f'epoch_{args.epochs}.pth'),
                      '--work-dir', work_dirs[variant] + '_test', '--cfg-options', *overrides],
                     osp.join(REPO, args.work_dir, f'test_{variant}.log'))
        rows[variant] = (parse_metrics(output), minutes.get(variant, float('nan')))

    print(f'Partial labels on {args.data}: {args.num_train} training images (half labelled A = '
          f'circle/square/triangle, half B = star/cross), fully labelled val; Faster R-CNN '
          f'MobileNetV2-FPN from scratch, {args.epochs} epochs each, seed {args.seed}'
          + (', trained side by side with 1 thread each' if args.parallel else ''))
    header = ['loss', 'train min', 'mAP', 'AP50'] + list(CLASSES)
    print(' | '.join(f'{h:>12}' for h in header))
    for variant, (metrics, minutes) in rows.items():
        cells = [variant, f'{minutes:.1f}', f"{metrics.get('bbox_mAP', float('nan')):.3f}",
                 f"{metrics.get('bbox_mAP_50', float('nan')):.3f}"]
        cells += [f"{metrics.get(f'{name}_precision', float('nan')):.3f}" for name in CLASSES]
        print(' | '.join(f'{c:>12}' for c in cells))


if __name__ == '__main__':
    main()
