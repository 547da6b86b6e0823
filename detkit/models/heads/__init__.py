"""Detection heads."""
from .retina_head import DenseTestConfig, RetinaHead

__all__ = ['DenseTestConfig', 'RetinaHead']
from .bbox_head import Shared2FCBBoxHead
from .roi_head import StandardRoIHead, boxes_to_rois
from .rpn_head import ProposalConfig, RPNHead, select_proposals

__all__ += ['ProposalConfig', 'RPNHead', 'Shared2FCBBoxHead', 'StandardRoIHead',
            'boxes_to_rois', 'select_proposals']
