"""Anchors of a feature pyramid: a few base boxes per level, shifted over every feature
location."""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
from torch import Tensor

from detkit.registry import TASK_UTILS
from detkit.structures import DetSample


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
    (``octave_base_scale * 2 ** (i / scales_per_octave)`` for ``i = 0 .. scales_per_octave - 1``),
    or the anchor sides are listed per level (``sizes``, torchvision's ``AnchorGenerator(sizes)``):
    level ``l`` then has, for each ratio ``r`` and side ``s`` in ``sizes[l]``, the anchor of width
    ``s / sqrt(r)`` and height ``s * sqrt(r)``.

    Two options reproduce torchvision's anchors exactly (both off by default):

    - ``round_base_anchors``: the base anchor coordinates are rounded to whole pixels (halves to
      even, ``torch.round``), e.g. the 32 px anchor of ratio 0.5 is ``(-23, -11, 23, 11)``
      instead of ``(-22.63, -11.31, 22.63, 11.31)``.
    - ``strides_from_image``: the shift between neighbouring anchors of a level is not its
      nominal stride but ``padded_input_size // feature_size``, per axis, from the shape of the
      padded input batch given to :meth:`grid_anchors`. The two differ when the input is not a
      multiple of the level's nominal stride: an 800 px high batch has a 7-row P7, so its P7
      anchors are ``800 // 7 = 114`` px apart instead of 128.

    Args:
        strides: the stride in pixels of each level, e.g. ``[8, 16, 32, 64, 128]``.
        ratios: anchor height/width ratios, the same for every level, e.g. ``[0.5, 1.0, 2.0]``.
        octave_base_scale: the first octave scale (RetinaNet: 4); needs ``scales_per_octave``.
        scales_per_octave: how many scales per octave (RetinaNet: 3).
        scales: explicit scales, instead of the octave pair.
        base_sizes: the base size in pixels of each level; defaults to ``strides``.
        center_offset: where the base anchors are centred, as a fraction of the base size in
            ``[0, 1)``; 0 centres them on the top-left corner of the feature cell's pixel block.
        sizes: per level, the anchor sides in pixels (``len(strides)`` lists of equal length),
            instead of ``base_sizes`` x scales; e.g. torchvision's RetinaNet
            ``[[32, 40, 50], [64, 80, 101], ...]``.
        round_base_anchors: round the base anchors to whole pixels (see above).
        strides_from_image: derive each level's shifts from the padded input shape (see above);
            :meth:`grid_anchors` then needs ``input_shape``.

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
                 center_offset: float = 0.0,
                 sizes: Sequence[Sequence[float]] | None = None,
                 round_base_anchors: bool = False,
                 strides_from_image: bool = False) -> None:
        self.strides = _positive_list('strides', strides)
        self.ratios = _positive_list('ratios', ratios)
        if sizes is None:
            self.scales = _resolve_scales(octave_base_scale, scales_per_octave, scales)
            self.sizes = None
        else:
            self.scales = []
            self.sizes = _resolve_sizes(sizes, len(self.strides), octave_base_scale,
                                        scales_per_octave, scales, base_sizes)
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
        self.round_base_anchors = bool(round_base_anchors)
        self.strides_from_image = bool(strides_from_image)
        self.base_anchors: list[Tensor] = [self._base_anchors_of_level(level)
                                           for level in range(len(self.base_sizes))]

    @property
    def num_levels(self) -> int:
        """The number of pyramid levels."""
        return len(self.strides)

    @property
    def num_base_anchors(self) -> list[int]:
        """The number of anchors ``A`` per feature location, for each level."""
        return [int(anchors.shape[0]) for anchors in self.base_anchors]

    def _base_anchors_of_level(self, level: int) -> Tensor:
        base_size = self.base_sizes[level]
        ratios = torch.tensor(self.ratios, dtype=torch.float32)
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1.0 / h_ratios
        # ratio is the outer loop, scale (or side) the inner one:
        # row = ratio_index * num_scales + scale_index
        if self.sizes is None:
            scales = torch.tensor(self.scales, dtype=torch.float32)
            widths = (base_size * w_ratios[:, None] * scales[None, :]).reshape(-1)
            heights = (base_size * h_ratios[:, None] * scales[None, :]).reshape(-1)
        else:
            sides = torch.tensor(self.sizes[level], dtype=torch.float32)
            widths = (w_ratios[:, None] * sides[None, :]).reshape(-1)
            heights = (h_ratios[:, None] * sides[None, :]).reshape(-1)
        center = self.center_offset * base_size
        anchors = torch.stack([center - 0.5 * widths, center - 0.5 * heights,
                               center + 0.5 * widths, center + 0.5 * heights], dim=-1)
        return anchors.round() if self.round_base_anchors else anchors

    def level_strides(self, featmap_sizes: Sequence[tuple[int, int]],
                      input_shape: tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """The ``(stride_y, stride_x)`` between neighbouring anchors of each level.

        Args:
            featmap_sizes: ``(H, W)`` of the feature map of each level.
            input_shape: ``(H, W)`` of the padded input batch; needed (and only read) with
                ``strides_from_image``.

        Returns:
            ``num_levels`` pairs: the nominal ``(stride, stride)``, or with
            ``strides_from_image`` ``(input_h // H, input_w // W)`` (the nominal stride where a
            feature map is empty).
        """
        if not self.strides_from_image:
            return [(stride, stride) for stride in self.strides]
        if input_shape is None or len(input_shape) != 2 or min(input_shape) < 1:
            raise ValueError('AnchorGenerator(strides_from_image=True) needs input_shape, the '
                             '(H, W) of the padded input batch (DetSample.batch_input_shape, set '
                             f'by the data preprocessor); got input_shape={input_shape!r}')
        input_h, input_w = (int(s) for s in input_shape)
        return [(input_h // int(h) if int(h) > 0 else stride,
                 input_w // int(w) if int(w) > 0 else stride)
                for (h, w), stride in zip(featmap_sizes, self.strides)]

    def grid_anchors(self, featmap_sizes: Sequence[tuple[int, int]],
                     device: torch.device | str = 'cpu',
                     input_shape: tuple[int, int] | None = None) -> list[Tensor]:
        """The anchors of every level for feature maps of the given sizes.

        Args:
            featmap_sizes: ``(H, W)`` of the feature map of each level, ``num_levels`` entries.
            device: where to create the anchors.
            input_shape: ``(H, W)`` of the padded input batch; needed with
                ``strides_from_image``, ignored otherwise.

        Returns:
            One ``(H * W * A, 4)`` float32 tensor per level, xyxy in pixels of the input image,
            row ``(y * W + x) * A + a``.
        """
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(f'AnchorGenerator.grid_anchors: got {len(featmap_sizes)} feature map '
                             f'sizes but the generator has {self.num_levels} levels '
                             f'(strides {self.strides})')
        strides = self.level_strides(featmap_sizes, input_shape)
        return [self.single_level_grid_anchors(self.base_anchors[level], featmap_sizes[level],
                                               strides[level], device)
                for level in range(self.num_levels)]

    def valid_flags(self, featmap_sizes: Sequence[tuple[int, int]], pad_shape: tuple[int, int],
                    device: torch.device | str = 'cpu',
                    input_shape: tuple[int, int] | None = None) -> list[Tensor]:
        """Which anchors of a padded batch belong to one image: those whose feature location
        lies inside the image's own padded extent.

        In a batch, a smaller image is padded to the batch's size; the feature locations past
        ``ceil(pad_h / stride_y)`` rows or ``ceil(pad_w / stride_x)`` columns see only padding
        (or another image's) and are not the image's to train (mmdetection's
        ``AnchorGenerator.valid_flags``).

        Args:
            featmap_sizes: ``(H, W)`` of each level's feature map (of the batch).
            pad_shape: ``(h, w)`` of the image padded to the size divisor
                (``DetSample.pad_shape``).
            device: where to create the flags.
            input_shape: ``(H, W)`` of the padded batch, for ``strides_from_image``.

        Returns:
            One ``(H * W * A,)`` bool tensor per level, in the order of :meth:`grid_anchors`.
        """
        strides = self.level_strides(featmap_sizes, input_shape)
        flags = []
        for (height, width), (stride_y, stride_x), base in zip(featmap_sizes, strides,
                                                               self.base_anchors):
            valid_h = min(math.ceil(pad_shape[0] / stride_y), int(height))
            valid_w = min(math.ceil(pad_shape[1] / stride_x), int(width))
            rows = torch.arange(int(height), device=device) < valid_h
            cols = torch.arange(int(width), device=device) < valid_w
            cells = (rows[:, None] & cols[None, :]).reshape(-1)
            flags.append(cells[:, None].expand(-1, base.shape[0]).reshape(-1))
        return flags

    def single_level_grid_anchors(self, base_anchors: Tensor, featmap_size: tuple[int, int],
                                  stride: int | tuple[int, int],
                                  device: torch.device | str = 'cpu') -> Tensor:
        """The anchors of one level: ``base_anchors`` shifted to every feature location.

        Args:
            base_anchors: ``(A, 4)`` base anchors of the level.
            featmap_size: ``(H, W)`` of the level's feature map.
            stride: the level's stride in pixels, or ``(stride_y, stride_x)``.
            device: where to create the anchors.

        Returns:
            ``(H * W * A, 4)`` anchors, row ``(y * W + x) * A + a``.
        """
        if len(featmap_size) != 2 or min(int(s) for s in featmap_size) < 0:
            raise ValueError(f'AnchorGenerator: featmap_size must be (H, W) with H, W >= 0, '
                             f'got {tuple(featmap_size)}')
        height, width = (int(s) for s in featmap_size)
        stride_y, stride_x = stride if isinstance(stride, (tuple, list)) else (stride, stride)
        base_anchors = base_anchors.to(device)
        shift_x = torch.arange(width, device=device, dtype=base_anchors.dtype) * stride_x
        shift_y = torch.arange(height, device=device, dtype=base_anchors.dtype) * stride_y
        grid_y, grid_x = torch.meshgrid(shift_y, shift_x, indexing='ij')  # (H, W), row-major
        shifts = torch.stack([grid_x, grid_y, grid_x, grid_y], dim=-1).reshape(-1, 1, 4)
        return (shifts + base_anchors[None, :, :]).reshape(-1, 4)

    def __repr__(self) -> str:
        shape = (f'sizes={self.sizes}' if self.sizes is not None else
                 f'scales={[round(s, 4) for s in self.scales]}, base_sizes={self.base_sizes}')
        return (f'{type(self).__name__}(strides={self.strides}, ratios={self.ratios}, {shape}, '
                f'center_offset={self.center_offset}, '
                f'round_base_anchors={self.round_base_anchors}, '
                f'strides_from_image={self.strides_from_image})')


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


def _resolve_sizes(sizes: Sequence[Sequence[float]], num_levels: int,
                   octave_base_scale: float | None, scales_per_octave: int | None,
                   scales: Sequence[float] | None,
                   base_sizes: Sequence[int] | None) -> list[list[float]]:
    others = dict(octave_base_scale=octave_base_scale, scales_per_octave=scales_per_octave,
                  scales=scales, base_sizes=base_sizes)
    given = sorted(name for name, value in others.items() if value is not None)
    if given:
        raise ValueError(f'AnchorGenerator: sizes lists the anchor sides of every level, so '
                         f'{given} must not be given with it')
    sizes = [list(level) if isinstance(level, (list, tuple)) else level for level in sizes]
    if len(sizes) != num_levels or not all(isinstance(level, list) for level in sizes):
        raise ValueError(f'AnchorGenerator: sizes must hold one list of anchor sides per level '
                         f'({num_levels} levels, as strides), got {sizes!r}')
    resolved = [[float(s) for s in _positive_list(f'sizes[{i}]', level)]
                for i, level in enumerate(sizes)]
    if len({len(level) for level in resolved}) != 1:
        raise ValueError(f'AnchorGenerator: every level of sizes needs the same number of sides '
                         f'(a shared head predicts the same anchors per location), got {sizes!r}')
    return resolved


def trainable_anchors(anchor_generator: AnchorGenerator, anchors: Tensor,
                      featmap_sizes: Sequence[tuple[int, int]], sample: DetSample,
                      allowed_border: float = -1,
                      input_shape: tuple[int, int] | None = None) -> Tensor:
    """Which anchors of a batch a dense head trains for one image (mmdetection's
    ``valid_flags`` and ``anchor_inside_flags``).

    1. The anchor's feature location lies in the image's own padded extent
       (:meth:`AnchorGenerator.valid_flags` of ``sample.pad_shape``); an unset ``pad_shape``
       (``(0, 0)``, a sample made by hand) counts the whole batch as the image's.
    2. With ``allowed_border >= 0``, the anchor box also lies inside the image (``img_shape``)
       up to ``allowed_border`` pixels; ``-1`` (mmdetection's RetinaNet and RPN configs) skips
       this.

    Args:
        anchor_generator: the head's generator.
        anchors: ``(N, 4)`` the batch's anchors of every level, concatenated.
        featmap_sizes: ``(H, W)`` of each level.
        sample: the image (``pad_shape``, ``img_shape``).
        allowed_border: pixels an anchor may reach past the image, or -1 for no such test.
        input_shape: ``(H, W)`` of the padded batch, for ``strides_from_image``.

    Returns:
        ``(N,)`` bool, True for the anchors to assign and train.
    """
    pad_shape = tuple(int(v) for v in sample.pad_shape)
    if min(pad_shape) > 0:
        inside = torch.cat(anchor_generator.valid_flags(featmap_sizes, (pad_shape[0],
                                                                        pad_shape[1]),
                                                        anchors.device, input_shape))
    else:
        inside = torch.ones(anchors.shape[0], dtype=torch.bool, device=anchors.device)
    if allowed_border >= 0:
        height, width = sample.img_shape
        inside &= ((anchors[:, 0] >= -allowed_border) & (anchors[:, 1] >= -allowed_border)
                   & (anchors[:, 2] < width + allowed_border)
                   & (anchors[:, 3] < height + allowed_border))
    return inside
