"""Multi-level RoIAlign: pool each region of interest from the pyramid level that fits its size."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align

from detkit.models.task_utils.graph_ops import is_exporting
from detkit.ops import multi_level_roi_align, roi_compute_dtype
from detkit.registry import TASK_UTILS


def map_rois_to_levels(rois: Tensor, num_levels: int, finest_scale: float = 56.0) -> Tensor:
    """The pyramid level each RoI is pooled from, by its scale ``sqrt(w * h)``.

    ``level = floor(log2(scale / finest_scale + 1e-6))`` clamped to ``[0, num_levels - 1]``
    (mmdetection's mapping): with ``finest_scale = 56`` and the levels P2-P5, RoIs smaller than
    112 px go to P2, ``[112, 224)`` to P3, ``[224, 448)`` to P4 and larger ones to P5. (FPN's
    paper maps a 224 px RoI to P4 through ``k0 + log2(scale / 224)``; this is the same rule
    shifted so that level 0 is the finest level given.)

    Args:
        rois: ``(R, 5)`` ``(batch_index, x1, y1, x2, y2)`` or ``(R, 4)`` boxes, in pixels.
        num_levels: the number of pyramid levels available.
        finest_scale: RoIs below ``2 * finest_scale`` go to level 0; each doubling of the
            scale moves one level coarser.

    Returns:
        ``(R,)`` int64 level indices.

    Example:
        >>> boxes = torch.tensor([[0., 0., 50., 50.], [0., 0., 112., 112.], [0., 0., 900., 900.]])
        >>> map_rois_to_levels(boxes, num_levels=4).tolist()
        [0, 1, 3]
    """
    boxes = rois[:, -4:]
    scale = torch.sqrt((boxes[:, 2] - boxes[:, 0]).clamp(min=0) *
                       (boxes[:, 3] - boxes[:, 1]).clamp(min=0))
    levels = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return levels.clamp(min=0, max=num_levels - 1).long()


def map_rois_to_canonical_levels(rois: Tensor, min_level: int, max_level: int,
                                 canonical_scale: float = 224.0,
                                 canonical_level: int = 4) -> Tensor:
    """The pyramid level of each RoI by Eq. 1 of the FPN paper, as torchvision computes it.

    ``k = floor(canonical_level + log2(scale / canonical_scale) + 1e-6)`` with
    ``scale = sqrt(w * h)``, clamped to ``[min_level, max_level]`` and returned as an index from
    ``min_level``. It differs from :func:`map_rois_to_levels` (``finest_scale = 56``) only in
    where the ``1e-6`` is added: inside the logarithm there, after it here, so a RoI whose scale
    lies just below a boundary (``224 * (1 - d)`` for ``d`` in ``(2.5e-7, 6.9e-7]``) goes one
    level coarser here.

    Args:
        rois: ``(R, 5)`` ``(batch_index, x1, y1, x2, y2)`` or ``(R, 4)`` boxes, in pixels.
        min_level: the pyramid level of index 0, ``log2`` of its stride (P2: 2).
        max_level: the coarsest level that may be chosen (P5: 5).
        canonical_scale: the scale of a RoI that maps to ``canonical_level``.
        canonical_level: the level ``k0`` of a ``canonical_scale`` RoI.

    Returns:
        ``(R,)`` int64 level indices in ``[0, max_level - min_level]``.

    Example:
        >>> boxes = torch.tensor([[0., 0., 50., 50.], [0., 0., 224., 224.], [0., 0., 900., 900.]])
        >>> map_rois_to_canonical_levels(boxes, min_level=2, max_level=5).tolist()
        [0, 2, 3]
    """
    boxes = rois[:, -4:]
    scale = torch.sqrt((boxes[:, 2] - boxes[:, 0]).clamp(min=0) *
                       (boxes[:, 3] - boxes[:, 1]).clamp(min=0))
    levels = torch.floor(canonical_level + torch.log2(scale / canonical_scale) +
                         torch.tensor(1e-6, dtype=scale.dtype, device=scale.device))
    return levels.clamp(min=min_level, max=max_level).long() - min_level


@TASK_UTILS.register_module()
class MultiLevelRoIAlign(nn.Module):
    """RoIAlign on the pyramid level chosen per RoI (:func:`detkit.ops.multi_level_roi_align`).

    The level of an RoI comes from :func:`map_rois_to_levels`; the RoI is then pooled from that
    level with ``spatial_scale = 1 / featmap_strides[level]``: on CPU tensors by detkit's fused
    multi-threaded kernel (the same values as ``torchvision.ops.roi_align``), elsewhere by
    ``torchvision.ops.roi_align`` once per level. Holds no parameters.

    Args:
        featmap_strides: stride of each pyramid level read (Faster R-CNN: P2-P5,
            ``[4, 8, 16, 32]``); the extractor reads the first ``len(featmap_strides)`` levels.
        output_size: the pooled size (7 for the 2-fc box head).
        sampling_ratio: sampling points per output bin along each axis; ``0`` chooses
            ``ceil(roi_size / output_size)`` adaptively (torchvision's ``<= 0``).
        aligned: shift the box coordinates by -0.5 pixel so that a pixel's centre is at
            ``i + 0.5`` (mmdetection 3.x's default); False is the original RoIAlign.
        finest_scale: see :func:`map_rois_to_levels`.
        canonical_scale: None maps RoIs to levels by :func:`map_rois_to_levels` with
            ``finest_scale`` (mmdetection's rule); a number (torchvision: 224) maps them by
            :func:`map_rois_to_canonical_levels` with this scale, ``canonical_level`` and the
            levels ``log2(featmap_strides[0]) .. log2(featmap_strides[-1])`` (the strides must
            then be powers of 2).
        canonical_level: the level of a ``canonical_scale`` RoI (FPN's ``k0 = 4``).

    Example:
        >>> extractor = MultiLevelRoIAlign(featmap_strides=[4, 8])
        >>> feats = [torch.randn(1, 16, 32, 32), torch.randn(1, 16, 16, 16)]
        >>> rois = torch.tensor([[0., 0., 0., 40., 40.], [0., 0., 0., 120., 120.]])
        >>> extractor(feats, rois).shape
        torch.Size([2, 16, 7, 7])
    """

    def __init__(self, featmap_strides: Sequence[int] = (4, 8, 16, 32), output_size: int = 7,
                 sampling_ratio: int = 0, aligned: bool = True,
                 finest_scale: float = 56.0, canonical_scale: float | None = None,
                 canonical_level: int = 4) -> None:
        super().__init__()
        if not featmap_strides or any(s <= 0 for s in featmap_strides):
            raise ValueError(f'MultiLevelRoIAlign: featmap_strides must be a non-empty list of '
                             f'positive strides, got {featmap_strides!r}')
        if output_size < 1 or finest_scale <= 0:
            raise ValueError(f'MultiLevelRoIAlign: need output_size >= 1 and finest_scale > 0, '
                             f'got {output_size} and {finest_scale}')
        self.featmap_strides = [int(s) for s in featmap_strides]
        self.output_size = int(output_size)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        self.finest_scale = float(finest_scale)
        self.canonical_scale = None if canonical_scale is None else float(canonical_scale)
        self.canonical_level = int(canonical_level)
        if self.canonical_scale is not None:
            if self.canonical_scale <= 0:
                raise ValueError(f'MultiLevelRoIAlign: canonical_scale must be None or > 0, got '
                                 f'{canonical_scale!r}')
            if any(s & (s - 1) for s in self.featmap_strides):
                raise ValueError(f'MultiLevelRoIAlign: canonical_scale needs power-of-2 '
                                 f'featmap_strides (level k has stride 2**k), got '
                                 f'{self.featmap_strides}')

    @property
    def num_levels(self) -> int:
        """The number of pyramid levels read."""
        return len(self.featmap_strides)

    def forward(self, feats: Sequence[Tensor], rois: Tensor) -> Tensor:
        """Pool every RoI from its level.

        Args:
            feats: at least ``num_levels`` maps ``(B, C, Hl, Wl)``, finest first; extra
                (coarser) levels such as P6 are not read.
            rois: ``(R, 5)`` ``(batch_index, x1, y1, x2, y2)``, boxes in pixels of the batch.

        Returns:
            ``(R, C, output_size, output_size)`` pooled features, in the order of ``rois``.
        """
        if len(feats) < self.num_levels:
            raise ValueError(f'MultiLevelRoIAlign: got {len(feats)} feature levels but '
                             f'featmap_strides={self.featmap_strides} needs {self.num_levels}')
        if rois.dim() != 2 or rois.shape[1] != 5:
            raise ValueError(f'MultiLevelRoIAlign: rois must have shape (R, 5) (batch_index, '
                             f'x1, y1, x2, y2), got {tuple(rois.shape)}')
        rois = rois.to(roi_compute_dtype(feats[0].dtype))   # float32 under bf16 maps
        levels = self.map_rois_to_levels(rois)
        if is_exporting():
            return self._pool_in_graph(feats, rois, levels)
        return multi_level_roi_align(feats[:self.num_levels], rois, levels,
                                     [1.0 / stride for stride in self.featmap_strides],
                                     self.output_size, self.sampling_ratio, self.aligned)

    def _pool_in_graph(self, feats: Sequence[Tensor], rois: Tensor, levels: Tensor) -> Tensor:
        """The same pooling from standard operators (ONNX ``RoiAlign``), for an exported graph.

        Every level pools every RoI, the RoIs of other levels moved to ``(-1e4, -1e4)``, an empty
        box far outside the map: each of its sampling points lies below -1 px and is 0 in both
        torchvision's and ONNX's RoIAlign (and with ``sampling_ratio=0`` an empty box takes no
        samples at all), so summing the levels gives each RoI its own level's pooling, at a
        small cost per extra level.
        """
        outside = torch.full_like(rois[:, 1:], -1e4)
        pooled = None
        for level, feat in enumerate(feats[:self.num_levels]):
            mine = (levels == level)[:, None]
            level_rois = torch.cat([rois[:, :1], torch.where(mine, rois[:, 1:], outside)], 1)
            out = roi_align(feat, level_rois, self.output_size,
                            1.0 / self.featmap_strides[level], self.sampling_ratio,
                            self.aligned)
            pooled = out if pooled is None else pooled + out
        assert pooled is not None
        return pooled

    def map_rois_to_levels(self, rois: Tensor) -> Tensor:
        """The level index (into ``featmap_strides``) each RoI is pooled from.

        Args:
            rois: ``(R, 5)`` ``(batch_index, x1, y1, x2, y2)`` or ``(R, 4)`` boxes, in pixels.

        Returns:
            ``(R,)`` int64 in ``[0, num_levels - 1]``.
        """
        if self.canonical_scale is None:
            return map_rois_to_levels(rois, self.num_levels, self.finest_scale)
        min_level = self.featmap_strides[0].bit_length() - 1
        max_level = self.featmap_strides[-1].bit_length() - 1
        return map_rois_to_canonical_levels(rois, min_level, max_level, self.canonical_scale,
                                            self.canonical_level)

    def extra_repr(self) -> str:
        rule = (f'finest_scale={self.finest_scale}' if self.canonical_scale is None else
                f'canonical_scale={self.canonical_scale}, canonical_level={self.canonical_level}')
        return (f'featmap_strides={self.featmap_strides}, output_size={self.output_size}, '
                f'sampling_ratio={self.sampling_ratio}, aligned={self.aligned}, {rule}')
