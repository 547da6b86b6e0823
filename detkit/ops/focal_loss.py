"""Sigmoid focal loss with a fused kernel: loss and gradient in one pass over the logits.

:func:`sigmoid_focal_loss` runs the compiled kernel of the inputs' device (C++ on CPU, CUDA on
GPU) and falls back to :func:`sigmoid_focal_loss_reference` where no kernel is available. The
forward pass writes the gradient next to the loss when the logits require grad; backward only
scales it by the incoming gradient, so the logits are read once per training step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import _extension

_REDUCTIONS = ('none', 'sum', 'mean')


def sigmoid_focal_loss(logits: Tensor, labels: Tensor, gamma: float = 2.0, alpha: float = 0.25,
                       weight: Tensor | None = None, avg_factor: Tensor | float | None = None,
                       reduction: str = 'sum') -> Tensor:
    """Sigmoid focal loss of ``C`` independent binary classifiers per row (Lin et al., 2017).

    With ``p_t`` the probability of the right answer (``sigmoid(x)`` for the row's class,
    ``1 - sigmoid(x)`` for the other classes) and ``alpha_t`` = ``alpha`` / ``1 - alpha``:
    ``loss = alpha_t * (1 - p_t) ** gamma * -log(p_t)``, computed from ``exp(-|x|)`` so that
    logits of any size give finite values. float16/bfloat16 are computed in float32.

    Args:
        logits: ``(N, C)`` float32/float64/float16/bfloat16 raw scores (CPU or CUDA).
        labels: ``(N,)`` int64 in ``[-1, C]``: ``0 .. C-1`` a class, ``C`` background (every
            target 0), ``-1`` ignored (loss and gradient 0). On CPU a label outside that range
            raises; on CUDA, where checking would stall the GPU, its row's loss becomes NaN.
        gamma: focusing exponent ``>= 0`` (RetinaNet: 2).
        alpha: weight of the positive targets in ``[0, 1]`` (RetinaNet: 0.25).
        weight: ``(N,)`` per-row weight (not differentiated), or None.
        avg_factor: divisor of the summed loss (e.g. the number of positives), as a tensor (no
            host sync) or a number > 0; used by ``'sum'`` and ``'mean'``.
        reduction: ``'sum'``: ``sum(loss) / avg_factor`` (``avg_factor`` None: 1); ``'mean'``:
            ``sum(loss) / avg_factor`` (``avg_factor`` None: ``N * C``); ``'none'``: elementwise.

    Returns:
        ``'none'``: ``(N, C)`` in the dtype of ``logits``. Otherwise a 0-d tensor, float32 for
        float16/bfloat16 logits (a half-precision sum overflows), else the dtype of ``logits``.

    Example:
        >>> logits = torch.zeros(2, 3)
        >>> # p = 0.5: one positive 0.25 * 0.5**2 * log 2, five negatives 0.75 * 0.5**2 * log 2
        >>> round(float(sigmoid_focal_loss(logits, torch.tensor([0, 3]))), 4)  # = log 2
        0.6931
    """
    _check_arguments(logits, labels, gamma, alpha, weight, avg_factor, reduction)
    acc_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    if weight is not None:
        weight = weight.to(device=logits.device, dtype=acc_dtype).contiguous()
    kernels = _extension.kernels_for(logits.device)
    if kernels is None:
        loss = sigmoid_focal_loss_reference(logits.to(acc_dtype), labels, gamma, alpha, weight)
        if reduction == 'none':
            return loss.to(logits.dtype)
        return _divide(loss.sum(), reduction, avg_factor, logits.numel())

    logits = logits.contiguous()
    labels = labels.contiguous()
    if torch.is_grad_enabled() and logits.requires_grad:
        return _FusedSigmoidFocalLoss.apply(logits, labels, weight, float(gamma), float(alpha),
                                            reduction, avg_factor, kernels)
    elementwise = reduction == 'none'
    loss, _ = _run_kernel(kernels, logits, labels, weight, gamma, alpha, elementwise, False)
    if elementwise:
        return loss
    return _divide(loss.sum(), reduction, avg_factor, logits.numel())


def sigmoid_focal_loss_reference(logits: Tensor, labels: Tensor, gamma: float = 2.0,
                                 alpha: float = 0.25, weight: Tensor | None = None) -> Tensor:
    """Elementwise sigmoid focal loss in plain PyTorch ops (differentiable, float64-capable).

    The same formula as :func:`sigmoid_focal_loss` written with ``logsigmoid``, which is stable
    for logits of any size. float16/bfloat16 are computed in float32.

    Args:
        logits: ``(N, C)`` raw scores.
        labels: ``(N,)`` integer in ``[-1, C]`` (``C`` background, ``-1`` ignored).
        gamma: focusing exponent ``>= 0``.
        alpha: weight of the positive targets.
        weight: ``(N,)`` per-row weight, or None.

    Returns:
        ``(N, C)`` loss in the dtype of ``logits``.

    Raises:
        ValueError: for labels outside ``[-1, C]`` (this check syncs with the device; it is
            skipped under ``torch.compile``).
    """
    num_classes = logits.shape[1]
    if labels.numel() > 0 and not torch.compiler.is_compiling():
        low, high = (int(v) for v in torch.aminmax(labels))
        if low < -1 or high > num_classes:
            raise ValueError(f'sigmoid_focal_loss: labels must lie in [-1, {num_classes}] (-1 '
                             f'ignored, {num_classes} background), got values in [{low}, {high}]')
    compute_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    x = logits.to(compute_dtype)
    columns = torch.arange(num_classes, device=logits.device)
    positive = columns[None, :] == labels[:, None]
    s = torch.where(positive, x, -x)  # p_t = sigmoid(s)
    alpha_t = torch.where(positive, alpha, 1.0 - alpha).to(compute_dtype)
    focus = torch.exp(gamma * F.logsigmoid(-s))  # (1 - p_t) ** gamma
    loss = alpha_t * focus * -F.logsigmoid(s)
    loss = torch.where((labels >= 0)[:, None], loss, torch.zeros_like(loss))
    if weight is not None:
        loss = loss * weight.to(compute_dtype)[:, None]
    return loss.to(logits.dtype)


class _FusedSigmoidFocalLoss(torch.autograd.Function):
    """Autograd wrapper: forward stores the kernel's gradient, backward scales it.

    For a reduced loss the kernel already folds ``1 / avg_factor`` into the stored gradient, so
    that a backward with ``grad_output == 1`` (the loss summed into the total loss) has nothing
    left to do; detkit checks that on CPU, where reading the value costs nothing. On CUDA it
    always multiplies, since reading the value would stall the host on the GPU.
    """

    @staticmethod
    def forward(ctx, logits, labels, weight, gamma, alpha, reduction, avg_factor, kernels):
        elementwise = reduction == 'none'
        divisor = None if elementwise else _divisor(reduction, avg_factor, logits.numel())
        grad_scale = None if divisor is None else _reciprocal(divisor, logits)
        loss, grad = _run_kernel(kernels, logits, labels, weight, gamma, alpha, elementwise, True,
                                 grad_scale)
        ctx.save_for_backward(grad)
        ctx.elementwise = elementwise
        if elementwise:
            return loss
        return loss.sum() if divisor is None else loss.sum() / divisor

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return _scale_stored_grad(grad, grad_output, ctx.elementwise), *([None] * 7)


def _scale_stored_grad(grad: Tensor, grad_output: Tensor, elementwise: bool) -> Tensor:
    """The stored gradient times ``grad_output`` (returned as is when that is a CPU 1)."""
    if elementwise:
        return grad * grad_output.to(grad.dtype)
    if grad_output.device.type == 'cpu' and float(grad_output) == 1.0:
        # Autograd never writes into a gradient that a node hands on, and with retain_graph it
        # copies a stored tensor before accumulating into it, so no copy is needed here.
        return grad
    return grad * grad_output  # 0-d: keeps grad's dtype


def _divisor(reduction: str, avg_factor: Tensor | float | None, numel: int):
    """What the summed loss is divided by, or None for a plain sum."""
    if avg_factor is not None:
        return avg_factor
    return max(numel, 1) if reduction == 'mean' else None


def _reciprocal(divisor: Tensor | float, like: Tensor) -> Tensor:
    """``1 / divisor`` as a one-element tensor on ``like``'s device, without a host sync."""
    acc_dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    if isinstance(divisor, Tensor):
        return torch.reciprocal(divisor.detach().to(device=like.device, dtype=acc_dtype)
                                ).reshape(1)
    return torch.full((1,), 1.0 / divisor, dtype=acc_dtype, device=like.device)


def _run_kernel(kernels, logits: Tensor, labels: Tensor, weight: Tensor | None, gamma: float,
                alpha: float, elementwise: bool, need_grad: bool,
                grad_scale: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Call the compiled forward; returns (loss (N, C) or partial sums (P,), grad or None)."""
    num_rows, num_classes = logits.shape
    device = logits.device
    acc_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    if elementwise:
        loss = _extension.new_output((num_rows, num_classes), logits.dtype, device)
    else:
        loss = _extension.new_output((_partial_count(device, num_rows, num_classes),), acc_dtype,
                                     device)
    grad = _extension.new_output((num_rows, num_classes), logits.dtype, device) \
        if need_grad else None
    kernels.sigmoid_focal_loss_forward(logits, labels, weight, float(gamma), float(alpha), loss,
                                       grad, grad_scale)
    return loss, grad


def _partial_count(device: torch.device, num_rows: int, num_classes: int) -> int:
    """Length of the partial-sum buffer: per row on CPU, per thread block on CUDA."""
    if device.type != 'cuda':
        return num_rows
    # One block of 256 threads per 4096 elements (4 vectors of 4 per thread), capped so the
    # final sum stays small: a grid-stride loop covers the rest.
    return max(1, min(2048, -(-num_rows * num_classes // 4096)))


def _divide(total: Tensor, reduction: str, avg_factor: Tensor | float | None,
            numel: int) -> Tensor:
    divisor = _divisor(reduction, avg_factor, numel)
    return total if divisor is None else total / divisor


def _check_arguments(logits, labels, gamma, alpha, weight, avg_factor, reduction) -> None:
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f'sigmoid_focal_loss: logits must be a tensor of shape (N, C), '
                         f'got {shape}')
    if logits.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise TypeError(f'sigmoid_focal_loss: logits must be float32, float64, float16 or '
                        f'bfloat16, got {logits.dtype}')
    num_rows, num_classes = logits.shape
    if num_classes < 1:
        raise ValueError('sigmoid_focal_loss: logits need at least one class column, got '
                         f'shape {tuple(logits.shape)}')
    if not isinstance(labels, Tensor) or labels.shape != (num_rows,) \
            or labels.dtype != torch.int64:
        got = f'{labels.dtype} {tuple(labels.shape)}' if isinstance(labels, Tensor) else labels
        raise ValueError(f'sigmoid_focal_loss: labels must be an int64 tensor of shape '
                         f'({num_rows},), got {got}')
    if labels.device != logits.device:
        raise ValueError(f'sigmoid_focal_loss: labels are on {labels.device}, logits on '
                         f'{logits.device}')
    if weight is not None:
        if not isinstance(weight, Tensor) or weight.shape != (num_rows,) \
                or not weight.dtype.is_floating_point:
            got = f'{weight.dtype} {tuple(weight.shape)}' if isinstance(weight, Tensor) else weight
            raise ValueError(f'sigmoid_focal_loss: weight must be a float tensor of shape '
                             f'({num_rows},) or None, got {got}')
        if weight.requires_grad:
            raise ValueError('sigmoid_focal_loss: weight requires grad, but the fused op does '
                             'not differentiate it; pass weight.detach()')
    if not gamma >= 0 or not 0 <= alpha <= 1:
        raise ValueError(f'sigmoid_focal_loss: need gamma >= 0 and alpha in [0, 1], got '
                         f'gamma={gamma}, alpha={alpha}')
    if reduction not in _REDUCTIONS:
        raise ValueError(f'sigmoid_focal_loss: reduction must be one of {_REDUCTIONS}, got '
                         f'{reduction!r}')
    if avg_factor is not None:
        if reduction == 'none':
            raise ValueError("sigmoid_focal_loss: avg_factor has no meaning with reduction="
                             "'none'")
        if not isinstance(avg_factor, Tensor) and not avg_factor > 0:
            raise ValueError(f'sigmoid_focal_loss: avg_factor={avg_factor} must be > 0')
