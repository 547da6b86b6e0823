"""The small typed containers passed between the data pipeline, the model and the metric.

Boxes everywhere are ``(x1, y1, x2, y2)`` in absolute pixels of the image named by the field's
docstring. Labels are contiguous ``0 .. num_classes - 1``; the dataset's ``metainfo['classes']``
gives their names and the dataset maps them back to its own category ids.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor


def _empty_boxes() -> Tensor:
    return torch.zeros((0, 4), dtype=torch.float32)


def _empty_labels() -> Tensor:
    return torch.zeros((0,), dtype=torch.int64)


@dataclass
class Detections:
    """The detections of one image.

    Attributes:
        bboxes: ``(N, 4)`` float, xyxy in pixels of the original (decoded, un-resized) image.
        scores: ``(N,)`` float confidence.
        labels: ``(N,)`` int64 contiguous class index.
    """

    bboxes: Tensor = field(default_factory=_empty_boxes)
    scores: Tensor = field(default_factory=lambda: torch.zeros((0,), dtype=torch.float32))
    labels: Tensor = field(default_factory=_empty_labels)

    def __len__(self) -> int:
        return int(self.bboxes.shape[0])

    def to(self, device: torch.device | str) -> 'Detections':
        """A copy with every tensor on ``device``."""
        return Detections(self.bboxes.to(device), self.scores.to(device), self.labels.to(device))


@dataclass
class DetSample:
    """Meta data, ground truth and (after ``predict``) detections of one image.

    Shapes are ``(height, width)``. ``gt_bboxes`` and ``gt_ignore_bboxes`` are in pixels of the
    resized image (``img_shape``) when ``LoadAnnotations`` runs before ``Resize``, as in every
    training pipeline; test pipelines load them after ``Resize``, so there they stay in
    original-image pixels (the metric reads the annotation file, not these). ``pred`` is in
    pixels of the original image (``ori_shape``).

    Attributes:
        img_path: the file the image was read from ('' for in-memory images).
        img_id: the dataset's image id (COCO ``image_id``), -1 when there is none.
        ori_shape: ``(h, w)`` of the decoded image.
        img_shape: ``(h, w)`` after the resize transform.
        pad_shape: ``(h, w)`` of the padded batch tensor, set by the data preprocessor.
        scale_factor: ``(w_scale, h_scale)`` = ``img_shape / ori_shape``.
        flip: whether the image was flipped horizontally.
        gt_bboxes: ``(N, 4)`` float32 boxes to detect.
        gt_labels: ``(N,)`` int64 labels of ``gt_bboxes``.
        gt_ignore_bboxes: ``(M, 4)`` float32 regions (COCO ``iscrowd``) where no anchor is
            trained as either foreground or background.
        dataset_index: which sub-dataset of a joint dataset the image comes from (0 otherwise).
        label_groups: ``(K+1,)`` int64, for joint training on data sets that each label only
            their own classes: the group id of every class (background last, index K) in the
            data set this image comes from. Classes with id 0 are merged with background (the
            data set does not annotate them); ``None`` for ordinary single-data-set training.
        pred: the detections, filled in by the model's ``predict``.
    """

    img_path: str = ''
    img_id: int = -1
    ori_shape: tuple[int, int] = (0, 0)
    img_shape: tuple[int, int] = (0, 0)
    pad_shape: tuple[int, int] = (0, 0)
    scale_factor: tuple[float, float] = (1.0, 1.0)
    flip: bool = False
    gt_bboxes: Tensor = field(default_factory=_empty_boxes)
    gt_labels: Tensor = field(default_factory=_empty_labels)
    gt_ignore_bboxes: Tensor = field(default_factory=_empty_boxes)
    dataset_index: int = 0
    label_groups: Tensor | None = None
    pred: Detections | None = None

    def to(self, device: torch.device | str) -> 'DetSample':
        """A copy with every tensor (ground truth and detections) on ``device``."""
        # Field name -> moved value: the fields differ in type, which ``replace(**moved)``
        # cannot check per key, so the values are ``Any`` here.
        moved: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (Tensor, Detections)):
                moved[f.name] = value.to(device)
        return replace(self, **moved)
