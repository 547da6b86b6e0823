"""GroupSoftmax: softmax cross entropy where the target names a *group* of classes.

Training one detector on several datasets that each annotate only their own classes (COCO does
not label traffic signs, CCTSDB labels nothing else): for an image of dataset ``d`` the classes
that ``d`` does not annotate are merged with background into one group, so that an unlabelled
sign in a COCO image is not trained as background; the loss is the cross entropy of the group's
summed probability.

The math. A row has logits ``z`` over ``K + 1`` classes, the ``K`` foreground classes at
``0 .. K-1`` and background LAST at index ``K`` (detkit's label convention: labels ``0 .. K-1``
foreground, ``K`` background, ``-1`` ignored); ``p = softmax(z)``. The row's group vector
``gid`` gives every class a group id; classes with id 0 share the background's group (the
dataset does not annotate them). A row with target ``t`` has the group
``G = {j : gid[j] == gid[t]}`` and

    L   = -log P_G,   P_G = sum_{j in G} p_j
        = logsumexp(z) - logsumexp(z_G)
    dL/dz_m = p_m - [m in G] * p_m / P_G

The loss is computed in the second form, with ``z_G`` the logits masked to ``-inf`` outside
``G``: both log-sum-exps subtract their own maximum, so no epsilon is needed and a group whose
probability underflows (``P_G`` ~ 1e-400) still gives a finite loss and gradient. With every
group a singleton the loss is softmax cross entropy (equal to it up to rounding).

:func:`group_softmax_loss_reference` is the pure-PyTorch reference (float64-capable, what the
tests check). :class:`GroupSoftmaxLoss` runs the fused kernel
``detkit.ops.group_softmax_cross_entropy`` when ``detkit.ops`` can be imported (the op itself
falls back to PyTorch where no kernel is compiled), and the reference otherwise.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from detkit.registry import MODELS
from detkit.structures import LabelGroups

from .base import ClassificationLoss

# detkit.ops.group_softmax_cross_entropy, or None (declared first: the import may fail).
_fused_group_softmax: Callable[..., Tensor] | None
try:  # the fused kernel is an accelerator, never a requirement
    from detkit.ops.group_softmax import group_softmax_cross_entropy as _fused_group_softmax
except ImportError:  # pragma: no cover - depends on what is installed
    _fused_group_softmax = None


def group_softmax_loss_reference(logits: Tensor, labels: Tensor, label_groups: Tensor) -> Tensor:
    """The GroupSoftmax loss of every row (see the module docstring for the math).

    Args:
        logits: ``(N, K + 1)`` float scores, background at column ``K``.
        labels: ``(N,)`` int64 targets in ``[0, K]``, or ``-1`` for an ignored row.
        label_groups: ``(N, K + 1)`` int64 group id of every class for each row (the group
            vector of the dataset the row's image comes from); id 0 is the background group.

    Returns:
        ``(N,)`` per-row loss in the dtype of ``logits``; ignored rows are 0 and get no
        gradient.

    Example:
        >>> z = torch.tensor([[2.0, 1.0, 0.0]])  # classes 0, 1 and background (K = 2)
        >>> groups = torch.tensor([[1, 0, 0]])   # the dataset annotates class 0 only
        >>> # target background: G = {1, 2}, L = logsumexp(2, 1, 0) - logsumexp(1, 0)
        >>> round(float(group_softmax_loss_reference(z, torch.tensor([2]), groups)[0]), 4)
        1.0943
    """
    if logits.dim() != 2:
        raise ValueError(f'group_softmax_loss: logits must have shape (N, K + 1) with the '
                         f'background at column K, got {tuple(logits.shape)}')
    num_rows, num_columns = logits.shape
    if labels.shape != (num_rows,) or labels.dtype.is_floating_point:
        raise ValueError(f'group_softmax_loss: labels must be an integer tensor of shape '
                         f'({num_rows},), got {labels.dtype} {tuple(labels.shape)}')
    if label_groups.shape != (num_rows, num_columns) or label_groups.dtype.is_floating_point:
        raise ValueError(f'group_softmax_loss: label_groups must be an integer tensor of shape '
                         f'({num_rows}, {num_columns}) (one group vector per row), got '
                         f'{label_groups.dtype} {tuple(label_groups.shape)}')
    if num_rows == 0:
        return logits.sum(dim=1)  # (0,), keeps the graph
    valid = labels >= 0
    low, high = (int(v) for v in torch.aminmax(labels))
    if low < -1 or high >= num_columns:
        raise ValueError(f'group_softmax_loss: labels must lie in [-1, {num_columns - 1}] '
                         f'(-1 ignored, {num_columns - 1} background), got values in '
                         f'[{low}, {high}]')
    # Ignored rows compute with target 0 (a valid class) and are zeroed afterwards.
    targets = torch.where(valid, labels, torch.zeros_like(labels))
    target_group = label_groups.gather(1, targets[:, None])  # (N, 1)
    in_group = label_groups == target_group                  # (N, K + 1), holds the target
    group_lse = torch.logsumexp(logits.masked_fill(~in_group, float('-inf')), dim=1)
    loss = torch.logsumexp(logits, dim=1) - group_lse
    return torch.where(valid, loss, torch.zeros_like(loss))


@MODELS.register_module()
class GroupSoftmaxLoss(ClassificationLoss):
    """GroupSoftmax cross entropy, summed over rows and divided by the non-ignored row count.

    Called like every classification loss, with the rows' label groups as ``groups`` (a
    :class:`~detkit.structures.LabelGroups`: a few group vectors and the vector each row uses,
    the form the fused kernel takes). It is a softmax: a config that replaces a
    ``CrossEntropyLoss(use_sigmoid=False)`` with it keeps ``use_sigmoid=False``.

    Args:
        use_sigmoid: must be False; accepted so that a config can name this loss in place of
            a softmax ``CrossEntropyLoss``.
        loss_weight: multiplier of the loss.

    Example:
        >>> loss = GroupSoftmaxLoss()
        >>> z = torch.zeros(2, 3)                       # K = 2, background at column 2
        >>> groups = LabelGroups(table=torch.tensor([[1, 0, 0], [2, 1, 0]]),
        ...                      row_index=torch.tensor([0, 1]))
        >>> # row 0 (vector 0, background): G = {1, 2}; row 1 (vector 1, class 1): G = {1}
        >>> round(float(loss(z, torch.tensor([2, 1]), groups=groups)), 4)  # (log 3/2 + log 3)/2
        0.752
    """

    uses_label_groups = True

    def __init__(self, use_sigmoid: bool = False, loss_weight: float = 1.0) -> None:
        super().__init__()
        if use_sigmoid:
            raise ValueError('GroupSoftmaxLoss is a softmax over groups of classes: '
                             'use_sigmoid must be False (a sigmoid objectness is '
                             "CrossEntropyLoss(use_sigmoid=True))")
        self.loss_weight = float(loss_weight)

    def forward(self, logits: Tensor, labels: Tensor, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None,
                groups: LabelGroups | None = None) -> Tensor:
        """The reduced GroupSoftmax loss.

        Args:
            logits: ``(N, K + 1)`` scores, background at column ``K``.
            labels: ``(N,)`` int64 in ``[0, K]``, ``-1`` ignored.
            weight: ``(N,)`` per-row weight, or None.
            avg_factor: divisor of the summed loss; None divides by the number of non-ignored
                rows (at least 1, so an all-ignored batch gives 0).
            groups: the label groups of the N rows (required).

        Returns:
            A scalar: ``loss_weight * sum_i(weight_i * L_i) / avg_factor``.
        """
        if logits.dim() != 2:
            raise ValueError(f'GroupSoftmaxLoss: logits must have shape (N, K + 1), got '
                             f'{tuple(logits.shape)}')
        self.check_groups(groups, *logits.shape)
        assert groups is not None  # check_groups raised otherwise
        if avg_factor is not None and not isinstance(avg_factor, Tensor) and avg_factor <= 0:
            raise ValueError(f'GroupSoftmaxLoss: avg_factor={avg_factor} must be > 0')
        if weight is not None and weight.shape != labels.shape:
            raise ValueError(f'GroupSoftmaxLoss: weight must have shape {tuple(labels.shape)} '
                             f'(one per row), got {tuple(weight.shape)}')
        if logits.shape[0] == 0:
            return logits.sum() * 0
        if _fused_group_softmax is not None:
            # 'sum' accumulates float16/bfloat16 logits in float32
            total = _fused_group_softmax(logits, labels, groups.row_index.to(logits.device),
                                         groups.table.to(logits.device),
                                         reduction='none' if weight is not None else 'sum')
        else:
            if logits.dtype in (torch.float16, torch.bfloat16):
                logits = logits.float()
            total = group_softmax_loss_reference(logits, labels,
                                                 groups.per_row().to(logits.device))
        if weight is not None:
            total = total.float() if total.dtype in (torch.float16, torch.bfloat16) else total
            total = total * weight.to(total.dtype)
        total = total.sum()
        if avg_factor is None:
            avg_factor = (labels >= 0).sum().clamp(min=1).to(total.dtype)
        return self.loss_weight * total / avg_factor

    def extra_repr(self) -> str:
        return f'loss_weight={self.loss_weight}, fused={_fused_group_softmax is not None}'
