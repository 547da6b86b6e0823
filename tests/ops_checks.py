"""Fixtures and checks shared by the compiled-kernel tests (focal loss, GroupSoftmax, RoIAlign)."""
from __future__ import annotations

import contextlib

import torch

TINY = 1e-30  # float32 results below this may flush to zero
HALF_BOUNDS = {torch.float16: (1e-3, 6e-8), torch.bfloat16: (8e-3, 1e-30)}


@contextlib.contextmanager
def num_threads(threads: int):
    """torch's intra-op threads (the CPU kernels' at::parallel_for uses them) set to
    ``threads``."""
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
