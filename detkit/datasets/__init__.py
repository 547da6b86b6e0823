"""Data sets, samplers, transforms and the synthetic data generators.

Importing this package registers ``CocoDataset``, ``CCTSDBDataset``, ``VOCDataset``,
``FaceMaskDataset`` and ``JointDataset`` (DATASETS), ``AspectRatioBatchSampler``
(DATA_SAMPLERS) and the transforms (TRANSFORMS); it does not import ``detkit.models``.
"""
from . import transforms  # noqa: F401  (registers the transforms)
from .cctsdb import CCTSDB_CLASSES, CCTSDBDataset, load_cctsdb
from .coco import COCO_CLASSES, CocoDataset
from .joint import JointDataset, label_groups_for, union_classes
from .samplers import AspectRatioBatchSampler
from .synthetic import (
    PARTIAL_CLASSES,
    SHAPES_CATEGORIES,
    make_facemask,
    make_shapes,
    make_shapes_partial,
)
from .voc import FACEMASK_CLASSES, VOC_CLASSES, FaceMaskDataset, VOCDataset

__all__ = ['AspectRatioBatchSampler', 'COCO_CLASSES', 'CocoDataset', 'SHAPES_CATEGORIES',
           'make_shapes', 'CCTSDB_CLASSES', 'CCTSDBDataset', 'load_cctsdb', 'JointDataset',
           'label_groups_for', 'union_classes', 'PARTIAL_CLASSES', 'make_shapes_partial',
           'FACEMASK_CLASSES', 'VOC_CLASSES', 'FaceMaskDataset', 'VOCDataset', 'make_facemask']
