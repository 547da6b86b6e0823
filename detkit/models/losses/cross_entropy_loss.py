"""Cross entropy: softmax over ``K + 1`` classes (the RoI head) or sigmoid per class (the RPN)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detkit.registry import MODELS
from detkit.structures import LabelGroups

from .base import ClassificationLoss, at_least_float32


@MODELS.register_module()
class CrossEntropyLoss(ClassificationLoss):
    """Softmax or binary cross entropy, summed and divided by ``avg_factor``.

    Labels follow detkit's convention in both modes: ``0 .. K-1`` foreground, ``K`` background,
    ``-1`` ignored (no loss, no gradient).

    - ``use_sigmoid=False``: ``logits`` are ``(N, K + 1)`` with background at column ``K``;
      the loss of a row is ``-log softmax(z)[label]``. Without ``avg_factor`` the sum is divided
      by the number of non-ignored rows.
    - ``use_sigmoid=True``: ``logits`` are ``(N, K)`` independent binary classifiers (the RPN's
      objectness: ``K = 1``, label 0 object, 1 background); the target of column ``c`` is
      ``[label == c]``, so background rows have all-zero targets. Without ``avg_factor`` the sum
      is divided by the number of non-ignored elements (``rows * K``).

    Args:
        use_sigmoid: binary cross entropy per class instead of a softmax.
        loss_weight: multiplier of the loss.

    Example:
        >>> ce = CrossEntropyLoss()
        >>> logits = torch.zeros(3, 4)                  # K = 3 and background
        >>> round(float(ce(logits, torch.tensor([0, 3, -1]))), 4)  # log 4, ignored row left out
        1.3863
        >>> bce = CrossEntropyLoss(use_sigmoid=True)
        >>> round(float(bce(torch.zeros(2, 1), torch.tensor([0, 1]))), 4)  # log 2
        0.6931
    """

    def __init__(self, use_sigmoid: bool = False, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.use_sigmoid = bool(use_sigmoid)
        self.loss_weight = float(loss_weight)

    def forward(self, logits: Tensor, labels: Tensor, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None,
                groups: LabelGroups | None = None) -> Tensor:
        """The reduced cross entropy.

        Args:
            logits: ``(N, K + 1)`` (softmax) or ``(N, K)`` (sigmoid) raw scores.
            labels: ``(N,)`` int64 in ``[-1, K]``.
            weight: ``(N,)`` per-row weight, or None.
            avg_factor: divisor of the summed loss, or None (see the class docstring).
            groups: must be None (GroupSoftmaxLoss is the loss that takes label groups).

        Returns:
            A scalar; 0 (connected to the graph) when no row is trained.
        """
        if logits.dim() != 2:
            raise ValueError(f'CrossEntropyLoss: logits must have shape (N, C), got '
                             f'{tuple(logits.shape)}')
        num_rows, num_columns = logits.shape
        self.check_groups(groups, num_rows, num_columns)
        if labels.shape != (num_rows,) or labels.dtype.is_floating_point:
            raise ValueError(f'CrossEntropyLoss: labels must be an integer tensor of shape '
                             f'({num_rows},), got {labels.dtype} {tuple(labels.shape)}')
        if weight is not None and weight.shape != (num_rows,):
            raise ValueError(f'CrossEntropyLoss: weight must have shape ({num_rows},), got '
                             f'{tuple(weight.shape)}')
        if avg_factor is not None and not isinstance(avg_factor, Tensor) and avg_factor <= 0:
            raise ValueError(f'CrossEntropyLoss: avg_factor={avg_factor} must be > 0')
        if num_rows == 0:
            return logits.sum() * 0
        num_classes = num_columns if self.use_sigmoid else num_columns - 1
        low, high = (int(v) for v in torch.aminmax(labels))
        if low < -1 or high > num_classes:
            mode = 'sigmoid' if self.use_sigmoid else 'softmax'
            raise ValueError(f'CrossEntropyLoss ({mode}, {num_columns} logit columns): labels '
                             f'must lie in [-1, {num_classes}] (-1 ignored, {num_classes} '
                             f'background), got values in [{low}, {high}]')
        # bfloat16/float16 logits (autocast): the log-sum-exp and the sum run in float32
        logits = at_least_float32(logits)
        valid = labels >= 0
        if self.use_sigmoid:
            targets = F.one_hot(labels.clamp(min=0), num_classes + 1)[:, :num_classes]
            loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype),
                                                      reduction='none')
            loss = torch.where(valid[:, None], loss, torch.zeros_like(loss))
            elements_per_row = num_columns
        else:
            loss = F.cross_entropy(logits, labels, ignore_index=-1, reduction='none')[:, None]
            elements_per_row = 1
        if weight is not None:
            loss = loss * weight.to(loss.dtype)[:, None]
        total = loss.sum()
        if avg_factor is None:
            avg_factor = (valid.sum() * elements_per_row).clamp(min=1).to(total.dtype)
        return self.loss_weight * total / avg_factor

    def extra_repr(self) -> str:
        return f'use_sigmoid={self.use_sigmoid}, loss_weight={self.loss_weight}'
