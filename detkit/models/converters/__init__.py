"""Checkpoint converters: other libraries' state dicts -> detkit checkpoints.

``torchvision_backbones`` renames torchvision classification backbones' keys (used by the
``Pretrained`` initializer); ``torchvision_detection`` converts whole torchvision detectors.
Neither imports from ``detkit.models``, so that the backbones and the loader can import them.
"""
from .torchvision_backbones import (
    MOBILENET_V2_SETTINGS,
    convert_torchvision_mobilenet_v2,
    convert_torchvision_state_dict,
    convert_torchvision_vgg,
)
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

__all__ = ['COCO_CATEGORIES', 'MOBILENET_V2_SETTINGS', 'TORCHVISION_ARCHS',
           'convert_torchvision_detector', 'convert_torchvision_mobilenet_v2',
           'convert_torchvision_state_dict', 'convert_torchvision_vgg', 'detect_torchvision_arch',
           'faster_rcnn_key_map', 'load_torchvision_state_dict', 'retinanet_key_map',
           'save_checkpoint_atomic', 'unwrap_state_dict']
