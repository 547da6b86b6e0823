"""Data sets, samplers, transforms and the synthetic data generators.

Importing this package registers ``CocoDataset`` (DATASETS), ``AspectRatioBatchSampler``
(DATA_SAMPLERS) and the transforms (TRANSFORMS); it does not import ``detkit.models``.
"""
from . import transforms  # noqa: F401  (registers the transforms)
from .coco import COCO_CLASSES, CocoDataset
from .samplers import AspectRatioBatchSampler
from .synthetic import SHAPES_CATEGORIES, make_shapes

__all__ = ['AspectRatioBatchSampler', 'COCO_CLASSES', 'CocoDataset', 'SHAPES_CATEGORIES',
           'make_shapes']
