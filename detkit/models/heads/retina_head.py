"""RetinaNet's dense head: shared conv towers, anchor labelling, focal + L1 loss, post-processing.

Data flow (B images, L levels, A anchors per location, K classes)::

    feats[l] (B, C, Hl, Wl) --cls tower--> (B, A*K, Hl, Wl) --\\
                            --reg tower--> (B, A*4, Hl, Wl) ----> loss() / predict()

Anchors are ordered location-major (``(y * Wl + x) * A + a``), the order in which
``permute(0, 2, 3, 1).reshape(B, -1, K)`` lays out the conv outputs, and levels are concatenated.

Label convention: classes are ``0 .. K-1``; in the assigned training targets ``K`` means
background and ``-1`` means ignored (the anchor trains neither class nor box).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

from detkit.models.layers import ConvModule
from detkit.models.losses.base import uses_label_groups
from detkit.models.task_utils import (
    AnchorGenerator,
    DeltaXYWHBBoxCoder,
    DenseTestConfig,
    MaxIoUAssigner,
    batch_input_shape,
    flatten_levels,
    logit_lower_bound,
    mean_over_processes,
    rescale_and_nms,
    trainable_anchors,
)
from detkit.models.task_utils.graph_ops import (
    REMOVED,
    best_per_image,
    clamped_k,
    grid_anchors_in_graph,
    nms_score_threshold,
    non_max_suppression,
    size_of,
)
from detkit.registry import MODELS, TASK_UTILS, build_if_config
from detkit.structures import Detections, DetSample


@MODELS.register_module()
class RetinaHead(BaseModule):
    """RetinaNet head (Lin et al., "Focal Loss for Dense Object Detection").

    Two towers of ``stacked_convs`` 3x3 conv + ReLU, shared by all levels, one for
    classification (``cls_convs``, then ``retina_cls`` with A*K outputs, sigmoid per class) and one
    for box regression (``reg_convs``, then ``retina_reg`` with A*4 deltas). Module names are
    mmdetection 3.x's, so its RetinaNet checkpoints load with ``strict=True``.

    Args:
        num_classes: K, the number of foreground classes (background is implicit).
        in_channels: channels of every input level.
        feat_channels: channels inside the towers.
        stacked_convs: convs per tower.
        norm_cfg: norm layer of the tower convs (None: conv with bias + ReLU).
        anchor_generator: an ``AnchorGenerator`` or its config.
        bbox_coder: a ``DeltaXYWHBBoxCoder`` or its config.
        loss_cls: the classification loss (``FocalLoss``) or its config.
        loss_bbox: the box loss (``L1Loss``) on encoded deltas, or its config.
        assigner: labels the anchors in training: a ``MaxIoUAssigner`` or its config (None:
            the head only predicts; the detector translates mmdetection's ``train_cfg`` into
            this, see :func:`~detkit.models.detectors.head_arguments`).
        allowed_border: -1 trains every anchor of the image's padded extent; ``b >= 0`` only
            those inside the image up to ``b`` pixels (mmdetection's ``train_cfg``
            ``allowed_border``, :func:`trainable_anchors`).
        test_cfg: post-processing settings: a :class:`DenseTestConfig` or its dict.
        prior_prob: initial foreground probability, sets the ``retina_cls`` bias.
        init_cfg: mmengine init config; by default convs are N(0, 0.01).
    """

    def __init__(self, *, num_classes: int, in_channels: int, feat_channels: int = 256,
                 stacked_convs: int = 4, norm_cfg: dict[str, Any] | None = None,
                 anchor_generator: Any, bbox_coder: Any, loss_cls: Any, loss_bbox: Any,
                 assigner: MaxIoUAssigner | dict[str, Any] | None = None,
                 allowed_border: float = -1,
                 test_cfg: DenseTestConfig | dict[str, Any] | None = None,
                 prior_prob: float = 0.01, init_cfg: dict[str, Any] | None = None) -> None:
        super().__init__(init_cfg)
        if num_classes < 1:
            raise ValueError(f'RetinaHead: num_classes must be >= 1, got {num_classes}')
        if not 0.0 < prior_prob < 1.0:
            raise ValueError(f'RetinaHead: prior_prob must be in (0, 1), got {prior_prob}')
        self.num_classes = num_classes
        self.prior_prob = prior_prob
        self.anchor_generator: AnchorGenerator = build_if_config(anchor_generator, TASK_UTILS)
        self.bbox_coder: DeltaXYWHBBoxCoder = build_if_config(bbox_coder, TASK_UTILS)
        self.loss_cls: nn.Module = build_if_config(loss_cls, MODELS)
        if uses_label_groups(self.loss_cls):
            raise ValueError(f'RetinaHead: loss_cls={type(self.loss_cls).__name__} needs label '
                             'groups, which a sigmoid classifier has none of; use '
                             "dict(type='FocalLoss')")
        self.loss_bbox: nn.Module = build_if_config(loss_bbox, MODELS)
        self.assigner: MaxIoUAssigner | None = build_if_config(assigner, TASK_UTILS)
        self.allowed_border = allowed_border
        self.test_cfg = DenseTestConfig.from_config(test_cfg)
        num_anchors = self.anchor_generator.num_base_anchors
        if len(set(num_anchors)) != 1:
            raise ValueError(f'RetinaHead shares its convs across levels, so every level needs '
                             f'the same number of anchors; got {num_anchors}')
        self.num_anchors = num_anchors[0]

        def tower() -> nn.ModuleList:
            return nn.ModuleList(
                ConvModule(in_channels if i == 0 else feat_channels, feat_channels, 3,
                           padding=1, norm_cfg=norm_cfg) for i in range(stacked_convs))

        self.cls_convs = tower()
        self.reg_convs = tower()
        self.retina_cls = nn.Conv2d(feat_channels, self.num_anchors * num_classes, 3, padding=1)
        self.retina_reg = nn.Conv2d(feat_channels, self.num_anchors * 4, 3, padding=1)

    def init_weights(self) -> None:
        """N(0, 0.01) conv weights, zero biases, ``retina_cls`` bias = -log((1 - p) / p)."""
        super().init_weights()
        if self.init_cfg is not None:
            return
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        assert self.retina_cls.bias is not None  # nn.Conv2d(bias=True) in __init__
        nn.init.constant_(self.retina_cls.bias,
                          -math.log((1.0 - self.prior_prob) / self.prior_prob))

    # ------------------------------------------------------------------ forward
    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Run both towers on every level.

        Args:
            feats: L tensors ``(B, C, Hl, Wl)``.

        Returns:
            ``(cls_scores, bbox_preds)``: L tensors ``(B, A*K, Hl, Wl)`` (logits) and L tensors
            ``(B, A*4, Hl, Wl)`` (encoded deltas).
        """
        cls_scores, bbox_preds = [], []
        for feat in feats:
            cls_feat, reg_feat = feat, feat
            for conv in self.cls_convs:
                cls_feat = conv(cls_feat)
            for conv in self.reg_convs:
                reg_feat = conv(reg_feat)
            cls_scores.append(self.retina_cls(cls_feat))
            bbox_preds.append(self.retina_reg(reg_feat))
        return cls_scores, bbox_preds

    def anchors(self, featmap_sizes: list[tuple[int, int]], device: torch.device,
                input_shape: tuple[int, int] | None = None) -> list[Tensor]:
        """The anchors of every level, ``(Hl*Wl*A, 4)`` xyxy in input-batch pixels.

        ``input_shape`` is the ``(H, W)`` of the padded batch, which an anchor generator with
        ``strides_from_image`` needs (see :func:`batch_input_shape`).
        """
        return self.anchor_generator.grid_anchors(featmap_sizes, device=device,
                                                  input_shape=input_shape)

    # ------------------------------------------------------------------ training
    def assign_anchors_to_gt(self, anchors: Tensor, sample: DetSample,
                             trainable: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Label the anchors of one image and encode the box targets of its positives.

        1. Only the anchors the image trains are assigned (``trainable``, from
           :func:`trainable_anchors`: not over another image's padding); the others are
           ignored, as mmdetection gives them zero weight.
        2. The assigner labels them: positives get their gt's class, background ``K``, anchors
           between the thresholds or on a crowd region ``-1``.
        3. The positives' box targets are their gt's deltas.

        Args:
            anchors: ``(N, 4)`` all levels' anchors, xyxy in input pixels.
            sample: the image's ground truth (``gt_bboxes`` in the same pixels).
            trainable: ``(N,)`` bool, or None for every anchor.

        Returns:
            ``(labels, bbox_targets)``: ``(N,)`` int64 with ``0..K-1`` for positives, ``K``
            for background and ``-1`` for ignored anchors; ``(N, 4)`` encoded deltas (zero
            except at positives).
        """
        if self.assigner is None:
            raise RuntimeError('RetinaHead.loss needs an assigner: model.train_cfg='
                               'dict(assigner=...) in the config, or RetinaHead(assigner=...)')
        if trainable is None:
            trainable = torch.ones(anchors.shape[0], dtype=torch.bool, device=anchors.device)
        candidates = anchors[trainable]
        result = self.assigner.assign(candidates, sample.gt_bboxes, sample.gt_labels,
                                      sample.gt_ignore_bboxes)
        assigned = torch.full((candidates.shape[0],), self.num_classes, dtype=torch.long,
                              device=anchors.device)
        assigned[result.gt_inds < 0] = -1
        positive = result.gt_inds > 0
        assigned[positive] = result.labels[positive]
        deltas = torch.zeros_like(candidates)
        if positive.any():
            matched_gt = sample.gt_bboxes[result.gt_inds[positive] - 1]
            deltas[positive] = self.bbox_coder.encode(candidates[positive], matched_gt)
        labels = torch.full((anchors.shape[0],), -1, dtype=torch.long, device=anchors.device)
        labels[trainable] = assigned
        bbox_targets = torch.zeros_like(anchors)
        bbox_targets[trainable] = deltas
        return labels, bbox_targets

    def loss(self, cls_scores: list[Tensor], bbox_preds: list[Tensor],
             samples: Sequence[DetSample]) -> dict[str, Tensor]:
        """Focal loss over all non-ignored anchors and L1 over positives, both divided by the
        number of positive anchors in the batch. An image's anchors over the padding of a larger
        image of the batch are not trained (:func:`trainable_anchors`).

        Args:
            cls_scores: L tensors ``(B, A*K, Hl, Wl)``.
            bbox_preds: L tensors ``(B, A*4, Hl, Wl)``.
            samples: B samples with ``gt_bboxes`` / ``gt_labels`` / ``gt_ignore_bboxes``.

        Returns:
            ``dict(loss_cls=scalar, loss_bbox=scalar)``.
        """
        featmap_sizes = [(m.shape[-2], m.shape[-1]) for m in cls_scores]
        batch_shape = batch_input_shape(samples)
        anchors = torch.cat(self.anchors(featmap_sizes, cls_scores[0].device, batch_shape))
        targets = [self.assign_anchors_to_gt(anchors, sample, trainable_anchors(
            self.anchor_generator, anchors, featmap_sizes, sample, self.allowed_border,
            batch_shape)) for sample in samples]
        labels = torch.stack([t[0] for t in targets])            # (B, N)
        bbox_targets = torch.stack([t[1] for t in targets])      # (B, N, 4)
        positive = (labels >= 0) & (labels < self.num_classes)
        # The positive count is a tensor: no host sync on the way to the loss. Under
        # DistributedDataParallel it is the mean over processes, so the update equals one process
        # with the whole global batch.
        avg_factor = mean_over_processes(positive.sum().to(cls_scores[0].dtype)).clamp(min=1)

        logits = flatten_levels(cls_scores, self.num_classes)
        deltas = flatten_levels(bbox_preds, 4)
        loss_cls = self.loss_cls(logits.reshape(-1, self.num_classes), labels.reshape(-1),
                                 avg_factor=avg_factor)
        loss_bbox = self.loss_bbox(deltas[positive], bbox_targets[positive],
                                   avg_factor=avg_factor)
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox)

    # ------------------------------------------------------------------ inference
    def predict(self, cls_scores: list[Tensor], bbox_preds: list[Tensor],
                samples: Sequence[DetSample], rescale: bool = True) -> list[Detections]:
        """Decode, threshold, top-k per level, class-aware NMS and rescale, per image.

        Args:
            cls_scores: L tensors ``(B, A*K, Hl, Wl)``.
            bbox_preds: L tensors ``(B, A*4, Hl, Wl)``.
            samples: B samples (``img_shape`` clips the boxes, ``scale_factor`` rescales them,
                ``pad_shape`` places the anchors of a ``strides_from_image`` generator).
            rescale: map boxes back to the original image's pixels.

        Returns:
            B :class:`Detections`, at most ``max_per_img`` each, sorted by score.
        """
        featmap_sizes = [(m.shape[-2], m.shape[-1]) for m in cls_scores]
        level_anchors = self.anchors(featmap_sizes, cls_scores[0].device,
                                     batch_input_shape(samples))
        batch = cls_scores[0].shape[0]
        # (B, H*W*A, K) and (B, H*W*A, 4): views of channels-last maps (the --amp layout), in
        # the dtype autocast computed them in; only the candidates are made float32 below
        level_logits = [m.permute(0, 2, 3, 1).reshape(batch, -1, self.num_classes)
                        for m in cls_scores]
        level_deltas = [m.permute(0, 2, 3, 1).reshape(batch, -1, 4) for m in bbox_preds]
        return [self._predict_single(level_anchors, [s[i] for s in level_logits],
                                     [d[i] for d in level_deltas], samples[i], rescale)
                for i in range(batch)]

    def _predict_single(self, level_anchors: list[Tensor], level_logits: list[Tensor],
                        level_deltas: list[Tensor], sample: DetSample,
                        rescale: bool) -> Detections:
        cfg = self.test_cfg
        bound = logit_lower_bound(cfg.score_thr)
        boxes, scores, labels = [], [], []
        for anchors, logits, deltas in zip(level_anchors, level_logits, level_deltas):
            flat = logits.reshape(-1)
            # The float32 sigmoid of every (anchor, class) logit, thresholded at score_thr, on
            # the few logits that can pass instead of all of them (9.8M for 2 images of
            # 512x640 and 80 classes): the same candidates, in the same order.
            candidates = torch.nonzero(flat > bound).squeeze(1)
            kept_scores = flat[candidates].float().sigmoid()
            passed = kept_scores > cfg.score_thr
            candidates, kept_scores = candidates[passed], kept_scores[passed]
            if cfg.nms_pre > 0 and kept_scores.numel() > cfg.nms_pre:
                kept_scores, order = kept_scores.topk(cfg.nms_pre)
                candidates = candidates[order]
            anchor_index = candidates // self.num_classes
            boxes.append(self.bbox_coder.decode(anchors[anchor_index],
                                                deltas[anchor_index].float(),
                                                max_shape=sample.img_shape))
            scores.append(kept_scores)
            labels.append(candidates % self.num_classes)
        return rescale_and_nms(torch.cat(boxes), torch.cat(scores), torch.cat(labels),
                               nms_iou_thr=cfg.nms_iou_thr, max_per_img=cfg.max_per_img,
                               min_bbox_size=cfg.min_bbox_size, sample=sample, rescale=rescale)

    # ------------------------------------------------------------------ export
    def predict_in_graph(self, cls_scores: list[Tensor], bbox_preds: list[Tensor],
                         input_hw: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`predict` with fixed-size tensors, for an exported graph; boxes in input pixels.

        The same detections as :meth:`predict` without rescaling on a batch whose images fill
        the input: per level the ``nms_pre`` best (anchor, class) scores (the top-k of all of
        them, then those at or below ``score_thr`` zeroed: the same set as thresholding first),
        boxes decoded and clipped to the input, then per-class NMS
        (:func:`~detkit.models.task_utils.graph_ops.non_max_suppression`) and the best
        ``max_per_img``.

        Args:
            cls_scores: L tensors ``(N, A*K, Hl, Wl)``.
            bbox_preds: L tensors ``(N, A*4, Hl, Wl)``.
            input_hw: int64 ``(2,)`` the input's height and width.

        Returns:
            ``dets (N, max_per_img, 5)`` xyxy + score, sorted by score, and ``labels
            (N, max_per_img)`` int64; after an image's last detection the rows are 0 and -1.
        """
        cfg = self.test_cfg
        level_anchors = grid_anchors_in_graph(self.anchor_generator, cls_scores, input_hw)
        max_shape = input_hw.to(torch.float32)
        boxes, scores, labels = [], [], []
        for anchors, logits, deltas in zip(level_anchors, cls_scores, bbox_preds):
            probs = flatten_levels([logits.float()], self.num_classes).sigmoid().flatten(1)
            deltas = flatten_levels([deltas.float()], 4)
            if cfg.nms_pre > 0:
                probs, index = probs.topk(clamped_k(cfg.nms_pre, size_of(probs, 1)), dim=1)
            else:
                index = torch.zeros_like(probs, dtype=torch.int64) + torch.arange(
                    size_of(probs, 1), device=probs.device)
            anchor_index = index // self.num_classes
            level_deltas = deltas.gather(1, anchor_index[..., None].expand(-1, -1, 4))
            boxes.append(self.bbox_coder.decode(anchors[anchor_index], level_deltas,
                                                max_shape=max_shape))
            scores.append(torch.where(probs > cfg.score_thr, probs, REMOVED))
            labels.append(index % self.num_classes)
        boxes_all, scores_all, labels_all = (torch.cat(boxes, 1), torch.cat(scores, 1),
                                             torch.cat(labels, 1))
        if cfg.min_bbox_size >= 0:
            wh = boxes_all[..., 2:] - boxes_all[..., :2]
            scores_all = torch.where((wh > cfg.min_bbox_size).all(dim=2), scores_all, REMOVED)
        classes = torch.arange(self.num_classes, device=labels_all.device)
        per_class = torch.where(labels_all[:, None, :] == classes[None, :, None],
                                scores_all[:, None, :], REMOVED)
        selected = non_max_suppression(boxes_all, per_class, max_per_class=cfg.max_per_img,
                                       iou_threshold=cfg.nms_iou_thr,
                                       score_threshold=nms_score_threshold(cfg.score_thr))
        return best_per_image(selected[:, [0, 2]], boxes_all, scores_all, labels_all,
                              cfg.max_per_img)
