"""Detectors: the top-level models a config's ``model`` builds."""
from .single_stage import RetinaNet, SingleStageDetector

__all__ = ['RetinaNet', 'SingleStageDetector']
from .two_stage import FasterRCNN, TwoStageDetector

__all__ += ['FasterRCNN', 'TwoStageDetector']
