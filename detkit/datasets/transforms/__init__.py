"""Data transforms registered in TRANSFORMS: load, resize/flip, pack."""
from .formatting import PackDetInputs
from .geometric import RandomFlip, Resize, rescale_size
from .loading import ImageDecodeError, LoadAnnotations, LoadImageFromFile, decode_image

__all__ = ['ImageDecodeError', 'LoadAnnotations', 'LoadImageFromFile', 'PackDetInputs',
           'RandomFlip', 'Resize', 'decode_image', 'rescale_size']
