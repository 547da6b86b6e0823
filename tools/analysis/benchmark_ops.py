"""Benchmark detkit.ops' fused losses against PyTorch implementations, forward + backward.

For each device and dtype it prints one table per op: the time of forward + backward (fastest
of ``--repeats`` interleaved runs) for detkit's compiled kernel, the pure-PyTorch reference,
``torchvision.ops.sigmoid_focal_loss`` (focal loss only; its one-hot float targets are built
outside the timed region) and ``torch.compile`` of the reference; the achieved bandwidth
against the minimal traffic (the inputs read once and the gradient written once); and that
bandwidth as a share of the device's copy bandwidth, measured in the same run by copying a
256 MiB tensor. The row ``detkit forward (loss + grad)`` times the fused forward alone, which is
all the memory traffic of the kernel (the backward then only scales the stored gradient, or on
CPU returns it as is when the loss's incoming gradient is 1).

Usage:
    python tools/analysis/benchmark_ops.py                      # CPU, and CUDA when present
    python tools/analysis/benchmark_ops.py --device cuda --dtypes float32 float16 bfloat16
    python tools/analysis/benchmark_ops.py --no-compile --repeats 3 --threads 1
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from detkit.ops import (  # noqa: E402
    group_softmax_cross_entropy,
    group_softmax_cross_entropy_reference,
    info,
    sigmoid_focal_loss,
    sigmoid_focal_loss_reference,
)

FOCAL_SHAPES = ((400000, 80), (100000, 80))
GROUP_SHAPES = ((8192, 84), (65536, 1204))
DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_once_ms(fn: Callable[[], None], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return (time.perf_counter() - start) * 1e3


def fastest_ms(runners: dict[str, Callable[[], None]], device: torch.device,
               repeats: int) -> dict[str, float]:
    """The fastest of ``repeats`` runs of each runner, in milliseconds.

    The runners take turns (one run each per round), so that a machine shared with other work
    slows them alike; the fastest run is the one that other work disturbed least.
    """
    for fn in runners.values():  # warm-up: allocator, caches, lazy initialisation
        fn()
    best = {name: float('inf') for name in runners}
    for _ in range(repeats):
        for name, fn in runners.items():
            best[name] = min(best[name], time_once_ms(fn, device))
    return best


def copy_bandwidth(device: torch.device, repeats: int) -> float:
    """GB/s of ``dst.copy_(src)`` on a 256 MiB float32 tensor (bytes read + bytes written)."""
    src = torch.randn(64 * 2**20, device=device)
    dst = torch.empty_like(src)
    ms = fastest_ms({'copy': lambda: dst.copy_(src)}, device, max(repeats, 5))['copy']
    return 2 * src.numel() * src.element_size() / (ms * 1e-3) / 1e9


def forward_backward(loss_fn: Callable[[torch.Tensor], torch.Tensor],
                     logits: torch.Tensor) -> Callable[[], None]:
    x = logits.detach().clone().requires_grad_()

    def run() -> None:
        x.grad = None
        loss_fn(x).backward()
    return run


def forward_only(loss_fn: Callable[[torch.Tensor], torch.Tensor],
                 logits: torch.Tensor) -> Callable[[], None]:
    x = logits.detach().clone().requires_grad_()

    def run() -> None:
        loss_fn(x)
    return run


def try_compile(fn: Callable, example: torch.Tensor) -> tuple[Callable | None, str]:
    """torch.compile ``fn`` and run it once forward + backward; (None, reason) if that fails."""
    try:
        compiled = torch.compile(fn, dynamic=False)
        x = example.detach().clone().requires_grad_()
        compiled(x).backward()
        return compiled, ''
    except Exception as error:  # inductor needs a working compiler toolchain; report any failure
        return None, f'{type(error).__name__}: {str(error).strip().splitlines()[0][:120]}'


def focal_cases(num_rows: int, num_classes: int, dtype: torch.dtype, device: torch.device):
    logits = torch.randn(num_rows, num_classes, device=device).to(dtype)
    labels = torch.randint(0, num_classes + 1, (num_rows,), device=device)
    labels[torch.rand(num_rows, device=device) < 0.05] = -1
    avg = torch.tensor(1000.0, device=device)
    onehot = F.one_hot(labels.clamp(min=0), num_classes + 1)[:, :num_classes].to(dtype)
    valid = (labels >= 0)[:, None].to(dtype)
    from torchvision.ops import sigmoid_focal_loss as torchvision_focal_loss

    def reference(x):
        return sigmoid_focal_loss_reference(x, labels).float().sum() / avg

    cases = {
        'detkit': lambda x: sigmoid_focal_loss(x, labels, avg_factor=avg),
        'reference': reference,
        'torchvision': lambda x: (torchvision_focal_loss(x, onehot, reduction='none') * valid
                                  ).float().sum() / avg,
    }
    element = logits.element_size()
    minimal_bytes = 2 * logits.numel() * element + labels.numel() * 8
    return logits, cases, reference, minimal_bytes


def group_cases(num_rows: int, num_columns: int, dtype: torch.dtype, device: torch.device):
    logits = torch.randn(num_rows, num_columns, device=device).to(dtype)
    targets = torch.randint(-1, num_columns, (num_rows,), device=device)
    dataset_index = torch.randint(0, 2, (num_rows,), device=device)
    table = torch.randint(0, 4, (2, num_columns), device=device)
    table[:, -1] = 0

    def reference(x):
        return group_softmax_cross_entropy_reference(x, targets, dataset_index, table)

    cases = {
        'detkit': lambda x: group_softmax_cross_entropy(x, targets, dataset_index, table),
        'reference': reference,
    }
    minimal_bytes = 2 * logits.numel() * logits.element_size() + 2 * num_rows * 8
    return logits, cases, reference, minimal_bytes


def run_table(title: str, shapes, make_cases, dtype: torch.dtype, device: torch.device,
              bandwidth: float, repeats: int, compile_reference: bool) -> None:
    print(f'\n### {title} -- {device.type}, {str(dtype).removeprefix("torch.")}')
    print('| shape | implementation | fwd+bwd ms | vs detkit | GB/s (minimal bytes) | '
          '% of copy BW |')
    print('|---|---|---:|---:|---:|---:|')
    for shape in shapes:
        logits, cases, reference, minimal_bytes = make_cases(*shape, dtype, device)
        if compile_reference:
            compiled, reason = try_compile(reference, logits)
            if compiled is not None:
                cases['torch.compile(reference)'] = compiled
            else:
                print(f'| {shape} | torch.compile(reference) | skipped: {reason} | | | |')
        runners = {name: forward_backward(fn, logits) for name, fn in cases.items()}
        # The fused kernel alone: its forward reads the inputs once and writes the gradient.
        runners['detkit forward (loss + grad)'] = forward_only(cases['detkit'], logits)
        results = fastest_ms(runners, device, repeats)
        for name, ms in results.items():
            gbps = minimal_bytes / (ms * 1e-3) / 1e9
            ratio = ms / results['detkit']
            print(f'| {shape} | {name} | {ms:.2f} | {ratio:.2f}x | {gbps:.1f} | '
                  f'{100 * gbps / bandwidth:.0f}% |')
        del logits, cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', nargs='+', default=None,
                        help='devices to run on (default: cpu, and cuda when available)')
    parser.add_argument('--dtypes', nargs='+', default=None, choices=sorted(DTYPES),
                        help='default: float32 on CPU; float32 float16 bfloat16 on CUDA')
    parser.add_argument('--repeats', type=int, default=7,
                        help='timed runs per case (the fastest is reported)')
    parser.add_argument('--no-compile', action='store_true', help='skip torch.compile')
    parser.add_argument('--ops', nargs='+', default=['focal', 'group'],
                        choices=['focal', 'group'])
    parser.add_argument('--threads', type=int, default=None,
                        help='CPU threads (torch.set_num_threads); default: torch\'s choice')
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = args.device or (['cpu', 'cuda'] if torch.cuda.is_available() else ['cpu'])
    warnings.simplefilter('once')
    report = info(load=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; detkit kernels: "
          f"cpu {'loaded' if report['cpu']['loaded'] else 'not loaded'} "
          f"({report['cpu'].get('isa')}), cuda "
          f"{'loaded' if report['cuda']['loaded'] else 'not loaded'}")
    for name in devices:
        device = torch.device(name)
        bandwidth = copy_bandwidth(device, args.repeats)
        label = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'
        print(f'\n## {label}: measured copy bandwidth {bandwidth:.1f} GB/s (read + write)')
        dtypes = args.dtypes or (['float32'] if device.type == 'cpu'
                                 else ['float32', 'float16', 'bfloat16'])
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            if 'focal' in args.ops:
                run_table('sigmoid focal loss', FOCAL_SHAPES, focal_cases, dtype, device,
                          bandwidth, args.repeats, not args.no_compile)
            if 'group' in args.ops:
                run_table('GroupSoftmax cross entropy', GROUP_SHAPES, group_cases, dtype, device,
                          bandwidth, args.repeats, not args.no_compile)


if __name__ == '__main__':
    main()
