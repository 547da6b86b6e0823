"""Anchors of a feature pyramid: a few base boxes per level, shifted over every feature location."""
from __future__ import annotations

import numbers
from typing import Sequence

import torch
from torch import Tensor

from detkit.registry import TASK_UTILS


@TASK_UTILS.register_module()
class AnchorGenerator:
    """Generates the anchors of every pyramid level for a dense (one-stage or RPN) head.

    Each level has ``A = len(ratios) * len(scales)`` base anchors, centred at
    ``(center_offset * base_size, center_offset * base_size)``. For ratio ``r`` (outer loop) and
    scale ``s`` (inner loop) the base anchor has height ``base_size * sqrt(r) * s`` and width
    ``base_size / sqrt(r) * s``, so ``r`` is ``h / w`` and the area ``(base_size * s) ** 2`` does
    not depend on ``r``. The grid places one copy of the base anchors at every feature location
    ``(x * stride, y * stride)``.

    The anchors of a level are ordered location-major, anchor-minor: row ``(y * W + x) * A + a``.
    That is the order of a conv head's output ``(B, A * K, H, W).permute(0, 2, 3, 1)
    .reshape(B, -1, K)``, so predictions and anchors line up row by row.

    Scales are given either directly (``scales``) or as an octave
    (``octave_base_scale * 2 ** (i / scales_per_octave)`` for ``i = 0 .. scales_per_octave - 1``).

    Args:
        strides: the stride in pixels of each level, e.g. ``[8, 16, 32, 64, 128]``.
        ratios: anchor height/width ratios, the same for every level, e.g. ``[0.5, 1.0, 2.0]``.
        octave_base_scale: the first octave scale (RetinaNet: 4); needs ``scales_per_octave``.
        scales_per_octave: how many scales per octave (RetinaNet: 3).
        scales: explicit scales, instead of the octave pair.
        base_sizes: the base size in pixels of each level; defaults to ``strides``.
        center_offset: where the base anchors are centred, as a fraction of the base size in
            ``[0, 1)``; 0 centres them on the top-left corner of the feature cell's pixel block.

    Example:
        >>> gen = AnchorGenerator(strides=[8, 16, 32, 64, 128], ratios=[0.5, 1.0, 2.0],
        ...                       octave_base_scale=4, scales_per_octave=3)
        >>> gen.num_base_anchors
        [9, 9, 9, 9, 9]
        >>> [a.shape for a in gen.grid_anchors([(2, 3)] * 5)][0]
        torch.Size([54, 4])
    """

    def __init__(self,
                 strides: Sequence[int],
                 ratios: Sequence[float],
                 octave_base_scale: float | None = None,
                 scales_per_octave: int | None = None,
                 scales: Sequence[float] | None = None,
                 base_sizes: Sequence[int] | None = None,
                 center_offset: float = 0.0) -> None:
        self.strides = _positive_list('strides', strides)
        self.ratios = _positive_list('ratios', ratios)
        self.scales = _resolve_scales(octave_base_scale, scales_per_octave, scales)
        self.octave_base_scale = octave_base_scale
        self.scales_per_octave = scales_per_octave
        if base_sizes is None:
            self.base_sizes = list(self.strides)
        else:
            self.base_sizes = _positive_list('base_sizes', base_sizes)
            if len(self.base_sizes) != len(self.strides):
                raise ValueError(f'AnchorGenerator: base_sizes has {len(self.base_sizes)} entries '
                                 f'but strides has {len(self.strides)}; give one per level')
        if not 0.0 <= center_offset < 1.0:
            raise ValueError(f'AnchorGenerator: center_offset={center_offset} must be in [0, 1)')
        self.center_offset = float(center_offset)
        self.base_anchors: list[Tensor] = [self._base_anchors_of_level(size)
                                           for size in self.base_sizes]

    @property
    def num_levels(self) -> int:
        """The number of pyramid levels."""
        return len(self.strides)

    @property
    def num_base_anchors(self) -> list[int]:
        """The number of anchors ``A`` per feature location, for each level."""
        return [int(anchors.shape[0]) for anchors in self.base_anchors]

    def _base_anchors_of_level(self, base_size: float) -> Tensor:
        ratios = torch.tensor(self.ratios, dtype=torch.float32)
        scales = torch.tensor(self.scales, dtype=torch.float32)
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1.0 / h_ratios
        # ratio is the outer loop, scale the inner one: row = ratio_index * num_scales + scale_index
        widths = (base_size * w_ratios[:, None] * scales[None, :]).reshape(-1)
        heights = (base_size * h_ratios[:, None] * scales[None, :]).reshape(-1)
        center = self.center_offset * base_size
        return torch.stack([center - 0.5 * widths, center - 0.5 * heights,
                            center + 0.5 * widths, center + 0.5 * heights], dim=-1)

    def grid_anchors(self, featmap_sizes: Sequence[tuple[int, int]],
                     device: torch.device | str = 'cpu') -> list[Tensor]:
        """The anchors of every level for feature maps of the given sizes.

        Args:
            featmap_sizes: ``(H, W)`` of the feature map of each level, ``num_levels`` entries.
            device: where to create the anchors.

        Returns:
            One ``(H * W * A, 4)`` float32 tensor per level, xyxy in pixels of the input image,
            row ``(y * W + x) * A + a``.
        """
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(f'AnchorGenerator.grid_anchors: got {len(featmap_sizes)} feature map '
                             f'sizes but the generator has {self.num_levels} levels '
                             f'(strides {self.strides})')
        return [self.single_level_grid_anchors(self.base_anchors[level], featmap_sizes[level],
                                               self.strides[level], device)
                for level in range(self.num_levels)]

    def single_level_grid_anchors(self, base_anchors: Tensor, featmap_size: tuple[int, int],
                                  stride: int, device: torch.device | str = 'cpu') -> Tensor:
        """The anchors of one level: ``base_anchors`` shifted to every feature location.

        Args:
            base_anchors: ``(A, 4)`` base anchors of the level.
            featmap_size: ``(H, W)`` of the level's feature map.
            stride: the level's stride in pixels.
            device: where to create the anchors.

        Returns:
            ``(H * W * A, 4)`` anchors, row ``(y * W + x) * A + a``.
        """
        if len(featmap_size) != 2 or min(int(s) for s in featmap_size) < 0:
            raise ValueError(f'AnchorGenerator: featmap_size must be (H, W) with H, W >= 0, '
                             f'got {tuple(featmap_size)}')
        height, width = (int(s) for s in featmap_size)
        base_anchors = base_anchors.to(device)
        shift_x = torch.arange(width, device=device, dtype=base_anchors.dtype) * stride
        shift_y = torch.arange(height, device=device, dtype=base_anchors.dtype) * stride
        grid_y, grid_x = torch.meshgrid(shift_y, shift_x, indexing='ij')  # (H, W), row-major
        shifts = torch.stack([grid_x, grid_y, grid_x, grid_y], dim=-1).reshape(-1, 1, 4)
        return (shifts + base_anchors[None, :, :]).reshape(-1, 4)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(strides={self.strides}, ratios={self.ratios}, '
                f'scales={[round(s, 4) for s in self.scales]}, base_sizes={self.base_sizes}, '
                f'center_offset={self.center_offset})')


def _positive_list(name: str, values: Sequence[float]) -> list:
    values = list(values) if values is not None else []
    if not values or any(not isinstance(v, numbers.Real) or v <= 0 for v in values):
        raise ValueError(f'AnchorGenerator: {name} must be a non-empty list of positive numbers, '
                         f'got {values!r}')
    return values


def _resolve_scales(octave_base_scale: float | None, scales_per_octave: int | None,
                    scales: Sequence[float] | None) -> list[float]:
    octave_given = octave_base_scale is not None or scales_per_octave is not None
    if (scales is not None) == octave_given:
        raise ValueError('AnchorGenerator: give either scales=[...] or both octave_base_scale and '
                         'scales_per_octave, exactly one of the two; got '
                         f'scales={scales!r}, octave_base_scale={octave_base_scale!r}, '
                         f'scales_per_octave={scales_per_octave!r}')
    if scales is not None:
        return [float(s) for s in _positive_list('scales', scales)]
    if octave_base_scale is None or scales_per_octave is None:
        raise ValueError('AnchorGenerator: octave_base_scale and scales_per_octave go together; '
                         f'got octave_base_scale={octave_base_scale!r}, '
                         f'scales_per_octave={scales_per_octave!r}')
    if not isinstance(scales_per_octave, numbers.Integral) or scales_per_octave < 1 \
            or octave_base_scale <= 0:
        raise ValueError('AnchorGenerator: need octave_base_scale > 0 and an integer '
                         f'scales_per_octave >= 1, got {octave_base_scale!r}, '
                         f'{scales_per_octave!r}')
    return [octave_base_scale * 2 ** (i / scales_per_octave) for i in range(scales_per_octave)]
