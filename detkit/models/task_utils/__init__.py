"""Task utilities of the dense heads: anchors, IoU, the max-IoU assigner and the box coder."""
from .anchor_generator import AnchorGenerator
from .bbox_overlaps import bbox_overlaps
from .delta_xywh_coder import DeltaXYWHBBoxCoder
from .distributed import mean_over_processes
from .max_iou_assigner import AssignResult, MaxIoUAssigner

__all__ = ['AnchorGenerator', 'AssignResult', 'DeltaXYWHBBoxCoder', 'MaxIoUAssigner',
           'bbox_overlaps', 'mean_over_processes']
from .random_sampler import RandomSampler, SamplingResult
from .roi_extractor import MultiLevelRoIAlign, map_rois_to_levels

__all__ += ['MultiLevelRoIAlign', 'RandomSampler', 'SamplingResult', 'map_rois_to_levels']
