"""Post-processing that exports: fixed-size tensors and NMS as ONNX ``NonMaxSuppression``.

The heads' eager ``predict`` keeps a variable number of boxes at every step (``nonzero``,
``topk(min(k, n))``, per-image lists); an exported graph cannot. The functions here compute the
same detections with shapes that depend only on the input's shape, and run eagerly too, so a
head's ``predict_in_graph`` can be checked against its ``predict`` before anything is exported:

* :func:`shape_of`, :func:`size_of`, :func:`clamped_k`: sizes read from tensors (``Shape`` in
  the graph), so that a dynamic export does not freeze them to the example input's values.
* :func:`grid_anchors_in_graph`: an :class:`AnchorGenerator`'s anchors from traced sizes.
* :func:`non_max_suppression`: ONNX's ``NonMaxSuppression`` (exact per class: the class axis
  replaces the coordinate-offset trick, whose ~1e5 px offsets cost float32 precision).
* :func:`best_per_image`: the selected boxes scattered into a dense score array and its top
  ``K`` per image: ``(N, K, 5)`` detections, rows after the last one zero and their label -1.
"""
from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import Tensor
from torchvision.ops import nms

from detkit.models.task_utils.anchor_generator import AnchorGenerator


def is_exporting() -> bool:
    """Whether the code runs under ``torch.onnx.export`` (or ``torch.jit.trace``)."""
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


def shape_of(tensor: Tensor) -> Tensor:
    """``tensor``'s shape as an int64 tensor (an ONNX ``Shape`` in an exported graph)."""
    if is_exporting():
        return torch._shape_as_tensor(tensor)
    return torch.tensor(tensor.shape, dtype=torch.int64)


def size_of(tensor: Tensor, dim: int) -> int:
    """``tensor.shape[dim]`` as a 0-d int64 tensor, which torch takes wherever it takes an int
    (``arange``, ``topk``) and which stays a graph value in an export; typed as the int it
    stands for."""
    return cast(int, shape_of(tensor)[dim])


def clamped_k(k: int, size: int) -> int:
    """``min(k, size)``: a top-k count that never exceeds what there is, as a 0-d int64 tensor
    (see :func:`size_of`).

    Args:
        k: the wanted count (a config's ``nms_pre`` or ``max_per_img``).
        size: the length of the dimension the top-k runs over (from :func:`size_of`).
    """
    return cast(int, torch.minimum(torch.as_tensor(size), torch.tensor(k, dtype=torch.int64)))


def grid_anchors_in_graph(generator: AnchorGenerator, feats: list[Tensor],
                          input_hw: Tensor) -> list[Tensor]:
    """:meth:`AnchorGenerator.grid_anchors` with the feature sizes read from ``feats``.

    Bit for bit the generator's anchors (the same float32 ``arange * stride + base``), but the
    sizes, and with ``strides_from_image`` the strides, stay graph values.

    Args:
        generator: the head's anchor generator.
        feats: L maps ``(N, C, Hl, Wl)``.
        input_hw: int64 ``(2,)`` height and width of the (padded) input batch.

    Returns:
        L tensors ``(Hl * Wl * A, 4)`` xyxy in input pixels, row ``(y * Wl + x) * A + a``.
    """
    anchors = []
    for level, feat in enumerate(feats):
        height, width = size_of(feat, 2), size_of(feat, 3)
        if generator.strides_from_image:
            stride_y = (input_hw[0] // height).to(torch.float32)
            stride_x = (input_hw[1] // width).to(torch.float32)
        else:
            stride_y = stride_x = torch.tensor(float(generator.strides[level]))
        base = generator.base_anchors[level].to(feat.device)
        shift_x = torch.arange(width, dtype=torch.float32, device=feat.device) * stride_x
        shift_y = torch.arange(height, dtype=torch.float32, device=feat.device) * stride_y
        grid_y, grid_x = torch.meshgrid(shift_y, shift_x, indexing='ij')
        shifts = torch.stack([grid_x, grid_y, grid_x, grid_y], dim=-1).reshape(-1, 1, 4)
        anchors.append((shifts + base[None]).reshape(-1, 4))
    return anchors


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (opset >= 11), with its eager equivalent."""

    @staticmethod
    def forward(ctx: Any, boxes: Tensor, scores: Tensor, max_per_class: int,
                iou_threshold: float, score_threshold: float) -> Tensor:
        selected = []
        for image in range(scores.shape[0]):
            for cls in range(scores.shape[1]):
                candidates = torch.nonzero(scores[image, cls] > score_threshold).squeeze(1)
                keep = nms(boxes[image, candidates], scores[image, cls, candidates],
                           iou_threshold)[:max_per_class]
                index = candidates[keep]
                selected.append(torch.stack([torch.full_like(index, image),
                                             torch.full_like(index, cls), index], dim=1))
        if not selected:
            return boxes.new_zeros((0, 3), dtype=torch.int64)
        return torch.cat(selected)

    @staticmethod
    def symbolic(g: Any, boxes: Any, scores: Any, max_per_class: int, iou_threshold: float,
                 score_threshold: float) -> Any:
        return g.op('NonMaxSuppression', boxes, scores,
                    g.op('Constant', value_t=torch.tensor([max_per_class], dtype=torch.int64)),
                    g.op('Constant', value_t=torch.tensor([iou_threshold], dtype=torch.float32)),
                    g.op('Constant',
                         value_t=torch.tensor([score_threshold], dtype=torch.float32)))


def non_max_suppression(boxes: Tensor, scores: Tensor, *, max_per_class: int,
                        iou_threshold: float, score_threshold: float) -> Tensor:
    """NMS of every (image, class) pair on its own: ONNX ``NonMaxSuppression``.

    A box suppresses a lower-scoring box of the same image and class whose IoU with it exceeds
    ``iou_threshold`` (torchvision's :func:`~torchvision.ops.nms` rule); boxes scoring at or
    below ``score_threshold`` take no part.

    Args:
        boxes: ``(N, M, 4)`` float32 xyxy, shared by the classes of an image.
        scores: ``(N, C, M)`` float32; a box that is not a candidate of a class scores 0 there.
        max_per_class: at most this many kept per (image, class).
        iou_threshold: suppression threshold.
        score_threshold: candidates score above this.

    Returns:
        ``(S, 3)`` int64 rows ``(image, class, box)`` of the kept boxes.
    """
    return _NonMaxSuppression.apply(boxes, scores, max_per_class, iou_threshold,
                                    score_threshold)


REMOVED = -1.0   # the score of a candidate that takes no part (thresholded, too small, absent)


def nms_score_threshold(score_thr: float) -> float:
    """The ``score_threshold`` for :func:`non_max_suppression` that keeps the candidates a
    head's eager code keeps (``score > score_thr``) and none marked :data:`REMOVED`."""
    return max(float(score_thr), REMOVED / 2)


def best_per_image(selected: Tensor, boxes: Tensor, scores: Tensor, labels: Tensor,
                   max_per_img: int) -> tuple[Tensor, Tensor]:
    """The ``max_per_img`` best kept boxes of every image, dense and zero-padded.

    What was kept is read from ``selected`` alone, not from the scores, so a kept box may score
    0 (an RPN proposal whose objectness underflows, which the eager head keeps too).

    Args:
        selected: ``(S, 2)`` int64 ``(image, candidate)`` of the boxes NMS kept.
        boxes: ``(N, M, 4)`` candidates, xyxy.
        scores: ``(N, M)`` their scores.
        labels: ``(N, M)`` int64 their classes.
        max_per_img: ``K``.

    Returns:
        ``dets (N, K, 5)`` (x1, y1, x2, y2, score) sorted by decreasing score and ``labels
        (N, K)`` int64; rows after an image's last detection are 0 with label -1.
    """
    kept = torch.zeros_like(scores, dtype=torch.bool)
    kept = kept.index_put((selected[:, 0], selected[:, 1]),
                          torch.ones_like(selected[:, 0], dtype=torch.bool))
    # K candidates that are never kept make the top-k defined when an image has fewer than K;
    # sizes from the inputs' own rows (repeat, not new_zeros((N, K))) keep N dynamic
    kept = torch.cat([kept, torch.zeros_like(kept[:, :1]).repeat(1, max_per_img)], dim=1)
    all_scores = torch.cat([scores, torch.zeros_like(scores[:, :1]).repeat(1, max_per_img)], 1)
    all_boxes = torch.cat([boxes, torch.zeros_like(boxes[:, :1]).repeat(1, max_per_img, 1)], 1)
    all_labels = torch.cat([labels, torch.zeros_like(labels[:, :1]).repeat(1, max_per_img)], 1)
    ranked = torch.where(kept, all_scores, torch.full_like(all_scores, -math.inf))
    order = ranked.topk(max_per_img, dim=1).indices
    valid = kept.gather(1, order)
    top_boxes = all_boxes.gather(1, order[..., None].expand(-1, -1, 4))
    top_scores = all_scores.gather(1, order)
    dets = torch.cat([top_boxes, top_scores[..., None]], dim=2) * valid[..., None]
    return dets, torch.where(valid, all_labels.gather(1, order), torch.full_like(order, -1))
