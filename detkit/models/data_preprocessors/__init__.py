"""Batch preparation on the model's device: normalisation and padding."""
from .det_data_preprocessor import DetDataPreprocessor

__all__ = ['DetDataPreprocessor']
