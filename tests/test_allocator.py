"""tune_cpu_allocator: freed feature maps are reused instead of being mapped fresh (counted in
page faults), and an environment that configures glibc's malloc itself is left alone."""
from __future__ import annotations

import ctypes
import os
import os.path as osp
import platform
import subprocess
import sys

import pytest

from detkit.engine.allocator import tune_cpu_allocator

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

# Three 20 MB maps and one 48 MB map allocated, written and freed, like a detector's feature maps
# from one image to the next; the page faults of one such cycle, before and after tuning.
CYCLES = """
import resource, sys, torch
from detkit.engine.allocator import tune_cpu_allocator

def cycle():
    maps = [torch.ones(5 * 2**20) for _ in range(3)] + [torch.ones(12 * 2**20)]
    del maps

def faults_per_cycle(n=4):
    cycle()
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        cycle()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / n

before = faults_per_cycle()
message = tune_cpu_allocator()
print(before, faults_per_cycle(), message, sep='|')
"""


def run_cycles(**environment: str) -> tuple[float, float, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith('MALLOC_') and key != 'GLIBC_TUNABLES'}
    env.update(PYTHONPATH=REPO, OMP_NUM_THREADS='1', **environment)
    out = subprocess.run([sys.executable, '-c', CYCLES], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout.strip().splitlines()[-1]
    before, after, message = out.split('|')
    return float(before), float(after), message


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='tunes glibc malloc only')
def test_freed_maps_are_reused_after_tuning():
    before, after, message = run_cycles()
    assert message == ('glibc malloc keeps freed memory: mmap threshold 256 MiB, '
                       'trim threshold 1024 MiB')
    pages = (3 * 20 + 48) * 2**20 // 4096           # 27648 pages written per cycle
    assert before > 0.5 * pages                     # glibc's defaults: 63-86% fresh pages
    assert after < 0.25 * pages                     # then: 6-16% (most maps reused)


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='tunes glibc malloc only')
def test_an_environment_that_sets_malloc_is_left_alone(monkeypatch):
    before, after, message = run_cycles(MALLOC_TRIM_THRESHOLD_='131072')
    assert message == 'unchanged (MALLOC_TRIM_THRESHOLD_ is set in the environment)'
    assert after > 0.9 * before                     # nothing changed
    # In this process: a preset environment returns before mallopt is looked up.
    for name in ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('GLIBC_TUNABLES', 'glibc.malloc.mmap_threshold=65536')
    monkeypatch.setattr(ctypes, 'CDLL', None)       # a call would raise TypeError
    assert tune_cpu_allocator() == 'unchanged (GLIBC_TUNABLES is set in the environment)'
