"""Checkpoint converters: other libraries' state dicts -> detkit checkpoints."""
from .torchvision_detection import (
                                    COCO_CATEGORIES,
                                    TORCHVISION_ARCHS,
                                    convert_torchvision_detector,
                                    detect_torchvision_arch,
                                    faster_rcnn_key_map,
                                    load_torchvision_state_dict,
                                    retinanet_key_map,
                                    save_checkpoint_atomic,
                                    unwrap_state_dict,
)

__all__ = ['COCO_CATEGORIES', 'TORCHVISION_ARCHS', 'convert_torchvision_detector',
           'detect_torchvision_arch', 'faster_rcnn_key_map', 'load_torchvision_state_dict',
           'retinanet_key_map', 'save_checkpoint_atomic', 'unwrap_state_dict']
