"""Box regression targets as centre shifts and log size ratios, relative to a prior box."""
from __future__ import annotations

import math
from typing import Sequence, cast

import torch
from torch import Tensor

from detkit.registry import TASK_UTILS


@TASK_UTILS.register_module()
class DeltaXYWHBBoxCoder:
    """Encodes a box relative to a prior as ``(dx, dy, dw, dh)`` and decodes it back.

    With prior centre ``(px, py)`` and size ``(pw, ph)``, and target centre ``(gx, gy)`` and size
    ``(gw, gh)``: ``dx = (gx - px) / pw``, ``dy = (gy - py) / ph``, ``dw = log(gw / pw)``,
    ``dh = log(gh / ph)``; each delta is then normalised as ``(d - mean) / std``. Boxes are
    ``(x1, y1, x2, y2)`` in pixels; priors must have positive width and height.

    Args:
        target_means: the 4 means subtracted from the raw deltas.
        target_stds: the 4 standard deviations dividing the raw deltas (Faster R-CNN's RoI head:
            ``(0.1, 0.1, 0.2, 0.2)``).
        clip_border: whether :meth:`decode` clips boxes to the image when given ``max_shape``.
        clamp_shrink: whether :meth:`decode` clamps ``dw`` and ``dh`` from below as well as from
            above (mmdetection), so a box shrinks at most as much as it may grow; False clamps
            them from above only, as torchvision's ``BoxCoder`` does.

    Example:
        >>> coder = DeltaXYWHBBoxCoder()
        >>> prior = torch.tensor([[0., 0., 10., 20.]])
        >>> coder.encode(prior, torch.tensor([[5., 0., 15., 40.]]))  # dy = 10 / 20, dh = log 2
        tensor([[0.5000, 0.5000, 0.0000, 0.6931]])
    """

    def __init__(self,
                 target_means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
                 target_stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
                 clip_border: bool = True, clamp_shrink: bool = True) -> None:
        if len(target_means) != 4 or len(target_stds) != 4:
            raise ValueError('DeltaXYWHBBoxCoder: target_means and target_stds need 4 values '
                             f'(x, y, w, h), got {tuple(target_means)} and {tuple(target_stds)}')
        if any(s <= 0 for s in target_stds):
            raise ValueError(f'DeltaXYWHBBoxCoder: target_stds={tuple(target_stds)} must all be '
                             '> 0')
        self.target_means = tuple(float(m) for m in target_means)
        self.target_stds = tuple(float(s) for s in target_stds)
        self.clip_border = bool(clip_border)
        self.clamp_shrink = bool(clamp_shrink)

    def encode(self, bboxes: Tensor, gt_bboxes: Tensor) -> Tensor:
        """The normalised deltas that move each prior onto its target box.

        Args:
            bboxes: ``(..., 4)`` priors, xyxy in pixels.
            gt_bboxes: ``(..., 4)`` target boxes, same shape.

        Returns:
            ``(..., 4)`` deltas ``(dx, dy, dw, dh)``, normalised by the means and stds.
        """
        if bboxes.shape != gt_bboxes.shape or bboxes.shape[-1:] != (4,):
            raise ValueError('DeltaXYWHBBoxCoder.encode: bboxes and gt_bboxes must have the same '
                             f'shape (..., 4), got {tuple(bboxes.shape)} and '
                             f'{tuple(gt_bboxes.shape)}')
        dtype = torch.promote_types(bboxes.dtype, gt_bboxes.dtype)
        if not dtype.is_floating_point:
            dtype = torch.float32
        bboxes, gt_bboxes = bboxes.to(dtype), gt_bboxes.to(dtype)
        px, py, pw, ph = _center_size(bboxes)
        gx, gy, gw, gh = _center_size(gt_bboxes)
        deltas = torch.stack([(gx - px) / pw, (gy - py) / ph,
                              torch.log(gw / pw), torch.log(gh / ph)], dim=-1)
        means, stds = self._means_stds(deltas)
        return (deltas - means) / stds

    def decode(self, bboxes: Tensor, deltas: Tensor,
               max_shape: tuple[int, int] | Tensor | None = None,
               wh_ratio_clip: float = 16 / 1000) -> Tensor:
        """Apply normalised deltas to priors.

        Class-specific deltas (``4 * K`` values per prior, as in Faster R-CNN's RoI head) are
        applied group by group to the same prior.

        Args:
            bboxes: ``(..., 4)`` priors, xyxy in pixels.
            deltas: ``(..., 4 * K)`` normalised deltas, same leading shape as ``bboxes``.
            max_shape: ``(h, w)`` of the image (a ``(2,)`` float tensor in an exported graph);
                boxes are clipped to ``[0, w] x [0, h]`` when given
                and ``clip_border`` is set.
            wh_ratio_clip: ``dw`` and ``dh`` are clamped to ``[-|log r|, |log r|]`` for this ``r``,
                so a box grows or shrinks at most ``1 / r`` times (default ``1000 / 16``);
                without ``clamp_shrink`` only to ``<= |log r|``.

        Returns:
            ``(..., 4 * K)`` decoded boxes, xyxy in pixels.
        """
        if bboxes.shape[-1:] != (4,) or deltas.dim() == 0 or deltas.shape[-1] % 4 != 0 \
                or bboxes.shape[:-1] != deltas.shape[:-1]:
            raise ValueError('DeltaXYWHBBoxCoder.decode: need bboxes (..., 4) and deltas '
                             '(..., 4 * K) with the same leading shape, got '
                             f'{tuple(bboxes.shape)} and {tuple(deltas.shape)}')
        if not 0 < wh_ratio_clip < 1:
            raise ValueError(f'DeltaXYWHBBoxCoder.decode: wh_ratio_clip={wh_ratio_clip} must be '
                             'in (0, 1)')
        if not deltas.dtype.is_floating_point:
            deltas = deltas.float()
        out_shape = deltas.shape
        num_groups = deltas.shape[-1] // 4
        deltas = deltas.reshape(*deltas.shape[:-1], num_groups, 4)
        means, stds = self._means_stds(deltas)
        deltas = deltas * stds + means
        max_ratio = abs(math.log(wh_ratio_clip))
        dx, dy = deltas[..., 0], deltas[..., 1]
        min_ratio = -max_ratio if self.clamp_shrink else None
        dw = deltas[..., 2].clamp(min=min_ratio, max=max_ratio)
        dh = deltas[..., 3].clamp(min=min_ratio, max=max_ratio)

        px, py, pw, ph = (v.unsqueeze(-1) for v in _center_size(bboxes.to(deltas.dtype)))
        gx, gy = px + pw * dx, py + ph * dy
        gw, gh = pw * torch.exp(dw), ph * torch.exp(dh)
        x1, y1, x2, y2 = gx - 0.5 * gw, gy - 0.5 * gh, gx + 0.5 * gw, gy + 0.5 * gh
        if self.clip_border and max_shape is not None:
            # ints, or 0-d tensors (torch clamps to either) in an exported graph
            height, width = cast(int, max_shape[0]), cast(int, max_shape[1])
            x1, x2 = x1.clamp(min=0, max=width), x2.clamp(min=0, max=width)
            y1, y2 = y1.clamp(min=0, max=height), y2.clamp(min=0, max=height)
        return torch.stack([x1, y1, x2, y2], dim=-1).reshape(out_shape)

    def _means_stds(self, like: Tensor) -> tuple[Tensor, Tensor]:
        means = like.new_tensor(self.target_means)
        stds = like.new_tensor(self.target_stds)
        return means, stds

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(target_means={self.target_means}, '
                f'target_stds={self.target_stds}, clip_border={self.clip_border}, '
                f'clamp_shrink={self.clamp_shrink})')


def _center_size(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * widths, boxes[..., 1] + 0.5 * heights, widths, heights
