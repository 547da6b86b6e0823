"""Pascal VOC XML detection data sets: one ``.xml`` file per image, e.g. the Kaggle face masks.

The layout is ``data_root/annotations/<stem>.xml`` + ``data_root/images/<stem>.png`` with
optional split files (one stem per line), as in the Kaggle face-mask set and the synthetic one
of ``tools/misc/make_synthetic.py facemask``; the XML files are read by
:func:`~detkit.datasets.voc_xml.read_voc_xml`. VOC's 1-based inclusive pixel indices become
continuous 0-based boxes: ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax``; a
``difficult`` object becomes an ignore region. docs/datasets.md ("Pascal VOC XML") gives the
details and what each bad input does (error naming ``file:line``, dropped and counted, clipped).
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from collections import Counter
from typing import Any, Sequence

from mmengine.logging import print_log

from detkit.errors import InputError
from detkit.registry import DATASETS

from .base_det_dataset import BaseDetDataset, DataInfo, PipelineStep, image_size
from .voc_xml import VOCAnnotationError, XmlNode, read_voc_xml

VOC_CLASSES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
               'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
               'sheep', 'sofa', 'train', 'tvmonitor')
FACEMASK_CLASSES = ('with_mask', 'without_mask', 'mask_weared_incorrect')

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp')
ON_ERROR_CHOICES = ('raise', 'warn')
BOX_FIELDS = ('xmin', 'ymin', 'xmax', 'ymax')

# Why an object was dropped, in the order the warning lists them.
_DROP_REASONS = {
    'unknown_class': "class not in metainfo['classes']",
    'outside': 'box entirely outside the image',
    'malformed': "a malformed object (on_error='warn')",
    'unreadable_file': "an XML file that is not well-formed or has a bad <size> "
                       "(on_error='warn')",
}


@DATASETS.register_module()
class VOCDataset(BaseDetDataset):
    """A Pascal VOC XML detection data set (boxes only); see docs/datasets.md.

    Args:
        ann_file: a split file (one image stem per line), relative to ``data_root`` unless
            absolute; ``None`` or ``''``: every XML file of the annotation folder (or ``stems``).
        data_root: the folder holding the data set, e.g. ``'data/facemask/'``.
        data_prefix: ``dict(img=folder, ann=folder)``: the image and XML folders, relative to
            ``data_root`` unless absolute; default ``dict(img='images/', ann='annotations/')``.
        stems: the image stems to read (instead of a split file), e.g. ``['maksssksksss0']``.
        use_difficult: train and evaluate ``difficult`` objects as ordinary ones instead of
            as ignore regions.
        strict_classes: raise ``ValueError`` for an object whose class is not in
            ``metainfo['classes']`` instead of dropping and counting it.
        on_error: ``'raise'`` or ``'warn'`` for malformed XML (see docs/datasets.md).
        filter_cfg: in training only: ``filter_empty_gt=True`` drops images without a
            non-ignored object; ``min_size=32`` drops images whose shorter side is below 32 px.
        pipeline: transforms (configs, built from detkit's ``TRANSFORMS``, or callables).
        test_mode: whether the set is used for validation/testing (nothing is filtered).
        metainfo: ``dict(classes=(name, ...))``: the class names, in label order; default: the
            20 Pascal VOC classes (:class:`FaceMaskDataset`: the 3 face-mask classes).
        lazy_init: defer reading the annotations until ``full_init()`` or the first access.
        serialize_data: keep the data list as one pickled buffer (shared by dataloader workers).
        indices: keep only these indices (or the first ``indices`` images) after filtering.
        max_refetch: how often ``__getitem__`` retries another image when the pipeline returns
            ``None`` in training.
        bad_sample: ``'error'`` (default) raises when an image file is missing or cannot be
            decoded; ``'skip'`` leaves it out in training, warning once per file (see
            :mod:`detkit.datasets.bad_samples`; ``test_mode`` always raises).

    Attributes:
        skipped_files: the image paths skipped so far (``bad_sample='skip'``).

    Example:
        >>> dataset = VOCDataset(ann_file='val.txt', data_root='data/facemask/',
        ...                      metainfo=dict(classes=FACEMASK_CLASSES), test_mode=True)
        >>> dataset.get_data_info(0)['instances'][0]
        {'bbox': [...], 'bbox_label': ..., 'ignore_flag': 0}
    """

    METAINFO: dict[str, tuple[str, ...]] = dict(classes=VOC_CLASSES)

    def __init__(self,
                 ann_file: str | None = None,
                 data_root: str = '',
                 data_prefix: dict[str, str] | None = None,
                 stems: Sequence[str] | None = None,
                 use_difficult: bool = False,
                 strict_classes: bool = False,
                 on_error: str = 'raise',
                 filter_cfg: dict[str, Any] | None = None,
                 pipeline: Sequence[PipelineStep] = (),
                 test_mode: bool = False,
                 metainfo: dict[str, Any] | None = None,
                 lazy_init: bool = False,
                 serialize_data: bool = True,
                 indices: int | Sequence[int] | None = None,
                 max_refetch: int = 1000,
                 bad_sample: str = 'error') -> None:
        name = type(self).__name__
        data_prefix = {'img': 'images/', 'ann': 'annotations/', **(data_prefix or {})}
        unknown_prefix = sorted(set(data_prefix) - {'img', 'ann'})
        if unknown_prefix:
            raise KeyError(f"{name}: data_prefix keys {unknown_prefix} are unknown; expected "
                           f"'img' (the image folder) and 'ann' (the XML folder)")
        if ann_file and stems is not None:
            raise InputError(f'{name}: give the images either as a split file (ann_file='
                             f'{ann_file!r}) or as stems, not both')
        if isinstance(stems, str):
            raise TypeError(f'{name}: stems must be a list of file stems, got the string '
                            f'{stems!r} (a split file goes into ann_file)')
        if on_error not in ON_ERROR_CHOICES:
            raise InputError(f'{name}: on_error={on_error!r}; expected one of '
                             f'{list(ON_ERROR_CHOICES)}')
        self.stems = None if stems is None else [str(s) for s in stems]
        self.use_difficult = use_difficult
        self.strict_classes = strict_classes
        self.on_error = on_error
        super().__init__(ann_file=ann_file or '', data_root=data_root, data_prefix=data_prefix,
                         filter_cfg=filter_cfg, pipeline=pipeline, test_mode=test_mode,
                         metainfo=metainfo, lazy_init=lazy_init, serialize_data=serialize_data,
                         indices=indices, max_refetch=max_refetch, bad_sample=bad_sample)

    def load_data_list(self) -> list[DataInfo]:
        """Read the XML files of the chosen stems into one dict per image.

        Returns:
            The data list (see docs/datasets.md), in the order of the split file, of
            ``stems`` or of the sorted XML file names.

        Raises:
            FileNotFoundError: the annotation folder, the split file, a listed XML file or an
                image does not exist.
            VOCAnnotationError: (a ``ValueError``) malformed XML with ``on_error='raise'``, or
                an unknown class with ``strict_classes=True``.
            ValueError: ``metainfo['classes']`` is not a list of distinct names, or the split
                file lists no stem or a stem twice.
        """
        classes = self._metainfo.get('classes')
        if isinstance(classes, str) or not isinstance(classes, Sequence) or not classes:
            raise InputError(f"{type(self).__name__}: metainfo['classes'] must be a non-empty "
                             f'sequence of class names, got {classes!r}')
        duplicated = sorted(n for n, c in Counter(classes).items() if c > 1)
        if duplicated:
            raise InputError(f"{type(self).__name__}: metainfo['classes'] names {duplicated} "
                             'more than once')
        label_of = {name: label for label, name in enumerate(classes)}
        ann_dir, img_dir = self.data_prefix['ann'], self.data_prefix['img']
        stems = self._read_stems(ann_dir)

        drops: Counter[str] = Counter()
        examples: dict[str, str] = {}
        num_objects = num_clipped = 0
        data_list: list[DataInfo] = []
        for stem in stems:
            xml_path = os.path.join(ann_dir, stem + '.xml')
            try:
                root = read_voc_xml(xml_path)
                entry = self._image_entry(root, xml_path, stem, img_dir)
            except VOCAnnotationError as err:
                self._problem(err, 'unreadable_file', drops, examples)
                continue
            objects = root.children_named('object')
            num_objects += len(objects)
            for index, obj in enumerate(objects):
                where = f'{xml_path}:{obj.line}: object {index}'
                try:
                    name, coords, difficult = _parse_object(obj, where)
                except VOCAnnotationError as err:
                    self._problem(err, 'malformed', drops, examples)
                    continue
                if name not in label_of:
                    if self.strict_classes:
                        raise VOCAnnotationError(
                            f'{type(self).__name__}: {where}: class {name!r} is not one of '
                            f'{list(classes)} (strict_classes=True)')
                    drops['unknown_class'] += 1
                    examples.setdefault('unknown_class', f'{where}: class {name!r}')
                    continue
                box = _clip(coords, entry['width'], entry['height'])
                if box is None:
                    drops['outside'] += 1
                    examples.setdefault('outside', f'{where}: (xmin, ymin, xmax, ymax) = '
                                                   f'{tuple(coords)} in a {entry["width"]} x '
                                                   f'{entry["height"]} image')
                    continue
                num_clipped += box != _to_continuous(coords)
                entry['instances'].append(dict(
                    bbox=box, bbox_label=label_of[name],
                    ignore_flag=int(difficult and not self.use_difficult)))
            data_list.append(entry)

        _assign_image_ids(data_list, [e.pop('stem') for e in data_list])
        self._warn_dropped(drops, examples, num_objects, len(stems))
        if num_clipped:
            print_log(f'{type(self).__name__}: clipped {num_clipped} boxes of {ann_dir} that '
                      'extend beyond their image to the image', logger='current',
                      level=logging.INFO)
        return data_list

    def _read_stems(self, ann_dir: str) -> list[str]:
        """The stems to read: from the split file, ``stems`` or the annotation folder."""
        name = type(self).__name__
        if not os.path.isdir(ann_dir):
            raise FileNotFoundError(
                f'{name}: the annotation folder {ann_dir!r} does not exist (data_root='
                f"{self.data_root!r}, data_prefix['ann']). {_layout_hint(self.data_root)}")
        if self.ann_file:
            stems = _read_split_file(self.ann_file, name)
        elif self.stems is not None:
            stems = list(self.stems)
        else:
            stems = sorted(os.path.splitext(n)[0] for n in os.listdir(ann_dir)
                           if n.lower().endswith('.xml'))
            if not stems:
                raise FileNotFoundError(f'{name}: the annotation folder {ann_dir!r} holds no '
                                        f'.xml file. {_layout_hint(self.data_root)}')
            return stems
        where = self.ann_file or 'stems'
        repeated = sorted(s for s, c in Counter(stems).items() if c > 1)
        if repeated:
            raise InputError(f'{name}: {where} lists {repeated[:5]} more than once')
        missing = [s for s in stems if not os.path.isfile(os.path.join(ann_dir, s + '.xml'))]
        if missing:
            raise FileNotFoundError(
                f'{name}: {len(missing)} stems of {where} have no XML file in {ann_dir!r}, e.g. '
                f'{os.path.join(ann_dir, missing[0] + ".xml")!r}')
        return stems

    def _image_entry(self, root: XmlNode, xml_path: str, stem: str,
                     img_dir: str) -> DataInfo:
        """The data-list dict of one XML file, without instances yet (they follow)."""
        filename_node = root.child('filename')
        filename = '' if filename_node is None else filename_node.text.strip()
        names = ([filename] if filename else []) + [stem + ext for ext in IMAGE_EXTENSIONS]
        path = next((os.path.join(img_dir, n) for n in names
                     if os.path.isfile(os.path.join(img_dir, n))), None)
        if path is None:
            line = root.line if filename_node is None else filename_node.line
            raise FileNotFoundError(
                f'{type(self).__name__}: {xml_path}:{line}: image {names[0]!r} is not in the '
                f"image folder {img_dir!r} (data_prefix['img']); looked for {names}")
        width, height = _xml_size(root, xml_path)
        if not width or not height:  # missing or 0: the image knows
            height, width = image_size(path)
        return dict(img_path=path, img_id=-1, height=int(height), width=int(width),
                    instances=[], stem=stem)

    def _problem(self, err: VOCAnnotationError, reason: str, drops: Counter[str],
                 examples: dict[str, str]) -> None:
        """Raise ``err`` or count it under ``reason``, following ``on_error``."""
        if self.on_error == 'raise':
            raise VOCAnnotationError(f'{type(self).__name__}: {err}') from None
        drops[reason] += 1
        examples.setdefault(reason, str(err))

    def _warn_dropped(self, drops: Counter[str], examples: dict[str, str], num_objects: int,
                      num_files: int) -> None:
        """One warning for everything dropped while loading, with one example per reason."""
        if not sum(drops.values()):
            return
        num_files_skipped = drops['unreadable_file']
        num_dropped = sum(drops.values()) - num_files_skipped
        skipped = (f' and skipped {num_files_skipped} of {num_files} XML files'
                   if num_files_skipped else f' in {num_files} XML files')
        parts = [f'{drops[key]} with {text} (e.g. {examples[key]})'
                 for key, text in _DROP_REASONS.items() if drops[key]]
        source = self.ann_file or self.data_prefix['ann']
        warnings.warn(f'{type(self).__name__}: dropped {num_dropped} of {num_objects} objects'
                      f'{skipped} of {source}: ' + '; '.join(parts), stacklevel=3)


@DATASETS.register_module()
class FaceMaskDataset(VOCDataset):
    """The Kaggle face-mask detection set (or its synthetic stand-in): :class:`VOCDataset` with
    the classes ``FACEMASK_CLASSES`` (labels 0, 1, 2 = ``with_mask``, ``without_mask``,
    ``mask_weared_incorrect``) and the layout ``annotations/*.xml`` + ``images/*``.

    Example:
        >>> dataset = FaceMaskDataset(ann_file='train.txt', data_root='data/facemask/')
        >>> dataset.metainfo['classes']
        ('with_mask', 'without_mask', 'mask_weared_incorrect')
    """

    METAINFO = dict(classes=FACEMASK_CLASSES)


def _read_split_file(path: str, name: str) -> list[str]:
    """The stems of a split file: one per line, blank lines and ``#`` comments skipped."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{name}: split file {path!r} does not exist; it lists one image '
                                'stem per line (ann_file=None reads every XML file)')
    with open(path, encoding='utf-8-sig') as f:
        stems = [line.split('#', 1)[0].strip() for line in f]
    stems = [s[:-4] if s.lower().endswith('.xml') else s for s in stems if s]
    if not stems:
        raise InputError(f'{name}: split file {path!r} lists no image stem')
    return stems


def _xml_size(root: XmlNode, xml_path: str) -> tuple[int, int]:
    """``(width, height)`` from ``<size>``; 0 for a missing value."""
    size = root.child('size')
    values = []
    for key in ('width', 'height'):
        node = None if size is None else size.child(key)
        if node is None or not node.text.strip():
            values.append(0)
            continue
        text = node.text
        try:
            value = float(text)
        except ValueError:
            value = float('nan')
        if not math.isfinite(value) or value < 0 or value != int(value):
            raise VOCAnnotationError(f'{xml_path}:{node.line}: <size><{key}> is '
                                     f'{text.strip()!r}; expected a whole number of pixels (0 or '
                                     'absent: read from the image)')
        values.append(int(value))
    return values[0], values[1]


def _parse_object(obj: XmlNode, where: str) -> tuple[str, list[float], bool]:
    """One ``<object>`` -> ``(class name, [xmin, ymin, xmax, ymax], difficult)``.

    ``where`` is ``file:line: object i`` (the object's line and index), for messages.
    """
    name = (obj.child_text('name') or '').strip()
    if not name:
        raise VOCAnnotationError(f'{where}: <object> has no <name>')
    box = obj.child('bndbox')
    if box is None:
        raise VOCAnnotationError(f'{where} ({name!r}): <object> has no <bndbox>')
    coords = []
    for key in BOX_FIELDS:
        text = box.child_text(key)
        if text is None or not text.strip():
            raise VOCAnnotationError(f'{where} ({name!r}): <bndbox> has no <{key}>')
        try:
            value = float(text)
        except ValueError:
            raise VOCAnnotationError(f'{where} ({name!r}): <{key}> is {text.strip()!r}, not a '
                                     'number') from None
        if not math.isfinite(value):
            raise VOCAnnotationError(f'{where} ({name!r}): <{key}> is {text.strip()!r}, not a '
                                     'finite number')
        coords.append(value)
    xmin, ymin, xmax, ymax = coords
    if xmax < xmin or ymax < ymin:
        raise VOCAnnotationError(f'{where} ({name!r}): empty box (xmin, ymin, xmax, ymax) = '
                                 f'{tuple(coords)}; need xmax >= xmin and ymax >= ymin '
                                 '(inclusive 1-based pixel indices)')
    difficult = (obj.child_text('difficult') or '0').strip()
    try:
        is_difficult = float(difficult) != 0
    except ValueError:
        raise VOCAnnotationError(f'{where} ({name!r}): <difficult> is {difficult!r}; expected '
                                 '0 or 1') from None
    return name, coords, is_difficult


def _to_continuous(coords: Sequence[float]) -> list[float]:
    """VOC ``[xmin, ymin, xmax, ymax]`` (1-based, inclusive) -> ``[x1, y1, x2, y2]`` (0-based)."""
    xmin, ymin, xmax, ymax = coords
    return [xmin - 1.0, ymin - 1.0, float(xmax), float(ymax)]


def _clip(coords: Sequence[float], width: int, height: int) -> list[float] | None:
    """The continuous box of VOC ``coords`` clipped to the image; None when nothing is left."""
    x1, y1, x2, y2 = _to_continuous(coords)
    box = [min(max(x1, 0.0), float(width)), min(max(y1, 0.0), float(height)),
           min(max(x2, 0.0), float(width)), min(max(y2, 0.0), float(height))]
    if box[2] <= box[0] or box[3] <= box[1]:
        return None
    return box


def _assign_image_ids(data_list: list[DataInfo], stems: list[str]) -> None:
    """The number that ends every stem when those are distinct, else position + 1."""
    numbers = []
    for stem in stems:
        digits = len(stem) - len(stem.rstrip('0123456789'))
        numbers.append(int(stem[-digits:]) if digits else None)
    use_numbers = None not in numbers and len(set(numbers)) == len(numbers)
    for index, (entry, number) in enumerate(zip(data_list, numbers)):
        entry['img_id'] = number if use_numbers else index + 1


def _layout_hint(data_root: str) -> str:
    """Where the files should be, and how to make the synthetic face-mask set."""
    return ('A VOC-style set holds annotations/*.xml and images/* under data_root (data_prefix='
            "dict(img='images/', ann='annotations/')). The synthetic face-mask set is made with "
            '`python tools/misc/make_synthetic.py facemask --out data/facemask`; the Kaggle '
            'face-mask set unpacks into exactly this layout.')
