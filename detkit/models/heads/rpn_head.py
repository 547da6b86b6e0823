"""Region proposal network: objectness and box deltas per anchor, proposals for the RoI head.

Data flow (B images, L levels, A anchors per location, C objectness channels per anchor)::

    feats[l] (B, 256, Hl, Wl) --rpn_conv 3x3 + ReLU--> --rpn_cls 1x1--> (B, A*C, Hl, Wl)
                                                      --rpn_reg 1x1--> (B, A*4, Hl, Wl)

Anchors are ordered location-major, anchor-minor, levels concatenated, as in
:class:`~detkit.models.heads.RetinaHead`; channel ``a * C + c`` of ``rpn_cls`` is class ``c`` of
anchor ``a``.

Two objectness layouts:

- single dataset (``num_datasets=None``, the default): ``C = 1``, a sigmoid per anchor, trained
  with binary cross entropy. Training labels: 0 object, 1 background, -1 not sampled.
- joint training on ``D`` datasets (``num_datasets=D``): ``C = D + 1``, a softmax over
  ``{object of dataset 0, ..., object of dataset D-1, background}``, background LAST (index
  ``D``) as everywhere in detkit. The positives of an image from dataset ``d``
  (``DetSample.dataset_index``) are labelled ``d``, its negatives ``D``. The loss is the one the
  config names: ``CrossEntropyLoss(use_sigmoid=False)``, a plain softmax, or
  :class:`~detkit.models.losses.GroupSoftmaxLoss`, to which the head hands the label groups of
  every anchor (``gid[d] = 1``, 0 for background and the other datasets' objects), so dataset
  ``d``'s images train "object of ``d``" against "anything else", never pushing another
  dataset's (unlabelled) objects towards background. The proposal score is
  ``1 - p(background)``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn
from torchvision.ops import batched_nms

from detkit.models.losses.base import uses_label_groups
from detkit.models.task_utils import (
    AnchorGenerator,
    DeltaXYWHBBoxCoder,
    MaxIoUAssigner,
    ProposalConfig,
    RandomSampler,
    batch_input_shape,
    flatten_levels,
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
from detkit.structures import Detections, DetSample, LabelGroups


@MODELS.register_module()
class RPNHead(BaseModule):
    """Faster R-CNN's region proposal head (Ren et al., 2015), shared by all FPN levels.

    One 3x3 conv ``rpn_conv`` + ReLU, then 1x1 convs ``rpn_cls`` (``A * C`` objectness logits,
    see the module docstring for ``C``) and ``rpn_reg`` (``A * 4`` deltas). Module names are
    mmdetection 3.x's, so its Faster R-CNN checkpoints load with ``strict=True``.

    Training (:meth:`loss`): anchors are assigned by ``assigner`` (IoU >= 0.7 object, < 0.3
    background, each gt's best anchor object from IoU 0.3), ``sampler`` draws 256 of them per
    image at most half positive, and both losses are divided by the number
    of sampled anchors in the batch: objectness cross entropy over the sampled anchors, L1 on the
    positives' deltas.

    Args:
        in_channels: channels of every input level.
        feat_channels: channels of ``rpn_conv``.
        anchor_generator: an ``AnchorGenerator`` or its config (Faster R-CNN: scale 8, ratios
            0.5/1/2, strides 4-64 on P2-P6).
        bbox_coder: a ``DeltaXYWHBBoxCoder`` or its config (means 0, stds 1).
        loss_bbox: the box loss (``L1Loss``) or its config.
        loss_cls: the objectness loss or its config, fitting the layout:
            ``CrossEntropyLoss(use_sigmoid=True)`` for the sigmoid RPN; for the softmax RPN
            ``CrossEntropyLoss(use_sigmoid=False)`` or ``GroupSoftmaxLoss``.
        num_datasets: None for the sigmoid RPN; ``D`` for the ``(D + 1)``-way softmax RPN of
            joint training (images carry ``dataset_index`` in ``[0, D)``).
        assigner: labels the anchors in training: a ``MaxIoUAssigner`` or its config.
        sampler: draws the trained anchors: a ``RandomSampler`` or its config.
        allowed_border: -1 trains every anchor of the image's padded extent; ``b >= 0`` only
            those inside the image up to ``b`` pixels (mmdetection's ``allowed_border``).
        train_proposal_cfg: the proposals made during training, a :class:`ProposalConfig` or
            its dict (mmdetection's ``rpn_proposal``; default nms_pre 2000, max_per_img 1000,
            NMS 0.7).
        test_cfg: the proposals at test time, a :class:`ProposalConfig` or its dict (default
            nms_pre 1000, max_per_img 1000). The detector translates mmdetection's
            ``train_cfg``/``test_cfg`` into these arguments
            (:func:`~detkit.models.detectors.head_arguments`).
        init_cfg: mmengine init config; by default convs are N(0, 0.01) with zero bias.
    """

    group_table: Tensor  # (D, D + 1) int64, softmax layout only: see anchor_label_groups

    def __init__(self, *, in_channels: int, feat_channels: int = 256, anchor_generator: Any,
                 bbox_coder: Any, loss_bbox: Any, loss_cls: Any,
                 num_datasets: int | None = None,
                 assigner: MaxIoUAssigner | dict[str, Any] | None = None,
                 sampler: RandomSampler | dict[str, Any] | None = None,
                 allowed_border: float = -1,
                 train_proposal_cfg: ProposalConfig | dict[str, Any] | None = None,
                 test_cfg: ProposalConfig | dict[str, Any] | None = None,
                 init_cfg: dict[str, Any] | None = None) -> None:
        super().__init__(init_cfg)
        if num_datasets is not None and (not isinstance(num_datasets, int) or num_datasets < 1):
            raise ValueError(f'RPNHead: num_datasets must be None (sigmoid objectness) or a '
                             f'positive int, got {num_datasets!r}')
        self.num_datasets = num_datasets
        self.use_sigmoid = num_datasets is None
        self.cls_out_channels = 1 if num_datasets is None else num_datasets + 1
        self.background_label = 1 if num_datasets is None else num_datasets

        self.anchor_generator: AnchorGenerator = build_if_config(anchor_generator, TASK_UTILS)
        self.bbox_coder: DeltaXYWHBBoxCoder = build_if_config(bbox_coder, TASK_UTILS)
        self.loss_bbox: nn.Module = build_if_config(loss_bbox, MODELS)
        self.loss_cls = self._objectness_loss(loss_cls)
        self.assigner: MaxIoUAssigner | None = build_if_config(assigner, TASK_UTILS)
        self.sampler: RandomSampler | None = build_if_config(sampler, TASK_UTILS)
        if getattr(self.sampler, 'add_gt_as_proposals', False):
            raise ValueError('RPNHead: the sampler samples anchors, among which ground-truth '
                             'boxes cannot be added: set add_gt_as_proposals=False')
        self.allowed_border = allowed_border
        self.train_proposal_cfg = ProposalConfig.from_config(
            train_proposal_cfg or dict(nms_pre=2000), 'train_cfg.rpn_proposal')
        self.test_cfg = ProposalConfig.from_config(test_cfg, 'test_cfg.rpn')

        num_anchors = self.anchor_generator.num_base_anchors
        if len(set(num_anchors)) != 1:
            raise ValueError(f'RPNHead shares its convs across levels, so every level needs the '
                             f'same number of anchors; got {num_anchors}')
        self.num_anchors = num_anchors[0]
        self.rpn_conv = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(feat_channels, self.num_anchors * self.cls_out_channels, 1)
        self.rpn_reg = nn.Conv2d(feat_channels, self.num_anchors * 4, 1)
        if num_datasets is not None:
            # Row d: object of dataset d is its own group (1); background and the other
            # datasets' objects form the background group (0).
            table = torch.zeros(num_datasets, num_datasets + 1, dtype=torch.int64)
            table[torch.arange(num_datasets), torch.arange(num_datasets)] = 1
            self.register_buffer('group_table', table, persistent=False)

    def _objectness_loss(self, loss_cls: Any) -> nn.Module:
        """Build ``loss_cls`` and check that it fits the objectness layout."""
        built: nn.Module = build_if_config(loss_cls, MODELS)
        sigmoid = bool(getattr(built, 'use_sigmoid', False))
        name = type(built).__name__
        if self.num_datasets is None and not sigmoid:
            raise ValueError(f'RPNHead: loss_cls={name} does not fit the sigmoid objectness of '
                             "num_datasets=None; use loss_cls=dict(type='CrossEntropyLoss', "
                             'use_sigmoid=True), or num_datasets=D for a softmax over data sets')
        if self.num_datasets is not None and sigmoid:
            raise ValueError(f'RPNHead: loss_cls={name}(use_sigmoid=True) does not fit the '
                             f'softmax objectness of num_datasets={self.num_datasets}; use '
                             "dict(type='CrossEntropyLoss', use_sigmoid=False) or "
                             "dict(type='GroupSoftmaxLoss', use_sigmoid=False)")
        return built

    def init_weights(self) -> None:
        """N(0, 0.01) conv weights and zero biases (unless ``init_cfg`` says otherwise)."""
        super().init_weights()
        if self.init_cfg is not None:
            return
        for conv in (self.rpn_conv, self.rpn_cls, self.rpn_reg):
            nn.init.normal_(conv.weight, std=0.01)
            assert conv.bias is not None  # nn.Conv2d(bias=True) in __init__
            nn.init.zeros_(conv.bias)

    # ------------------------------------------------------------------ forward
    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Objectness logits and deltas of every level.

        Args:
            feats: L tensors ``(B, in_channels, Hl, Wl)`` (P2-P6).

        Returns:
            ``(cls_scores, bbox_preds)``: L tensors ``(B, A*C, Hl, Wl)`` and L tensors
            ``(B, A*4, Hl, Wl)``.
        """
        cls_scores, bbox_preds = [], []
        for feat in feats:
            hidden = torch.relu_(self.rpn_conv(feat))   # the conv keeps its input, not its output
            cls_scores.append(self.rpn_cls(hidden))
            bbox_preds.append(self.rpn_reg(hidden))
        return cls_scores, bbox_preds

    def anchors(self, featmap_sizes: list[tuple[int, int]], device: torch.device,
                input_shape: tuple[int, int] | None = None) -> list[Tensor]:
        """The anchors of every level, ``(Hl*Wl*A, 4)`` xyxy in input-batch pixels.

        ``input_shape`` is the ``(H, W)`` of the padded batch, which an anchor generator with
        ``strides_from_image`` needs.
        """
        return self.anchor_generator.grid_anchors(featmap_sizes, device=device,
                                                  input_shape=input_shape)

    # ------------------------------------------------------------------ training
    def object_label(self, sample: DetSample) -> int:
        """The objectness label of the image's positive anchors: 0, or its dataset index."""
        if self.num_datasets is None:  # the sigmoid layout (use_sigmoid)
            return 0
        index = int(sample.dataset_index)
        if not 0 <= index < self.num_datasets:
            raise ValueError(f'RPNHead(num_datasets={self.num_datasets}): sample '
                             f'{sample.img_path or sample.img_id!r} has dataset_index={index}, '
                             f'expected 0..{self.num_datasets - 1}')
        return index

    def anchor_label_groups(self, samples: Sequence[DetSample],
                            anchors_per_image: int) -> LabelGroups:
        """The label groups of every anchor of the batch (images in order): row ``d`` of the
        group table (object of data set ``d`` its own group, everything else background's) for
        the anchors of an image of data set ``d``."""
        image_dataset = torch.tensor([self.object_label(s) for s in samples],
                                     device=self.group_table.device)
        return LabelGroups(table=self.group_table,
                           row_index=image_dataset.repeat_interleave(anchors_per_image))

    def assign_and_sample_anchors(self, anchors: Tensor, sample: DetSample,
                                  trainable: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Label the anchors of one image and encode the box targets of the sampled positives.

        1. Only the anchors the image trains (``trainable``, from :func:`trainable_anchors`:
           not over another image's padding) are assigned and can be sampled.
        2. The assigner labels them object or background, the sampler draws the trained ones.
        3. The sampled positives' box targets are their gt's deltas.

        Args:
            anchors: ``(N, 4)`` all levels' anchors, xyxy in input pixels.
            sample: the image's ground truth (``gt_bboxes`` in the same pixels).
            trainable: ``(N,)`` bool, or None for every anchor.

        Returns:
            ``(labels, bbox_targets)``: ``(N,)`` int64 with :meth:`object_label` for sampled
            positives, the background label (1, or ``D``) for sampled negatives and ``-1`` for
            every anchor not sampled; ``(N, 4)`` deltas, zero except at sampled positives.
        """
        if self.assigner is None or self.sampler is None:
            raise RuntimeError('RPNHead.loss needs an assigner and a sampler: '
                               'model.train_cfg.rpn=dict(assigner=..., sampler=...) in the '
                               'config, or RPNHead(assigner=..., sampler=...)')
        gt_bboxes = sample.gt_bboxes.to(anchors)
        object_labels = torch.zeros(gt_bboxes.shape[0], dtype=torch.int64,
                                    device=anchors.device)
        if trainable is None:
            index = torch.arange(anchors.shape[0], device=anchors.device)
        else:
            index = torch.nonzero(trainable).squeeze(1)  # candidate -> anchor
        candidates = anchors[index]
        assigned = self.assigner.assign(candidates, gt_bboxes, object_labels,
                                        sample.gt_ignore_bboxes)
        sampled = self.sampler.sample(assigned, candidates, gt_bboxes, object_labels)
        labels = torch.full((anchors.shape[0],), -1, dtype=torch.int64, device=anchors.device)
        labels[index[sampled.neg_inds]] = self.background_label
        labels[index[sampled.pos_inds]] = self.object_label(sample)
        bbox_targets = torch.zeros_like(anchors)
        if sampled.num_pos > 0:
            bbox_targets[index[sampled.pos_inds]] = self.bbox_coder.encode(
                sampled.pos_priors, sampled.pos_gt_bboxes)
        return labels, bbox_targets

    def loss(self, cls_scores: list[Tensor], bbox_preds: list[Tensor],
             samples: Sequence[DetSample]) -> dict[str, Tensor]:
        """Objectness loss over the sampled anchors and L1 over the sampled positives, both
        divided by the number of sampled anchors in the batch. An image's anchors over the
        padding of a larger image of the batch are never sampled (:func:`trainable_anchors`).

        Args:
            cls_scores: L tensors ``(B, A*C, Hl, Wl)``.
            bbox_preds: L tensors ``(B, A*4, Hl, Wl)``.
            samples: B samples with ``gt_bboxes`` (labels are not used: every gt is an object)
                and, for the softmax layout, ``dataset_index``.

        Returns:
            ``dict(loss_rpn_cls=scalar, loss_rpn_bbox=scalar)``.
        """
        featmap_sizes = [(m.shape[-2], m.shape[-1]) for m in cls_scores]
        batch_shape = batch_input_shape(samples)
        anchors = torch.cat(self.anchors(featmap_sizes, cls_scores[0].device, batch_shape))
        targets = [self.assign_and_sample_anchors(anchors, sample, trainable_anchors(
            self.anchor_generator, anchors, featmap_sizes, sample, self.allowed_border,
            batch_shape)) for sample in samples]
        labels = torch.stack([t[0] for t in targets])            # (B, N)
        bbox_targets = torch.stack([t[1] for t in targets])      # (B, N, 4)
        positive = (labels >= 0) & (labels != self.background_label)
        num_sampled = (labels >= 0).sum().clamp(min=1).to(cls_scores[0].dtype)

        logits = flatten_levels(cls_scores, self.cls_out_channels).reshape(
            -1, self.cls_out_channels)
        deltas = flatten_levels(bbox_preds, 4)
        groups = (self.anchor_label_groups(samples, labels.shape[1])
                  if uses_label_groups(self.loss_cls) else None)
        loss_cls = self.loss_cls(logits, labels.reshape(-1), avg_factor=num_sampled,
                                 groups=groups)
        loss_bbox = self.loss_bbox(deltas[positive], bbox_targets[positive],
                                   avg_factor=num_sampled)
        return dict(loss_rpn_cls=loss_cls, loss_rpn_bbox=loss_bbox)

    # ------------------------------------------------------------------ proposals
    def objectness(self, cls_score: Tensor) -> Tensor:
        """Per-anchor object probability of one level.

        Sigmoid of the logit, or ``1 - p(background)`` of the softmax layout.

        Args:
            cls_score: ``(B, A*C, H, W)`` logits of one level.

        Returns:
            ``(B, H*W*A)`` probabilities in anchor order.
        """
        batch = cls_score.shape[0]
        logits = cls_score.permute(0, 2, 3, 1).reshape(batch, -1, self.cls_out_channels)
        if self.use_sigmoid:
            return logits[..., 0].sigmoid()
        return 1.0 - logits.softmax(dim=-1)[..., self.background_label]

    def ranking_scores(self, cls_score: Tensor) -> Tensor:
        """What the per-level top-k of :meth:`predict_proposals` ranks the anchors of one level by.

        The objectness logit for the sigmoid layout: the same order as the probability (the
        sigmoid is increasing), without the ties that rounding the probability to float32
        creates among close logits. The probability of :meth:`objectness` for the softmax
        layout.

        Args:
            cls_score: ``(B, A*C, H, W)`` logits of one level.

        Returns:
            ``(B, H*W*A)`` in anchor order.
        """
        if not self.use_sigmoid:
            return self.objectness(cls_score)
        return cls_score.permute(0, 2, 3, 1).reshape(cls_score.shape[0], -1)

    def predict_proposals(self, cls_scores: list[Tensor], bbox_preds: list[Tensor],
                          samples: Sequence[DetSample],
                          for_training: bool = False) -> list[Detections]:
        """The proposals of every image (no gradient flows back into the head).

        Per level, the ``nms_pre`` anchors of highest objectness (ranked by
        :meth:`ranking_scores`) are decoded and clipped to
        ``img_shape``; then empty and small boxes are removed, NMS runs with the level as the
        group (a box suppresses only boxes of its own level) and the best ``max_per_img`` are
        kept (:func:`select_proposals`).

        Args:
            cls_scores: L tensors ``(B, A*C, Hl, Wl)``.
            bbox_preds: L tensors ``(B, A*4, Hl, Wl)``.
            samples: B samples with ``img_shape`` (and ``pad_shape`` for an anchor generator
                with ``strides_from_image``).
            for_training: use ``train_proposal_cfg`` instead of ``test_cfg``.

        Returns:
            B :class:`Detections` with ``bboxes`` ``(P, 4)`` xyxy in input pixels (not
            rescaled), ``scores`` ``(P,)`` objectness sorted decreasingly and ``labels`` 0.
        """
        cfg = self.train_proposal_cfg if for_training else self.test_cfg
        featmap_sizes = [(m.shape[-2], m.shape[-1]) for m in cls_scores]
        level_anchors = self.anchors(featmap_sizes, cls_scores[0].device,
                                     batch_input_shape(samples))
        batch = cls_scores[0].shape[0]
        # in float32 whatever autocast computed the convs in
        cls_scores = [m.detach().float() for m in cls_scores]
        level_scores = [self.objectness(m) for m in cls_scores]
        level_ranks = [self.ranking_scores(m) for m in cls_scores]
        level_deltas = [m.detach().float().permute(0, 2, 3, 1).reshape(batch, -1, 4)
                        for m in bbox_preds]
        proposals = []
        for i, sample in enumerate(samples):
            level_boxes, level_objectness, level_ids = [], [], []
            for level, (anchors, objectness, ranks, deltas) in enumerate(
                    zip(level_anchors, level_scores, level_ranks, level_deltas)):
                objectness, deltas = objectness[i], deltas[i]
                if 0 < cfg.nms_pre < objectness.numel():
                    top = ranks[i].topk(cfg.nms_pre).indices
                    objectness, anchors, deltas = objectness[top], anchors[top], deltas[top]
                level_boxes.append(self.bbox_coder.decode(anchors, deltas,
                                                          max_shape=sample.img_shape))
                level_objectness.append(objectness)
                level_ids.append(torch.full_like(objectness, level, dtype=torch.int64))
            boxes, scores = select_proposals(torch.cat(level_boxes), torch.cat(level_objectness),
                                             torch.cat(level_ids), cfg)
            proposals.append(Detections(bboxes=boxes, scores=scores,
                                        labels=torch.zeros_like(scores, dtype=torch.int64)))
        return proposals

    def proposals_in_graph(self, cls_scores: list[Tensor], bbox_preds: list[Tensor],
                           input_hw: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`predict_proposals` (test settings) with fixed-size tensors, for an exported
        graph, on a batch whose images fill the input.

        Per level the ``nms_pre`` anchors of highest :meth:`ranking_scores`, decoded and clipped
        to the input; NMS with the level as the class
        (:func:`~detkit.models.task_utils.graph_ops.non_max_suppression`) and the best
        ``max_per_img`` by objectness.

        Args:
            cls_scores: L tensors ``(N, A*C, Hl, Wl)``.
            bbox_preds: L tensors ``(N, A*4, Hl, Wl)``.
            input_hw: int64 ``(2,)`` the input's height and width.

        Returns:
            ``proposals (N, P, 5)`` (x1, y1, x2, y2, objectness; P = ``max_per_img``), sorted by
            objectness, and ``valid (N, P)`` bool: rows past an image's last proposal are 0
            and invalid.
        """
        cfg = self.test_cfg
        level_anchors = grid_anchors_in_graph(self.anchor_generator, cls_scores, input_hw)
        max_shape = input_hw.to(torch.float32)
        boxes, scores, levels = [], [], []
        for level, (anchors, logits, deltas) in enumerate(
                zip(level_anchors, cls_scores, bbox_preds)):
            logits = logits.float()
            objectness, ranks = self.objectness(logits), self.ranking_scores(logits)
            deltas = flatten_levels([deltas.float()], 4)
            if cfg.nms_pre > 0:
                index = ranks.topk(clamped_k(cfg.nms_pre, size_of(ranks, 1)), dim=1).indices
                objectness = objectness.gather(1, index)
                deltas = deltas.gather(1, index[..., None].expand(-1, -1, 4))
                anchors = anchors[index]
            else:
                anchors = anchors[None].expand_as(deltas)
            boxes.append(self.bbox_coder.decode(anchors, deltas, max_shape=max_shape))
            scores.append(objectness)
            levels.append(torch.full_like(objectness, level, dtype=torch.int64))
        boxes_all, scores_all, levels_all = (torch.cat(boxes, 1), torch.cat(scores, 1),
                                             torch.cat(levels, 1))
        if cfg.min_bbox_size >= 0:
            wh = boxes_all[..., 2:] - boxes_all[..., :2]
            scores_all = torch.where((wh > cfg.min_bbox_size).all(dim=2), scores_all, REMOVED)
        level_ids = torch.arange(len(cls_scores), device=levels_all.device)
        per_level = torch.where(levels_all[:, None, :] == level_ids[None, :, None],
                                scores_all[:, None, :], REMOVED)
        # every candidate takes part, objectness 0 included, as in the eager head
        selected = non_max_suppression(boxes_all, per_level, max_per_class=cfg.max_per_img,
                                       iou_threshold=cfg.nms_iou_thr,
                                       score_threshold=nms_score_threshold(REMOVED))
        proposals, labels = best_per_image(selected[:, [0, 2]], boxes_all, scores_all,
                                           levels_all, cfg.max_per_img)
        return proposals, labels >= 0


def select_proposals(boxes: Tensor, scores: Tensor, level_ids: Tensor,
                     cfg: ProposalConfig) -> tuple[Tensor, Tensor]:
    """Remove small boxes, run NMS within each level, keep the best ``cfg.max_per_img``.

    Args:
        boxes: ``(N, 4)`` decoded candidates, xyxy in pixels.
        scores: ``(N,)`` their objectness.
        level_ids: ``(N,)`` int64 pyramid level of each candidate: the NMS group, so two
            identical boxes from different levels both survive.
        cfg: thresholds (``min_bbox_size``, ``nms_iou_thr``, ``max_per_img``).

    Returns:
        ``(boxes (P, 4), scores (P,))`` sorted by decreasing score.
    """
    if cfg.min_bbox_size >= 0:
        width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        large = (width > cfg.min_bbox_size) & (height > cfg.min_bbox_size)
        boxes, scores, level_ids = boxes[large], scores[large], level_ids[large]
    keep = batched_nms(boxes, scores, level_ids, cfg.nms_iou_thr)[:cfg.max_per_img]
    return boxes[keep], scores[keep]
