"""Faster R-CNN's second stage: sample proposals, pool their features, classify and refine.

Data flow (B images, R sampled or proposed RoIs in the batch, K classes)::

    proposals (P_i, 4) per image --assign + sample (training)--> rois (R, 5)
    feats P2-P5 --MultiLevelRoIAlign--> (R, C, 7, 7) --Shared2FCBBoxHead--> (R, K + 1), (R, 4K)

``rois`` rows are ``(image_index, x1, y1, x2, y2)`` in input-batch pixels.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from mmengine.model import BaseModule
from torch import Tensor

from detkit.models.heads.bbox_head import Shared2FCBBoxHead
from detkit.models.task_utils import (
    MaxIoUAssigner,
    MultiLevelRoIAlign,
    RandomSampler,
    RoITestConfig,
    SamplingResult,
)
from detkit.models.task_utils.graph_ops import (
    REMOVED,
    best_per_image,
    nms_score_threshold,
    non_max_suppression,
    size_of,
)
from detkit.registry import MODELS, TASK_UTILS, build_if_config
from detkit.structures import Detections, DetSample, LabelGroups

__all__ = ['Shared2FCBBoxHead', 'StandardRoIHead', 'boxes_to_rois']


def boxes_to_rois(boxes: Sequence[Tensor]) -> Tensor:
    """Concatenate per-image boxes into RoIs with their image index in column 0.

    Args:
        boxes: B tensors ``(P_i, 4)`` xyxy in pixels.

    Returns:
        ``(sum P_i, 5)`` rows ``(image_index, x1, y1, x2, y2)``.
    """
    rois = [torch.cat([b.new_full((b.shape[0], 1), float(i)), b[:, :4]], dim=1)
            for i, b in enumerate(boxes)]
    return torch.cat(rois) if rois else torch.zeros((0, 5))


@MODELS.register_module()
class StandardRoIHead(BaseModule):
    """A box branch on proposals: RoI feature extractor + box head (+ assigner and sampler).

    Training (:meth:`loss`): each image's proposals are assigned to its ground truth by
    ``assigner`` (IoU >= 0.5 positive, < 0.5 background), and ``sampler`` draws 512 RoIs at
    most a quarter positive, with the ground-truth boxes added as proposals. Test
    (:meth:`predict`): every proposal is scored and refined; see
    :meth:`Shared2FCBBoxHead.predict_single`.

    Args:
        bbox_roi_extractor: a ``MultiLevelRoIAlign`` or its config.
        bbox_head: a ``Shared2FCBBoxHead`` or its config.
        assigner: labels the proposals in training: a ``MaxIoUAssigner`` or its config.
        sampler: draws the trained RoIs: a ``RandomSampler`` or its config.
        test_cfg: a :class:`RoITestConfig` or its dict, ``dict(score_thr, nms=dict(type='nms',
            iou_threshold), max_per_img)`` (mmdetection's ``test_cfg.rcnn``). The detector
            translates mmdetection's ``train_cfg.rcnn``/``test_cfg.rcnn`` into these arguments
            (:func:`~detkit.models.detectors.head_arguments`).
        init_cfg: mmengine init config.
    """

    def __init__(self, *, bbox_roi_extractor: Any, bbox_head: Any,
                 assigner: MaxIoUAssigner | dict[str, Any] | None = None,
                 sampler: RandomSampler | dict[str, Any] | None = None,
                 test_cfg: RoITestConfig | dict[str, Any] | None = None,
                 init_cfg: dict[str, Any] | None = None) -> None:
        super().__init__(init_cfg)
        self.bbox_roi_extractor: MultiLevelRoIAlign = build_if_config(bbox_roi_extractor,
                                                                      TASK_UTILS)
        self.bbox_head: Shared2FCBBoxHead = build_if_config(bbox_head, MODELS)
        self.assigner: MaxIoUAssigner | None = build_if_config(assigner, TASK_UTILS)
        self.sampler: RandomSampler | None = build_if_config(sampler, TASK_UTILS)
        self.test_cfg = RoITestConfig.from_config(test_cfg)

    def forward(self, feats: Sequence[Tensor], rois: Tensor) -> tuple[Tensor, Tensor]:
        """Scores and class-specific deltas of every RoI.

        Args:
            feats: the pyramid (P2-P6); the extractor reads the levels it has strides for.
            rois: ``(R, 5)`` ``(image_index, x1, y1, x2, y2)``.

        Returns:
            ``(cls_score (R, K + 1), bbox_pred (R, 4K))``.
        """
        # nn.Module.__call__ returns Any: name what Shared2FCBBoxHead.forward returns.
        outputs: tuple[Tensor, Tensor] = self.bbox_head(self.bbox_roi_extractor(feats, rois))
        return outputs

    # ------------------------------------------------------------------ training
    def assign_and_sample_proposals(self, proposals: Tensor, sample: DetSample) -> SamplingResult:
        """Choose one image's training RoIs among its proposals (and its ground truth).

        Args:
            proposals: ``(P, 4)`` xyxy in input pixels (no gradient).
            sample: the image's ground truth.

        Returns:
            The :class:`SamplingResult`.
        """
        if self.assigner is None or self.sampler is None:
            raise RuntimeError('StandardRoIHead.loss needs an assigner and a sampler: '
                               'model.train_cfg.rcnn=dict(assigner=..., sampler=...) in the '
                               'config, or StandardRoIHead(assigner=..., sampler=...)')
        gt_bboxes = sample.gt_bboxes.to(proposals)
        gt_labels = sample.gt_labels.to(proposals.device)
        assigned = self.assigner.assign(proposals, gt_bboxes, gt_labels, sample.gt_ignore_bboxes)
        return self.sampler.sample(assigned, proposals, gt_bboxes, gt_labels)

    def loss(self, feats: Sequence[Tensor], proposals: Sequence[Tensor],
             samples: Sequence[DetSample]) -> dict[str, Tensor]:
        """The box head's losses on the sampled proposals of a batch.

        Args:
            feats: the pyramid ``(B, C, Hl, Wl)`` per level.
            proposals: B tensors ``(P_i, 4)``, the RPN's proposals (detached).
            samples: B samples with ground truth (and ``label_groups`` for GroupSoftmax).

        Returns:
            ``dict(loss_cls, loss_bbox, acc)``, see :meth:`Shared2FCBBoxHead.loss`.
        """
        sampled = [self.assign_and_sample_proposals(p.detach(), s)
                   for p, s in zip(proposals, samples)]
        targets = [self.bbox_head.targets_from_sampling(s) for s in sampled]
        labels = torch.cat([t[0] for t in targets])
        bbox_targets = torch.cat([t[1] for t in targets])
        rois = boxes_to_rois([s.priors for s in sampled])
        cls_score, bbox_pred = self(feats, rois)
        groups = (LabelGroups.of_images(samples, self.bbox_head.num_classes + 1,
                                        rois[:, 0].long())
                  if self.bbox_head.uses_label_groups else None)
        return self.bbox_head.loss(cls_score, bbox_pred, labels, bbox_targets, groups)

    # ------------------------------------------------------------------ inference
    def predict(self, feats: Sequence[Tensor], proposals: Sequence[Tensor],
                samples: Sequence[DetSample], rescale: bool = True) -> list[Detections]:
        """Score and refine every proposal; threshold, class-aware NMS, rescale.

        Args:
            feats: the pyramid ``(B, C, Hl, Wl)`` per level.
            proposals: B tensors ``(P_i, 4)`` xyxy in input pixels.
            samples: B samples with ``img_shape`` and ``scale_factor``.
            rescale: boxes in original-image pixels (else in input pixels).

        Returns:
            B :class:`Detections`, at most ``max_per_img`` each, sorted by score.
        """
        rois = boxes_to_rois(proposals).to(feats[0].device)
        cls_score, bbox_pred = self(feats, rois)
        counts = [p.shape[0] for p in proposals]
        return [self.bbox_head.predict_single(boxes, scores, deltas, sample, self.test_cfg,
                                              rescale)
                for boxes, scores, deltas, sample in zip(proposals, cls_score.split(counts),
                                                         bbox_pred.split(counts), samples)]

    # ------------------------------------------------------------------ export
    def predict_in_graph(self, feats: Sequence[Tensor], proposals: Tensor, valid: Tensor,
                         input_hw: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`predict` with fixed-size tensors, for an exported graph; boxes in input pixels.

        Every proposal is pooled and scored; each (proposal, class) pair above ``score_thr``
        gets its class's box, clipped to the input, and NMS runs per image and class with the
        image x class pairs on ONNX ``NonMaxSuppression``'s batch axis (each class has its own
        boxes).

        Args:
            feats: the pyramid ``(N, C, Hl, Wl)`` per level.
            proposals: ``(N, P, 4)`` xyxy in input pixels.
            valid: ``(N, P)`` bool, the proposals that exist.
            input_hw: int64 ``(2,)`` the input's height and width.

        Returns:
            ``dets (N, K, 5)`` and ``labels (N, K)`` int64 (K = ``max_per_img``), sorted by
            score; rows after an image's last detection are 0 and -1.
        """
        cfg = self.test_cfg
        num_classes = self.bbox_head.num_classes
        per_image = int(proposals.shape[1])   # the RPN's max_per_img: fixed in the graph
        image_index = torch.arange(size_of(proposals, 0), device=proposals.device)
        image_column = torch.zeros_like(proposals[..., :1]) + image_index[:, None, None]
        rois = torch.cat([image_column, proposals], dim=2).reshape(-1, 5)
        cls_score, bbox_pred = self(feats, rois)
        scores = cls_score.float().softmax(dim=1)[:, :num_classes]   # (N*P, K)
        boxes = self.bbox_head.bbox_coder.decode(rois[:, 1:], bbox_pred.float(),
                                                 max_shape=input_hw.to(torch.float32))
        scores = scores.reshape(-1, per_image, num_classes)
        boxes = boxes.reshape(-1, per_image, num_classes, 4)
        candidate = valid[..., None] & (scores > cfg.score_thr)
        if cfg.min_bbox_size >= 0:
            wh = boxes[..., 2:] - boxes[..., :2]
            candidate = candidate & (wh > cfg.min_bbox_size).all(dim=3)
        scores = torch.where(candidate, scores, REMOVED)
        # NMS batch b = image * K + class: its boxes are that class's boxes of that image
        class_boxes = boxes.transpose(1, 2).reshape(-1, per_image, 4)
        class_scores = scores.transpose(1, 2).reshape(-1, 1, per_image)
        selected = non_max_suppression(class_boxes, class_scores,
                                       max_per_class=cfg.max_per_img,
                                       iou_threshold=cfg.nms_iou_thr,
                                       score_threshold=nms_score_threshold(cfg.score_thr))
        image, label = selected[:, 0] // num_classes, selected[:, 0] % num_classes
        flat_index = selected[:, 2] * num_classes + label   # (proposal, class) flattened
        labels = torch.zeros_like(scores, dtype=torch.int64) + torch.arange(
            num_classes, device=scores.device)
        return best_per_image(torch.stack([image, flat_index], 1), boxes.flatten(1, 2),
                              scores.flatten(1), labels.flatten(1), cfg.max_per_img)
