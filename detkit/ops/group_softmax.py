"""GroupSoftmax cross entropy: softmax cross entropy where a label names a group of classes.

Training one detector on several datasets that each annotate only their own classes: for an
image of dataset ``d``, the classes that ``d`` does not annotate are merged with background into
one group, and the loss is the cross entropy of the group's summed probability.

Class axis convention (mmdetection's): the logits have ``K + 1`` columns, ``0 .. K-1`` the
foreground classes and ``K`` the background; a target is in ``[0, K]``, or ``-1`` for an ignored
row. ``group_table[d, j]`` is the group id of class ``j`` for dataset ``d``; id 0 is the group
merged with background, so ``group_table[d, K]`` is normally 0.

The math, with ``p = softmax(z)`` over the ``K + 1`` logits of a row and target ``t`` from
dataset ``d``: ``G = {j : gid[d][j] == gid[d][t]}``,

    L = -log(P_G) = logsumexp(z) - logsumexp(z_G),          P_G = sum_{j in G} p_j
    dL/dz_m = p_m - [m in G] p_m / P_G

The kernels evaluate these stably, each log-sum-exp subtracting its own maximum (no epsilon; a
group whose probability underflows still gives a finite loss and gradient), and in the forms that
keep full relative precision when G holds nearly all the probability (``P_out = 1 - P_G`` summed
over the classes outside G): ``L = -log1p(-P_out)`` when ``P_out < 1/2``;
``dL/dz_m = p_m = exp(z_m - logsumexp(z))`` outside G and
``dL/dz_m = -exp(z_m - logsumexp(z_G)) * P_out`` inside G (the same value as
``p_m - exp(z_m - logsumexp(z_G))``, without its cancellation). With every group a singleton the
loss is softmax cross entropy.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import _extension
from .focal_loss import _reciprocal, _scale_stored_grad

_REDUCTIONS = ('none', 'sum', 'mean')


def group_softmax_cross_entropy(logits: Tensor, targets: Tensor, dataset_index: Tensor,
                                group_table: Tensor, reduction: str = 'mean',
                                avg_factor: Tensor | float | None = None) -> Tensor:
    """GroupSoftmax cross entropy with a fused kernel (loss and gradient in one pass).

    Runs the compiled kernel of the inputs' device and falls back to
    :func:`group_softmax_cross_entropy_reference` (one warning) where there is none.
    float16/bfloat16 are computed in float32.

    Args:
        logits: ``(N, K + 1)`` float32/float64/float16/bfloat16 scores, background at column K.
        targets: ``(N,)`` int64 in ``[-1, K]``; ``-1`` ignored (loss and gradient 0). On CPU an
            out-of-range target raises; on CUDA (no host sync) its row's loss becomes NaN.
        dataset_index: ``(N,)`` int64 in ``[0, D)``: the dataset each row's image comes from.
        group_table: ``(D, K + 1)`` int64 group id of every class for every dataset (moved to
            the logits' device if needed).
        reduction: ``'mean'``: sum over rows divided by ``avg_factor``, or when it is None by the
            number of non-ignored rows (a tensor, no host sync; 0 rows give 0); ``'sum'``: the
            sum (divided by ``avg_factor`` if given); ``'none'``: the ``(N,)`` per-row loss.
        avg_factor: divisor of the summed loss (tensor or number > 0), or None.

    Returns:
        ``'none'``: ``(N,)`` in the dtype of ``logits``; otherwise a 0-d tensor, float32 for
        float16/bfloat16 logits, else the dtype of ``logits``.

    Example:
        >>> logits = torch.tensor([[2.0, 1.0, 0.0]])  # classes 0, 1 and background (K = 2)
        >>> table = torch.tensor([[1, 0, 0]])  # dataset 0 annotates class 0 only
        >>> # target background: G = {1, 2}, loss = logsumexp(z) - logsumexp(z_1, z_2)
        >>> round(float(group_softmax_cross_entropy(
        ...     logits, torch.tensor([2]), torch.tensor([0]), table)), 4)
        1.0943
    """
    targets, dataset_index, group_table = _check_arguments(
        logits, targets, dataset_index, group_table, reduction, avg_factor)
    acc_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    kernels = _extension.kernels_for(logits.device)
    if kernels is None:
        row_loss = group_softmax_cross_entropy_reference(
            logits.to(acc_dtype), targets, dataset_index, group_table, reduction='none')
        return _reduce(row_loss, targets, reduction, avg_factor, logits.dtype)

    logits = logits.contiguous()
    if torch.is_grad_enabled() and logits.requires_grad:
        loss = _FusedGroupSoftmax.apply(logits, targets, dataset_index, group_table, reduction,
                                        avg_factor, kernels)
        return loss.to(logits.dtype) if reduction == 'none' else loss
    row_loss, _ = _run_kernel(kernels, logits, targets, dataset_index, group_table, False)
    return _reduce(row_loss, targets, reduction, avg_factor, logits.dtype)


def group_softmax_cross_entropy_reference(logits: Tensor, targets: Tensor, dataset_index: Tensor,
                                          group_table: Tensor, reduction: str = 'mean',
                                          avg_factor: Tensor | float | None = None) -> Tensor:
    """GroupSoftmax cross entropy in plain PyTorch ops (differentiable, float64-capable).

    Same arguments, conventions and reductions as :func:`group_softmax_cross_entropy`; used
    as the fallback and as the tests' float64 reference. It checks index ranges with a host
    sync (skipped under ``torch.compile``).

    Args:
        logits: ``(N, K + 1)`` scores, background at column K.
        targets: ``(N,)`` integer in ``[-1, K]``, ``-1`` ignored.
        dataset_index: ``(N,)`` integer in ``[0, D)``.
        group_table: ``(D, K + 1)`` integer group ids.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.
        avg_factor: divisor of the summed loss, or None.

    Returns:
        ``'none'``: ``(N,)`` per-row loss; otherwise a 0-d tensor (dtypes as the fused op).
    """
    targets, dataset_index, group_table = _check_arguments(
        logits, targets, dataset_index, group_table, reduction, avg_factor)
    num_rows, num_columns = logits.shape
    valid = targets >= 0
    if num_rows > 0 and not torch.compiler.is_compiling() and bool(valid.any()):
        _check_ranges(targets[valid], dataset_index[valid], num_columns, group_table.shape[0])
    compute_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    z = logits.to(compute_dtype)
    # Ignored rows may carry any target or dataset index: read row 0 / column 0 for them.
    gid = group_table[torch.where(valid, dataset_index, 0)]  # (N, K + 1)
    target_gid = gid.gather(1, torch.where(valid, targets, 0)[:, None])
    member = gid == target_gid
    group_lse = torch.logsumexp(z.masked_fill(~member, float('-inf')), dim=1)
    row_loss = torch.logsumexp(z, dim=1) - group_lse
    row_loss = torch.where(valid, row_loss, torch.zeros_like(row_loss))
    return _reduce(row_loss, targets, reduction, avg_factor, logits.dtype)


class _FusedGroupSoftmax(torch.autograd.Function):
    """Autograd wrapper: forward stores the kernel's gradient, backward scales it.

    As for the focal loss, a reduced loss has its divisor folded into the stored gradient, and a
    CPU backward with ``grad_output == 1`` returns it untouched.
    """

    @staticmethod
    def forward(ctx, logits, targets, dataset_index, group_table, reduction, avg_factor, kernels):
        elementwise = reduction == 'none'
        divisor = None if elementwise else _divisor(targets, reduction, avg_factor)
        grad_scale = None if divisor is None else _reciprocal(divisor, logits)
        row_loss, grad = _run_kernel(kernels, logits, targets, dataset_index, group_table, True,
                                     grad_scale)
        ctx.save_for_backward(grad)
        ctx.elementwise = elementwise
        if elementwise:
            return row_loss
        return row_loss.sum() if divisor is None else row_loss.sum() / divisor

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        if ctx.elementwise:
            return grad * grad_output.to(grad.dtype)[:, None], *([None] * 6)
        return _scale_stored_grad(grad, grad_output, False), *([None] * 6)


def _divisor(targets: Tensor, reduction: str, avg_factor: Tensor | float | None):
    """What the summed loss is divided by (a tensor for the row count: no host sync)."""
    if avg_factor is not None:
        return avg_factor
    if reduction == 'mean':
        return (targets >= 0).sum().clamp(min=1)
    return None


def _run_kernel(kernels, logits: Tensor, targets: Tensor, dataset_index: Tensor,
                group_table: Tensor, need_grad: bool,
                grad_scale: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Call the compiled forward; returns (per-row loss (N,), gradient (N, K + 1) or None)."""
    acc_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    row_loss = _extension.new_output((logits.shape[0],), acc_dtype, logits.device)
    grad = _extension.new_output(tuple(logits.shape), logits.dtype, logits.device) \
        if need_grad else None
    kernels.group_softmax_forward(logits, targets, dataset_index, group_table, row_loss, grad,
                                  grad_scale)
    return row_loss, grad


def _reduce(row_loss: Tensor, targets: Tensor, reduction: str,
            avg_factor: Tensor | float | None, dtype: torch.dtype) -> Tensor:
    """Per-row loss (float32/float64) to the requested reduction."""
    if reduction == 'none':
        return row_loss.to(dtype)
    divisor = _divisor(targets, reduction, avg_factor)
    return row_loss.sum() if divisor is None else row_loss.sum() / divisor


def _check_ranges(targets: Tensor, dataset_index: Tensor, num_columns: int,
                  num_datasets: int) -> None:
    t_low, t_high = (int(v) for v in torch.aminmax(targets))
    d_low, d_high = (int(v) for v in torch.aminmax(dataset_index))
    if t_low < 0 or t_high >= num_columns:
        raise ValueError(f'group_softmax_cross_entropy: targets must lie in [-1, '
                         f'{num_columns - 1}] (background {num_columns - 1}), got values in '
                         f'[{t_low}, {t_high}]')
    if d_low < 0 or d_high >= num_datasets:
        raise ValueError(f'group_softmax_cross_entropy: dataset_index must lie in [0, '
                         f'{num_datasets - 1}] for the {num_datasets} rows of group_table, got '
                         f'values in [{d_low}, {d_high}]')


def _check_arguments(logits, targets, dataset_index, group_table, reduction,
                     avg_factor) -> tuple[Tensor, Tensor, Tensor]:
    """Validate shapes and dtypes; returns contiguous int64 targets, dataset_index, group_table."""
    name = 'group_softmax_cross_entropy'
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[1] < 1:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f'{name}: logits must be a tensor of shape (N, K + 1) with the '
                         f'background at column K, got {shape}')
    if logits.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise TypeError(f'{name}: logits must be float32, float64, float16 or bfloat16, got '
                        f'{logits.dtype}')
    num_rows, num_columns = logits.shape
    checked = []
    for arg, label, shape in ((targets, 'targets', (num_rows,)),
                              (dataset_index, 'dataset_index', (num_rows,))):
        if not isinstance(arg, Tensor) or arg.shape != shape or arg.dtype.is_floating_point \
                or arg.dtype == torch.bool:
            got = f'{arg.dtype} {tuple(arg.shape)}' if isinstance(arg, Tensor) else arg
            raise ValueError(f'{name}: {label} must be an integer tensor of shape {shape}, '
                             f'got {got}')
        if arg.device != logits.device:
            raise ValueError(f'{name}: {label} is on {arg.device}, logits on {logits.device}')
        checked.append(arg.to(torch.int64).contiguous())
    if not isinstance(group_table, Tensor) or group_table.dim() != 2 \
            or group_table.shape[1] != num_columns or group_table.shape[0] < 1 \
            or group_table.dtype.is_floating_point or group_table.dtype == torch.bool:
        got = (f'{group_table.dtype} {tuple(group_table.shape)}'
               if isinstance(group_table, Tensor) else group_table)
        raise ValueError(f'{name}: group_table must be an integer tensor of shape '
                         f'(D >= 1, {num_columns}) (one group id per class and dataset), '
                         f'got {got}')
    checked.append(group_table.to(device=logits.device, dtype=torch.int64).contiguous())
    if reduction not in _REDUCTIONS:
        raise ValueError(f'{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}')
    if avg_factor is not None:
        if reduction == 'none':
            raise ValueError(f"{name}: avg_factor has no meaning with reduction='none'")
        if not isinstance(avg_factor, Tensor) and not avg_factor > 0:
            raise ValueError(f'{name}: avg_factor={avg_factor} must be > 0')
    return checked[0], checked[1], checked[2]
