"""Draw a fixed-size, class-balanced training subset of the assigned priors (RPN and RoI head)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from detkit.registry import TASK_UTILS

from .max_iou_assigner import AssignResult


@dataclass
class SamplingResult:
    """The priors of one image chosen for training, positives first.

    Indices refer to the prior list the sampler saw, which starts with the ``M`` ground-truth
    boxes when they were added as proposals (``add_gt_as_proposals``).

    Attributes:
        pos_inds: ``(P,)`` int64 indices of the sampled positives.
        neg_inds: ``(Q,)`` int64 indices of the sampled negatives.
        pos_priors: ``(P, 4)`` the positive priors, xyxy in pixels.
        neg_priors: ``(Q, 4)`` the negative priors.
        pos_gt_inds: ``(P,)`` int64 0-based index of each positive's ground-truth box.
        pos_gt_bboxes: ``(P, 4)`` each positive's ground-truth box.
        pos_gt_labels: ``(P,)`` int64 each positive's ground-truth label.
        pos_is_gt: ``(P,)`` bool, whether the positive is an added ground-truth box.
    """

    pos_inds: Tensor
    neg_inds: Tensor
    pos_priors: Tensor
    neg_priors: Tensor
    pos_gt_inds: Tensor
    pos_gt_bboxes: Tensor
    pos_gt_labels: Tensor
    pos_is_gt: Tensor

    @property
    def num_pos(self) -> int:
        """The number of sampled positives ``P``."""
        return int(self.pos_inds.numel())

    @property
    def num_neg(self) -> int:
        """The number of sampled negatives ``Q``."""
        return int(self.neg_inds.numel())

    @property
    def priors(self) -> Tensor:
        """``(P + Q, 4)`` the sampled priors, positives first."""
        return torch.cat([self.pos_priors, self.neg_priors])


@TASK_UTILS.register_module()
class RandomSampler:
    """Samples at most ``num`` priors, at most ``num * pos_fraction`` of them positive.

    Positives (``gt_inds > 0``) are drawn uniformly without replacement up to
    ``int(num * pos_fraction)``; negatives (``gt_inds == 0``) fill the rest up to ``num``,
    capped at ``neg_pos_ub * max(1, num_pos)`` when ``neg_pos_ub >= 0``. Ignored priors
    (``gt_inds == -1``) are never drawn. Draws use torch's global generator.

    Args:
        num: the number of priors per image to sample (RPN: 256, RoI head: 512).
        pos_fraction: the largest fraction of positives (RPN: 0.5, RoI head: 0.25).
        neg_pos_ub: the largest negative-to-positive ratio, ``-1`` for none.
        add_gt_as_proposals: prepend the ground-truth boxes to the priors as positives of
            themselves (the RoI head's proposals), so every gt trains the box head.

    Example:
        >>> sampler = RandomSampler(num=4, pos_fraction=0.5)
        >>> result = AssignResult(num_gts=1, gt_inds=torch.tensor([1, 1, 1, 0, 0, 0, -1]),
        ...                       max_overlaps=torch.zeros(7), labels=torch.zeros(7).long())
        >>> sampled = sampler.sample(result, torch.rand(7, 4), torch.rand(1, 4),
        ...                          torch.tensor([0]))
        >>> sampled.num_pos, sampled.num_neg
        (2, 2)
    """

    def __init__(self, num: int, pos_fraction: float, neg_pos_ub: float = -1,
                 add_gt_as_proposals: bool = True) -> None:
        if not isinstance(num, int) or num < 1:
            raise ValueError(f'RandomSampler: num must be a positive int, got {num!r}')
        if not 0.0 <= pos_fraction <= 1.0:
            raise ValueError(f'RandomSampler: pos_fraction={pos_fraction} must be in [0, 1]')
        self.num = num
        self.pos_fraction = float(pos_fraction)
        self.neg_pos_ub = neg_pos_ub
        self.add_gt_as_proposals = bool(add_gt_as_proposals)

    def sample(self, assign_result: AssignResult, priors: Tensor, gt_bboxes: Tensor,
               gt_labels: Tensor) -> SamplingResult:
        """Choose the training priors of one image.

        Args:
            assign_result: the assignment of ``priors`` (from ``MaxIoUAssigner.assign``).
            priors: ``(N, 4)`` anchors or proposals, xyxy in pixels.
            gt_bboxes: ``(M, 4)`` the image's ground-truth boxes, same pixels.
            gt_labels: ``(M,)`` int64 their labels.

        Returns:
            The :class:`SamplingResult`; with ``add_gt_as_proposals`` its indices count the
            ``M`` ground-truth boxes first.
        """
        if priors.dim() != 2 or priors.shape[1] != 4:
            raise ValueError(f'RandomSampler.sample: priors must have shape (N, 4), got '
                             f'{tuple(priors.shape)}')
        if assign_result.gt_inds.shape[0] != priors.shape[0]:
            raise ValueError(f'RandomSampler.sample: assign_result covers '
                             f'{assign_result.gt_inds.shape[0]} priors, got {priors.shape[0]}')
        gt_inds = assign_result.gt_inds
        priors = priors[:, :4]
        num_gts = gt_bboxes.shape[0]
        is_gt = torch.zeros(priors.shape[0], dtype=torch.bool, device=priors.device)
        if self.add_gt_as_proposals and num_gts > 0:
            gt_bboxes = gt_bboxes.to(priors)
            priors = torch.cat([gt_bboxes, priors])
            own = torch.arange(1, num_gts + 1, dtype=gt_inds.dtype, device=gt_inds.device)
            gt_inds = torch.cat([own, gt_inds])
            is_gt = torch.cat([torch.ones(num_gts, dtype=torch.bool, device=priors.device),
                               is_gt])

        max_pos = int(self.num * self.pos_fraction)
        pos_inds = _random_subset(torch.nonzero(gt_inds > 0).squeeze(1), max_pos)
        max_neg = self.num - pos_inds.numel()
        if self.neg_pos_ub >= 0:
            max_neg = min(max_neg, int(self.neg_pos_ub * max(1, pos_inds.numel())))
        neg_inds = _random_subset(torch.nonzero(gt_inds == 0).squeeze(1), max_neg)

        pos_gt_inds = gt_inds[pos_inds] - 1
        if num_gts > 0:
            pos_gt_bboxes = gt_bboxes.to(priors)[pos_gt_inds]
            pos_gt_labels = gt_labels.to(device=priors.device, dtype=torch.int64)[pos_gt_inds]
        else:
            pos_gt_bboxes = priors.new_zeros((0, 4))
            pos_gt_labels = torch.zeros(0, dtype=torch.int64, device=priors.device)
        return SamplingResult(pos_inds=pos_inds, neg_inds=neg_inds, pos_priors=priors[pos_inds],
                              neg_priors=priors[neg_inds], pos_gt_inds=pos_gt_inds,
                              pos_gt_bboxes=pos_gt_bboxes, pos_gt_labels=pos_gt_labels,
                              pos_is_gt=is_gt[pos_inds])

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num={self.num}, pos_fraction={self.pos_fraction}, '
                f'neg_pos_ub={self.neg_pos_ub}, '
                f'add_gt_as_proposals={self.add_gt_as_proposals})')


def _random_subset(indices: Tensor, limit: int) -> Tensor:
    """At most ``limit`` of ``indices``, drawn uniformly without replacement (all if fewer)."""
    if indices.numel() <= limit:
        return indices
    chosen = torch.randperm(indices.numel(), device=indices.device)[:max(limit, 0)]
    return indices[chosen]
