"""Detectors: the top-level models a config's ``model`` builds."""
from .base import BaseDetector
from .head_arguments import head_arguments
from .single_stage import RetinaNet, SingleStageDetector
from .two_stage import FasterRCNN, TwoStageDetector

__all__ = ['BaseDetector', 'FasterRCNN', 'RetinaNet', 'SingleStageDetector', 'TwoStageDetector',
           'head_arguments']
