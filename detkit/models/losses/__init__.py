"""Losses: classification (sigmoid focal, softmax or binary cross entropy, GroupSoftmax; one
call signature, :class:`ClassificationLoss`) and the L1 loss for box regression."""
from .base import ClassificationLoss
from .cross_entropy_loss import CrossEntropyLoss
from .focal_loss import FocalLoss
from .group_softmax_loss import GroupSoftmaxLoss, group_softmax_loss_reference
from .l1_loss import L1Loss

__all__ = ['ClassificationLoss', 'CrossEntropyLoss', 'FocalLoss', 'GroupSoftmaxLoss', 'L1Loss',
           'group_softmax_loss_reference']
