"""Pairwise overlap (IoU or IoF) between two sets of boxes."""
from __future__ import annotations

import torch
from torch import Tensor

OVERLAP_MODES = ('iou', 'iof')


def bbox_overlaps(boxes1: Tensor, boxes2: Tensor, mode: str = 'iou', eps: float = 1e-6) -> Tensor:
    """The overlap of every box in ``boxes1`` with every box in ``boxes2``.

    Boxes are ``(x1, y1, x2, y2)`` in absolute pixels (no ``+1``). A box with ``x2 < x1`` or
    ``y2 < y1`` has area 0.

    Args:
        boxes1: ``(N, 4)`` boxes.
        boxes2: ``(M, 4)`` boxes, on the same device.
        mode: ``'iou'`` for intersection over union, ``'iof'`` for intersection over the area of
            the box from ``boxes1`` (the "foreground"), as used for ignore regions.
        eps: lower bound of the denominator, so that zero-area boxes give 0 instead of NaN.

    Returns:
        ``(N, M)`` overlaps in ``[0, 1]``; ``(N, 0)`` or ``(0, M)`` when a set is empty.

    Example:
        >>> a = torch.tensor([[0., 0., 10., 10.]])
        >>> b = torch.tensor([[5., 0., 15., 10.], [0., 0., 5., 5.]])
        >>> bbox_overlaps(a, b)  # 50 / 150 and 25 / 100
        tensor([[0.3333, 0.2500]])
    """
    for name, boxes in (('boxes1', boxes1), ('boxes2', boxes2)):
        if boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f'bbox_overlaps: {name} must have shape (N, 4) (x1, y1, x2, y2), '
                             f'got {tuple(boxes.shape)}')
    if mode not in OVERLAP_MODES:
        raise ValueError(f'bbox_overlaps: mode={mode!r} is not one of {OVERLAP_MODES}')
    dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float32
    boxes1, boxes2 = boxes1.to(dtype), boxes2.to(dtype)
    if boxes1.shape[0] == 0 or boxes2.shape[0] == 0:
        return boxes1.new_zeros((boxes1.shape[0], boxes2.shape[0]))

    area1 = _area(boxes1)  # (N,)
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2)
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (N, M, 2)
    wh = (bottom_right - top_left).clamp(min=0)
    intersection = wh[..., 0] * wh[..., 1]  # (N, M)
    if mode == 'iou':
        denominator = area1[:, None] + _area(boxes2)[None, :] - intersection
    else:
        denominator = area1[:, None].expand_as(intersection)
    return intersection / denominator.clamp(min=eps)


def _area(boxes: Tensor) -> Tensor:
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
