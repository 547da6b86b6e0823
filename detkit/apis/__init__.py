"""User-facing entry points: build a detector from a config and checkpoint, run it on images."""
from .inference import DetResult, inference_detector, init_detector

__all__ = ['DetResult', 'inference_detector', 'init_detector']
