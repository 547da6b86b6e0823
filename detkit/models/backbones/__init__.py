"""Backbones: image -> multi-scale feature maps (C2..C5)."""
from detkit.models.backbones.plugins import ContextBlock, SEBlock
from detkit.models.backbones.resnet import ResNet

__all__ = ['ContextBlock', 'ResNet', 'SEBlock']
