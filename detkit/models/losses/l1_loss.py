"""L1 (absolute error) loss for box regression."""
from __future__ import annotations

from torch import Tensor, nn

from detkit.registry import MODELS

from .base import at_least_float32


@MODELS.register_module()
class L1Loss(nn.Module):
    """Weighted absolute error, summed and divided by ``avg_factor`` (or averaged).

    Args:
        loss_weight: multiplier of the loss.

    Example:
        >>> import torch
        >>> loss = L1Loss()
        >>> pred, target = torch.tensor([[1., 2., 3., 4.]]), torch.zeros(1, 4)
        >>> float(loss(pred, target, avg_factor=2.0))  # (1 + 2 + 3 + 4) / 2
        5.0
    """

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = float(loss_weight)

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None) -> Tensor:
        """The weighted L1 loss.

        Args:
            pred: ``(N, 4)`` predictions (e.g. box deltas).
            target: ``(N, 4)`` targets.
            weight: ``(N, 4)`` per-element or ``(N,)`` per-row weight, or None.
            avg_factor: the divisor of the summed loss (typically the number of positives);
                None takes the mean over all ``N * 4`` elements.

        Returns:
            A scalar tensor: ``loss_weight * sum(|pred - target| * weight) / avg_factor``;
            ``0`` (connected to ``pred``'s graph) when ``N == 0``.
        """
        if pred.shape != target.shape:
            raise ValueError(f'L1Loss: pred and target must have the same shape, got '
                             f'{tuple(pred.shape)} and {tuple(target.shape)}')
        if weight is not None and weight.shape != pred.shape and weight.shape != pred.shape[:1]:
            raise ValueError(f'L1Loss: weight must have shape {tuple(pred.shape)} or '
                             f'{tuple(pred.shape[:1])}, got {tuple(weight.shape)}')
        if avg_factor is not None and not isinstance(avg_factor, Tensor) and avg_factor <= 0:
            raise ValueError(f'L1Loss: avg_factor={avg_factor} must be > 0 (or None for the mean)')
        if pred.numel() == 0:
            return pred.sum() * 0
        # bfloat16/float16 predictions (autocast) are compared and summed in float32
        loss = (at_least_float32(pred) - at_least_float32(target)).abs()
        if weight is not None:
            if weight.dim() == 1 and pred.dim() > 1:
                weight = weight.reshape(-1, *([1] * (pred.dim() - 1)))
            loss = loss * weight
        total = loss.sum() if avg_factor is not None else loss.mean()
        if avg_factor is not None:
            total = total / avg_factor
        return self.loss_weight * total

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}'
