"""Fixtures and checks shared by the compiled-kernel tests (focal loss, GroupSoftmax, RoIAlign)."""
from __future__ import annotations

import contextlib
import os
import time

import pytest
import torch

from detkit.ops import _extension

TINY = 1e-30  # float32 results below this may flush to zero
HALF_BOUNDS = {torch.float16: (1e-3, 6e-8), torch.bfloat16: (8e-3, 1e-30)}


@pytest.fixture(scope='module')
def cpu_kernels():
    """The compiled CPU operators (compiled into the cache on first use); on CI a failure."""
    if not _extension.library('cpu').ensure(build=True):
        if os.environ.get('CI') or _extension.env_flag('DETKIT_REQUIRE_OPS'):
            pytest.fail(f"compiled CPU kernels did not load: {_extension.library('cpu').reason}")
        pytest.skip(f"compiled CPU kernels unavailable: {_extension.library('cpu').reason}")
    return torch.ops.detkit_cpu


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Kernel outputs start as NaN, so an element a kernel forgets to write fails the test."""
    monkeypatch.setattr(_extension, 'POISON_OUTPUTS', True)


@pytest.fixture
def gen():
    """A torch.Generator with a fresh seed, printed so that a failure can be replayed."""
    seed = int(os.environ.get('DETKIT_TEST_SEED', time.time_ns() % 2**31))
    print(f'DETKIT_TEST_SEED={seed}')
    return torch.Generator().manual_seed(seed)


@pytest.fixture(params=['baseline', 'avx2', 'avx512'])
def isa(request, cpu_kernels):
    """Run the test once per CPU instruction set this machine supports."""
    before = cpu_kernels.cpu_isa()
    if cpu_kernels.set_cpu_isa(request.param) != request.param:
        cpu_kernels.set_cpu_isa(before)
        pytest.skip(f'this CPU lacks {request.param}')
    yield request.param
    cpu_kernels.set_cpu_isa(before)


@contextlib.contextmanager
def num_threads(threads: int):
    """torch's intra-op threads (which the CPU kernels' at::parallel_for uses) set to ``threads``."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def assert_close(actual, expected, rtol, atol=TINY, what=''):
    """Elementwise |actual - expected| <= rtol |expected| + atol, with a readable failure."""
    actual = actual.detach().double().cpu()
    expected = expected.detach().double().cpu()
    assert actual.shape == expected.shape, f'{what}: shape {actual.shape} != {expected.shape}'
    assert torch.isfinite(actual).all(), f'{what}: non-finite values (unwritten or overflow)'
    excess = (actual - expected).abs() - (rtol * expected.abs() + atol)
    if excess.numel() and excess.max() > 0:
        i = int(excess.argmax())
        raise AssertionError(
            f'{what}: element {i}: {actual.flatten()[i].item()!r} vs reference '
            f'{expected.flatten()[i].item()!r} (rtol {rtol}, atol {atol})')
