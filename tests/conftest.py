"""Fixtures shared by several test modules (pytest finds them here without an import)."""
from __future__ import annotations

import os
import time

import pytest
import torch

from detkit.ops import _extension

from detector_checks import build_small_retinanet, synthetic_batch


@pytest.fixture(scope='module')
def cpu_kernels():
    """The compiled CPU operators (compiled into the cache on first use); on CI a failure."""
    if not _extension.library('cpu').ensure(build=True):
        if os.environ.get('CI') or _extension.env_flag('DETKIT_REQUIRE_OPS'):
            pytest.fail(f"compiled CPU kernels did not load: {_extension.library('cpu').reason}")
        pytest.skip(f"compiled CPU kernels unavailable: {_extension.library('cpu').reason}")
    return torch.ops.detkit_cpu


@pytest.fixture
def poisoned_outputs(monkeypatch):
    """Kernel outputs start as NaN, so an element a kernel forgets to write fails the test
    (the kernel tests use it for every test: ``pytestmark``)."""
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


@pytest.fixture(scope='module')
def trained():
    """detector_checks.py's small RetinaNet after 40 SGD steps on its synthetic batch, and the
    loss history (one per test module)."""
    model = build_small_retinanet()
    images, samples = synthetic_batch()
    batch = model.data_preprocessor(dict(inputs=images, data_samples=samples), True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train()
    history = []
    for _ in range(40):
        losses = model(batch['inputs'], batch['data_samples'], mode='loss')
        total = losses['loss_cls'] + losses['loss_bbox']
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in dict(losses, loss=total).items()})
    model.eval()
    return model, images, samples, history
