"""Data transforms registered in TRANSFORMS: load, resize/flip, augment, pack."""
from .augment import (
    Expand,
    MinIoURandomCrop,
    PhotoMetricDistortion,
    RandomAffine,
    RandomResize,
)
from .formatting import PackDetInputs
from .geometric import RandomFlip, Resize, rescale_size
from .loading import ImageDecodeError, LoadAnnotations, LoadImageFromFile, decode_image

__all__ = ['Expand', 'ImageDecodeError', 'LoadAnnotations', 'LoadImageFromFile',
           'MinIoURandomCrop', 'PackDetInputs', 'PhotoMetricDistortion', 'RandomAffine',
           'RandomFlip', 'RandomResize', 'Resize', 'decode_image', 'rescale_size']
