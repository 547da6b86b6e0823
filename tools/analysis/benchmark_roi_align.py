"""Benchmark multi-level RoIAlign on the CPU: detkit's fused kernel vs torchvision per level.

A Faster R-CNN-like case: a batch of 2 images of 512 x 512, 256 channels on P2-P5 (strides 4-32),
1024 RoIs of mixed sizes (log-uniform sides 16-640 px, many reaching past the image) mapped to
levels by mmdetection's rule (``finest_scale = 56``), 7 x 7 output, aligned. For each sampling
ratio and thread count it prints the median time of ``--repeats`` runs (after warm-up) of the
forward and of forward + backward, for ``detkit.ops.multi_level_roi_align`` (the CPU kernel) and
``multi_level_roi_align_reference`` (one ``torchvision.ops.roi_align`` call per level), and the
ratio torchvision / detkit.

Usage:
    python tools/analysis/benchmark_roi_align.py [--repeats 7] [--threads 1 2]
        [--sampling-ratios 0 2] [--rois 1024] [--channels 256]
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

import torch  # noqa: E402

from detkit.models.task_utils.roi_extractor import map_rois_to_levels  # noqa: E402
from detkit.ops import info, multi_level_roi_align, multi_level_roi_align_reference  # noqa: E402

STRIDES = (4, 8, 16, 32)
IMAGE_SIZE = 512
BATCH = 2


def make_case(num_rois: int, channels: int, seed: int = 0):
    """Feature maps P2-P5, RoIs (R, 5) in image pixels, and the level of each RoI."""
    generator = torch.Generator().manual_seed(seed)
    feats = [torch.randn(BATCH, channels, IMAGE_SIZE // s, IMAGE_SIZE // s, generator=generator)
             for s in STRIDES]
    sides = torch.exp(torch.empty(num_rois, 2).uniform_(math.log(16), math.log(640),
                                                        generator=generator))
    corners = torch.rand(num_rois, 2, generator=generator) * (IMAGE_SIZE + 32) - 16 - sides / 2
    batch_index = torch.randint(0, BATCH, (num_rois, 1), generator=generator).float()
    rois = torch.cat([batch_index, corners, corners + sides], dim=1)
    levels = map_rois_to_levels(rois, len(STRIDES))
    return feats, rois, levels


def median_ms(fn: Callable[[], None], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def runners(op: Callable, feats, rois, levels, sampling_ratio: int):
    """(forward, forward + backward) callables of one implementation."""
    scales = [1.0 / s for s in STRIDES]
    leaves = [f.clone().requires_grad_() for f in feats]
    grad = torch.randn(rois.shape[0], feats[0].shape[1], 7, 7,
                       generator=torch.Generator().manual_seed(1))

    def forward() -> None:
        with torch.no_grad():
            op(feats, rois, levels, scales, 7, sampling_ratio, True)

    def forward_backward() -> None:
        for leaf in leaves:
            leaf.grad = None
        op(leaves, rois, levels, scales, 7, sampling_ratio, True).backward(grad)
    return forward, forward_backward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeats', type=int, default=7, help='timed runs per cell (median)')
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--sampling-ratios', type=int, nargs='+', default=[0, 2])
    parser.add_argument('--rois', type=int, default=1024)
    parser.add_argument('--channels', type=int, default=256)
    args = parser.parse_args()
    report = info(load=True)
    if not report['cpu']['loaded']:
        raise SystemExit(f"detkit's CPU kernels are not loaded ({report['cpu'].get('reason')}); "
                         f"`python -m detkit.ops build --cpu-only` builds them")
    feats, rois, levels = make_case(args.rois, args.channels)
    counts = torch.bincount(levels, minlength=len(STRIDES)).tolist()
    print(f'torch {torch.__version__}; detkit CPU kernels ({report["cpu"].get("isa")}); '
          f'batch {BATCH}, {args.channels} channels, P2-P5 of {IMAGE_SIZE}x{IMAGE_SIZE}, '
          f'{args.rois} RoIs per level {counts}, output 7x7, aligned; median of '
          f'{args.repeats} runs, ms')
    print('| sampling_ratio | threads | pass | detkit ms | torchvision ms | '
          'torchvision / detkit |')
    print('|---:|---:|---|---:|---:|---:|')
    threads_before = torch.get_num_threads()
    try:
        for sampling_ratio in args.sampling_ratios:
            ours = runners(multi_level_roi_align, feats, rois, levels, sampling_ratio)
            theirs = runners(multi_level_roi_align_reference, feats, rois, levels,
                             sampling_ratio)
            for threads in args.threads:
                torch.set_num_threads(threads)
                for name, index in (('forward', 0), ('forward + backward', 1)):
                    detkit_ms = median_ms(ours[index], args.repeats)
                    torchvision_ms = median_ms(theirs[index], args.repeats)
                    print(f'| {sampling_ratio} | {threads} | {name} | {detkit_ms:.1f} | '
                          f'{torchvision_ms:.1f} | {torchvision_ms / detkit_ms:.2f}x |',
                          flush=True)
    finally:
        torch.set_num_threads(threads_before)


if __name__ == '__main__':
    main()
