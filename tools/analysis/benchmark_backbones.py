"""Backbone benchmark: parameters, FLOPs, forward latency and training peak memory at 512x512.

    python tools/analysis/benchmark_backbones.py [--size 512] [--runs 10] [--warmup 2]
        [--threads N] [--device cpu|cuda] [--frozen-stages -1] [--skip-memory]
        [--no-cross-check] [--backbones NAME ...]

Each backbone is built as in its RetinaNet config (same depth, plugins and ``out_indices``),
with random weights, batch 1, input ``1x3xSIZExSIZE``. Columns:

- ``params (M)``: all parameters of the backbone.
- ``GFLOPs`` / ``GMACs``: one forward pass, counted by ``torch.utils.flop_counter.
  FlopCounterMode``. It counts convolutions and matrix products only, at 2 FLOPs per
  multiply-add, so GMACs = GFLOPs / 2 (the "GFLOPs" of most papers and of mmcv's counter are
  these GMACs). Norms, activations, pooling and element-wise ops are not counted.
- ``latency (ms)``: median wall time of ``--runs`` forward passes after ``--warmup`` ones, eval
  mode, ``torch.no_grad()``, the backbones taking turns pass by pass; on the CPU with the
  printed number of intra-op threads (on a shared machine other processes make it noisy:
  compare within one run only); on CUDA between ``torch.cuda.synchronize()`` calls.
- ``train peak (MiB)``: one training step of the backbone alone: train mode (BatchNorm in
  training mode, ``frozen_stages`` from ``--frozen-stages``: -1 trains every stage), forward,
  loss = the sum of all outputs, backward into parameter gradients that start unallocated
  (``zero_grad(set_to_none=True)``); the input image does not require grad. The number is the
  peak of the bytes allocated during the step above what was allocated when it began: saved
  activations, outputs, parameter gradients and temporaries; the parameters, buffers and input
  that exist before the step are not in it.

  On the CPU it is measured with the torch profiler (``profile_memory=True``), which records
  every allocation (+bytes) and free (-bytes) of the CPU allocator; walking those ``[memory]``
  events in time order, the running sum's maximum is the peak; ``held after forward`` is the
  running sum when backward starts (what the forward pass keeps alive for backward). On CUDA
  they are ``torch.cuda.max_memory_allocated()`` and ``memory_allocated()`` after the forward
  pass, minus ``memory_allocated()`` before the step.
  (``tracemalloc`` cannot be used: torch's allocator bypasses Python's.)

  ``with_cp`` runs each residual / inverted-residual block under ``torch.utils.checkpoint``
  (its activations are recomputed in backward); VGG has no ``with_cp`` (n/a). ResNet and
  MobileNetV2 checkpoint a block only when its input requires grad: with ``frozen_stages=-1``
  the stem's output does, so every block is checkpointed; with frozen stages the first block
  after them is not.
- Cross-check (``--no-cross-check`` skips it): the same step under
  ``torch.distributed._tools.mem_tracker.MemTracker``, which does not read the allocator: it
  follows every tensor an op returns (a ``TorchDispatchMode``) and its storage's lifetime (weak
  references), and reports the peak of everything but parameters and buffers. It cannot see the
  temporaries a kernel allocates inside itself (e.g. the contiguous copy of the output gradient
  inside ``aten::convolution_backward``), so it reads a little lower: within ~2% without
  ``with_cp``, 2-18% lower with it, where the peak falls inside a convolution backward.

On a shared CPU pass ``--threads 1``: with more threads than free cores, intra-op threads wait
for each other and the latency grows several-fold and erratically.
"""
from __future__ import annotations

import argparse
import os.path as osp
import statistics
import sys
import time
import warnings
from typing import Callable

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import detkit.models  # noqa: E402,F401
from detkit.registry import MODELS  # noqa: E402

MIB = 2 ** 20
# The backbones of configs/retinanet_{r50,r50_se,mobilenetv2,vgg16}.py, and a ResNet-18.
BACKBONES: dict[str, dict] = {
    'ResNet-18': dict(type='ResNet', depth=18, out_indices=(0, 1, 2, 3)),
    'ResNet-50': dict(type='ResNet', depth=50, out_indices=(0, 1, 2, 3)),
    'ResNet-50 + SE': dict(type='ResNet', depth=50, out_indices=(0, 1, 2, 3),
                           plugins=[dict(cfg=dict(type='SEBlock', ratio=16),
                                         stages=(False, True, True, True),
                                         position='after_conv3')]),
    'MobileNetV2': dict(type='MobileNetV2', out_indices=(2, 4, 7)),
    'VGG16-BN': dict(type='VGG', depth=16, with_bn=True, out_indices=(3, 4)),
}
SUPPORTS_WITH_CP = ('ResNet', 'MobileNetV2')
BACKWARD_LABEL = 'benchmark_backward'


def build_backbone(cfg: dict, *, with_cp: bool, frozen_stages: int,
                   device: torch.device) -> nn.Module:
    """A backbone with random weights; ``with_cp`` only for the types that have it."""
    cfg = dict(cfg, frozen_stages=frozen_stages, norm_eval=False, init_cfg=None)
    if cfg['type'] in SUPPORTS_WITH_CP:
        cfg['with_cp'] = with_cp
    elif with_cp:
        raise ValueError(f"{cfg['type']} has no with_cp")
    return MODELS.build(cfg).to(device)


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass (2 per multiply-add; convolutions and matrix products)."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def forward_latency_ms(models: dict[str, nn.Module], x: torch.Tensor, runs: int,
                       warmup: int) -> dict[str, float]:
    """Median wall time of ``runs`` forward passes of each model, eval mode, no autograd.

    The models take turns (one pass each per round), so a change in the machine's load during
    the measurement affects them all alike.
    """
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        model.eval()
    with torch.no_grad():
        for index in range(warmup + runs):
            for name, model in models.items():
                synchronize(x.device)
                start = time.perf_counter()
                model(x)
                synchronize(x.device)
                if index >= warmup:
                    times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def train_step(model: nn.Module, x: torch.Tensor) -> None:
    """Forward, loss = sum of all outputs, backward (gradients start unallocated)."""
    model.zero_grad(set_to_none=True)
    loss = sum(out.sum() for out in model(x))
    with record_function(BACKWARD_LABEL):
        loss.backward()


def cpu_train_peak_bytes(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """``(peak, held after forward)`` bytes of one CPU training step, from profiler events.

    Returns:
        The running sum of the CPU allocator's allocations and frees, in time order, at its
        maximum and when backward starts; both relative to the start of the step.
    """
    model.train()
    train_step(model, x)  # warm-up: one-off allocations (e.g. oneDNN scratch) happen here
    model.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            train_step(model, x)
    events = prof.profiler.kineto_results.events()
    memory = sorted((e.start_ns(), e.nbytes()) for e in events
                    if e.name() == '[memory]' and e.device_type() == torch.autograd.DeviceType.CPU)
    backward_start = min(e.start_ns() for e in events if e.name() == BACKWARD_LABEL)
    running, peak, at_backward = 0, 0, 0
    for start_ns, nbytes in memory:
        running += nbytes
        peak = max(peak, running)
        if start_ns < backward_start:
            at_backward = running
    model.zero_grad(set_to_none=True)
    return peak, at_backward


def cuda_train_peak_bytes(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """``(peak, held after forward)`` bytes of one CUDA training step above its start."""
    model.train()
    train_step(model, x)
    model.zero_grad(set_to_none=True)
    torch.cuda.synchronize(x.device)
    torch.cuda.reset_peak_memory_stats(x.device)
    base = torch.cuda.memory_allocated(x.device)
    loss = sum(out.sum() for out in model(x))
    torch.cuda.synchronize(x.device)
    held = torch.cuda.memory_allocated(x.device) - base
    loss.backward()
    torch.cuda.synchronize(x.device)
    peak = torch.cuda.max_memory_allocated(x.device) - base
    del loss
    model.zero_grad(set_to_none=True)
    return peak, held


def memtracker_peak_bytes(model: nn.Module, x: torch.Tensor) -> int | None:
    """Peak activations + gradients + temporaries of one training step by MemTracker.

    Returns:
        The bytes (every category but parameters and buffers: activations, gradients,
        temporaries, ...), or ``None`` when this torch has no ``MemTracker``.
    """
    try:
        from torch.distributed._tools.mem_tracker import MemTracker
    except ImportError:
        return None
    model.train()
    model.zero_grad(set_to_none=True)
    tracker = MemTracker()
    tracker.track_external(model)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with tracker:
            train_step(model, x)
    snapshot = tracker.get_tracker_snapshot('peak')[x.device]
    model.zero_grad(set_to_none=True)
    return int(sum(value for kind, value in snapshot.items()
                   if getattr(kind, 'name', None) not in (None, 'PARAM', 'BUFFER')))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=512, help='input height and width')
    parser.add_argument('--runs', type=int, default=10, help='timed forward passes')
    parser.add_argument('--warmup', type=int, default=2, help='untimed forward passes first')
    parser.add_argument('--threads', type=int, default=None,
                        help='CPU intra-op threads (default: torch.get_num_threads())')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--frozen-stages', type=int, default=-1,
                        help='frozen_stages of every backbone in the memory step (-1: none)')
    parser.add_argument('--skip-memory', action='store_true',
                        help='parameters, FLOPs and latency only')
    parser.add_argument('--no-cross-check', action='store_true',
                        help='skip the MemTracker cross-check of the memory figures')
    parser.add_argument('--backbones', nargs='+', default=list(BACKBONES),
                        choices=list(BACKBONES), metavar='NAME',
                        help=f'a subset of {list(BACKBONES)}')
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: torch.cuda.is_available() is False')
    train_peak: Callable = (cuda_train_peak_bytes if device.type == 'cuda'
                            else cpu_train_peak_bytes)

    torch.manual_seed(0)
    x = torch.randn(1, 3, args.size, args.size, device=device)
    models = {name: build_backbone(BACKBONES[name], with_cp=False,
                                   frozen_stages=args.frozen_stages, device=device)
              for name in args.backbones}
    latencies = forward_latency_ms(models, x, args.runs, args.warmup)
    rows, memory_rows = [], []
    for name, model in models.items():
        cfg = BACKBONES[name]
        params = sum(p.numel() for p in model.parameters())
        flops = count_flops(model, x)
        variants = [] if args.skip_memory else [('no', model)]
        if cfg['type'] in SUPPORTS_WITH_CP and not args.skip_memory:
            variants.append(('yes', build_backbone(cfg, with_cp=True,
                                                   frozen_stages=args.frozen_stages,
                                                   device=device)))
        peaks = {}
        for with_cp, variant in variants:
            peak, held = train_peak(variant, x)
            tracked = None if args.no_cross_check else memtracker_peak_bytes(variant, x)
            peaks[with_cp] = peak
            memory_rows.append((name, with_cp, held, peak, tracked))
        rows.append((name, params, flops, latencies[name], peaks.get('no'), peaks.get('yes')))
        print(f'done: {name}', file=sys.stderr, flush=True)

    where = (f'{torch.get_num_threads()} CPU threads' if device.type == 'cpu'
             else torch.cuda.get_device_name(device))
    print(f'Backbones at 1x3x{args.size}x{args.size}, torch {torch.__version__}, {where}; '
          f'latency: median of {args.runs} forward passes after {args.warmup}; train peak: '
          f'frozen_stages={args.frozen_stages}, BatchNorm in training mode\n')
    print('| backbone | params (M) | GFLOPs | GMACs | latency (ms) | train peak (MiB) '
          '| with_cp (MiB) | with_cp saves |')
    print('|---|---:|---:|---:|---:|---:|---:|---:|')
    for name, params, flops, latency, peak, peak_cp in rows:
        no_cp = f'{peak / MIB:.0f}' if peak is not None else 'n/a'
        cp = f'{peak_cp / MIB:.0f}' if peak_cp is not None else 'n/a'
        saving = f'{1 - peak_cp / peak:.0%}' if peak_cp is not None else 'n/a'
        print(f'| {name} | {params / 1e6:.1f} | {flops / 1e9:.1f} | {flops / 2e9:.1f} '
              f'| {latency:.0f} | {no_cp} | {cp} | {saving} |')
    if args.skip_memory:
        return

    method = 'profiler' if device.type == 'cpu' else 'max_memory_allocated'
    print(f'\nTraining step memory (MiB above the start of the step): {method} peak, what the '
          f'forward pass leaves for backward, and the MemTracker cross-check')
    print(f'| backbone | with_cp | held after forward | peak ({method}) | peak (MemTracker) '
          f'| MemTracker / {method} |')
    print('|---|---|---:|---:|---:|---:|')
    for name, with_cp, held, peak, tracked in memory_rows:
        check = ('n/a', 'n/a') if tracked is None else (f'{tracked / MIB:.0f}',
                                                        f'{tracked / peak:.3f}')
        print(f'| {name} | {with_cp} | {held / MIB:.0f} | {peak / MIB:.0f} | {check[0]} '
              f'| {check[1]} |')


if __name__ == '__main__':
    main()
