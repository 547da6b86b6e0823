"""Keep freed CPU memory in the process, so that a detector's feature maps reuse it.

PyTorch allocates every CPU tensor with the C library's ``malloc``. glibc's defaults suit
programs that allocate little: a block above the *mmap threshold* (128 KiB at start, raised
to the size of the largest block freed, at most 32 MiB) is mapped fresh from the kernel and
unmapped when freed, and free memory above the *trim threshold* at the top of the heap is
given back. A detector allocates feature maps of 5-100 MB many times per image, so with the
defaults a large part of them are fresh pages, and the first write to each 4 KiB page is a
page fault. Faster R-CNN R50-FPN's RoI features alone, 2000 RoIs of 256x7x7 for 2 images, are
50 MB in bfloat16 and 100 MB in float32: above glibc's largest automatic threshold, so mapped
and unmapped on every batch. Measured for Faster R-CNN R50-FPN inference of 2 images of
512x640, median seconds per batch:

- float32 on a 2-core AVX2 EPYC, this module's calls against glibc's defaults, three pairs of
  processes run alternately: 2.41 / 2.49 / 2.66 s against 3.19 / 2.74 / 3.15 s. RetinaNet
  training (6.4-7.6 s per step either way) showed no difference beyond that machine's noise.
- bfloat16 (``--amp``) on a 2-core AVX512-BF16 EPYC, one run with the environment variables
  ``MALLOC_MMAP_THRESHOLD_`` (32 MiB) and ``MALLOC_TRIM_THRESHOLD_`` set: 0.814 -> 0.786 s;
  RetinaNet training 2.227 -> 2.217 s.

``tools/analysis/benchmark.py ... --default-allocator`` runs the benchmark with glibc's
defaults, to compare with a run without it on a given machine.

:func:`tune_cpu_allocator` raises both thresholds with ``mallopt``: blocks up to
:data:`MMAP_THRESHOLD` come from the heap and are reused, and up to :data:`TRIM_THRESHOLD` of
free heap stays with the process. The process then keeps the memory of its peak: what a
training or evaluation run uses again on the next iteration anyway. ``tools/train.py``,
``tools/test.py``, ``tools/demo.py`` and the benchmark call it at start (before the first
tensor; it applies to every later allocation); a program of your own calls it itself. This is
what PyTorch's CPU tuning guide obtains by preloading jemalloc or tcmalloc, without a second
allocator: other C libraries (musl, macOS, Windows) and an environment that sets glibc's
``MALLOC_*`` variables itself are left alone.
"""
from __future__ import annotations

import ctypes
import os
import platform

#: ``mallopt`` parameter numbers, from glibc's ``malloc.h``.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Blocks up to this size come from the heap (reused) instead of fresh mappings: above a
#: Faster R-CNN's largest map (100 MB for 2000 RoIs of 256x7x7 in float32 at 2 images).
MMAP_THRESHOLD = 256 * 2**20
#: Free memory at the top of the heap up to this size stays with the process.
TRIM_THRESHOLD = 2**30

# The environment variables through which glibc reads the same settings at start.
_ENVIRONMENT = ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_')


def tune_cpu_allocator() -> str:
    """Raise glibc's mmap and trim thresholds (module docstring); idempotent.

    Returns:
        What was done, for the tools' log: the two thresholds, or why nothing was changed (not
        glibc, the environment sets them, or ``mallopt`` refused a value).
    """
    if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
        return f'unchanged (the C library is not glibc: {platform.system()})'
    preset = [name for name in _ENVIRONMENT if name in os.environ]
    if 'glibc.malloc.' in os.environ.get('GLIBC_TUNABLES', ''):
        preset.append('GLIBC_TUNABLES')
    if preset:
        return f'unchanged ({preset[0]} is set in the environment)'
    try:
        mallopt = ctypes.CDLL('libc.so.6').mallopt
    except (OSError, AttributeError) as error:
        return f'unchanged (no mallopt in libc.so.6: {error})'
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        return f'unchanged (mallopt refused M_MMAP_THRESHOLD={MMAP_THRESHOLD})'
    if not mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD):
        return f'mmap threshold {MMAP_THRESHOLD >> 20} MiB (mallopt refused the trim threshold)'
    return (f'glibc malloc keeps freed memory: mmap threshold {MMAP_THRESHOLD >> 20} MiB, '
            f'trim threshold {TRIM_THRESHOLD >> 20} MiB')
