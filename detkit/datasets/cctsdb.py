"""The CCTSDB traffic-sign data set (CSUST Chinese Traffic Sign Detection Benchmark).

Three classes, ``CCTSDB_CLASSES = ('warning', 'prohibitory', 'mandatory')``, in one of two
formats chosen by ``ann_file``: the 2017 ``GroundTruth.txt`` (``00000.png;x1;y1;x2;y2;class``
per box) or the 2021 folder of Pascal VOC XML files (read by :mod:`detkit.datasets.voc_xml`).
Boxes are ``(x1, y1, x2, y2)`` pixels as written; an image's size always comes from the image
file's header (:func:`~detkit.datasets.base_det_dataset.image_size`). Every message about an
annotation names ``file:line``; docs/datasets.md ("CCTSDB") states what each bad input does
(error, skipped and counted with ``on_error='warn'``, clipped).
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from mmengine.logging import print_log

from detkit.errors import InputError
from detkit.registry import DATASETS

from .base_det_dataset import BaseDetDataset, DataInfo, PipelineStep, image_size
from .transforms.loading import ImageDecodeError
from .voc_xml import VOCAnnotationError, XmlNode, read_voc_xml

CCTSDB_CLASSES = ('warning', 'prohibitory', 'mandatory')

# Spellings found in the releases -> the class name. The 2021 VOC XMLs write 'mandatoty'.
CLASS_ALIASES = {'mandatoty': 'mandatory'}

IMAGE_EXTENSIONS = ('.jpg', '.png', '.jpeg', '.bmp')
ON_ERROR_CHOICES = ('raise', 'warn')

@dataclass
class _Problems:
    """Malformed entries met while reading, for ``on_error='warn'``."""

    count: int = 0
    first: str = ''
    num_clipped: int = 0
    num_missing_images: int = 0
    first_missing: str = ''
    num_duplicates: int = 0
    first_duplicate: str = ''
    num_unreadable_images: int = 0


class _EntryError(InputError):
    """One malformed annotation entry; the message already names ``file:line``."""


def load_cctsdb(ann_file: str, img_dir: str, on_error: str = 'raise',
                skip_missing_images: bool = False,
                class_aliases: dict[str, str] | None = None,
                on_unreadable_image: Callable[[str, Exception, str], None] | None = None
                ) -> list[DataInfo]:
    """Read CCTSDB annotations (2017 text file or 2021 VOC XML folder) into a data list.

    docs/datasets.md ("CCTSDB") describes the formats, the error policy and the dict layout.

    Args:
        ann_file: ``GroundTruth.txt`` (2017) or a folder of ``*.xml`` files (2021).
        img_dir: the folder holding the images named by the annotations.
        on_error: ``'raise'`` (``ValueError`` at the first malformed entry) or ``'warn'``
            (skip malformed entries, warn once with their number).
        skip_missing_images: skip (and count) annotations whose image is not in ``img_dir``
            instead of raising ``FileNotFoundError``.
        class_aliases: extra ``spelling -> class name`` entries on top of ``CLASS_ALIASES``
            (matched lower-cased).
        on_unreadable_image: called as ``(path, error, where)`` when an image's size cannot be
            read (``ImageDecodeError``); it raises, or returns and the image is left out.
            ``None``: the error is raised, naming the image and ``file:line``.

    Returns:
        One dict per image, in the order of the text file's first mention of each image or of
        the sorted XML file names; ``bbox_label`` indexes ``CCTSDB_CLASSES``.

    Raises:
        FileNotFoundError: ``ann_file`` or a referenced image does not exist.
        ValueError: a malformed entry (``on_error='raise'``), an unknown ``on_error``, or no
            image at all could be read.
    """
    if on_error not in ON_ERROR_CHOICES:
        raise InputError(f"CCTSDBDataset: on_error={on_error!r}; expected one of "
                         f'{list(ON_ERROR_CHOICES)}')
    aliases = {**CLASS_ALIASES, **{k.strip().lower(): v for k, v in (class_aliases or {}).items()}}
    unknown_targets = sorted(set(aliases.values()) - set(CCTSDB_CLASSES))
    if unknown_targets:
        raise InputError(f'CCTSDBDataset: class_aliases map to {unknown_targets}, which are not '
                         f'CCTSDB classes {list(CCTSDB_CLASSES)}')
    problems = _Problems()
    reader = _ImageReader(img_dir, skip_missing_images, on_unreadable_image, problems)
    if os.path.isdir(ann_file):
        data_list = _read_voc_folder(ann_file, reader, on_error, aliases, problems)
    elif os.path.isfile(ann_file):
        data_list = _read_ground_truth_txt(ann_file, reader, on_error, aliases, problems)
    else:
        raise FileNotFoundError(
            f'CCTSDBDataset: ann_file {ann_file!r} does not exist. It is the 2017 '
            'GroundTruth.txt or the folder of 2021 VOC XML files; data/README.md shows the '
            'layout under data/cctsdb/.')
    _drop_repeated_boxes(data_list, problems)
    _assign_image_ids(data_list)
    _report(ann_file, img_dir, data_list, problems)
    return data_list


def _report(ann_file: str, img_dir: str, data_list: list[DataInfo], problems: _Problems) -> None:
    """One warning for skipped entries, log lines for clipped boxes and skipped images."""
    if problems.count:
        warnings.warn(f'CCTSDBDataset: skipped {problems.count} malformed annotation entries of '
                      f'{ann_file} (on_error=\'warn\'); the first: {problems.first}',
                      stacklevel=3)
    if problems.num_missing_images:
        print_log(f'CCTSDBDataset: skipped {problems.num_missing_images} annotated images of '
                  f'{ann_file} that are not in {img_dir} (skip_missing_images=True), e.g. '
                  f'{problems.first_missing}', logger='current', level=logging.INFO)
    if problems.num_duplicates:
        warnings.warn(f'CCTSDBDataset: dropped {problems.num_duplicates} repeated boxes of '
                      f'{ann_file} (the same box, class and difficulty listed twice for one '
                      f'image), e.g. {problems.first_duplicate}', stacklevel=3)
    if problems.num_clipped:
        print_log(f'CCTSDBDataset: clipped {problems.num_clipped} boxes of {ann_file} that '
                  'extend beyond their image to the image', logger='current', level=logging.INFO)
    if not data_list:
        raise InputError(f'CCTSDBDataset: no image of {ann_file} could be read from {img_dir} '
                         f'(missing images: {problems.num_missing_images}, unreadable images: '
                         f'{problems.num_unreadable_images}, malformed entries: '
                         f'{problems.count}); check ann_file and data_prefix')


def _find_image(img_dir: str, names: Sequence[str]) -> str | None:
    """The first of ``names`` that is a file in ``img_dir``, else None."""
    for name in names:
        path = os.path.join(img_dir, name)
        if os.path.isfile(path):
            return path
    return None


class _ImageReader:
    """Finds annotated images in the image folder and reads their sizes, once per image."""

    def __init__(self, img_dir: str, skip_missing_images: bool,
                 on_unreadable_image: Callable[[str, Exception, str], None] | None,
                 problems: _Problems) -> None:
        self.img_dir = img_dir
        self.skip_missing_images = skip_missing_images
        self.on_unreadable_image = on_unreadable_image
        self.problems = problems
        self.first_reference: dict[str, str] = {}  # image path -> where it was first annotated

    def entry(self, names: Sequence[str], where: str) -> DataInfo | None:
        """A data-list dict (no instances yet) for the first existing image of ``names``.

        Args:
            names: candidate file names in the image folder, the preferred one first.
            where: ``file:line`` of the annotation, for messages.

        Returns:
            The dict, or ``None`` when the image is missing (``skip_missing_images``) or its
            size cannot be read and ``on_unreadable_image`` returned.

        Raises:
            _EntryError: the image is already annotated elsewhere (two XML files).
            FileNotFoundError: the image is missing and ``skip_missing_images`` is False.
        """
        path = _find_image(self.img_dir, names)
        if path is None:
            if self.skip_missing_images:
                self.problems.num_missing_images += 1
                self.problems.first_missing = (self.problems.first_missing
                                               or f'{names[0]} ({where})')
                return None
            raise FileNotFoundError(f'CCTSDBDataset: {where}: image {names[0]!r} is not in the '
                                    f'image folder {self.img_dir!r} (data_prefix img); looked '
                                    f'for {list(names)}')
        if path in self.first_reference:
            raise _EntryError(f'{where}: image {os.path.basename(path)!r} is already annotated '
                              f'by {self.first_reference[path]}; each image needs one XML file')
        self.first_reference[path] = where
        try:
            height, width = image_size(path)
        except ImageDecodeError as err:
            if self.on_unreadable_image is None:
                raise ImageDecodeError(f'CCTSDBDataset: {where}: {err}') from err
            self.on_unreadable_image(path, err, where)
            self.problems.num_unreadable_images += 1
            return None
        return dict(img_path=path, img_id=-1, height=height, width=width, instances=[])


def _read_ground_truth_txt(ann_file: str, reader: _ImageReader, on_error: str,
                           aliases: dict[str, str], problems: _Problems) -> list[DataInfo]:
    """The 2017 format: ``name;x1;y1;x2;y2;class`` per line."""
    by_name: dict[str, DataInfo | None] = {}
    with open(ann_file, encoding='utf-8-sig') as f:
        lines = f.read().splitlines()
    if not any(line.strip() for line in lines):
        raise InputError(f'CCTSDBDataset: {ann_file} is empty (no "image;x1;y1;x2;y2;class" '
                         'line)')
    for line_number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        where = f'{ann_file}:{line_number}'
        try:
            fields = [v.strip() for v in line.split(';')]
            if len(fields) != 6:
                raise _EntryError(f'{where}: expected 6 fields "image;x1;y1;x2;y2;class" '
                                  f'separated by ";", got {len(fields)}: {line!r}')
            name = fields[0]
            if not name:
                raise _EntryError(f'{where}: empty image name: {line!r}')
            coords = _parse_coordinates(fields[1:5], where)
            label = _class_label(fields[5], where, aliases)
        except _EntryError as err:
            _entry_problem(err, on_error, problems)
            continue
        if name not in by_name:  # an image is listed once per box: later lines add boxes
            try:
                by_name[name] = reader.entry([name], where)
            except _EntryError as err:  # another name of an image already read
                _entry_problem(err, on_error, problems)
                continue
        entry = by_name[name]
        if entry is None:
            continue
        try:
            entry['instances'].append(_instance(coords, label, 0, entry, where, problems))
        except _EntryError as err:
            _entry_problem(err, on_error, problems)
    return [entry for entry in by_name.values() if entry is not None]


def _read_voc_folder(ann_dir: str, reader: _ImageReader, on_error: str,
                     aliases: dict[str, str], problems: _Problems) -> list[DataInfo]:
    """The 2021 format: one Pascal VOC XML file per image."""
    xml_files = sorted(n for n in os.listdir(ann_dir) if n.lower().endswith('.xml'))
    if not xml_files:
        raise FileNotFoundError(f'CCTSDBDataset: the annotation folder {ann_dir!r} holds no .xml '
                                'file (CCTSDB 2021 has one VOC XML per image)')
    data_list = []
    for xml_name in xml_files:
        xml_path = os.path.join(ann_dir, xml_name)
        try:
            root = read_voc_xml(xml_path)
        except VOCAnnotationError as err:
            _entry_problem(err, on_error, problems)
            continue
        stem = os.path.splitext(xml_name)[0]
        filename = (root.child_text('filename') or '').strip()
        names = ([filename] if filename else []) + [stem + ext for ext in IMAGE_EXTENSIONS]
        try:
            entry = reader.entry(names, f'{xml_path}:{root.line}')
        except _EntryError as err:
            _entry_problem(err, on_error, problems)
            continue
        if entry is None:
            continue
        for obj in root.children_named('object'):
            where = f'{xml_path}:{obj.line}'
            try:
                entry['instances'].append(_voc_instance(obj, where, aliases, entry, problems))
            except _EntryError as err:
                _entry_problem(err, on_error, problems)
        data_list.append(entry)
    return data_list


def _voc_instance(obj: XmlNode, where: str, aliases: dict[str, str], entry: DataInfo,
                  problems: _Problems) -> dict[str, Any]:
    """One ``<object>`` -> an instance dict."""
    name = obj.child_text('name')
    if name is None:
        raise _EntryError(f'{where}: <object> has no <name>')
    label = _class_label(name, where, aliases)
    box = obj.child('bndbox')
    if box is None:
        raise _EntryError(f'{where}: <object> has no <bndbox>')
    values = []
    for key in ('xmin', 'ymin', 'xmax', 'ymax'):
        text = box.child_text(key)
        if text is None:
            raise _EntryError(f'{where}: <bndbox> (line {box.line}) has no <{key}>')
        values.append(text)
    coords = _parse_coordinates(values, where)
    difficult = (obj.child_text('difficult') or '0').strip()
    return _instance(coords, label, int(difficult not in ('', '0')), entry, where, problems)


def _parse_coordinates(values: Sequence[str], where: str) -> list[float]:
    """Four strings -> four finite floats, ``x1 < x2`` and ``y1 < y2``."""
    coords = []
    for key, text in zip(('x1', 'y1', 'x2', 'y2'), values):
        try:
            value = float(text)
        except ValueError:
            raise _EntryError(f'{where}: {key}={text.strip()!r} is not a number') from None
        if not math.isfinite(value):
            raise _EntryError(f'{where}: {key}={text.strip()!r} is not a finite number')
        coords.append(value)
    x1, y1, x2, y2 = coords
    if x2 <= x1 or y2 <= y1:
        raise _EntryError(f'{where}: empty box (x1, y1, x2, y2) = {tuple(coords)}: need '
                          'x2 > x1 and y2 > y1')
    return coords


def _class_label(name: str, where: str, aliases: dict[str, str]) -> int:
    """A class name (any case, aliases applied) -> its index in ``CCTSDB_CLASSES``."""
    key = name.strip().lower()
    key = aliases.get(key, key)
    if key not in CCTSDB_CLASSES:
        raise _EntryError(f'{where}: unknown class {name.strip()!r}; the CCTSDB classes are '
                          f'{list(CCTSDB_CLASSES)} (accepted misspellings: '
                          f'{sorted(aliases)})')
    return CCTSDB_CLASSES.index(key)


def _instance(coords: list[float], label: int, ignore_flag: int, entry: DataInfo, where: str,
              problems: _Problems) -> dict[str, Any]:
    """The instance dict of a box, clipped to its image (``_EntryError`` if wholly outside)."""
    width, height = float(entry['width']), float(entry['height'])
    x1, y1, x2, y2 = coords
    clipped = [min(max(x1, 0.0), width), min(max(y1, 0.0), height),
               min(max(x2, 0.0), width), min(max(y2, 0.0), height)]
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise _EntryError(f'{where}: box {tuple(coords)} lies outside its image '
                          f"{os.path.basename(entry['img_path'])} of width x height = "
                          f'{int(width)} x {int(height)}')
    problems.num_clipped += int(clipped != coords)
    return dict(bbox=clipped, bbox_label=label, ignore_flag=ignore_flag)


def _entry_problem(err: ValueError, on_error: str, problems: _Problems) -> None:
    """Raise ``err`` (an ``_EntryError`` or ``VOCAnnotationError``, naming ``file:line``) as a
    ``ValueError`` or count it, following ``on_error``."""
    if on_error == 'raise':
        raise InputError(f'CCTSDBDataset: {err}') from None
    problems.count += 1
    problems.first = problems.first or str(err)


def _drop_repeated_boxes(data_list: list[DataInfo], problems: _Problems) -> None:
    """Keep the first of instances with the same box, label and ignore flag in one image."""
    for entry in data_list:
        seen, kept = set(), []
        for instance in entry['instances']:
            key = (tuple(instance['bbox']), instance['bbox_label'], instance['ignore_flag'])
            if key in seen:
                problems.num_duplicates += 1
                problems.first_duplicate = problems.first_duplicate or (
                    f"{os.path.basename(entry['img_path'])}: box {list(key[0])} of class "
                    f'{CCTSDB_CLASSES[key[1]]!r}')
                continue
            seen.add(key)
            kept.append(instance)
        entry['instances'] = kept


def _assign_image_ids(data_list: list[DataInfo]) -> None:
    """The numeric file stem when all stems are distinct numbers, else position + 1."""
    stems = [os.path.splitext(os.path.basename(e['img_path']))[0] for e in data_list]
    numeric = all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems)
    for index, (entry, stem) in enumerate(zip(data_list, stems)):
        entry['img_id'] = int(stem) if numeric else index + 1


@DATASETS.register_module()
class CCTSDBDataset(BaseDetDataset):
    """CCTSDB traffic signs (2017 ``GroundTruth.txt`` or 2021 VOC XML folder), boxes only.

    Labels ``0, 1, 2`` are ``warning``, ``prohibitory``, ``mandatory`` (``CCTSDB_CLASSES``).
    docs/datasets.md ("CCTSDB") describes the formats, the error policy and the data-list layout
    (that of :class:`CocoDataset`, so the transforms and a :class:`JointDataset` treat both
    alike).

    Args:
        ann_file: ``GroundTruth.txt`` (2017) or the folder of 2021 XML files, relative to
            ``data_root`` unless absolute.
        data_root: the folder holding the data set, e.g. ``'data/cctsdb/'``.
        data_prefix: ``dict(img=folder)``: the image folder, relative to ``data_root`` unless
            absolute.
        on_error: ``'raise'`` or ``'warn'`` for malformed entries (see docs/datasets.md).
        skip_missing_images: skip annotations whose image is not in the image folder (needed
            when one XML folder covers several splits) instead of raising.
        class_aliases: extra ``misspelling -> class name`` pairs (``mandatoty`` is built in).
        filter_cfg: in training only: ``filter_empty_gt=True`` drops images without a
            non-ignored box; ``min_size=32`` drops images whose shorter side is below 32 px.
        pipeline: transforms (configs, built from detkit's ``TRANSFORMS``, or callables).
        test_mode: whether the set is used for validation/testing (nothing is filtered).
        metainfo: must keep ``classes`` equal to ``CCTSDB_CLASSES`` when given.
        lazy_init: defer reading the annotations until ``full_init()`` or the first access.
        serialize_data: keep the data list as one pickled buffer.
        indices: keep only these indices (or the first ``indices`` images) after filtering.
        max_refetch: how often ``__getitem__`` retries another image when the pipeline
            returns ``None`` in training.
        bad_sample: ``'error'`` (default) raises when an image cannot be read (its size while
            loading, or its pixels in the pipeline), naming it; ``'skip'`` leaves such images
            out in training, warning once per file (see :mod:`detkit.datasets.bad_samples`;
            ``test_mode`` always raises).

    Attributes:
        skipped_files: the image paths skipped so far (``bad_sample='skip'``).

    Example:
        >>> dataset = CCTSDBDataset(ann_file='GroundTruth.txt', data_root='data/cctsdb/',
        ...                         data_prefix=dict(img='images/'))
        >>> dataset.get_data_info(0)['instances'][0]
        {'bbox': [527.0, 377.0, 555.0, 404.0], 'bbox_label': 0, 'ignore_flag': 0}
    """

    METAINFO = dict(classes=CCTSDB_CLASSES)

    def __init__(self,
                 ann_file: str,
                 data_root: str = '',
                 data_prefix: dict[str, str] | None = None,
                 on_error: str = 'raise',
                 skip_missing_images: bool = False,
                 class_aliases: dict[str, str] | None = None,
                 filter_cfg: dict[str, Any] | None = None,
                 pipeline: Sequence[PipelineStep] = (),
                 test_mode: bool = False,
                 metainfo: dict[str, Any] | None = None,
                 lazy_init: bool = False,
                 serialize_data: bool = True,
                 indices: int | Sequence[int] | None = None,
                 max_refetch: int = 1000,
                 bad_sample: str = 'error') -> None:
        if on_error not in ON_ERROR_CHOICES:
            raise InputError(f'CCTSDBDataset: on_error={on_error!r}; expected one of '
                             f'{list(ON_ERROR_CHOICES)}')
        if metainfo is not None and tuple(metainfo.get('classes', CCTSDB_CLASSES)) != \
                CCTSDB_CLASSES:
            raise InputError(f"CCTSDBDataset: metainfo['classes'] must be {CCTSDB_CLASSES} (the "
                             f"labels are fixed), got {metainfo.get('classes')!r}")
        self.on_error = on_error
        self.skip_missing_images = skip_missing_images
        self.class_aliases = dict(class_aliases or {})
        super().__init__(ann_file=ann_file, data_root=data_root, data_prefix=data_prefix,
                         filter_cfg=filter_cfg, pipeline=pipeline, test_mode=test_mode,
                         metainfo=metainfo, lazy_init=lazy_init, serialize_data=serialize_data,
                         indices=indices, max_refetch=max_refetch, bad_sample=bad_sample)

    def load_data_list(self) -> list[DataInfo]:
        """Read ``ann_file`` (see :func:`load_cctsdb`).

        Returns:
            One dict per image (see docs/datasets.md).
        """
        def unreadable(path: str, err: Exception, where: str) -> None:
            self.bad_samples.unreadable(path, err, test_mode=self.test_mode, where=where)

        return load_cctsdb(self.ann_file, self.data_prefix['img'], on_error=self.on_error,
                           skip_missing_images=self.skip_missing_images,
                           class_aliases=self.class_aliases, on_unreadable_image=unreadable)
