"""Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection", 2017).

:class:`FocalLoss` calls :func:`detkit.ops.sigmoid_focal_loss`: the fused C++/CUDA kernel that
computes loss and gradient in one pass, or, where no kernel is built, the pure-PyTorch
reference :func:`detkit.ops.sigmoid_focal_loss_reference`.
"""
from __future__ import annotations

from torch import Tensor

from detkit.ops import sigmoid_focal_loss
from detkit.registry import MODELS
from detkit.structures import LabelGroups

from .base import ClassificationLoss


@MODELS.register_module()
class FocalLoss(ClassificationLoss):
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
                avg_factor: float | Tensor | None = None,
                groups: LabelGroups | None = None) -> Tensor:
        """The weighted, summed focal loss.

        Args:
            logits: ``(N, C)`` raw classification scores.
            labels: ``(N,)`` int64 in ``[-1, C]`` (``C`` background, ``-1`` ignored).
            weight: ``(N,)`` per-row weight, or None.
            avg_factor: the divisor of the summed loss, typically the number of positives
                (at least 1); None divides by 1.
            groups: must be None (a sigmoid loss has no label groups).

        Returns:
            A scalar tensor: ``loss_weight * sum(loss) / avg_factor``.
        """
        self.check_groups(groups, *logits.shape[:2])
        if avg_factor is not None and not isinstance(avg_factor, Tensor) and avg_factor <= 0:
            raise ValueError(f'FocalLoss: avg_factor={avg_factor} must be > 0')
        loss = sigmoid_focal_loss(logits, labels, self.gamma, self.alpha, weight,
                                  avg_factor=avg_factor, reduction='sum')
        return loss * self.loss_weight if self.loss_weight != 1.0 else loss

    def extra_repr(self) -> str:
        return f'gamma={self.gamma}, alpha={self.alpha}, loss_weight={self.loss_weight}'
