"""Sliced inference for small objects: the image in overlapping tiles, each run at the model's
test scale, merged with the whole image's detections by class-aware NMS.

A model tested at 800 px shrinks a 4000 px photo five times, and a 40 px object to 8 px, below
what its anchors find. Tiles of ``slice_size`` pixels are each resized to the test scale
instead, so small objects keep (or gain) their size; the whole image, also run, keeps the large
objects that tiles cut apart. Tiles start every ``slice_size * (1 - overlap)`` pixels, the last
one flush with the image's edge.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torchvision.ops import batched_nms

if TYPE_CHECKING:
    from detkit.apis.inference import DetResult


def tile_origins(length: int, size: int, overlap: float) -> list[int]:
    """Start offsets of tiles of ``size`` covering ``[0, length)`` with at least ``overlap`` of
    a tile shared by neighbours; one tile at 0 when ``length <= size``.

    Example:
        >>> tile_origins(1000, 400, 0.2)
        [0, 320, 600]
    """
    if size < 1 or not 0 <= overlap < 1:
        raise ValueError(f'slicing: need slice_size >= 1 and 0 <= slice_overlap < 1, got '
                         f'{size} and {overlap}')
    if length <= size:
        return [0]
    step = max(1, int(size * (1 - overlap)))
    origins = list(range(0, length - size, step))
    return [*origins, length - size]


def image_tiles(image: np.ndarray, size: int, overlap: float) -> list[tuple[int, int]]:
    """``(x, y)`` of the top-left corner of every tile of an ``(H, W, 3)`` image."""
    height, width = image.shape[:2]
    return [(x, y) for y in tile_origins(height, size, overlap)
            for x in tile_origins(width, size, overlap)]


def merge_detections(parts: list[tuple[Any, int, int]], iou_threshold: float,
                     max_detections: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tile (and whole-image) detections in one frame, deduplicated.

    Args:
        parts: ``(DetResult, x, y)``: each part's detections and its tile's offset in the image
            (``(0, 0)`` for the whole image).
        iou_threshold: class-aware NMS threshold between parts.
        max_detections: at most this many kept, by score.

    Returns:
        ``(bboxes (N, 4), scores (N,), labels (N,))`` in image pixels, by decreasing score.
    """
    boxes, scores, labels = [], [], []
    for result, x, y in parts:
        boxes.append(result.bboxes.float() + torch.tensor([x, y, x, y], dtype=torch.float32))
        scores.append(result.scores.float())
        labels.append(result.labels.long())
    all_boxes, all_scores, all_labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    keep = batched_nms(all_boxes, all_scores, all_labels, iou_threshold)[:max_detections]
    return all_boxes[keep], all_scores[keep], all_labels[keep]


def sliced_result(model: Any, image: np.ndarray, img_path: str, *, slice_size: int,
                  slice_overlap: float, iou_threshold: float, max_detections: int,
                  batch_size: int) -> DetResult:
    """:func:`~detkit.apis.inference_detector` of one decoded image, by slices (see above)."""
    from detkit.apis.inference import DetResult, inference_detector
    origins = image_tiles(image, slice_size, slice_overlap)
    tiles = [np.ascontiguousarray(image[y:y + slice_size, x:x + slice_size])
             for x, y in origins]
    whole = [image] if len(origins) > 1 else []
    results = inference_detector(model, [*whole, *tiles], batch_size=batch_size)
    assert isinstance(results, list)
    parts = [(result, x, y) for result, (x, y) in zip(results, [(0, 0)] * len(whole) + origins)]
    bboxes, scores, labels = merge_detections(parts, iou_threshold, max_detections)
    height, width = image.shape[:2]
    bboxes[:, 0::2] = bboxes[:, 0::2].clamp(0, width)
    bboxes[:, 1::2] = bboxes[:, 1::2].clamp(0, height)
    return DetResult(bboxes, scores, labels, results[0].class_names, img_path, (height, width))
