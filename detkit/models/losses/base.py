"""What every classification loss shares: one call signature, label groups only where used.

A head calls its classification loss as ``loss(logits, labels, weight=..., avg_factor=...,
groups=...)``, whichever loss the config names. ``groups`` is a
:class:`~detkit.structures.LabelGroups` that only a loss with ``uses_label_groups`` takes
(:class:`~detkit.models.losses.GroupSoftmaxLoss`); the head reads that flag to decide whether to
build one. Handing groups to a loss that ignores them, or none to one that needs them, is an
error that names the other loss.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from detkit.structures import LabelGroups


class ClassificationLoss(nn.Module):
    """Base of detkit's classification losses (one signature for every head).

    Attributes:
        uses_label_groups: whether :meth:`forward` needs ``groups`` (GroupSoftmax) or refuses
            them (every other loss).
    """

    uses_label_groups: ClassVar[bool] = False

    def forward(self, logits: Tensor, labels: Tensor, weight: Tensor | None = None,
                avg_factor: float | Tensor | None = None,
                groups: LabelGroups | None = None) -> Tensor:
        """The reduced loss.

        Args:
            logits: ``(N, C)`` raw scores.
            labels: ``(N,)`` int64 targets (``-1`` ignored).
            weight: ``(N,)`` per-row weight, or None.
            avg_factor: divisor of the summed loss, or None for the loss's own default.
            groups: the label groups of the N rows, for a loss with ``uses_label_groups``.

        Returns:
            A scalar tensor.
        """
        raise NotImplementedError

    def check_groups(self, groups: LabelGroups | None, num_rows: int, num_columns: int) -> None:
        """Raise unless ``groups`` is what this loss takes: None for a loss without
        ``uses_label_groups``; label groups of ``num_rows`` rows over ``num_columns`` columns for
        one with it."""
        name = type(self).__name__
        if not self.uses_label_groups:
            if groups is not None:
                raise ValueError(f'{name} takes no label groups (groups=...); GroupSoftmaxLoss '
                                 "does: loss_cls=dict(type='GroupSoftmaxLoss')")
            return
        if groups is None:
            raise ValueError(f'{name} needs groups=LabelGroups(...), the label groups of every '
                             'row (a head builds them from DetSample.label_groups); without '
                             "label groups use loss_cls=dict(type='CrossEntropyLoss')")
        if len(groups) != num_rows or groups.num_columns != num_columns:
            raise ValueError(f'{name}: groups cover {len(groups)} rows x {groups.num_columns} '
                             f'columns, logits are ({num_rows}, {num_columns})')


def uses_label_groups(loss: object) -> bool:
    """Whether a head must hand ``loss`` the label groups of its rows (``groups=``): a
    :class:`ClassificationLoss` says so; any other module (a loss of the user's own) does not."""
    return bool(getattr(loss, 'uses_label_groups', False))


def at_least_float32(tensor: Tensor) -> Tensor:
    """``tensor`` in float32 when it is float16 or bfloat16 (autocast's outputs), else as it is:
    losses reduce in at least float32."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor
