"""detkit.ops.group_softmax_cross_entropy: the compiled kernels against the float64 reference.

Random inputs every run (seed printed; DETKIT_TEST_SEED=<seed> replays), outputs poisoned with
NaN before the kernels write. Class axis: K + 1 columns, background at column K.

Error bounds (elementwise, against float64 from the same inputs): float32 relative 1e-5 for the
per-row loss and the gradient; float16 gradient relative 1e-3 + absolute 6e-8, bfloat16 relative
8e-3 (one rounding of a float32 result); losses are float32 in every dtype: relative 1e-5.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from detkit.ops import group_softmax_cross_entropy, group_softmax_cross_entropy_reference

from ops_checks import HALF_BOUNDS, TINY, assert_close, num_threads

pytestmark = pytest.mark.usefixtures('poisoned_outputs')  # conftest.py

def random_problem(gen, num_rows, num_columns, num_datasets=3, dtype=torch.float32, scale=3.0,
                   device='cpu'):
    """Logits, targets (10% ignored), dataset index and a group table with background id 0."""
    logits = (torch.randn(num_rows, num_columns, generator=gen) * scale).to(dtype)
    targets = torch.randint(0, num_columns, (num_rows,), generator=gen)
    targets[torch.rand(num_rows, generator=gen) < 0.1] = -1
    dataset_index = torch.randint(0, num_datasets, (num_rows,), generator=gen)
    table = torch.randint(0, 4, (num_datasets, num_columns), generator=gen)
    table[:, -1] = 0
    return [t.to(device) for t in (logits, targets, dataset_index, table)]


def reference_and_grad(logits, targets, dataset_index, table):
    x = logits.detach().cpu().double().requires_grad_()
    loss = group_softmax_cross_entropy_reference(x, targets.cpu(), dataset_index.cpu(),
                                                 table.cpu(), reduction='none')
    loss.sum().backward()
    return loss.detach(), x.grad


def kernel_and_grad(logits, targets, dataset_index, table, reduction='none', **kwargs):
    x = logits.detach().clone().requires_grad_()
    loss = group_softmax_cross_entropy(x, targets, dataset_index, table, reduction=reduction,
                                       **kwargs)
    loss.sum().backward()
    return loss.detach(), x.grad


def test_float32_matches_float64_reference_per_isa(gen, isa):
    problem = random_problem(gen, 1000, 84)
    loss, grad = kernel_and_grad(*problem)
    ref_loss, ref_grad = reference_and_grad(*problem)
    assert_close(loss, ref_loss, 1e-5, what=f'{isa} loss')
    assert_close(grad, ref_grad, 1e-5, what=f'{isa} grad')


@pytest.mark.parametrize('shape', [(257, 3), (33, 7), (100, 81), (64, 1204), (9, 1), (1, 2),
                                   (1001, 16)])
def test_shapes(gen, cpu_kernels, shape):
    problem = random_problem(gen, *shape)
    loss, grad = kernel_and_grad(*problem)
    ref_loss, ref_grad = reference_and_grad(*problem)
    assert_close(loss, ref_loss, 1e-5, what=f'{shape} loss')
    assert_close(grad, ref_grad, 1e-5, what=f'{shape} grad')


def test_rows_split_over_threads_give_the_same_bits(gen, cpu_kernels):
    # 4000 rows of 84 columns are 21 grains of 195 rows: two threads take a share each.
    assert cpu_kernels.parallel_backend() == 'openmp'
    problem = random_problem(gen, 4000, 84)
    results = {}
    for threads in (1, 2):
        with num_threads(threads):
            results[threads] = kernel_and_grad(*problem)
    assert torch.equal(results[1][0], results[2][0])
    assert torch.equal(results[1][1], results[2][1])


def test_reductions(gen, cpu_kernels):
    problem = random_problem(gen, 200, 11)
    ref_loss, ref_grad = reference_and_grad(*problem)
    valid = int((problem[1] >= 0).sum())
    mean, grad = kernel_and_grad(*problem, reduction='mean')
    assert mean.shape == () and mean.dtype == torch.float32
    assert_close(mean, ref_loss.sum() / valid, 1e-5, what='mean')
    assert_close(grad, ref_grad / valid, 1e-5, what='grad of mean')
    total, _ = kernel_and_grad(*problem, reduction='sum')
    assert_close(total, ref_loss.sum(), 1e-5, what='sum')
    avg, _ = kernel_and_grad(*problem, reduction='mean', avg_factor=torch.tensor(7.0))
    assert_close(avg, ref_loss.sum() / 7, 1e-5, what='avg_factor')
    reference_mean = group_softmax_cross_entropy_reference(problem[0].double(), *problem[1:])
    assert_close(reference_mean, ref_loss.sum() / valid, 1e-12, what='reference mean')


def test_singleton_groups_equal_cross_entropy(gen, cpu_kernels):
    logits, targets, dataset_index, _ = random_problem(gen, 300, 21, num_datasets=2)
    table = torch.arange(21).repeat(2, 1)  # every class its own group
    x = logits.clone().requires_grad_()
    loss = group_softmax_cross_entropy(x, targets, dataset_index, table)
    loss.backward()
    y = logits.clone().requires_grad_()
    expected = F.cross_entropy(y, targets, ignore_index=-1)
    expected.backward()
    assert_close(loss, expected, 1e-5, what='loss vs F.cross_entropy')
    assert_close(x.grad, y.grad, 1e-5, atol=1e-9, what='grad vs F.cross_entropy')


def test_group_with_underflowing_probability(gen, cpu_kernels):
    logits, targets, dataset_index, _ = random_problem(gen, 64, 10, num_datasets=1)
    table = torch.tensor([[1, 1, 1, 2, 2, 2, 2, 3, 3, 0]])
    targets = torch.randint(0, 3, (64,), generator=gen)  # group 1 = columns 0..2
    logits[:, :3] -= 1000  # P_G = exp(-1000): 0 in float32 and float64
    loss, grad = kernel_and_grad(logits, targets, dataset_index, table)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert (loss > 990).all()
    ref_loss, ref_grad = reference_and_grad(logits, targets, dataset_index, table)
    assert_close(loss, ref_loss, 1e-5, what='underflow loss')
    assert_close(grad, ref_grad, 1e-5, what='underflow grad')


def test_group_holding_almost_all_probability_keeps_relative_precision(gen, cpu_kernels):
    logits, targets, dataset_index, _ = random_problem(gen, 64, 10, num_datasets=1)
    table = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1, 2, 0]])
    targets = torch.randint(0, 8, (64,), generator=gen)
    logits[:, 8:] -= 40  # P_out ~ 1e-17: a loss that logsumexp differences lose entirely
    loss, grad = kernel_and_grad(logits, targets, dataset_index, table)
    # Even float64 logsumexp differences are off by 1e-16 absolute here, so the expected values
    # use the cancellation-free forms: L = -log1p(-P_out); dL/dz = p outside G,
    # -P_out * softmax(z_G) inside.
    z = logits.double()
    member = torch.zeros(10, dtype=torch.bool)
    member[:8] = True
    p = torch.softmax(z, dim=1)
    p_out = p[:, ~member].sum(1)
    expected_loss = -torch.log1p(-p_out)
    expected_grad = torch.where(member, -p_out[:, None] * torch.softmax(
        z.masked_fill(~member, float('-inf')), dim=1), p)
    assert (expected_loss < 1e-9).all()
    assert_close(loss, expected_loss, 1e-5, what='tiny loss')
    assert_close(grad, expected_grad, 1e-5, what='tiny grad')


def test_ignored_and_background_rows(gen, cpu_kernels):
    logits, _, dataset_index, table = random_problem(gen, 40, 6)
    ignored = torch.full((40,), -1)
    mean, grad = kernel_and_grad(logits, ignored, dataset_index, table, reduction='mean')
    assert float(mean) == 0.0 and torch.equal(grad, torch.zeros(40, 6))
    none, _ = kernel_and_grad(logits, ignored, dataset_index, table)
    assert torch.equal(none, torch.zeros(40))
    background = torch.full((40,), 5)
    loss, grad = kernel_and_grad(logits, background, dataset_index, table)
    ref_loss, ref_grad = reference_and_grad(logits, background, dataset_index, table)
    assert_close(loss, ref_loss, 1e-5, what='background loss')
    assert_close(grad, ref_grad, 1e-5, what='background grad')


def test_empty_input(cpu_kernels):
    x = torch.zeros(0, 4, requires_grad=True)
    empty = torch.zeros(0, dtype=torch.long)
    loss = group_softmax_cross_entropy(x, empty, empty, torch.zeros(1, 4, dtype=torch.long))
    assert loss.shape == () and float(loss.detach()) == 0.0
    loss.backward()
    assert x.grad.shape == (0, 4)


def test_extreme_logits(cpu_kernels):
    logits = torch.tensor([[80.0, -80.0, 1000.0, -1000.0, 0.0],
                           [-1e30, 1e30, 5.0, -5.0, 88.0],
                           [80.0, 80.0, 80.0, 80.0, 80.0]])
    table = torch.tensor([[1, 2, 3, 1, 0]])
    targets = torch.tensor([0, 3, 4])
    index = torch.zeros(3, dtype=torch.long)
    loss, grad = kernel_and_grad(logits, targets, index, table)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    ref_loss, ref_grad = reference_and_grad(logits, targets, index, table)
    assert_close(loss, ref_loss, 1e-5, what='extreme loss')
    assert_close(grad, ref_grad, 1e-5, atol=1e-30, what='extreme grad')


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_types_within_documented_bounds(gen, cpu_kernels, dtype):
    problem = random_problem(gen, 300, 84, dtype=dtype)
    rtol, atol = HALF_BOUNDS[dtype]
    loss, grad = kernel_and_grad(*problem)
    ref_loss, ref_grad = reference_and_grad(*problem)
    assert grad.dtype == dtype
    assert_close(loss, ref_loss, rtol, atol, what=f'{dtype} loss')
    assert_close(grad, ref_grad, rtol, atol, what=f'{dtype} grad')
    total = group_softmax_cross_entropy(*problem, reduction='sum')
    assert total.dtype == torch.float32
    assert_close(total, ref_loss.sum(), 1e-5, what=f'{dtype} summed loss')


def test_gradcheck_float64(gen, cpu_kernels):
    logits, targets, dataset_index, table = random_problem(gen, 7, 6, dtype=torch.float64)
    targets[0] = -1
    for reduction in ('none', 'mean'):
        x = logits.clone().requires_grad_()
        assert torch.autograd.gradcheck(
            lambda t: group_softmax_cross_entropy(t, targets, dataset_index, table,
                                                  reduction=reduction), (x,))
    x = logits.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t: group_softmax_cross_entropy_reference(t, targets, dataset_index, table), (x,))


def test_docstring_example_value(cpu_kernels):
    # dataset 0 annotates class 0 only; target background: G = {1, 2}
    loss = group_softmax_cross_entropy(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([2]),
                                       torch.tensor([0]), torch.tensor([[1, 0, 0]]))
    expected = math.log(math.e ** 2 + math.e + 1) - math.log(math.e + 1)
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_kernel_writes_every_element_of_preallocated_outputs(gen, cpu_kernels):
    logits, targets, dataset_index, table = random_problem(gen, 53, 19)
    row_loss = torch.full((53,), float('nan'))
    grad = torch.full((53, 19), float('nan'))
    cpu_kernels.group_softmax_forward(logits, targets, dataset_index, table, row_loss, grad)
    ref_loss, ref_grad = reference_and_grad(logits, targets, dataset_index, table)
    assert_close(row_loss, ref_loss, 1e-5, what='loss_out')
    assert_close(grad, ref_grad, 1e-5, what='grad_out')


def test_bad_inputs_raise_clear_errors(cpu_kernels):
    logits = torch.zeros(3, 4)
    table = torch.zeros(2, 4, dtype=torch.long)
    index = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match=r'row 1 has target 4 \(must lie in \[-1, 3\]\)'):
        group_softmax_cross_entropy(logits, torch.tensor([0, 4, 1]), index, table)
    with pytest.raises(ValueError, match=r'dataset index 2 \(must lie in \[0, 1\]\)'):
        group_softmax_cross_entropy(logits, torch.tensor([0, 1, 1]), torch.tensor([0, 0, 2]),
                                    table)
    with pytest.raises(ValueError, match=r'group_table must be an integer tensor of shape'):
        group_softmax_cross_entropy(logits, index, index, torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r'targets must be an integer tensor of shape \(3,\)'):
        group_softmax_cross_entropy(logits, torch.zeros(3), index, table)
    with pytest.raises(ValueError, match='reduction must be one of'):
        group_softmax_cross_entropy(logits, index, index, table, reduction='avg')
    with pytest.raises(ValueError, match=r'targets must lie in \[-1, 3\]'):
        group_softmax_cross_entropy_reference(logits, torch.tensor([0, 5, 1]), index, table)


# ---- CUDA: skipped without a GPU ----------------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


@cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize('shape', [(2000, 84), (257, 3), (33, 7), (300, 81), (128, 1204),
                                   (64, 1024), (64, 1025), (50, 32), (50, 33), (9, 1),
                                   (1001, 16)])
def test_cuda_matches_float64_reference(gen, dtype, shape):
    problem = random_problem(gen, *shape, dtype=dtype, device='cuda')
    rtol, atol = HALF_BOUNDS.get(dtype, (1e-5, TINY))
    ref_loss, ref_grad = reference_and_grad(*problem)
    loss, grad = kernel_and_grad(*problem)
    assert loss.is_cuda and grad.dtype == dtype
    assert_close(loss, ref_loss, rtol if dtype in HALF_BOUNDS else 1e-5, atol,
                 what=f'cuda {dtype} {shape} loss')
    assert_close(grad, ref_grad, rtol, atol, what=f'cuda {dtype} {shape} grad')
    mean, _ = kernel_and_grad(*problem, reduction='mean')
    valid = int((problem[1] >= 0).sum())
    assert_close(mean, ref_loss.sum() / max(valid, 1), 1e-5, what=f'cuda {dtype} mean')


@cuda
def test_cuda_underflow_ignored_and_invalid(gen):
    logits, targets, dataset_index, _ = random_problem(gen, 64, 10, num_datasets=1,
                                                       device='cuda')
    table = torch.tensor([[1, 1, 1, 2, 2, 2, 2, 3, 3, 0]], device='cuda')
    targets = torch.randint(0, 3, (64,), generator=gen).cuda()
    logits[:, :3] -= 1000
    loss, grad = kernel_and_grad(logits, targets, dataset_index, table)
    ref_loss, ref_grad = reference_and_grad(logits, targets, dataset_index, table)
    assert_close(loss, ref_loss, 1e-5, what='cuda underflow loss')
    assert_close(grad, ref_grad, 1e-5, what='cuda underflow grad')
    ignored = torch.full((64,), -1, device='cuda')
    mean = group_softmax_cross_entropy(logits, ignored, dataset_index, table)
    assert float(mean) == 0.0
    bad = group_softmax_cross_entropy(logits[:2], torch.tensor([0, 99], device='cuda'),
                                      dataset_index[:2], table, reduction='none')
    assert torch.isfinite(bad[0]) and torch.isnan(bad[1])


@cuda
def test_cuda_gradcheck_float64(gen):
    logits, targets, dataset_index, table = random_problem(gen, 7, 6, dtype=torch.float64,
                                                           device='cuda')
    x = logits.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t: group_softmax_cross_entropy(t, targets, dataset_index, table), (x,))
