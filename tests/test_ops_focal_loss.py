"""detkit.ops.sigmoid_focal_loss: the compiled kernels against the float64 reference.

Inputs are random on every run; the seed is printed (pytest shows it for a failing test) and
DETKIT_TEST_SEED=<seed> replays a run. Every output buffer handed to a kernel starts as NaN
(``_extension.POISON_OUTPUTS``), so an element a kernel does not write fails the comparison.

Error bounds (elementwise, against float64 computed from the same inputs):
- float32: relative 1e-5 (measured about 2e-6), loss and gradient.
- float16: relative 1e-3 + absolute 6e-8 (one rounding to float16, whose subnormal step is
  6e-8); bfloat16: relative 8e-3 (one rounding to 8 bits). Summed losses are computed and summed
  in float32: relative 1e-5 in every dtype.
"""
from __future__ import annotations

import os
import warnings

import pytest
import torch

from detkit.ops import (
    OpsFallbackWarning,
    _extension,
    build,
    info,
    sigmoid_focal_loss,
    sigmoid_focal_loss_reference,
)
from detkit.ops.__main__ import main as ops_main

from ops_checks import HALF_BOUNDS, TINY, assert_close, num_threads

pytestmark = pytest.mark.usefixtures('poisoned_outputs')  # conftest.py

def random_inputs(gen, num_rows, num_classes, dtype=torch.float32, scale=4.0,
                  device='cpu'):
    logits = (torch.randn(num_rows, num_classes, generator=gen) * scale).to(dtype)
    labels = torch.randint(-1, num_classes + 1, (num_rows,), generator=gen)
    weight = torch.rand(num_rows, generator=gen) + 0.5
    return logits.to(device), labels.to(device), weight.to(device)


def reference_and_grad(logits, labels, gamma, alpha, weight=None):
    """float64 elementwise loss and d(sum loss)/d(logits) of the reference."""
    x = logits.detach().double().requires_grad_()
    loss = sigmoid_focal_loss_reference(x, labels, gamma, alpha,
                                        None if weight is None else weight.double())
    loss.sum().backward()
    return loss.detach(), x.grad


def kernel_and_grad(logits, labels, gamma, alpha, weight=None, reduction='none', **kwargs):
    x = logits.detach().clone().requires_grad_()
    loss = sigmoid_focal_loss(x, labels, gamma, alpha, weight, reduction=reduction, **kwargs)
    loss.sum().backward()
    return loss.detach(), x.grad


def test_compiled_cpu_kernel_loaded_on_ci():
    """On CI (CI set) or with DETKIT_REQUIRE_OPS=1 the compiled kernel must load: no fallback."""
    required = bool(os.environ.get('CI')) or _extension.env_flag('DETKIT_REQUIRE_OPS')
    loaded = _extension.library('cpu').ensure(build=True)
    if required:
        assert loaded, f"CPU kernels did not load: {_extension.library('cpu').reason}"
        assert info()['cpu']['loaded'] is True
    elif not loaded:
        pytest.skip(f"compiled CPU kernels unavailable here: {_extension.library('cpu').reason}")
    assert torch.ops.detkit_cpu.cpu_isa() in ('baseline', 'avx2', 'avx512')


@pytest.mark.parametrize('gamma', [2.0, 0.0, 1.5])
def test_float32_matches_float64_reference_per_isa(gen, isa, gamma):
    logits, labels, weight = random_inputs(gen, 1000, 81)
    loss, grad = kernel_and_grad(logits, labels, gamma, 0.25, weight)
    ref_loss, ref_grad = reference_and_grad(logits, labels, gamma, 0.25, weight)
    assert_close(loss, ref_loss, 1e-5, what=f'{isa} loss')
    assert_close(grad, ref_grad, 1e-5, what=f'{isa} grad')


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_rows_split_over_threads_give_the_same_bits(gen, cpu_kernels, dtype):
    # 5000 rows of 80 classes are 25 grains of 204 rows: two threads take a share each.
    assert cpu_kernels.parallel_backend() == 'openmp'
    logits, labels, weight = random_inputs(gen, 5000, 80, dtype)
    results = {}
    for threads in (1, 2):
        with num_threads(threads):
            results[threads] = kernel_and_grad(logits, labels, 2.0, 0.25, weight)
            results[threads] += (sigmoid_focal_loss(logits, labels, 2.0, 0.25, weight,
                                                    reduction='sum'),)
    for one, two in zip(results[1], results[2]):
        assert torch.equal(one, two)


@pytest.mark.parametrize('shape', [(517, 3), (33, 7), (64, 80), (7, 1), (1, 81), (1001, 16)])
def test_shapes_not_multiples_of_vector_width_or_grain(gen, cpu_kernels, shape):
    logits, labels, weight = random_inputs(gen, *shape)
    for reduction in ('none', 'sum'):
        loss, grad = kernel_and_grad(logits, labels, 2.0, 0.25, weight, reduction)
        ref_loss, ref_grad = reference_and_grad(logits, labels, 2.0, 0.25, weight)
        expected = ref_loss if reduction == 'none' else ref_loss.sum()
        assert_close(loss, expected, 1e-5, what=f'{shape} {reduction} loss')
        assert_close(grad, ref_grad, 1e-5, what=f'{shape} {reduction} grad')


def test_reductions_and_avg_factor(gen, cpu_kernels):
    logits, labels, weight = random_inputs(gen, 300, 20)
    ref, _ = reference_and_grad(logits, labels, 2.0, 0.25, weight)
    avg = torch.tensor(17.0)
    cases = {
        ('sum', None): ref.sum(),
        ('sum', 'tensor'): ref.sum() / 17,
        ('sum', 'float'): ref.sum() / 17,
        ('mean', None): ref.sum() / ref.numel(),
        ('mean', 'tensor'): ref.sum() / 17,
    }
    for (reduction, kind), expected in cases.items():
        factor = {None: None, 'tensor': avg, 'float': 17.0}[kind]
        out = sigmoid_focal_loss(logits, labels, weight=weight, avg_factor=factor,
                                 reduction=reduction)
        assert out.shape == () and out.dtype == torch.float32
        assert_close(out, expected, 1e-5, what=f'{reduction} avg_factor={kind}')
    # d(sum / avg)/dx = grad / avg
    x = logits.clone().requires_grad_()
    sigmoid_focal_loss(x, labels, weight=weight, avg_factor=avg).backward()
    _, ref_grad = reference_and_grad(logits, labels, 2.0, 0.25, weight)
    assert_close(x.grad, ref_grad / 17, 1e-5, what='grad / avg_factor')
    y = logits.clone().requires_grad_()
    (3 * sigmoid_focal_loss(y, labels, weight=weight, avg_factor=17.0, reduction='mean')
     ).backward()
    assert_close(y.grad, ref_grad * 3 / 17, 1e-5, what='grad of 3 * mean / float avg_factor')


def test_empty_input(cpu_kernels):
    for reduction, shape in (('none', (0, 5)), ('sum', ()), ('mean', ())):
        x = torch.zeros(0, 5, requires_grad=True)
        out = sigmoid_focal_loss(x, torch.zeros(0, dtype=torch.long), reduction=reduction,
                                 avg_factor=torch.tensor(1.0) if reduction == 'sum' else None)
        assert out.shape == shape
        assert float(out.detach().sum()) == 0.0
        out.sum().backward()
        assert x.grad.shape == (0, 5)


def test_ignored_rows_give_zero_and_background_rows_match(gen, cpu_kernels):
    logits, _, _ = random_inputs(gen, 50, 9)
    ignored = torch.full((50,), -1)
    loss, grad = kernel_and_grad(logits, ignored, 2.0, 0.25)
    assert torch.equal(loss, torch.zeros(50, 9)) and torch.equal(grad, torch.zeros(50, 9))
    background = torch.full((50,), 9)
    loss, grad = kernel_and_grad(logits, background, 2.0, 0.25)
    ref_loss, ref_grad = reference_and_grad(logits, background, 2.0, 0.25)
    assert_close(loss, ref_loss, 1e-5, what='background loss')
    assert_close(grad, ref_grad, 1e-5, what='background grad')


@pytest.mark.parametrize('gamma', [2.0, 1.5, 0.0])
def test_extreme_logits_stay_finite(cpu_kernels, gamma):
    values = torch.tensor([80.0, -80.0, 1000.0, -1000.0, 1e30, -1e30, 0.0, 88.0, -88.0, 104.0])
    logits = values.repeat(12, 1)
    labels = torch.arange(12) - 1  # -1 (ignored), positives 0..9, 10 (background)
    loss, grad = kernel_and_grad(logits, labels, gamma, 0.25)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    ref_loss, ref_grad = reference_and_grad(logits, labels, gamma, 0.25)
    assert_close(loss, ref_loss, 1e-5, what='extreme loss')
    assert_close(grad, ref_grad, 1e-5, what='extreme grad')
    # Row 2 has label 1, whose logit is -80: a confident miss costs alpha * 80.
    assert loss[2, 1].item() == pytest.approx(0.25 * 80, rel=1e-6)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_types_within_documented_bounds(gen, cpu_kernels, dtype):
    logits, labels, weight = random_inputs(gen, 300, 81, dtype=dtype)
    rtol, atol = HALF_BOUNDS[dtype]
    loss, grad = kernel_and_grad(logits, labels, 2.0, 0.25, weight)
    ref_loss, ref_grad = reference_and_grad(logits, labels, 2.0, 0.25, weight)
    assert loss.dtype == dtype and grad.dtype == dtype
    assert_close(loss, ref_loss, rtol, atol, what=f'{dtype} loss')
    assert_close(grad, ref_grad, rtol, atol, what=f'{dtype} grad')
    total = sigmoid_focal_loss(logits, labels, weight=weight)
    assert total.dtype == torch.float32
    assert_close(total, ref_loss.sum(), 1e-5, what=f'{dtype} summed loss')


def test_gradcheck_float64(gen, cpu_kernels):
    logits, labels, weight = random_inputs(gen, 6, 5, dtype=torch.float64, scale=2.0)
    labels[:3] = torch.tensor([-1, 5, 2])
    for gamma, reduction in ((2.0, 'none'), (1.5, 'sum'), (0.0, 'mean')):
        x = logits.clone().requires_grad_()
        assert torch.autograd.gradcheck(
            lambda t: sigmoid_focal_loss(t, labels, gamma, 0.25, weight.double(),
                                         reduction=reduction), (x,))


def test_no_grad_path_and_retain_graph(gen, cpu_kernels):
    logits, labels, weight = random_inputs(gen, 100, 10)
    with torch.no_grad():
        plain = sigmoid_focal_loss(logits, labels, weight=weight)
    x = logits.clone().requires_grad_()
    loss = sigmoid_focal_loss(x, labels, weight=weight, avg_factor=torch.tensor(4.0))
    assert_close(loss * 4, plain, 1e-6, what='no-grad vs grad path')
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    (2 * loss).backward(retain_graph=True)  # the stored gradient survives the first backward
    assert_close(x.grad, 3 * first, 1e-6, what='second backward')
    loss.backward(retain_graph=True)  # grad_output 1: the stored gradient itself is handed out
    loss.backward()
    assert_close(x.grad, 5 * first, 1e-6, what='fourth backward')
    y = logits.clone().requires_grad_()
    (g1,) = torch.autograd.grad(sigmoid_focal_loss(y, labels, weight=weight), y)
    assert_close(g1, first * 4, 1e-6, what='autograd.grad')


def test_bad_inputs_raise_clear_errors(cpu_kernels):
    logits = torch.zeros(4, 3)
    with pytest.raises(ValueError, match=r'labels must lie in \[-1, 3\].*row 2 has 7'):
        sigmoid_focal_loss(logits, torch.tensor([0, 1, 7, 3]))
    with pytest.raises(ValueError, match=r'row 0 has -2'):
        sigmoid_focal_loss(logits, torch.tensor([-2, 1, 0, 3]))
    with pytest.raises(ValueError, match=r'logits must be a tensor of shape \(N, C\)'):
        sigmoid_focal_loss(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r'labels must be an int64 tensor of shape \(4,\)'):
        sigmoid_focal_loss(logits, torch.zeros(4))
    with pytest.raises(ValueError, match=r'weight must be a float tensor of shape \(4,\)'):
        sigmoid_focal_loss(logits, torch.zeros(4, dtype=torch.long), weight=torch.ones(4, 3))
    with pytest.raises(ValueError, match='reduction must be one of'):
        sigmoid_focal_loss(logits, torch.zeros(4, dtype=torch.long), reduction='avg')
    with pytest.raises(ValueError, match='avg_factor=0 must be > 0'):
        sigmoid_focal_loss(logits, torch.zeros(4, dtype=torch.long), avg_factor=0)
    with pytest.raises(ValueError, match='gamma >= 0'):
        sigmoid_focal_loss(logits, torch.zeros(4, dtype=torch.long), gamma=-1.0)
    with pytest.raises(TypeError, match='float32, float64, float16 or bfloat16'):
        sigmoid_focal_loss(logits.long(), torch.zeros(4, dtype=torch.long))


def test_kernel_writes_every_element_of_preallocated_outputs(gen, cpu_kernels):
    """Direct call of the operator with NaN-filled outputs, both output layouts."""
    logits, labels, weight = random_inputs(gen, 77, 13)
    loss = torch.full((77, 13), float('nan'))
    grad = torch.full((77, 13), float('nan'))
    cpu_kernels.sigmoid_focal_loss_forward(logits, labels, weight, 2.0, 0.25, loss, grad)
    row_loss = torch.full((77,), float('nan'))
    cpu_kernels.sigmoid_focal_loss_forward(logits, labels, None, 2.0, 0.25, row_loss, None)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    ref_loss, ref_grad = reference_and_grad(logits, labels, 2.0, 0.25, weight)
    assert_close(loss, ref_loss, 1e-5, what='loss_out')
    assert_close(grad, ref_grad, 1e-5, what='grad_out')
    assert_close(row_loss, reference_and_grad(logits, labels, 2.0, 0.25)[0].sum(1), 1e-5,
                 what='row sums')


def test_fallback_warns_once_and_matches_reference(gen, monkeypatch):
    monkeypatch.delenv('DETKIT_REQUIRE_OPS', raising=False)
    monkeypatch.setenv('DETKIT_OPS_DISABLE', '1')
    monkeypatch.setitem(_extension._LIBRARIES, 'cpu', _extension._Library('cpu'))
    monkeypatch.setattr(_extension, '_WARNED', set())
    logits, labels, weight = random_inputs(gen, 40, 6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        first = sigmoid_focal_loss(logits, labels, weight=weight, reduction='none')
        sigmoid_focal_loss(logits, labels, weight=weight)
    fallback = [w for w in caught if issubclass(w.category, OpsFallbackWarning)]
    assert len(fallback) == 1 and 'DETKIT_OPS_DISABLE' in str(fallback[0].message)
    assert_close(first, reference_and_grad(logits, labels, 2.0, 0.25, weight)[0], 1e-5)
    monkeypatch.setenv('DETKIT_REQUIRE_OPS', '1')
    with pytest.raises(RuntimeError, match='DETKIT_REQUIRE_OPS=1'):
        sigmoid_focal_loss(logits, labels)


def test_missing_compiler_falls_back_with_one_warning(gen, monkeypatch, tmp_path):
    monkeypatch.setenv('CXX', '/nonexistent/c++')
    monkeypatch.setenv('DETKIT_OPS_CACHE', str(tmp_path))
    monkeypatch.delenv('DETKIT_REQUIRE_OPS', raising=False)
    library = _extension._Library('cpu')
    monkeypatch.setitem(_extension._LIBRARIES, 'cpu', library)
    monkeypatch.setattr(_extension, '_WARNED', set())
    logits, labels, _ = random_inputs(gen, 30, 4)
    with pytest.warns(OpsFallbackWarning, match='no C\\+\\+ compiler found'):
        out = sigmoid_focal_loss(logits, labels, reduction='none')
    assert library.status().loaded is False and 'no C++ compiler' in library.reason
    assert_close(out, reference_and_grad(logits, labels, 2.0, 0.25)[0], 1e-5)


def test_ci_guard_fails_when_kernels_do_not_load(monkeypatch):
    """The CI guard itself: with CI=true and kernels that cannot load, the guard test fails."""
    monkeypatch.setenv('CI', 'true')
    monkeypatch.setenv('DETKIT_OPS_DISABLE', '1')
    monkeypatch.setitem(_extension._LIBRARIES, 'cpu', _extension._Library('cpu'))
    with pytest.raises(AssertionError, match='CPU kernels did not load: disabled by '
                                             'DETKIT_OPS_DISABLE'):
        test_compiled_cpu_kernel_loaded_on_ci()


def test_build_without_cuda_toolkit_builds_cpu_only(cpu_kernels, monkeypatch):
    monkeypatch.setattr(_extension, 'find_cuda_home', lambda: None)
    results = build()
    assert results['cpu'].loaded is True and results['cuda'] is None
    assert 'no CUDA toolkit found' in _extension._Library('cuda').unavailable_reason()


def test_info_and_cli_report_loaded_kernels(cpu_kernels, capsys):
    report = info()
    assert report['cpu']['loaded'] is True and report['cpu']['compiled'] is True
    assert report['cpu']['isa'] in ('baseline', 'avx2', 'avx512')
    assert set(report['cuda']) >= {'compiled', 'loaded', 'reason', 'arch_list', 'nvcc'}
    assert ops_main(['info']) == 0
    out = capsys.readouterr().out
    assert 'cpu  kernels: loaded' in out and 'cuda kernels:' in out


# ---- CUDA: skipped without a GPU ----------------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


@cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize('shape', [(4000, 80), (517, 3), (33, 7), (1000, 81), (5, 1)])
def test_cuda_matches_float64_reference(gen, dtype, shape):
    logits, labels, weight = random_inputs(gen, *shape, dtype=dtype, device='cuda')
    rtol, atol = HALF_BOUNDS.get(dtype, (1e-5, TINY))
    ref_loss, ref_grad = reference_and_grad(logits.cpu(), labels.cpu(), 2.0, 0.25,
                                            weight.cpu())
    loss, grad = kernel_and_grad(logits, labels, 2.0, 0.25, weight)
    assert loss.is_cuda and loss.dtype == dtype
    assert_close(loss, ref_loss, rtol, atol, what=f'cuda {dtype} loss')
    assert_close(grad, ref_grad, rtol, atol, what=f'cuda {dtype} grad')
    total, grad_sum = kernel_and_grad(logits, labels, 2.0, 0.25, weight, reduction='sum')
    assert_close(total, ref_loss.sum(), 1e-5, what=f'cuda {dtype} sum')
    assert_close(grad_sum, ref_grad, rtol, atol, what=f'cuda {dtype} grad of sum')


@cuda
def test_cuda_extreme_empty_and_invalid():
    values = torch.tensor([80.0, -80.0, 1000.0, -1000.0, 1e30, -1e30, 0.0, 88.0])
    logits = values.repeat(10, 1).cuda()
    labels = (torch.arange(10) - 1).cuda()
    loss, grad = kernel_and_grad(logits, labels, 2.0, 0.25)
    ref_loss, ref_grad = reference_and_grad(logits.cpu(), labels.cpu(), 2.0, 0.25)
    assert_close(loss, ref_loss, 1e-5, what='cuda extreme loss')
    assert_close(grad, ref_grad, 1e-5, what='cuda extreme grad')
    empty = sigmoid_focal_loss(torch.zeros(0, 4, device='cuda'),
                               torch.zeros(0, dtype=torch.long, device='cuda'))
    assert float(empty) == 0.0
    bad = sigmoid_focal_loss(torch.zeros(2, 3, device='cuda'), torch.tensor([0, 9]).cuda(),
                             reduction='none')
    assert torch.isnan(bad[1]).all() and torch.isfinite(bad[0]).all()


@cuda
def test_cuda_gradcheck_float64():
    gen = torch.Generator().manual_seed(0)
    logits, labels, weight = random_inputs(gen, 6, 5, dtype=torch.float64, device='cuda')
    x = logits.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t: sigmoid_focal_loss(t, labels, 1.5, 0.25, weight.double(), reduction='sum'),
        (x,))
