"""Partial labels: plain softmax vs GroupSoftmax, same model, data and schedule, one table.

    python tools/analysis/benchmark_partial_labels.py [--num-train 300] [--epochs 12]

Generates ``data/shapes_partial`` when it is missing (two training subsets of one image
distribution: A labels circle/square/triangle, B labels star/cross; a fully labelled val set),
trains ``configs/faster_rcnn_r18_shapes_partial_softmax.py`` and
``configs/faster_rcnn_r18_shapes_partial_groupsoftmax.py`` one after the other with
``tools/train.py``, evaluates both final checkpoints with ``tools/test.py`` and prints val bbox
mAP overall and per class.
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


def run(args: list[str], log_path: str) -> str:
    """Run a Python tool from the repository root, tee-ing its output into ``log_path``."""
    env = dict(os.environ, PYTHONPATH=REPO)
    with open(log_path, 'w') as log:
        proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, stdout=log,
                              stderr=subprocess.STDOUT, text=True)
    output = open(log_path).read()
    if proc.returncode != 0:
        raise SystemExit(f'{" ".join(args)} failed (exit {proc.returncode}); see {log_path}\n'
                         + output[-2000:])
    return output


def parse_metrics(output: str) -> dict[str, float]:
    """The last ``coco/...`` numbers a test run printed."""
    metrics = {}
    for key, value in re.findall(r'coco/([\w\- ]+?): (-?[0-9.]+|nan)', output):
        metrics[key] = float(value)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', default='data/shapes_partial')
    parser.add_argument('--num-train', type=int, default=300)
    parser.add_argument('--num-val', type=int, default=100)
    parser.add_argument('--epochs', type=int, default=12)
    parser.add_argument('--work-dir', default='work_dirs/partial_labels')
    args = parser.parse_args()
    data = osp.join(REPO, args.data)
    os.makedirs(osp.join(REPO, args.work_dir), exist_ok=True)
    if not osp.exists(osp.join(data, 'annotations', 'instances_val.json')):
        run(['tools/misc/make_synthetic.py', 'partial', '--out', data, '--num-train',
             str(args.num_train), '--num-val', str(args.num_val)],
            osp.join(REPO, args.work_dir, 'make_synthetic.log'))
    data_root = data.rstrip('/') + '/'
    overrides = [f'train_dataloader.dataset.datasets.0.data_root={data_root}',
                 f'train_dataloader.dataset.datasets.1.data_root={data_root}',
                 f'val_dataloader.dataset.data_root={data_root}',
                 f'test_dataloader.dataset.data_root={data_root}',
                 f'val_evaluator.ann_file={data_root}annotations/instances_val.json',
                 f'test_evaluator.ann_file={data_root}annotations/instances_val.json',
                 f'train_cfg.max_epochs={args.epochs}', f'train_cfg.val_interval={args.epochs}',
                 f'default_hooks.checkpoint.interval={args.epochs}']
    rows = {}
    for variant in VARIANTS:
        config = f'configs/faster_rcnn_r18_shapes_partial_{variant}.py'
        work_dir = osp.join(REPO, args.work_dir, variant)
        start = time.time()
        run(['tools/train.py', config, '--work-dir', work_dir, '--cfg-options', *overrides],
            osp.join(REPO, args.work_dir, f'train_{variant}.log'))
        minutes = (time.time() - start) / 60
        output = run(['tools/test.py', config, osp.join(work_dir, f'epoch_{args.epochs}.pth'),
                      '--work-dir', work_dir + '_test', '--cfg-options', *overrides],
                     osp.join(REPO, args.work_dir, f'test_{variant}.log'))
        rows[variant] = (parse_metrics(output), minutes)

    print(f'Partial labels on {args.data}: {args.num_train} training images (half labelled A = '
          f'circle/square/triangle, half B = star/cross), fully labelled val; Faster R-CNN '
          f'R18-FPN from scratch, {args.epochs} epochs each')
    header = ['loss', 'train min', 'mAP', 'AP50'] + list(CLASSES)
    print(' | '.join(f'{h:>12}' for h in header))
    for variant, (metrics, minutes) in rows.items():
        cells = [variant, f'{minutes:.1f}', f"{metrics.get('bbox_mAP', float('nan')):.3f}",
                 f"{metrics.get('bbox_mAP_50', float('nan')):.3f}"]
        cells += [f"{metrics.get(f'{name}_precision', float('nan')):.3f}" for name in CLASSES]
        print(' | '.join(f'{c:>12}' for c in cells))


if __name__ == '__main__':
    main()
