"""Multi-level RoIAlign: every RoI pooled from its own pyramid level, in one fused call.

Faster R-CNN pools each RoI from the FPN level that fits its size. Calling
``torchvision.ops.roi_align`` once per level costs a gather of each level's RoIs, a scatter of the
results, and a single-threaded CPU kernel per level; :func:`multi_level_roi_align` runs one
multi-threaded CPU kernel over all RoIs (forward and backward) and falls back to
:func:`multi_level_roi_align_reference` (those per-level torchvision calls) elsewhere.

The math (torchvision's RoIAlign), for RoI ``r = (b, x1, y1, x2, y2)`` on level ``l`` with scale
``s``, map ``H x W``, output size ``S`` and ``o = 0.5`` when ``aligned`` (else 0):

    start = (x1 * s - o, y1 * s - o)
    extent = (x2 * s - o, y2 * s - o) - start      (each side >= 1 when not aligned)
    bin = extent / S
    grid = sampling_ratio per axis if > 0, else ceil(extent / S) per axis (at least 0)
    point (iy, ix) of bin (ph, pw):
        y = start_y + ph * bin_h + (iy + 0.5) * bin_h / grid_h      (x alike)
    out[r, c, ph, pw] = sum over points of bilinear(feats[l][b, c], y, x) / max(grid_h * grid_w, 1)

where a point with ``y`` outside ``[-1, H]`` or ``x`` outside ``[-1, W]`` adds 0, a negative
coordinate reads as 0, and a coordinate at or past ``H - 1`` (``W - 1``) reads the last row
(column) alone. The CPU kernel performs the same floating-point operations in the same order as
torchvision's CPU kernel (no fused multiply-adds), so for finite inputs its forward and backward
results equal those of :func:`multi_level_roi_align_reference` on the CPU bit for bit (as tested
on x86-64 against torchvision's release build), with any number of threads. It reads the maps
through a channels-last copy of the (level, image) planes that RoIs use: a temporary as large as
those planes.
"""
from __future__ import annotations

import math
import operator
from typing import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torchvision.ops import roi_align

from . import _extension

# Largest sampling_ratio (and adaptive grid per axis) the CPU kernel accepts (roi_align_cpu.cpp).
MAX_SAMPLING_RATIO = 1 << 16
_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def roi_compute_dtype(feat_dtype: torch.dtype) -> torch.dtype:
    """The dtype RoIs and the pooling arithmetic take for maps of ``feat_dtype``: float64 for
    float64, else float32. float16/bfloat16 maps are pooled in float32 with float32 RoIs: a
    half-precision box corner near 1000 px would be off by up to 2 px."""
    return torch.promote_types(feat_dtype, torch.float32)


def multi_level_roi_align(feats: Sequence[Tensor], rois: Tensor, levels: Tensor,
                          spatial_scales: Sequence[float], output_size: int = 7,
                          sampling_ratio: int = 0, aligned: bool = True) -> Tensor:
    """RoIAlign of each RoI on the pyramid level ``levels[r]``, as one op.

    CPU float32/float64 tensors run the fused C++ kernel (threads: ``torch.get_num_threads()``).
    CPU bfloat16 maps that need no gradient (inference under ``--amp``) run the kernel's
    bfloat16 forward: it reads the maps as they are, computes in float32 and writes each output
    element rounded to bfloat16 (to nearest, ties to even), the bits of casting the maps to
    float32, pooling and casting the result back, without those two copies. CPU float16 maps,
    and bfloat16 maps that need a gradient, are computed in float32 and the result cast back
    (the gradients too). CUDA tensors, and CPU tensors where the compiled kernel is
    unavailable (one :class:`OpsFallbackWarning`), run :func:`multi_level_roi_align_reference`.
    Differentiable with respect to ``feats`` (``rois`` get no gradient, as in torchvision).

    Args:
        feats: ``L`` maps ``(B, C, H_l, W_l)``, one per level, of one dtype and device.
        rois: ``(R, 5)`` ``(batch_index, x1, y1, x2, y2)``, boxes in pixels of the input image
            (``spatial_scales`` maps them onto each level). ``batch_index`` is truncated to an
            integer and must lie in ``[0, B)``.
        levels: ``(R,)`` integer level of each RoI, in ``[0, L)``.
        spatial_scales: ``L`` numbers > 0, the size of a level relative to the image
            (``1 / stride``).
        output_size: ``S``, the pooled size of each RoI (``S x S`` bins).
        sampling_ratio: sampling points per bin along each axis; ``<= 0`` uses
            ``ceil(roi_size / S)`` per RoI and axis (adaptive).
        aligned: shift the scaled box by -0.5 pixel (pixel centres at ``i + 0.5``); False is the
            original RoIAlign, which also makes each side of a RoI at least 1 pixel.

    Returns:
        ``(R, C, S, S)`` in the dtype of ``feats``, row ``r`` pooled from ``feats[levels[r]]``.
        On the CPU kernel, a RoI with a NaN or infinite coordinate pools to NaN (and passes no
        gradient).

    Raises:
        ValueError: for a level id or batch index out of range (the CPU kernel checks every RoI;
            the reference checks with a host sync, skipped under ``torch.compile``), or an
            argument of the wrong shape; TypeError for a wrong dtype.

    Example:
        >>> feats = [torch.arange(16.).reshape(1, 1, 4, 4), torch.zeros(1, 1, 2, 2)]
        >>> rois = torch.tensor([[0., 0., 0., 4., 4.], [0., 0., 0., 4., 4.]])
        >>> out = multi_level_roi_align(feats, rois, torch.tensor([0, 1]), [1.0, 0.5],
        ...                             output_size=1, sampling_ratio=1)
        >>> out.flatten().tolist()  # the centre of the 4x4 map (1.5, 1.5); level 1 is zero
        [7.5, 0.0]
    """
    feats, rois, levels, spatial_scales, output_size, sampling_ratio = _check_arguments(
        feats, rois, levels, spatial_scales, output_size, sampling_ratio, aligned)
    dtype = feats[0].dtype
    if feats[0].device.type != 'cpu':
        return _pool_per_level(feats, rois, levels, spatial_scales, output_size, sampling_ratio,
                               aligned)
    compute_dtype = roi_compute_dtype(dtype)
    rois = rois.to(compute_dtype).contiguous()
    levels = levels.to(torch.int64).contiguous()
    kernels = _extension.kernels_for(rois.device)
    needs_grad = torch.is_grad_enabled() and any(f.requires_grad for f in feats)
    if dtype == torch.bfloat16 and kernels is not None and not needs_grad:
        # the kernel's bfloat16 forward: bfloat16 in and out, float32 inside
        return _run_forward(kernels, [_kernel_layout(f) for f in feats], rois, levels,
                            spatial_scales, output_size, sampling_ratio, aligned)
    feats = [_kernel_layout(f.to(compute_dtype)) for f in feats]
    if kernels is None:
        out = _pool_per_level(feats, rois, levels, spatial_scales, output_size, sampling_ratio,
                              aligned)
    elif needs_grad:
        out = _FusedMultiLevelRoIAlign.apply(rois, levels, spatial_scales, output_size,
                                             sampling_ratio, aligned, kernels, *feats)
    else:
        out = _run_forward(kernels, feats, rois, levels, spatial_scales, output_size,
                           sampling_ratio, aligned)
    return out.to(dtype)


def multi_level_roi_align_reference(feats: Sequence[Tensor], rois: Tensor, levels: Tensor,
                                    spatial_scales: Sequence[float], output_size: int = 7,
                                    sampling_ratio: int = 0, aligned: bool = True) -> Tensor:
    """Multi-level RoIAlign by one ``torchvision.ops.roi_align`` call per level that has RoIs.

    The fallback of :func:`multi_level_roi_align` and the tests' reference: the RoIs of each
    level are gathered, pooled from that level and scattered into the output; differentiable
    through torchvision. Computes in the dtype of ``feats`` (torchvision's kernels), float16 and
    bfloat16 maps in float32 with float32 RoIs, the result cast back.

    Args:
        feats: ``L`` maps ``(B, C, H_l, W_l)`` of one dtype and device.
        rois: ``(R, 5)`` ``(batch_index, x1, y1, x2, y2)`` in pixels of the input image.
        levels: ``(R,)`` integer level of each RoI, in ``[0, L)``.
        spatial_scales: ``L`` numbers > 0, one per level.
        output_size: ``S``.
        sampling_ratio: points per bin and axis, ``<= 0`` adaptive.
        aligned: the -0.5 pixel shift (see :func:`multi_level_roi_align`).

    Returns:
        ``(R, C, S, S)`` in the dtype of ``feats``.

    Raises:
        ValueError: as :func:`multi_level_roi_align`.
    """
    return _pool_per_level(*_check_arguments(feats, rois, levels, spatial_scales, output_size,
                                             sampling_ratio, aligned), aligned)


def _pool_per_level(feats: list[Tensor], rois: Tensor, levels: Tensor,
                    spatial_scales: list[float], output_size: int, sampling_ratio: int,
                    aligned: bool) -> Tensor:
    """The body of :func:`multi_level_roi_align_reference`, on arguments already checked."""
    num_rois = rois.shape[0]
    if num_rois > 0 and not torch.compiler.is_compiling():
        _check_ranges(rois, levels, len(feats), feats[0].shape[0])
    out = feats[0].new_zeros((num_rois, feats[0].shape[1], output_size, output_size))
    compute_dtype = roi_compute_dtype(feats[0].dtype)   # as the CPU kernel pools them
    rois = rois.to(compute_dtype)
    for level, (feat, scale) in enumerate(zip(feats, spatial_scales)):
        index = torch.nonzero(levels == level).squeeze(1)
        if index.numel() == 0:
            continue
        pooled = roi_align(feat.to(compute_dtype), rois[index],
                           output_size=(output_size, output_size),
                           spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=aligned)
        out.index_copy_(0, index, pooled.to(out.dtype))
    return out


class _FusedMultiLevelRoIAlign(torch.autograd.Function):
    """Autograd wrapper of the CPU kernels; ``feats`` come last so that each gets its gradient."""

    @staticmethod
    def forward(ctx, rois, levels, spatial_scales, output_size, sampling_ratio, aligned, kernels,
                *feats):
        out = _run_forward(kernels, feats, rois, levels, spatial_scales, output_size,
                           sampling_ratio, aligned)
        ctx.save_for_backward(rois, levels)
        ctx.shapes = [(f.shape, _channels_last(f)) for f in feats]
        ctx.options = (spatial_scales, sampling_ratio, aligned, kernels)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        rois, levels = ctx.saved_tensors
        spatial_scales, sampling_ratio, aligned, kernels = ctx.options
        # each gradient in its map's layout: the kernel writes channels-last ones in place
        grads = [_extension.new_output(tuple(shape), grad_output.dtype, grad_output.device,
                                       torch.channels_last if last else torch.contiguous_format)
                 for shape, last in ctx.shapes]
        kernels.multi_level_roi_align_backward(grad_output.contiguous(), rois, levels,
                                               spatial_scales, sampling_ratio, aligned, grads)
        wanted = ctx.needs_input_grad[7:]
        return (None,) * 7 + tuple(g if need else None for g, need in zip(grads, wanted))


def _channels_last(feat: Tensor) -> bool:
    """Whether ``feat`` is channels-last and not also NCHW-contiguous (the kernel's rule)."""
    return not feat.is_contiguous() and feat.is_contiguous(memory_format=torch.channels_last)


def _kernel_layout(feat: Tensor) -> Tensor:
    """``feat`` as the kernel reads it: channels-last maps (``--amp``'s layout) as they are,
    which the kernel reads in place, anything else NCHW-contiguous."""
    return feat if _channels_last(feat) else feat.contiguous()


def _run_forward(kernels, feats: Sequence[Tensor], rois: Tensor, levels: Tensor,
                 spatial_scales: list[float], output_size: int, sampling_ratio: int,
                 aligned: bool) -> Tensor:
    """Call the compiled forward; returns ``(R, C, S, S)``."""
    out = _extension.new_output((rois.shape[0], feats[0].shape[1], output_size, output_size),
                                feats[0].dtype, feats[0].device)
    kernels.multi_level_roi_align_forward(list(feats), rois, levels, spatial_scales, output_size,
                                          sampling_ratio, aligned, out)
    return out


def _check_ranges(rois: Tensor, levels: Tensor, num_levels: int, batch: int) -> None:
    """Level ids in ``[0, L)`` and finite batch indices in ``[0, B)`` (a host sync)."""
    low, high = (int(v) for v in torch.aminmax(levels))
    if low < 0 or high >= num_levels:
        raise ValueError(f'multi_level_roi_align: levels must lie in [0, {num_levels - 1}] for '
                         f'the {num_levels} feature levels, got values in [{low}, {high}]')
    batch_index = rois[:, 0].double()
    batch_index = batch_index[torch.isfinite(batch_index)]
    if batch_index.numel() and not bool(((batch_index > -1) & (batch_index < batch)).all()):
        lowest, highest = (float(v) for v in torch.aminmax(batch_index))
        raise ValueError(f'multi_level_roi_align: rois[:, 0] (the batch index) must lie in '
                         f'[0, {batch - 1}] for a batch of {batch} images, got values in '
                         f'[{lowest:g}, {highest:g}]')


def _check_arguments(feats, rois, levels, spatial_scales, output_size, sampling_ratio,
                     aligned) -> tuple[list[Tensor], Tensor, Tensor, list[float], int, int]:
    """Validate shapes, dtypes and devices.

    Returns:
        ``(feats, rois, levels, spatial_scales, output_size, sampling_ratio)``, the lists and
        integers as plain Python objects.
    """
    name = 'multi_level_roi_align'
    if isinstance(feats, Tensor) or not isinstance(feats, Sequence) or len(feats) == 0:
        raise ValueError(f'{name}: feats must be a non-empty list of (B, C, H, W) maps, one per '
                         f'level, got {type(feats).__name__}')
    feats = list(feats)
    first = feats[0]
    for level, feat in enumerate(feats):
        if not isinstance(feat, Tensor) or feat.dim() != 4:
            got = tuple(feat.shape) if isinstance(feat, Tensor) else type(feat).__name__
            raise ValueError(f'{name}: feats[{level}] must be a (B, C, H, W) tensor, got {got}')
        if feat.dtype not in _FLOAT_DTYPES or feat.dtype != first.dtype:
            raise TypeError(f'{name}: feats[{level}] is {feat.dtype}; every level must have the '
                            f'dtype of feats[0] ({first.dtype}), one of float32, float64, '
                            f'float16, bfloat16')
        if feat.device != first.device:
            raise ValueError(f'{name}: feats[{level}] is on {feat.device}, feats[0] on '
                             f'{first.device}')
        if feat.shape[:2] != first.shape[:2]:
            raise ValueError(f'{name}: feats[{level}] has shape {tuple(feat.shape)}; every level '
                             f'must have the batch size and channels of feats[0], '
                             f'{tuple(first.shape[:2])}')
    if not isinstance(rois, Tensor) or rois.dim() != 2 or rois.shape[1] != 5:
        got = tuple(rois.shape) if isinstance(rois, Tensor) else type(rois).__name__
        raise ValueError(f'{name}: rois must have shape (R, 5) (batch_index, x1, y1, x2, y2), '
                         f'got {got}')
    if not rois.dtype.is_floating_point:
        raise TypeError(f'{name}: rois must be a floating-point tensor, got {rois.dtype}')
    num_rois = rois.shape[0]
    if not isinstance(levels, Tensor) or levels.shape != (num_rois,) \
            or levels.dtype.is_floating_point or levels.dtype == torch.bool:
        got = f'{levels.dtype} {tuple(levels.shape)}' if isinstance(levels, Tensor) else levels
        raise ValueError(f'{name}: levels must be an integer tensor of shape ({num_rois},) (the '
                         f'level of each RoI), got {got}')
    for label, arg in (('rois', rois), ('levels', levels)):
        if arg.device != first.device:
            raise ValueError(f'{name}: {label} is on {arg.device}, feats on {first.device}')
    if isinstance(spatial_scales, (int, float)) or len(spatial_scales) != len(feats):
        raise ValueError(f'{name}: spatial_scales must hold one scale per level '
                         f'({len(feats)}), got {spatial_scales!r}')
    scales = [float(s) for s in spatial_scales]
    if not all(math.isfinite(s) and s > 0 for s in scales):
        raise ValueError(f'{name}: spatial_scales must be finite numbers > 0 (1 / stride), got '
                         f'{scales}')
    if _as_int(output_size) is None or output_size < 1:
        raise ValueError(f'{name}: output_size must be an integer >= 1, got {output_size!r}')
    if _as_int(sampling_ratio) is None or sampling_ratio > MAX_SAMPLING_RATIO:
        raise ValueError(f'{name}: sampling_ratio must be an integer <= {MAX_SAMPLING_RATIO} '
                         f'(<= 0: adaptive), got {sampling_ratio!r}')
    if not isinstance(aligned, bool):
        raise ValueError(f'{name}: aligned must be True or False, got {aligned!r}')
    return feats, rois, levels, scales, int(output_size), int(sampling_ratio)


def _as_int(value) -> int | None:
    """``value`` as an int when it is an integer (not a bool), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None
