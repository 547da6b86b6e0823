"""What the benchmark scripts measure besides time: peak memory, FLOPs and the machine's roof.

* :func:`cpu_peak_bytes`: the peak of the CPU allocator's bytes during one call, from the torch
  profiler's memory events (their running sum in time order, relative to the call's start).
* :func:`count_flops`: the FLOPs ``torch.utils.flop_counter`` counts in one call (convolutions
  and matrix products, forward and backward; 2 per multiply-add).
* :func:`conv_roof_gflops`: the best a 3x3 convolution reaches on this machine, in a dtype and
  the memory format it runs fastest in: the roof a detector's step is measured against (its
  GFLOPS can only approach it, since convolutions are ~90% of its FLOPs and time).
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
