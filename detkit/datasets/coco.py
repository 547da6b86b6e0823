"""The COCO detection data set: a COCO-format JSON file read into mmengine's data list.

Each image becomes one dict (``img_path``, ``img_id``, ``height``, ``width``, ``instances``);
boxes are ``(x1, y1, x2, y2)`` in absolute pixels, converted from COCO's ``(x, y, w, h)``
without any ``+1``; ``iscrowd=1`` annotations become ignore regions (``ignore_flag=1``); labels
are ``0 .. K-1`` in the order of ``metainfo['classes']``. docs/datasets.md ("COCO") states what
each bad input does (error, dropped and counted, clipped), checked by
``tests/test_coco_dataset.py``.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import warnings
from collections import Counter
from typing import Any, Sequence

from mmengine.dataset.base_dataset import force_full_init
from mmengine.logging import print_log
from pycocotools.coco import COCO

from detkit.errors import InputError
from detkit.registry import DATASETS

from .base_det_dataset import BaseDetDataset, DataInfo, PipelineStep

COCO_CLASSES = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
    'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog',
    'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella',
    'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite',
    'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket', 'bottle',
    'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple', 'sandwich',
    'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch',
    'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote',
    'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book',
    'clock', 'vase', 'scissors', 'teddy bear', 'hair drier', 'toothbrush')


# Why an annotation was dropped, in the order the warning lists them.
_DROP_REASONS = {
    'malformed': 'bbox is not a list of 4 numbers',
    'not_finite': 'bbox has a NaN or infinite value',
    'not_positive': 'bbox width or height <= 0',
    'sub_pixel': 'bbox width or height under 1 px (as mmdetection drops them)',
    'outside': 'bbox lies entirely outside the image (empty after clipping)',
    'unknown_category': "category_id is not among the file's categories",
    'unknown_image': "image_id is not among the file's images",
}


@DATASETS.register_module()
class CocoDataset(BaseDetDataset):
    """A COCO-format detection data set (boxes only), read with ``pycocotools``.

    Args:
        ann_file: the COCO JSON file, relative to ``data_root`` unless absolute.
        data_root: the folder holding the data set, e.g. ``'data/coco/'``.
        data_prefix: ``dict(img=folder)``: the image folder, relative to ``data_root`` unless
            absolute; an image's path is ``data_root/data_prefix['img']/file_name``.
        filter_cfg: in training only: ``filter_empty_gt=True`` drops images without a
            non-ignored instance; ``min_size=32`` drops images whose shorter side is below 32
            pixels. ``None`` keeps every image.
        pipeline: transforms (configs, built from detkit's ``TRANSFORMS``, or callables).
        test_mode: whether the set is used for validation/testing (nothing is filtered).
        metainfo: ``dict(classes=(name, ...))`` to train on these categories of the file only, in
            this label order; default: the 80 COCO classes.
        lazy_init: defer reading ``ann_file`` until ``full_init()`` or the first access.
        serialize_data: keep the data list as one pickled buffer (shared by dataloader workers).
        indices: keep only these indices (or the first ``indices`` images) after filtering.
        max_refetch: how often ``__getitem__`` retries another image when the pipeline returns
            ``None`` in training.
        bad_sample: ``'error'`` (default) raises when an image file is missing or cannot be
            decoded, naming it; ``'skip'`` skips such samples in training, warning once per
            file (see :mod:`detkit.datasets.bad_samples`; ``test_mode`` always raises).

    Attributes:
        cat_ids: ``cat_ids[label]`` is the file's category id of that label.
        cat2label: the inverse, category id -> label.
        skipped_files: the image paths skipped so far (``bad_sample='skip'``).

    Example:
        >>> dataset = CocoDataset('annotations/instances_val2017.json', data_root='data/coco/',
        ...                       data_prefix=dict(img='val2017/'), test_mode=True)
        >>> dataset.get_data_info(0)['instances'][0]
        {'bbox': [...], 'bbox_label': ..., 'ignore_flag': 0}
    """

    METAINFO = dict(classes=COCO_CLASSES)

    def __init__(self,
                 ann_file: str,
                 data_root: str = '',
                 data_prefix: dict[str, str] | None = None,
                 filter_cfg: dict[str, Any] | None = None,
                 pipeline: Sequence[PipelineStep] = (),
                 test_mode: bool = False,
                 metainfo: dict[str, Any] | None = None,
                 lazy_init: bool = False,
                 serialize_data: bool = True,
                 indices: int | Sequence[int] | None = None,
                 max_refetch: int = 1000,
                 bad_sample: str = 'error') -> None:
        self._cat_ids: list[int] = []
        self._cat2label: dict[int, int] = {}
        super().__init__(ann_file=ann_file, data_root=data_root, data_prefix=data_prefix,
                         filter_cfg=filter_cfg, pipeline=pipeline, test_mode=test_mode,
                         metainfo=metainfo, lazy_init=lazy_init, serialize_data=serialize_data,
                         indices=indices, max_refetch=max_refetch, bad_sample=bad_sample)

    @property
    @force_full_init
    def cat_ids(self) -> list[int]:
        """``cat_ids[label]``: the file's category id of each contiguous label."""
        return list(self._cat_ids)

    @property
    @force_full_init
    def cat2label(self) -> dict[int, int]:
        """The file's category id -> contiguous label, for the categories used."""
        return dict(self._cat2label)

    def load_data_list(self) -> list[DataInfo]:
        """Read ``ann_file`` into one dict per image (layout: the module docstring).

        Returns:
            The data list, in the order of the file's ``images``.

        Raises:
            FileNotFoundError: ``ann_file`` does not exist (the message shows the layout).
            ValueError: the file is empty or not JSON, or breaks one of the structural rules
                of docs/datasets.md ("COCO"), or a class of ``metainfo['classes']`` is not
                a category of the file.
        """
        dataset = _read_coco_json(self.ann_file, self.data_root)
        coco = COCO()
        coco.dataset = dataset
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco.createIndex()

        self._cat_ids = _match_classes(self.ann_file, self._metainfo['classes'], coco.cats)
        self._cat2label = {cat_id: label for label, cat_id in enumerate(self._cat_ids)}

        drops: Counter[str] = Counter()
        examples: dict[str, str] = {}
        num_clipped = 0
        data_list = []
        for img in coco.dataset['images']:
            instances = []
            for ann in coco.imgToAnns.get(img['id'], []):
                instance, reason = self._parse_annotation(ann, img, coco.cats)
                if reason is not None:
                    drops[reason] += 1
                    examples.setdefault(reason, f"annotation id {ann['id']} of image id "
                                                f"{img['id']} ({img['file_name']}): "
                                                f"bbox={ann.get('bbox')!r}")
                elif instance is not None:
                    num_clipped += instance.pop('clipped')
                    instances.append(instance)
            data_list.append(dict(
                img_path=os.path.join(self.data_prefix['img'], img['file_name']),
                img_id=img['id'], height=int(img['height']), width=int(img['width']),
                instances=instances))

        image_ids = set(coco.imgs)
        for image_id, anns in coco.imgToAnns.items():
            if image_id not in image_ids:
                drops['unknown_image'] += len(anns)
                examples.setdefault('unknown_image', f"annotation id {anns[0]['id']}: "
                                                     f'image_id={image_id!r}')
        self._warn_dropped(drops, examples, len(dataset['annotations']))
        if num_clipped:
            print_log(f'CocoDataset: clipped {num_clipped} boxes of {self.ann_file} that '
                      'extend beyond their image to the image', logger='current',
                      level=logging.INFO)
        return data_list

    def _parse_annotation(
            self, ann: dict[str, Any], img: dict[str, Any],
            categories: dict[int, dict[str, Any]]) -> tuple[dict[str, Any] | None, str | None]:
        """One COCO annotation -> ``(instance, None)``, ``(None, reason)`` or ``(None, None)``.

        ``(None, None)`` is a category of the file that ``metainfo['classes']`` leaves out on
        purpose; ``reason`` is a key of ``_DROP_REASONS``.
        """
        category_id = ann['category_id']
        if category_id not in categories:
            return None, 'unknown_category'
        if category_id not in self._cat2label:
            return None, None
        bbox = ann.get('bbox')
        if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           for v in bbox)):
            return None, 'malformed'
        x, y, w, h = (float(v) for v in bbox)
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            return None, 'not_finite'
        if w <= 0 or h <= 0:
            return None, 'not_positive'
        if w < 1 or h < 1:
            return None, 'sub_pixel'
        width, height = float(img['width']), float(img['height'])
        x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
        x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
        if x2 <= x1 or y2 <= y1:
            return None, 'outside'
        clipped = (x1, y1, x2, y2) != (x, y, x + w, y + h)
        return dict(bbox=[x1, y1, x2, y2], bbox_label=self._cat2label[category_id],
                    ignore_flag=int(bool(ann.get('iscrowd', 0))), clipped=clipped), None

    def _warn_dropped(self, drops: Counter[str], examples: dict[str, str], num_anns: int) -> None:
        """One warning for all annotations dropped while loading, with one example per reason."""
        total = sum(drops.values())
        if not total:
            return
        parts = [f'{drops[key]} with {text} (e.g. {examples[key]})'
                 for key, text in _DROP_REASONS.items() if drops[key]]
        warnings.warn(f'CocoDataset: dropped {total} of {num_anns} annotations of '
                      f'{self.ann_file}: ' + '; '.join(parts), stacklevel=2)


def _read_coco_json(ann_file: str, data_root: str) -> dict[str, Any]:
    """Read and check the top level of a COCO JSON file.

    Args:
        ann_file: the file.
        data_root: the data set's root (to show the expected layout when the file is missing).

    Returns:
        The parsed dict with ``images``, ``annotations`` and ``categories`` lists.
    """
    if not os.path.isfile(ann_file):
        raise FileNotFoundError(f'CocoDataset: annotation file {ann_file!r} does not exist '
                                f'(data_root={data_root!r}). {_layout_hint(ann_file, data_root)}')
    if os.path.getsize(ann_file) == 0:
        raise InputError(f'CocoDataset: {ann_file} is empty (0 bytes); expected a COCO JSON '
                         'object with images, annotations and categories')
    try:
        with open(ann_file, encoding='utf-8') as f:
            dataset = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f'CocoDataset: {ann_file} is not a JSON file: {err}') from err
    if not isinstance(dataset, dict):
        raise InputError(f'CocoDataset: {ann_file} must hold a JSON object with images, '
                         f'annotations and categories, got a {type(dataset).__name__}')
    for key in ('images', 'annotations', 'categories'):
        if key not in dataset:
            raise InputError(f'CocoDataset: {ann_file} has no {key!r} key (a COCO detection file '
                             f'needs images, annotations and categories); its keys: '
                             f'{sorted(dataset)}')
        if not isinstance(dataset[key], list):
            raise InputError(f'CocoDataset: {ann_file}: {key!r} must be a list, got '
                             f'{type(dataset[key]).__name__}')
    if not dataset['images']:
        raise InputError(f"CocoDataset: {ann_file} lists no images ('images' is empty)")
    _check_images(ann_file, dataset['images'])
    _check_entries(ann_file, 'annotations', 'annotation', dataset['annotations'],
                   ('id', 'image_id', 'category_id'))
    _check_entries(ann_file, 'categories', 'category', dataset['categories'], ('id', 'name'))
    return dataset


def _is_id(value: Any) -> bool:
    """Whether ``value`` can be a COCO id: a number or a string (not a bool, list or dict)."""
    return isinstance(value, (int, float, str)) and not isinstance(value, bool)


def _check_images(ann_file: str, images: list[Any]) -> None:
    """Raise ``ValueError`` for a malformed or repeated entry of ``images`` (docs/datasets.md)."""
    index_of_id: dict[Any, int] = {}
    index_of_name: dict[str, int] = {}
    for index, img in enumerate(images):
        if not isinstance(img, dict):
            raise InputError(f'CocoDataset: {ann_file}: images[{index}] must be an object, got '
                             f'{img!r}')
        missing = [k for k in ('id', 'file_name', 'height', 'width') if k not in img]
        if missing:
            raise InputError(f'CocoDataset: {ann_file}: images[{index}] misses {missing} '
                             f'(got {img!r})')
        if not _is_id(img['id']):
            raise InputError(f"CocoDataset: {ann_file}: images[{index}] has id={img['id']!r}; "
                             'expected a number or a string')
        for key in ('height', 'width'):
            value = img[key]
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value != int(value) or value < 1):
                raise InputError(f'CocoDataset: {ann_file}: images[{index}] (id {img["id"]!r}) '
                                 f'has {key}={value!r}; expected a positive integer')
        if not isinstance(img['file_name'], str) or not img['file_name']:
            raise InputError(f"CocoDataset: {ann_file}: images[{index}] (id {img['id']!r}) has "
                             f"file_name={img['file_name']!r}; expected a non-empty string")
        if img['id'] in index_of_id:
            raise InputError(f"CocoDataset: {ann_file}: image id {img['id']!r} appears twice in "
                             f"images (images[{index_of_id[img['id']]}] and images[{index}])")
        if img['file_name'] in index_of_name:
            first = index_of_name[img['file_name']]
            raise InputError(f"CocoDataset: {ann_file}: file_name {img['file_name']!r} appears "
                             f"twice in images (images[{first}] with id {images[first]['id']!r} "
                             f"and images[{index}] with id {img['id']!r}); list each image once")
        index_of_id[img['id']] = index
        index_of_name[img['file_name']] = index


def _check_entries(ann_file: str, key: str, noun: str, entries: list[Any],
                   required: tuple[str, ...]) -> None:
    """Raise ``ValueError`` for a malformed or repeated entry of ``annotations``/``categories``.

    An entry must be an object with the ``required`` fields, whose id fields (all but
    ``name``) are numbers or strings, and an ``id`` no other entry has.
    """
    index_of_id: dict[Any, int] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InputError(f'CocoDataset: {ann_file}: {key}[{index}] must be an object, got '
                             f'{entry!r}')
        missing = [k for k in required if k not in entry]
        if missing:
            raise InputError(f'CocoDataset: {ann_file}: {key}[{index}] misses {missing} '
                             f'(got {entry!r})')
        for field in required:
            if field != 'name' and not _is_id(entry[field]):
                raise InputError(f'CocoDataset: {ann_file}: {key}[{index}] has '
                                 f'{field}={entry[field]!r}; expected a number or a string')
        if entry['id'] in index_of_id:
            raise InputError(f'CocoDataset: {ann_file}: {noun} id '
                             f"{entry['id']!r} is used twice ({key}[{index_of_id[entry['id']]}] "
                             f'and {key}[{index}]); pycocotools, and so COCO evaluation, looks '
                             'them up by id and would see only one: give each a distinct id')
        index_of_id[entry['id']] = index


def _match_classes(ann_file: str, classes: Any,
                   categories: dict[int, dict[str, Any]]) -> list[int]:
    """The category id of each class name, matched by name against the file's categories.

    Args:
        ann_file: the file (for messages).
        classes: ``metainfo['classes']``: a sequence of names.
        categories: the file's categories, id -> ``dict(id=..., name=...)``.

    Returns:
        ``cat_ids`` with ``cat_ids[label]`` the id of ``classes[label]``.
    """
    if isinstance(classes, str) or not isinstance(classes, Sequence) or not classes:
        raise InputError(f"CocoDataset: metainfo['classes'] must be a non-empty sequence of "
                         f'category names, got {classes!r}')
    duplicated = sorted(n for n, c in Counter(classes).items() if c > 1)
    if duplicated:
        raise InputError(f"CocoDataset: metainfo['classes'] names {duplicated} more than once")
    ids_by_name: dict[str, list[int]] = {}
    for cat_id, cat in categories.items():
        ids_by_name.setdefault(cat['name'], []).append(cat_id)
    unknown = [name for name in classes if name not in ids_by_name]
    if unknown:
        raise InputError(f'CocoDataset: classes {unknown} are not categories of {ann_file} '
                         f'(its categories: {[c["name"] for c in categories.values()]}); pass '
                         "metainfo=dict(classes=(...)) with names of the file's categories")
    ambiguous = [name for name in classes if len(ids_by_name[name]) > 1]
    if ambiguous:
        raise InputError(f'CocoDataset: {ann_file} has several category ids for the names '
                         f'{ambiguous}: {({n: ids_by_name[n] for n in ambiguous})}')
    return [ids_by_name[name][0] for name in classes]


def _layout_hint(ann_file: str, data_root: str) -> str:
    """What the folder should look like, for the data sets data/README.md describes."""
    where = f'{data_root} {ann_file}'.lower()
    if 'coco' in where:
        return ('The COCO layout is data/coco/annotations/instances_{train,val}2017.json, '
                'data/coco/train2017/*.jpg and data/coco/val2017/*.jpg (see data/README.md).')
    if 'shapes' in where:
        return ('The synthetic shapes set is generated with '
                '`python tools/misc/make_synthetic.py shapes --out data/shapes` '
                '(see data/README.md).')
    return 'data/README.md describes the expected layouts.'
