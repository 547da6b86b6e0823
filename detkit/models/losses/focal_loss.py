"""Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection", 2017).

:func:`sigmoid_focal_loss` is the pure-PyTorch reference: it runs everywhere and is what the
tests check. A compiled kernel may later replace it behind :class:`FocalLoss` with the same call.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detkit.registry import MODELS


def sigmoid_focal_loss(logits: Tensor, labels: Tensor, gamma: float = 2.0, alpha: float = 0.25,
                       weight: Tensor | None = None) -> Tensor:
    """The elementwise sigmoid focal loss of ``C`` independent binary classifiers per row.

    With ``p = sigmoid(x)`` and ``t`` the one-hot target of the row's label:
    ``p_t = p * t + (1 - p) * (1 - t)``, ``alpha_t = alpha * t + (1 - alpha) * (1 - t)`` and
    ``loss = alpha_t * (1 - p_t) ** gamma * BCE(x, t)``.

    Args:
        logits: ``(N, C)`` raw classification scores.
        labels: ``(N,)`` int64 in ``[-1, C]``: ``0 .. C-1`` a class, ``C`` background (every
            target 0), ``-1`` ignored (the row's loss is 0).
        gamma: focusing exponent; 0 gives plain (alpha-weighted) binary cross-entropy.
        alpha: weight of the positive targets, ``1 - alpha`` of the negative ones.
        weight: ``(N,)`` per-row weight (or ``(N, C)`` per element), or None.

    Returns:
        ``(N, C)`` loss per row and class, in the dtype of ``logits``.

    Raises:
        ValueError: for shapes that do not match or labels outside ``[-1, C]``.
    """
    if logits.dim() != 2:
        raise ValueError(f'sigmoid_focal_loss: logits must have shape (N, C), '
                         f'got {tuple(logits.shape)}')
    num_rows, num_classes = logits.shape
    if labels.shape != (num_rows,) or labels.dtype.is_floating_point:
        raise ValueError(f'sigmoid_focal_loss: labels must be an integer tensor of shape '
                         f'({num_rows},), got {labels.dtype} {tuple(labels.shape)}')
    if weight is not None and weight.shape not in ((num_rows,), (num_rows, num_classes)):
        raise ValueError(f'sigmoid_focal_loss: weight must have shape ({num_rows},) or '
                         f'({num_rows}, {num_classes}), got {tuple(weight.shape)}')
    if num_rows == 0:
        return logits * 0  # (0, C), keeps the graph
    _check_label_range(labels, num_classes)

    valid = labels >= 0
    # Column C is the background "class": its one-hot column is dropped, leaving all zeros.
    targets = F.one_hot(labels.clamp(min=0), num_classes + 1)[:, :num_classes].to(logits.dtype)
    probs = torch.sigmoid(logits)
    p_t = probs * targets + (1 - probs) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction='none')
    loss = alpha_t * (1 - p_t).pow(gamma) * bce
    loss = torch.where(valid[:, None], loss, torch.zeros_like(loss))
    if weight is not None:
        loss = loss * (weight[:, None] if weight.dim() == 1 else weight).to(loss.dtype)
    return loss


def _check_label_range(labels: Tensor, num_classes: int) -> None:
    # One fused min/max and one host sync: cheap enough for the training hot path.
    low, high = (int(v) for v in torch.aminmax(labels))
    if low < -1 or high > num_classes:
        raise ValueError(f'sigmoid_focal_loss: labels must lie in [-1, {num_classes}] '
                         f'(-1 ignored, {num_classes} background), got values in [{low}, {high}]')


@MODELS.register_module()
class FocalLoss(nn.Module):
    """Sigmoid focal loss summed over rows and classes, divided by ``avg_factor``.

    Args:
        gamma: focusing exponent (RetinaNet: 2.0).
        alpha: weight of positive targets (RetinaNet: 0.25).
        loss_weight: multiplier of the loss.

    Example:
        >>> loss = FocalLoss()
        >>> logits = torch.zeros(2, 3)
        >>> # p = 0.5: one positive 0.25 * 0.5**2 * log 2, five negatives 0.75 * 0.5**2 * log 2
        >>> round(float(loss(logits, torch.tensor([0, 3]))), 4)  # = log 2
        0.6931
    """

    def __init__(self, gamma: float = 2.0, alpha: float = 0.25, loss_weight: float = 1.0) -> None:
        super().__init__()
        if gamma < 0 or not 0 <= alpha <= 1:
            raise ValueError(f'FocalLoss: need gamma >= 0 and alpha in [0, 1], got gamma={gamma}, '
                             f'alpha={alpha}')
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.loss_weight = float(loss_weight)

    def forward(self, logits: Tensor, labels: Tensor, weight: Tensor | None = None,
                avg_factor: float | Tensor = 1.0) -> Tensor:
        """The weighted, summed focal loss.

        Args:
            logits: ``(N, C)`` raw classification scores.
            labels: ``(N,)`` int64 in ``[-1, C]`` (``C`` background, ``-1`` ignored).
            weight: ``(N,)`` per-row weight, or None.
            avg_factor: the divisor of the summed loss, typically the number of positives
                (at least 1).

        Returns:
            A scalar tensor: ``loss_weight * sum(loss) / avg_factor``.
        """
        if not isinstance(avg_factor, Tensor) and avg_factor <= 0:
            raise ValueError(f'FocalLoss: avg_factor={avg_factor} must be > 0')
        loss = sigmoid_focal_loss(logits, labels, self.gamma, self.alpha, weight)
        return self.loss_weight * loss.sum() / avg_factor

    def extra_repr(self) -> str:
        return f'gamma={self.gamma}, alpha={self.alpha}, loss_weight={self.loss_weight}'
