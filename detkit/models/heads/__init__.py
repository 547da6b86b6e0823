"""Detection heads: RetinaNet's dense head, the RPN, and the RoI head with its box head."""
from .bbox_head import Shared2FCBBoxHead
from .retina_head import RetinaHead
from .roi_head import StandardRoIHead, boxes_to_rois
from .rpn_head import RPNHead, select_proposals

__all__ = ['RPNHead', 'RetinaHead', 'Shared2FCBBoxHead', 'StandardRoIHead', 'boxes_to_rois',
           'select_proposals']
