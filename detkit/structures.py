"""The small typed containers passed between the data pipeline, the model and the metric.

Boxes everywhere are ``(x1, y1, x2, y2)`` in absolute pixels of the image named by the field's
docstring. Labels are contiguous ``0 .. num_classes - 1``; the dataset's ``metainfo['classes']``
gives their names and the dataset maps them back to its own category ids.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Sequence

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
        pad_shape: ``(h, w)`` of this image padded to the preprocessor's size divisor: its own
            extent in the batch tensor (mmdetection's ``pad_shape``); anchors beyond it lie over
            padding, or over another image's, and are not trained. Set by the data
            preprocessor.
        batch_input_shape: ``(h, w)`` of the whole padded batch tensor, set by the data
            preprocessor (the same for every image of a batch).
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
    batch_input_shape: tuple[int, int] = (0, 0)
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


@dataclass(frozen=True)
class LabelGroups:
    """Which classes share a softmax group, for every row of a classification batch.

    GroupSoftmax training merges, per data set, the classes that data set does not annotate
    with background: each data set has a group vector over the ``C`` logit columns (background
    last), and each logit row (an RoI, an anchor) uses the vector of the data set its image
    comes from. The vectors are few, the rows many, so this holds the vectors once (``table``)
    and, per row, which vector it uses (``row_index``). A head builds it once from the batch's
    samples and hands it to its classification loss as ``groups=``.

    Attributes:
        table: ``(D, C)`` int64, row ``d`` the group id of every column for rows that use it;
            id 0 is the background group (background and the classes merged with it).
        row_index: ``(N,)`` int64 in ``[0, D)``, the table row each logit row uses.
    """

    table: Tensor
    row_index: Tensor

    def __post_init__(self) -> None:
        if self.table.dim() != 2 or self.table.dtype != torch.int64:
            raise ValueError(f'LabelGroups.table must be an int64 (D, C) tensor, got '
                             f'{self.table.dtype} {tuple(self.table.shape)}')
        if self.row_index.dim() != 1 or self.row_index.dtype != torch.int64:
            raise ValueError(f'LabelGroups.row_index must be an int64 (N,) tensor, got '
                             f'{self.row_index.dtype} {tuple(self.row_index.shape)}')

    def __len__(self) -> int:
        return int(self.row_index.shape[0])

    @property
    def num_columns(self) -> int:
        """``C``: the logit columns the group vectors cover (background last)."""
        return int(self.table.shape[1])

    def per_row(self) -> Tensor:
        """``(N, C)`` int64: the group vector of every row (``table[row_index]``)."""
        return self.table[self.row_index.to(self.table.device)]

    @classmethod
    def of_images(cls, samples: Sequence[DetSample], num_columns: int,
                  row_image: Tensor) -> 'LabelGroups':
        """The label groups of rows that belong to the images of a batch.

        Args:
            samples: the B images, each with ``label_groups`` of shape ``(num_columns,)`` (the
                joint data set sets it).
            num_columns: ``C`` (``K + 1`` with background last).
            row_image: ``(N,)`` int64, the image (``0 .. B-1``) of each logit row.

        Returns:
            ``LabelGroups`` with one table row per image.

        Raises:
            ValueError: an image without ``label_groups`` of that shape, naming it.
        """
        vectors = []
        for index, sample in enumerate(samples):
            vector = sample.label_groups
            if vector is None or tuple(vector.shape) != (num_columns,):
                got = None if vector is None else tuple(vector.shape)
                raise ValueError(
                    f'GroupSoftmax training needs DetSample.label_groups of shape '
                    f'({num_columns},) (K + 1 with background last) on every image; image '
                    f'{index} ({sample.img_path or sample.img_id!r}) has {got}. The joint '
                    'dataset wrapper (JointDataset) sets it.')
            vectors.append(vector.to(torch.int64))
        table = torch.stack(vectors).to(row_image.device) if vectors else torch.zeros(
            (0, num_columns), dtype=torch.int64, device=row_image.device)
        return cls(table=table, row_index=row_image.to(torch.int64))
