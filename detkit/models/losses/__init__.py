"""Losses: the sigmoid focal loss for classification and the L1 loss for box regression."""
from .focal_loss import FocalLoss
from .l1_loss import L1Loss

__all__ = ['FocalLoss', 'L1Loss']
from .cross_entropy_loss import CrossEntropyLoss
from .group_softmax_loss import GroupSoftmaxLoss, group_softmax_loss_reference

__all__ += ['CrossEntropyLoss', 'GroupSoftmaxLoss', 'group_softmax_loss_reference']
