"""Label each prior (anchor or proposal) positive, negative or ignored by its IoU with the gts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from detkit.registry import TASK_UTILS

from .bbox_overlaps import bbox_overlaps


@dataclass
class AssignResult:
    """Which ground-truth box, if any, each prior is trained against.

    Attributes:
        num_gts: the number of ground-truth boxes ``M`` of the image.
        gt_inds: ``(N,)`` int64 per prior: ``0`` negative (background), ``-1`` ignored (trained
            neither as foreground nor as background), ``i + 1`` positive, matched to gt ``i``.
        max_overlaps: ``(N,)`` float, the prior's largest IoU with any gt (``-1`` for priors
            inside an ignore region, ``0`` when there are no gts).
        labels: ``(N,)`` int64, the label of the matched gt for positives, ``-1`` otherwise.
    """

    num_gts: int
    gt_inds: Tensor
    max_overlaps: Tensor
    labels: Tensor


@TASK_UTILS.register_module()
class MaxIoUAssigner:
    """Assigns each prior to the gt it overlaps most, by IoU thresholds.

    For each prior, in this order:

    1. every prior starts ignored (``-1``);
    2. priors whose largest IoU with the gts lies in ``[0, neg_iou_thr)`` (or in
       ``[lo, hi)`` for a pair) become negatives (``0``);
    3. priors whose largest IoU is ``>= pos_iou_thr`` become positives of that gt;
    4. with ``match_low_quality``, each gt in index order claims its highest-IoU prior (every
       prior tying with that IoU when ``gt_max_assign_all``) if that IoU is ``>= min_pos_iou``
       and above 0, so that every gt gets at least one positive; a later gt overwrites an
       earlier one on a prior both claim.

    Priors whose intersection-over-own-area with an ignore box (COCO crowd region) exceeds
    ``ignore_iof_thr`` get IoU ``-1`` with every gt before step 2, so thresholds never make them
    negative or positive. They stay ignored when the image has no gts; otherwise, with no ignore
    region, an image without gts makes every prior negative.

    Args:
        pos_iou_thr: the IoU from which a prior is positive (RetinaNet: 0.5).
        neg_iou_thr: the IoU below which a prior is negative (RetinaNet: 0.4), or a pair
            ``(lo, hi)``: negative when ``lo <= IoU < hi``.
        min_pos_iou: the smallest IoU a low-quality match may have.
        gt_max_assign_all: whether a gt's low-quality match takes every prior tying with its
            highest IoU, or only the first of them.
        match_low_quality: whether to run step 4.
        ignore_iof_thr: the IoF with an ignore box above which a prior is ignored; ``<= 0``
            turns ignore regions off.

    Example:
        >>> assigner = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4)
        >>> priors = torch.tensor([[0., 0., 10., 10.], [20., 20., 30., 30.]])
        >>> result = assigner.assign(priors, torch.tensor([[0., 0., 10., 9.]]),
        ...                          torch.tensor([3]))
        >>> result.gt_inds.tolist(), result.labels.tolist()
        ([1, 0], [3, -1])
    """

    def __init__(self,
                 pos_iou_thr: float,
                 neg_iou_thr: float | tuple[float, float],
                 min_pos_iou: float = 0.0,
                 gt_max_assign_all: bool = True,
                 match_low_quality: bool = True,
                 ignore_iof_thr: float = -1.0) -> None:
        if not 0.0 <= pos_iou_thr <= 1.0:
            raise ValueError(f'MaxIoUAssigner: pos_iou_thr={pos_iou_thr} must be in [0, 1]')
        self.pos_iou_thr = float(pos_iou_thr)
        self.neg_iou_range = _negative_range(neg_iou_thr)
        self.neg_iou_thr = neg_iou_thr
        self.min_pos_iou = float(min_pos_iou)
        self.gt_max_assign_all = bool(gt_max_assign_all)
        self.match_low_quality = bool(match_low_quality)
        self.ignore_iof_thr = float(ignore_iof_thr)

    def assign(self, priors: Tensor, gt_bboxes: Tensor, gt_labels: Tensor,
               gt_ignore_bboxes: Tensor | None = None) -> AssignResult:
        """Assign the priors of one image to its ground-truth boxes.

        Args:
            priors: ``(N, 4)`` anchors or proposals, xyxy in pixels of the (resized) image.
            gt_bboxes: ``(M, 4)`` ground-truth boxes, xyxy, same image.
            gt_labels: ``(M,)`` int64 labels of ``gt_bboxes``.
            gt_ignore_bboxes: ``(K, 4)`` ignore regions, or None; used when
                ``ignore_iof_thr > 0``.

        Returns:
            The :class:`AssignResult` of the ``N`` priors, on the device of ``priors``.
        """
        _check_boxes('priors', priors)
        _check_boxes('gt_bboxes', gt_bboxes)
        if gt_labels.dim() != 1 or gt_labels.shape[0] != gt_bboxes.shape[0]:
            raise ValueError(f'MaxIoUAssigner.assign: gt_labels must have shape '
                             f'({gt_bboxes.shape[0]},) to match gt_bboxes, '
                             f'got {tuple(gt_labels.shape)}')
        if gt_labels.dtype.is_floating_point:
            raise ValueError(f'MaxIoUAssigner.assign: gt_labels must be integer (int64), '
                             f'got {gt_labels.dtype}')
        num_priors, num_gts = priors.shape[0], gt_bboxes.shape[0]
        device = priors.device
        ignored = self._priors_in_ignore_regions(priors, gt_ignore_bboxes)  # (N,) bool or None

        if num_gts == 0 or num_priors == 0:
            gt_inds = torch.zeros(num_priors, dtype=torch.int64, device=device)
            if ignored is not None:
                gt_inds[ignored] = -1
            return AssignResult(num_gts=num_gts, gt_inds=gt_inds,
                                max_overlaps=priors.new_zeros(num_priors, dtype=torch.float32),
                                labels=torch.full((num_priors,), -1, dtype=torch.int64,
                                                  device=device))

        overlaps = bbox_overlaps(gt_bboxes.to(device), priors)  # (M, N)
        if ignored is not None:
            overlaps = overlaps.masked_fill(ignored[None, :], -1.0)
        gt_inds, max_overlaps = self.gt_inds_from_overlaps(overlaps)
        # torch.where rather than boolean indexing: no host sync on GPU
        matched_labels = gt_labels.to(device=device, dtype=torch.int64)[(gt_inds - 1).clamp(min=0)]
        labels = torch.where(gt_inds > 0, matched_labels, torch.full_like(matched_labels, -1))
        return AssignResult(num_gts=num_gts, gt_inds=gt_inds, max_overlaps=max_overlaps,
                            labels=labels)

    def gt_inds_from_overlaps(self, overlaps: Tensor) -> tuple[Tensor, Tensor]:
        """Steps 1-4 of the class docstring on a precomputed IoU matrix.

        Args:
            overlaps: ``(M, N)`` IoU of each gt with each prior, ``M >= 1``; ``-1`` marks priors
                to be kept out of the thresholds.

        Returns:
            ``gt_inds`` ``(N,)`` int64 as in :class:`AssignResult`, and ``max_overlaps`` ``(N,)``.
        """
        num_gts, num_priors = overlaps.shape
        max_overlaps, best_gt = overlaps.max(dim=0)  # per prior: (N,)
        gt_inds = torch.full((num_priors,), -1, dtype=torch.int64, device=overlaps.device)

        low, high = self.neg_iou_range
        negative = (max_overlaps >= low) & (max_overlaps < high)
        gt_inds = torch.where(negative, torch.zeros_like(gt_inds), gt_inds)

        positive = max_overlaps >= self.pos_iou_thr
        gt_inds = torch.where(positive, best_gt + 1, gt_inds)

        if self.match_low_quality:
            gt_max_overlaps, best_prior = overlaps.max(dim=1)  # per gt: (M,)
            if self.gt_max_assign_all:
                claims = overlaps == gt_max_overlaps[:, None]  # (M, N)
            else:
                claims = torch.zeros_like(overlaps, dtype=torch.bool)
                claims[torch.arange(num_gts, device=overlaps.device), best_prior] = True
            # An IoU of 0 is no match: without this, a gt overlapping nothing (e.g. zero area)
            # would claim every prior that also has IoU 0 with it.
            good_enough = (gt_max_overlaps >= self.min_pos_iou) & (gt_max_overlaps > 0)
            claims &= good_enough[:, None]
            # Later gts overwrite earlier ones: each prior goes to the last gt claiming it, the
            # largest of the claiming gts' 1-based indices (0: no claim). A max over the gts
            # rather than argmax: torch's argmax over the outer dimension of an (M, N) matrix
            # runs at a tenth of the speed (4 ms against 0.07 for 5 gts and 61k anchors).
            numbers = torch.arange(1, num_gts + 1, dtype=torch.int32, device=overlaps.device)
            last_claiming_gt = (claims.to(torch.int32) * numbers[:, None]).amax(dim=0)
            gt_inds = torch.where(last_claiming_gt > 0, last_claiming_gt.long(), gt_inds)
        return gt_inds, max_overlaps

    def _priors_in_ignore_regions(self, priors: Tensor,
                                  gt_ignore_bboxes: Tensor | None) -> Tensor | None:
        if self.ignore_iof_thr <= 0 or gt_ignore_bboxes is None or gt_ignore_bboxes.numel() == 0:
            return None
        _check_boxes('gt_ignore_bboxes', gt_ignore_bboxes)
        iof = bbox_overlaps(priors, gt_ignore_bboxes.to(priors.device), mode='iof')  # (N, K)
        return iof.max(dim=1).values > self.ignore_iof_thr

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(pos_iou_thr={self.pos_iou_thr}, '
                f'neg_iou_thr={self.neg_iou_thr}, min_pos_iou={self.min_pos_iou}, '
                f'gt_max_assign_all={self.gt_max_assign_all}, '
                f'match_low_quality={self.match_low_quality}, '
                f'ignore_iof_thr={self.ignore_iof_thr})')


def _negative_range(neg_iou_thr: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(neg_iou_thr, (int, float)) and not isinstance(neg_iou_thr, bool):
        if not 0.0 <= neg_iou_thr <= 1.0:
            raise ValueError(f'MaxIoUAssigner: neg_iou_thr={neg_iou_thr} must be in [0, 1]')
        return 0.0, float(neg_iou_thr)
    if isinstance(neg_iou_thr, (tuple, list)) and len(neg_iou_thr) == 2:
        low, high = (float(v) for v in neg_iou_thr)
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f'MaxIoUAssigner: neg_iou_thr={tuple(neg_iou_thr)} must be '
                             '(lo, hi) with 0 <= lo <= hi <= 1')
        return low, high
    raise ValueError(f'MaxIoUAssigner: neg_iou_thr must be a float or a (lo, hi) pair, '
                     f'got {neg_iou_thr!r}')


def _check_boxes(name: str, boxes: Tensor) -> None:
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f'MaxIoUAssigner.assign: {name} must have shape (N, 4) '
                         f'(x1, y1, x2, y2), got {tuple(boxes.shape)}')
