"""Task utilities of the heads: anchors, IoU, assigners, samplers, the box coder, RoI pooling and
the post-processing the heads share (test-time settings, flattening, NMS and rescaling)."""
from .anchor_generator import AnchorGenerator, trainable_anchors
from .bbox_overlaps import bbox_overlaps
from .delta_xywh_coder import DeltaXYWHBBoxCoder
from .distributed import mean_over_processes
from .max_iou_assigner import AssignResult, MaxIoUAssigner
from .postprocess import (
    DenseTestConfig,
    ProposalConfig,
    RoITestConfig,
    batch_input_shape,
    flatten_levels,
    logit_lower_bound,
    read_test_config,
    rescale_and_nms,
)
from .random_sampler import RandomSampler, SamplingResult
from .roi_extractor import MultiLevelRoIAlign, map_rois_to_levels

__all__ = ['AnchorGenerator', 'AssignResult', 'DeltaXYWHBBoxCoder', 'DenseTestConfig',
           'MaxIoUAssigner', 'MultiLevelRoIAlign', 'ProposalConfig', 'RandomSampler',
           'RoITestConfig', 'SamplingResult', 'bbox_overlaps', 'flatten_levels',
           'logit_lower_bound', 'map_rois_to_levels', 'mean_over_processes', 'rescale_and_nms',
           'batch_input_shape', 'read_test_config', 'trainable_anchors']
