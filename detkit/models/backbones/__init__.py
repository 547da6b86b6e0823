"""Backbones: image -> multi-scale feature maps (C2..C5)."""
from detkit.models.backbones.base import BaseBackbone
from detkit.models.backbones.mobilenet_v2 import MobileNetV2
from detkit.models.backbones.plugins import ContextBlock, SEBlock
from detkit.models.backbones.resnet import ResNet
from detkit.models.backbones.vgg import VGG

__all__ = ['BaseBackbone', 'ContextBlock', 'MobileNetV2', 'ResNet', 'SEBlock', 'VGG']
