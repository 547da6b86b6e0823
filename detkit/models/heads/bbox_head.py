"""Faster R-CNN's box head: two shared fully connected layers, then class scores and
class-specific box deltas for every region of interest.

Label convention: classes ``0 .. K-1``, background ``K`` (LAST). ``fc_cls`` has ``K + 1``
outputs, column ``K`` the background; ``fc_reg`` has ``4 * K`` outputs, deltas
``4k .. 4k+3`` for class ``k`` (no deltas for background).
"""
from __future__ import annotations

from typing import Any

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from detkit.models.losses.base import uses_label_groups
from detkit.models.task_utils import (
    DeltaXYWHBBoxCoder,
    RoITestConfig,
    SamplingResult,
    rescale_and_nms,
)
from detkit.registry import MODELS, TASK_UTILS, build_if_config
from detkit.structures import Detections, DetSample, LabelGroups


@MODELS.register_module()
class Shared2FCBBoxHead(BaseModule):
    """Flatten -> ``shared_fcs.0`` + ReLU -> ``shared_fcs.1`` + ReLU -> ``fc_cls`` / ``fc_reg``.

    Parameter names are mmdetection 3.x's (``shared_fcs.{0,1}``, ``fc_cls``, ``fc_reg``), so
    its Faster R-CNN checkpoints load with ``strict=True`` (COCO: ``fc_cls`` 81 outputs,
    ``fc_reg`` 320).

    Losses (:meth:`loss`), both divided by the number of sampled RoIs of the batch (positives
    and negatives: mmdetection's convention, which keeps the box loss's scale independent of the
    positive fraction): classification over every sampled RoI, and L1 between each positive's
    deltas *for its ground-truth class* and its encoded target.

    Args:
        num_classes: K, the number of foreground classes.
        in_channels: channels of the pooled RoI features.
        roi_feat_size: their spatial size (7).
        fc_out_channels: width of the two shared layers (1024).
        bbox_coder: a ``DeltaXYWHBBoxCoder`` or its config (stds 0.1, 0.1, 0.2, 0.2).
        loss_bbox: the box loss (``L1Loss``) or its config.
        loss_cls: the softmax classification loss or its config: ``CrossEntropyLoss`` or
            ``GroupSoftmaxLoss`` (every training image then needs ``DetSample.label_groups``,
            the ``(K + 1,)`` group vector of its data set; the RoI head hands them over).
        init_cfg: mmengine init config; by default Xavier-uniform shared layers, ``fc_cls``
            N(0, 0.01), ``fc_reg`` N(0, 0.001), zero biases.

    Example:
        >>> head = Shared2FCBBoxHead(num_classes=3, in_channels=8, fc_out_channels=16,
        ...                          bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
        ...                          loss_cls=dict(type='CrossEntropyLoss'),
        ...                          loss_bbox=dict(type='L1Loss'))
        >>> cls_score, bbox_pred = head(torch.randn(5, 8, 7, 7))
        >>> tuple(cls_score.shape), tuple(bbox_pred.shape)
        ((5, 4), (5, 12))
    """

    def __init__(self, *, num_classes: int, in_channels: int = 256, roi_feat_size: int = 7,
                 fc_out_channels: int = 1024, bbox_coder: Any, loss_cls: Any, loss_bbox: Any,
                 init_cfg: dict[str, Any] | None = None) -> None:
        super().__init__(init_cfg)
        if num_classes < 1:
            raise ValueError(f'Shared2FCBBoxHead: num_classes must be >= 1, got {num_classes}')
        self.num_classes = num_classes
        self.bbox_coder: DeltaXYWHBBoxCoder = build_if_config(bbox_coder, TASK_UTILS)
        self.loss_bbox: nn.Module = build_if_config(loss_bbox, MODELS)
        self.loss_cls: nn.Module = build_if_config(loss_cls, MODELS)
        if getattr(self.loss_cls, 'use_sigmoid', False):
            raise ValueError(f'Shared2FCBBoxHead: loss_cls={type(self.loss_cls).__name__}'
                             '(use_sigmoid=True) does not fit its softmax over K + 1 classes; '
                             "use dict(type='CrossEntropyLoss', use_sigmoid=False) or "
                             "dict(type='GroupSoftmaxLoss')")
        self.shared_fcs = nn.ModuleList([
            nn.Linear(in_channels * roi_feat_size * roi_feat_size, fc_out_channels),
            nn.Linear(fc_out_channels, fc_out_channels)])
        self.fc_cls = nn.Linear(fc_out_channels, num_classes + 1)
        self.fc_reg = nn.Linear(fc_out_channels, 4 * num_classes)

    def init_weights(self) -> None:
        """Xavier-uniform shared layers, N(0, 0.01) ``fc_cls``, N(0, 0.001) ``fc_reg``."""
        super().init_weights()
        if self.init_cfg is not None:
            return
        for fc in self.shared_fcs:
            assert isinstance(fc, nn.Linear)  # a ModuleList yields nn.Module: name the type
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.fc_cls.weight, std=0.01)
        nn.init.normal_(self.fc_reg.weight, std=0.001)
        nn.init.zeros_(self.fc_cls.bias)
        nn.init.zeros_(self.fc_reg.bias)

    def forward(self, roi_feats: Tensor) -> tuple[Tensor, Tensor]:
        """Scores and deltas of every RoI.

        Args:
            roi_feats: ``(R, in_channels, roi_feat_size, roi_feat_size)`` pooled features.

        Returns:
            ``(cls_score, bbox_pred)``: ``(R, K + 1)`` logits (background last) and
            ``(R, 4 * K)`` class-specific deltas.
        """
        x = roi_feats.flatten(1)
        for fc in self.shared_fcs:
            x = torch.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)

    # ------------------------------------------------------------------ training
    def targets_from_sampling(self, sampled: SamplingResult) -> tuple[Tensor, Tensor]:
        """The classification and box targets of one image's sampled RoIs (positives first).

        Args:
            sampled: the image's :class:`SamplingResult`.

        Returns:
            ``(labels, bbox_targets)``: ``(P + Q,)`` int64, the gt label of each positive and
            ``K`` for each negative; ``(P + Q, 4)`` encoded deltas, zero for negatives.
        """
        labels = torch.cat([sampled.pos_gt_labels,
                            sampled.pos_gt_labels.new_full((sampled.num_neg,), self.num_classes)])
        bbox_targets = sampled.priors.new_zeros((sampled.num_pos + sampled.num_neg, 4))
        if sampled.num_pos > 0:
            bbox_targets[:sampled.num_pos] = self.bbox_coder.encode(sampled.pos_priors,
                                                                    sampled.pos_gt_bboxes)
        return labels, bbox_targets

    @property
    def uses_label_groups(self) -> bool:
        """Whether :meth:`loss` needs the label groups of the RoIs (GroupSoftmax)."""
        return uses_label_groups(self.loss_cls)

    def loss(self, cls_score: Tensor, bbox_pred: Tensor, labels: Tensor, bbox_targets: Tensor,
             groups: LabelGroups | None = None) -> dict[str, Tensor]:
        """Classification and box losses of the sampled RoIs of a batch.

        Args:
            cls_score: ``(R, K + 1)`` logits.
            bbox_pred: ``(R, 4 * K)`` deltas.
            labels: ``(R,)`` int64 targets, ``K`` background.
            bbox_targets: ``(R, 4)`` encoded box targets (used at positives).
            groups: the label groups of the R RoIs, for a loss that uses them (GroupSoftmax).

        Returns:
            ``dict(loss_cls, loss_bbox, acc)``: the two losses, each divided by ``R``, and the
            classification accuracy over the sampled RoIs in percent (logged, not trained; with
            GroupSoftmax a prediction counts as right when it lies in the target's group).
        """
        num_rois = labels.shape[0]
        avg_factor = cls_score.new_tensor(float(max(num_rois, 1)))
        loss_cls = self.loss_cls(cls_score, labels, avg_factor=avg_factor, groups=groups)
        positive = torch.nonzero((labels >= 0) & (labels < self.num_classes)).squeeze(1)
        pos_deltas = bbox_pred.reshape(num_rois, self.num_classes, 4)[positive, labels[positive]]
        loss_bbox = self.loss_bbox(pos_deltas, bbox_targets[positive], avg_factor=avg_factor)
        with torch.no_grad():
            predicted = cls_score.argmax(dim=1)
            if groups is not None:  # right when the prediction is in the target's group
                vectors = groups.per_row().to(labels.device)
                correct = (vectors.gather(1, predicted[:, None]) ==
                           vectors.gather(1, labels.clamp(min=0)[:, None])).squeeze(1)
            else:
                correct = predicted == labels
            acc = correct.float().mean() * 100 if num_rois > 0 else cls_score.new_zeros(())
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox, acc=acc)

    # ------------------------------------------------------------------ inference
    def predict_single(self, rois: Tensor, cls_score: Tensor, bbox_pred: Tensor,
                       sample: DetSample, cfg: RoITestConfig, rescale: bool) -> Detections:
        """The detections of one image from its RoIs' outputs.

        Every (RoI, class) pair whose softmax score (background excluded) exceeds
        ``cfg.score_thr`` becomes a candidate with that class's decoded box, clipped to
        ``img_shape``; class-aware NMS keeps the best ``cfg.max_per_img``.

        Args:
            rois: ``(R, 4)`` the image's proposals, xyxy in input pixels.
            cls_score: ``(R, K + 1)`` logits.
            bbox_pred: ``(R, 4 * K)`` deltas.
            sample: the image (``img_shape`` clips, ``scale_factor`` rescales).
            cfg: ``score_thr``, ``nms_iou_thr``, ``max_per_img``, ``min_bbox_size``.
            rescale: return boxes in original-image pixels.

        Returns:
            The image's :class:`Detections`, sorted by decreasing score.
        """
        num_rois = rois.shape[0]
        # scores and boxes in float32 whatever autocast computed the layers in
        scores = cls_score.float().softmax(dim=1)[:, :self.num_classes]   # (R, K)
        boxes = self.bbox_coder.decode(rois, bbox_pred.float(), max_shape=sample.img_shape)
        boxes = boxes.reshape(num_rois, self.num_classes, 4)
        roi_index, labels = torch.nonzero(scores > cfg.score_thr, as_tuple=True)
        return rescale_and_nms(boxes[roi_index, labels], scores[roi_index, labels], labels,
                               nms_iou_thr=cfg.nms_iou_thr, max_per_img=cfg.max_per_img,
                               min_bbox_size=cfg.min_bbox_size, sample=sample, rescale=rescale)
