"""Train one detector on several data sets that each label only their own classes.

:class:`JointDataset` concatenates sub-data sets (e.g. COCO's 80 classes and CCTSDB's 3 traffic
signs) into one **union label space**: the sub-data sets' class lists joined in order, so with
``datasets=[coco, cctsdb]`` COCO keeps labels ``0..79`` and CCTSDB's ``warning, prohibitory,
mandatory`` become ``80, 81, 82``. Background is label ``K`` (the number of union classes, here
83): detkit puts background last, as :class:`~detkit.structures.DetSample` documents.

Every image also carries ``dataset_index`` (which sub-data set it comes from) and
``label_groups``, the ``(K+1,)`` group-id vector of its sub-data set (:func:`label_groups_for`):
the classes that data set annotates get the distinct ids ``1..K_d``; every other class and the
background get id 0, i.e. they are merged into one "not annotated here" group. A GroupSoftmax
loss trains an unlabelled object of another data set's class as "background or some class this
data set does not annotate" instead of as plain background.

The joint wrapper is for **training**. Validate on one fully labelled set with a
:class:`CocoDataset` whose ``metainfo['classes']`` lists the model's classes that the set's
annotation file has (the metric maps labels to category ids by name).
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Callable, Sequence

import numpy as np
import torch
from mmengine.logging import print_log
from torch import Tensor
from torch.utils.data import Dataset

from detkit.errors import InputError
from detkit.registry import DATASETS

from .base_det_dataset import DataInfo, PipelineStep, build_transforms


def union_classes(dataset_classes: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """The union label space: the class lists concatenated in order.

    Args:
        dataset_classes: ``D`` class-name lists, one per sub-data set.

    Returns:
        The ``K = sum(K_d)`` class names; label ``k`` is ``classes[k]``.

    Raises:
        ValueError: a list is empty or a name occurs more than once (the message names each
            duplicate and the sub-data sets that declare it).
    """
    if isinstance(dataset_classes, str) or not dataset_classes:
        raise InputError(f'JointDataset: need at least one class list, got {dataset_classes!r}')
    owners: dict[str, list[int]] = {}
    for d, classes in enumerate(dataset_classes):
        if isinstance(classes, str) or not classes:
            raise InputError(f'JointDataset: datasets[{d}] declares no classes (got '
                             f'{classes!r}); set its metainfo=dict(classes=(...))')
        for name in classes:
            owners.setdefault(name, []).append(d)
    duplicates = {name: ds for name, ds in owners.items() if len(ds) > 1}
    if duplicates:
        listed = '; '.join(f'{name!r} in datasets {ds}' for name, ds in duplicates.items())
        raise InputError(f'JointDataset: class names must be unique across the sub-data sets '
                         f'(each class is annotated by exactly one of them); duplicated: '
                         f'{listed}. Rename or drop them with the sub-data sets\' '
                         'metainfo=dict(classes=(...))')
    return tuple(name for classes in dataset_classes for name in classes)


def label_groups_for(dataset_classes: Sequence[Sequence[str]]) -> Tensor:
    """The group-id vector of every sub-data set over the union label space.

    Row ``d`` gives the classes of sub-data set ``d`` the ids ``1..K_d`` (in its own order) and
    every other class, and the background (column ``K``), the id 0.

    Args:
        dataset_classes: ``D`` class-name lists, one per sub-data set, in the joint order.

    Returns:
        ``(D, K+1)`` int64 tensor, ``K`` the total number of classes.

    Raises:
        ValueError: as :func:`union_classes`.

    Example:
        >>> label_groups_for([('person', 'car'), ('warning', 'prohibitory', 'mandatory')])
        tensor([[1, 2, 0, 0, 0, 0],
                [0, 0, 1, 2, 3, 0]])
    """
    num_classes = len(union_classes(dataset_classes))
    groups = torch.zeros((len(dataset_classes), num_classes + 1), dtype=torch.int64)
    offset = 0
    for d, classes in enumerate(dataset_classes):
        groups[d, offset:offset + len(classes)] = torch.arange(1, len(classes) + 1)
        offset += len(classes)
    return groups


@DATASETS.register_module()
class JointDataset(Dataset[Any]):
    """Several detection data sets as one, in the union label space (see the module docstring).

    Index ``i`` runs through ``datasets[0]``, then ``datasets[1]``, ... Each image's data info
    is its sub-data set's, with ``bbox_label`` shifted by the sub-data set's offset (the number
    of classes before it) and two keys added, both passed by ``PackDetInputs`` into the
    ``DetSample``:

    * ``dataset_index``: ``d``, the position of the sub-data set in ``datasets``;
    * ``label_groups``: ``(K+1,)`` int64 numpy array, row ``d`` of :func:`label_groups_for`.

    The sub-data sets are built without a pipeline (their data info stays raw); this wrapper
    runs ``pipeline`` after the remapping. Their ``filter_cfg`` and ``test_mode`` apply as usual.

    Args:
        datasets: the sub-data sets: configs (built from ``DATASETS``) or built objects, each
            with ``metainfo['classes']`` and ``get_data_info``; class names must be unique
            across them. Configs must not have a ``pipeline``.
        pipeline: transforms (configs, built from detkit's ``TRANSFORMS``, or callables).
        test_mode: in ``test_mode`` an image whose pipeline returns ``None`` is an error; in
            training another random image is drawn instead (up to ``max_refetch`` times).
        lazy_init: defer the sub-data sets' ``full_init`` until ``full_init()`` or first use.
        max_refetch: see ``test_mode``.

    Attributes:
        datasets: the built sub-data sets.
        dataset_classes: the class names of each sub-data set.
        label_offsets: ``label_offsets[d]`` is the union label of sub-data set ``d``'s label 0.
        label_groups: ``(D, K+1)`` int64 tensor from :func:`label_groups_for`.
        metainfo: ``dict(classes=union, dataset_classes=(...), label_offsets=(...))``.

    Example:
        >>> joint = JointDataset(datasets=[
        ...     dict(type='CocoDataset', data_root='data/coco/',
        ...          ann_file='annotations/instances_train2017.json',
        ...          data_prefix=dict(img='train2017/')),
        ...     dict(type='CCTSDBDataset', data_root='data/cctsdb/', ann_file='xml/',
        ...          data_prefix=dict(img='train_img/'), skip_missing_images=True)],
        ...     pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
        ...               dict(type='PackDetInputs')])
        >>> len(joint.metainfo['classes']), joint.label_offsets
        (83, (0, 80))
    """

    def __init__(self,
                 datasets: Sequence[dict[str, Any] | Any],
                 pipeline: Sequence[PipelineStep] = (),
                 test_mode: bool = False,
                 lazy_init: bool = False,
                 max_refetch: int = 1000) -> None:
        if isinstance(datasets, (dict, str)) or not datasets:
            raise InputError(f'JointDataset: datasets must be a non-empty list of data set '
                             f'configs or objects, got {datasets!r}')
        self.datasets = [self._build(d, spec) for d, spec in enumerate(datasets)]
        self.dataset_classes = tuple(tuple(ds.metainfo['classes']) for ds in self.datasets)
        self.classes = union_classes(self.dataset_classes)
        offsets = np.cumsum([0] + [len(c) for c in self.dataset_classes])
        self.label_offsets = tuple(int(o) for o in offsets[:-1])
        self.label_groups = label_groups_for(self.dataset_classes)
        self._label_groups_np = self.label_groups.numpy()
        self.pipeline: list[Callable[[DataInfo], DataInfo | None]] = build_transforms(pipeline)
        self.test_mode = test_mode
        self.max_refetch = max_refetch
        self._cumulative_sizes: list[int] = []
        self._fully_initialized = False
        if not lazy_init:
            self.full_init()

    @staticmethod
    def _build(d: int, spec: dict[str, Any] | Any) -> Any:
        """Build ``datasets[d]`` (without a pipeline) or check a built one."""
        if isinstance(spec, dict):
            if spec.get('pipeline'):
                raise InputError(f'JointDataset: datasets[{d}] ({spec.get("type")}) has its own '
                                 'pipeline; the joint data set remaps the labels first and then '
                                 'runs JointDataset(pipeline=...): move the transforms there')
            dataset = DATASETS.build(dict(spec, pipeline=[]))
        else:
            dataset = spec
            if getattr(getattr(dataset, 'pipeline', None), 'transforms', None):
                raise InputError(f'JointDataset: datasets[{d}] ({type(dataset).__name__}) was '
                                 'built with a pipeline; build it with pipeline=[] and give the '
                                 'transforms to JointDataset(pipeline=...)')
        if not hasattr(dataset, 'get_data_info') or 'classes' not in getattr(dataset, 'metainfo',
                                                                              {}):
            raise TypeError(f'JointDataset: datasets[{d}] ({type(dataset).__name__}) needs '
                            "get_data_info(idx) and metainfo['classes']")
        return dataset

    @property
    def metainfo(self) -> dict[str, Any]:
        """``dict(classes=union, dataset_classes=per sub-data set, label_offsets=...)``."""
        return dict(classes=self.classes, dataset_classes=self.dataset_classes,
                    label_offsets=self.label_offsets)

    def full_init(self) -> None:
        """Fully initialise the sub-data sets (read their annotations) and index them."""
        if self._fully_initialized:
            return
        for dataset in self.datasets:
            if hasattr(dataset, 'full_init'):
                dataset.full_init()
        self._cumulative_sizes = np.cumsum([len(ds) for ds in self.datasets]).tolist()
        sizes = ', '.join(f'{type(ds).__name__}: {len(ds)} images, {len(c)} classes'
                          for ds, c in zip(self.datasets, self.dataset_classes))
        print_log(f'JointDataset: {self._cumulative_sizes[-1]} images, {len(self.classes)} '
                  f'classes ({sizes})', logger='current', level=logging.INFO)
        self._fully_initialized = True

    def __len__(self) -> int:
        self.full_init()
        return self._cumulative_sizes[-1]

    def locate(self, idx: int) -> tuple[int, int]:
        """``(d, j)``: image ``idx`` is image ``j`` of sub-data set ``d``.

        Args:
            idx: an index into the joint data set (negative counts from the end).

        Returns:
            The sub-data set index and the index inside it.
        """
        size = len(self)
        if not -size <= idx < size:
            raise IndexError(f'JointDataset: index {idx} out of range for {size} images')
        idx = idx % size
        d = int(np.searchsorted(self._cumulative_sizes, idx, side='right'))
        return d, idx - (self._cumulative_sizes[d - 1] if d else 0)

    def get_data_info(self, idx: int) -> DataInfo:
        """The data info of image ``idx`` in the union label space.

        Args:
            idx: an index into the joint data set.

        Returns:
            The sub-data set's dict (a copy) with ``bbox_label`` shifted into the union space
            and ``dataset_index`` (int) and ``label_groups`` (``(K+1,)`` int64 array) added.
        """
        d, j = self.locate(idx)
        info: DataInfo = copy.deepcopy(self.datasets[d].get_data_info(j))
        offset = self.label_offsets[d]
        for instance in info.get('instances', []):
            instance['bbox_label'] = int(instance['bbox_label']) + offset
        info['dataset_index'] = d
        info['label_groups'] = self._label_groups_np[d].copy()
        return info

    def get_cat_ids(self, idx: int) -> list[int]:
        """The union labels of the non-ignored instances of image ``idx``.

        Args:
            idx: an index into the joint data set.

        Returns:
            One label per non-ignored instance (repeats kept).
        """
        return [i['bbox_label'] for i in self.get_data_info(idx)['instances']
                if not i.get('ignore_flag', 0)]

    def prepare_data(self, idx: int) -> Any:
        """Run the pipeline on image ``idx``'s data info (``None`` if a transform drops it)."""
        results = self.get_data_info(idx)
        for transform in self.pipeline:
            transformed = transform(results)
            if transformed is None:
                return None
            results = transformed
        return results

    def __getitem__(self, idx: int) -> Any:
        results = self.prepare_data(idx)
        if results is not None:
            return results
        if self.test_mode:
            raise RuntimeError(f'JointDataset: the pipeline dropped image {idx} in test_mode; '
                               'test-time pipelines must not return None')
        for _ in range(self.max_refetch):
            results = self.prepare_data(int(np.random.randint(0, len(self))))
            if results is not None:
                return results
        raise RuntimeError(f'JointDataset: the pipeline returned None for {self.max_refetch + 1} '
                           'images in a row; check the transforms and the annotations')

    def __repr__(self) -> str:
        parts = ', '.join(f'{type(ds).__name__}(classes {o}..{o + len(c) - 1})'
                          for ds, o, c in zip(self.datasets, self.label_offsets,
                                              self.dataset_classes))
        return f'{type(self).__name__}({parts}; background={len(self.classes)})'

