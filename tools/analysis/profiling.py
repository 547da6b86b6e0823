"""What the benchmark scripts measure besides time: peak memory, FLOPs and the machine's roof.

* :func:`cpu_peak_bytes`: the peak of the CPU allocator's bytes during one call, from the torch
  profiler's memory events (their running sum in time order, relative to the call's start).
* :func:`count_flops`: the FLOPs ``torch.utils.flop_counter`` counts in one call (convolutions
  and matrix products, forward and backward; 2 per multiply-add).
* :func:`conv_roof_gflops`: the best a 3x3 convolution reaches on this machine, in a dtype and
  the memory format it runs fastest in: the roof a detector's step is measured against (its
  GFLOPS can only approach it, since convolutions are ~90% of its FLOPs and time).
* :func:`operator_times`: where one call's time goes, operator by operator (``torch.profiler``),
  for ``benchmark.py --profile``.
"""
from __future__ import annotations

import statistics
import time
import warnings
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

# Shapes of the roof measurement: (channels in, channels out, height, width), batch 2: the FPN
# and head convolutions of a 512x640 input and a wide backbone one.
ROOF_SHAPES = ((256, 256, 64, 80), (256, 256, 32, 40), (512, 512, 32, 40))


def cpu_peak_bytes(call: Callable[[], object]) -> int:
    """The peak bytes the CPU allocator holds during ``call()`` above what it held before."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            call()
    events = prof.profiler.kineto_results.events()
    memory = sorted((e.start_ns(), e.nbytes()) for e in events
                    if e.name() == '[memory]' and e.device_type() == torch.autograd.DeviceType.CPU)
    running, peak = 0, 0
    for _, nbytes in memory:
        running += nbytes
        peak = max(peak, running)
    return peak


def count_flops(call: Callable[[], object]) -> int:
    """The FLOPs of one ``call()`` (convolutions and matrix products, 2 per multiply-add)."""
    with FlopCounterMode(display=False) as counter:
        call()
    return int(counter.get_total_flops())


def conv_roof_gflops(dtype: torch.dtype, device: str = 'cpu', repeats: int = 8) -> float:
    """The highest GFLOPS of a 3x3 convolution forward over :data:`ROOF_SHAPES` (batch 2,
    channels-last, median of ``repeats`` after up to two warm-up calls: as many as ``repeats``)."""
    best = 0.0
    generator = torch.Generator().manual_seed(0)
    for c_in, c_out, height, width in ROOF_SHAPES:
        x = torch.randn(2, c_in, height, width, generator=generator).to(
            device=device, dtype=dtype, memory_format=torch.channels_last)
        conv = torch.nn.Conv2d(c_in, c_out, 3, padding=1, bias=False).to(
            device=device, dtype=dtype, memory_format=torch.channels_last)
        flops = 2 * 2 * c_out * height * width * c_in * 9
        seconds = []
        with torch.no_grad():
            warmup = min(2, repeats)
            for index in range(repeats + warmup):
                if device != 'cpu':
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                conv(x)
                if device != 'cpu':
                    torch.cuda.synchronize(device)
                if index >= warmup:
                    seconds.append(time.perf_counter() - start)
        best = max(best, flops / statistics.median(seconds) / 1e9)
    return best


def operator_times(call: Callable[[], object],
                   device: str = 'cpu') -> list[tuple[str, float, int]]:
    """Where the time of one ``call()`` goes: ``(operator, self milliseconds, calls)`` for every
    operator ``torch.profiler`` records, the most expensive first.

    Self time is the time inside the operator itself, not in the operators it calls, so the
    rows add up to the call's time (less what runs outside any operator: Python, the
    profiler's own cost). On CUDA it is the device time of the kernels each operator launched.
    """
    cuda = torch.device(device).type == 'cuda'
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with profile(activities=activities) as prof:
            call()
            if cuda:
                torch.cuda.synchronize(device)
    rows = [(event.key,
             (event.self_device_time_total if cuda else event.self_cpu_time_total) / 1e3,
             event.count)
            for event in prof.key_averages()]
    return sorted(rows, key=lambda row: -row[1])
