"""What detkit's detection data sets share, on top of mmengine's ``BaseDataset``.

:class:`BaseDetDataset` holds the constructor every data set runs (pipeline transforms built
from detkit's registry, ``filter_cfg`` checked, ``bad_sample`` handling, mmengine's arguments),
training-time image filtering (:func:`filter_images`) and per-image labels for class-balanced
sampling; :func:`image_size` reads an image's size from its header. A subclass reads its
annotation format in ``load_data_list``. docs/datasets.md states, per format, what each bad
input does.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any, Callable, Sequence

from mmengine.dataset import BaseDataset
from mmengine.dataset.base_dataset import force_full_init
from mmengine.logging import print_log
from PIL import Image, UnidentifiedImageError

from detkit.errors import InputError
from detkit.registry import TRANSFORMS

from .bad_samples import BadSampleHandler
from .transforms.loading import decode_image

FILTER_KEYS = ('filter_empty_gt', 'min_size')

# One image of a data list: ``img_path``, ``img_id``, ``height``, ``width`` and ``instances``
# (dicts with ``bbox`` xyxy in pixels, ``bbox_label`` and ``ignore_flag``), plus what a data
# set or mmengine adds (VOC's ``stem``, ``sample_idx``): an open dict, not a TypedDict.
DataInfo = dict[str, Any]

# A data set's pipeline step: a transform config (built from detkit's TRANSFORMS) or a callable
# that takes the results dict and returns it updated (``None``: mmengine draws another sample).
PipelineStep = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any] | None]


# EXIF orientations that turn an image by 90 degrees when decoded (its sides swap).
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION_TAG = 0x0112


def build_transforms(pipeline: Sequence[PipelineStep]
                     ) -> list[Callable[[dict[str, Any]], dict[str, Any] | None]]:
    """The pipeline's transforms, each config built from detkit's ``TRANSFORMS``.

    mmengine's ``Compose`` looks types up in its root registry, which finds detkit's transforms
    only inside a Runner (``default_scope='detkit'``); building them here works everywhere.

    Args:
        pipeline: transform configs (``dict(type='Resize', ...)``) or callables.

    Returns:
        One callable per step, in order.
    """
    return [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in pipeline]


def image_size(path: str) -> tuple[int, int]:
    """The ``(height, width)`` of an image file as :func:`~detkit.datasets.transforms.decode_image`
    returns it, read from the file's header.

    Pillow reads only the header, of any format it knows. An EXIF orientation 5-8 (a JPEG's
    APP1 segment, a PNG's ``eXIf`` chunk before its pixel data, WebP, TIFF) swaps the sides,
    as OpenCV turns such images when decoding. A file Pillow does not recognise is decoded, so
    that the error is the one ``decode_image`` raises, naming the file.

    Args:
        path: the image file.

    Returns:
        ``(height, width)`` in pixels.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageDecodeError: (a ``ValueError``) the file is not a readable image.
    """
    try:
        with warnings.catch_warnings():
            # A DecompressionBombWarning is about decoding; only the header is read here.
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                exif = img.info.get('exif')
    except (UnidentifiedImageError, Image.DecompressionBombError):
        width = height = 0
        exif = None
    if min(width, height) <= 0:
        height, width = decode_image(path).shape[:2]
    elif isinstance(exif, bytes) and _exif_orientation(exif) in _TRANSPOSING_ORIENTATIONS:
        height, width = width, height
    return int(height), int(width)


def _exif_orientation(data: bytes) -> int:
    """The orientation tag of an EXIF block (with or without ``Exif\\0\\0``); 1 when it is
    absent or the block cannot be read."""
    exif = Image.Exif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # Pillow warns about a corrupt block
            exif.load(data)
        return int(exif.get(_EXIF_ORIENTATION_TAG, 1))
    except Exception:  # a corrupt block of any kind: the image is taken as stored
        return 1


def filter_images(data_list: list[DataInfo], filter_cfg: dict[str, Any] | None,
                  test_mode: bool, source: str) -> list[DataInfo]:
    """Apply a data set's ``filter_cfg`` in training; in ``test_mode`` every image is kept.

    Args:
        data_list: one dict per image with ``width``, ``height`` and ``instances``
            (``ignore_flag`` 0 or 1 each).
        filter_cfg: ``filter_empty_gt=True`` drops images without a non-ignored object;
            ``min_size=32`` drops images whose shorter side is below 32 px.
        test_mode: whether the data set is for evaluation (then nothing is dropped).
        source: names the data set in the log line, e.g. ``'CocoDataset (ann.json)'``.

    Returns:
        The kept images, in order; a log line counts what each rule dropped.
    """
    if test_mode or not filter_cfg:
        return data_list
    filter_empty_gt = bool(filter_cfg.get('filter_empty_gt', False))
    min_size = filter_cfg.get('min_size', 0) or 0
    kept: list[DataInfo] = []
    num_empty, num_small = 0, 0
    for info in data_list:
        if filter_empty_gt and not any(i['ignore_flag'] == 0 for i in info['instances']):
            num_empty += 1
        elif min(info['width'], info['height']) < min_size:
            num_small += 1
        else:
            kept.append(info)
    if num_empty or num_small:
        print_log(f'{source}: kept {len(kept)} of {len(data_list)} images (filter_empty_gt '
                  f'dropped {num_empty}, min_size={min_size} dropped {num_small})',
                  logger='current', level=logging.INFO)
    return kept


def trained_labels(info: DataInfo) -> list[int]:
    """The labels of an image's non-ignored objects, repeats kept (for class-balanced sampling).

    Args:
        info: one data-list entry with ``instances``.

    Returns:
        The ``bbox_label`` of every instance whose ``ignore_flag`` is 0, in order.
    """
    return [i['bbox_label'] for i in info['instances'] if i['ignore_flag'] == 0]


class BaseDetDataset(BaseDataset):
    """mmengine's ``BaseDataset`` with what every detkit detection data set does the same way.

    A subclass reads its annotation format in ``load_data_list`` into one dict per image
    (``img_path``, ``width``, ``height``, ``instances`` with ``bbox``, ``bbox_label`` and
    ``ignore_flag``). Its constructor checks and stores its own arguments, then passes the
    ones below on to this constructor (all of them, by keyword: the defaults live in the
    subclasses' signatures, which configs and ``check_config_arguments`` read), which:

    - builds ``pipeline`` with :func:`build_transforms`;
    - checks ``data_prefix`` (it names the image folder as ``'img'``) and ``filter_cfg`` (keys
      among ``FILTER_KEYS``), applied in training by :func:`filter_images`;
    - sets ``bad_sample`` (``'error'`` or ``'skip'``): what happens when an image cannot be
      read, see :mod:`detkit.datasets.bad_samples`; ``skipped_files`` lists what was skipped;
    - runs mmengine's constructor, which reads the annotations unless ``lazy_init``.

    It also gives ``get_cat_ids`` for class-balanced sampling.

    Args:
        ann_file: the annotation file (or folder), relative to ``data_root`` unless absolute;
            ``''`` for none.
        data_root: the folder holding the data set.
        data_prefix: the data set's folders (``dict(img=...)``, relative to ``data_root``
            unless absolute); ``None``: ``dict(img='')``.
        filter_cfg: in training only: ``filter_empty_gt=True`` drops images without a
            non-ignored object; ``min_size=32`` drops images whose shorter side is below 32 px.
        pipeline: transforms (configs, built from detkit's ``TRANSFORMS``, or callables).
        test_mode: whether the set is used for validation/testing (nothing is filtered).
        metainfo: ``dict(classes=(name, ...))``; ``None``: the subclass's ``METAINFO``.
        lazy_init: defer reading the annotations until ``full_init()`` or the first access.
        serialize_data: keep the data list as one pickled buffer (shared by dataloader workers).
        indices: keep only these indices (or the first ``indices`` images) after filtering.
        max_refetch: how often ``__getitem__`` retries another image when the pipeline returns
            ``None`` in training.
        bad_sample: ``'error'`` or ``'skip'``.

    Raises:
        KeyError: ``data_prefix`` has no ``'img'``.
        ValueError: an unknown ``filter_cfg`` key or ``bad_sample`` value.
    """

    def __init__(self, *,
                 ann_file: str,
                 data_root: str,
                 data_prefix: dict[str, str] | None,
                 filter_cfg: dict[str, Any] | None,
                 pipeline: Sequence[PipelineStep],
                 test_mode: bool,
                 metainfo: dict[str, Any] | None,
                 lazy_init: bool,
                 serialize_data: bool,
                 indices: int | Sequence[int] | None,
                 max_refetch: int,
                 bad_sample: str) -> None:
        name = type(self).__name__
        data_prefix = dict(img='') if data_prefix is None else dict(data_prefix)
        if 'img' not in data_prefix:
            raise KeyError(f"{name}: data_prefix must have the key 'img' (the image folder), "
                           f'got {data_prefix}')
        unknown = sorted(set(filter_cfg or {}) - set(FILTER_KEYS))
        if unknown:
            raise InputError(f'{name}: unknown filter_cfg keys {unknown}; expected some of '
                             f'{list(FILTER_KEYS)}')
        transforms = build_transforms(pipeline)
        self.bad_samples = BadSampleHandler(bad_sample, owner=name)
        super().__init__(ann_file=ann_file, metainfo=metainfo, data_root=data_root,
                         data_prefix=data_prefix, filter_cfg=filter_cfg, indices=indices,
                         serialize_data=serialize_data, pipeline=transforms,
                         test_mode=test_mode, lazy_init=lazy_init, max_refetch=max_refetch)

    @property
    def skipped_files(self) -> list[str]:
        """The image paths skipped so far because they cannot be read (``bad_sample='skip'``)."""
        return self.bad_samples.skipped_files

    def prepare_data(self, idx: int) -> Any:
        """The pipeline's output for sample ``idx``; ``None`` for a skipped unreadable image
        (mmengine then draws another)."""
        return self.bad_samples.prepare(self, idx, super().prepare_data)

    def filter_data(self) -> list[DataInfo]:
        """Apply ``filter_cfg`` in training (see :func:`filter_images`)."""
        return filter_images(self.data_list, self.filter_cfg, self.test_mode,
                             f'{type(self).__name__} ({self.ann_file or self.data_root})')

    @force_full_init
    def get_cat_ids(self, idx: int) -> list[int]:
        """The labels of the non-ignored objects of image ``idx`` (class-balanced sampling)."""
        return trained_labels(self.get_data_info(idx))
