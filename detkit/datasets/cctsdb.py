"""The CCTSDB traffic-sign data set (CSUST Chinese Traffic Sign Detection Benchmark).

Three classes, ``CCTSDB_CLASSES = ('warning', 'prohibitory', 'mandatory')``. Two annotation
formats are read, chosen by what ``ann_file`` is:

* a **text file** (CCTSDB 2017, ``GroundTruth.txt``): one line per box,
  ``00000.png;x1;y1;x2;y2;class``, e.g. ``00000.png;527;377;555;404;warning``. Blank lines are
  skipped; an image appears once per box, and only images with a box are listed.
* a **folder of Pascal VOC XML files** (CCTSDB 2021, one ``.xml`` per image): every
  ``<object>`` with ``<name>`` and ``<bndbox><xmin>..<ymax>``; ``<difficult>1</difficult>``
  makes the box an ignore region (``ignore_flag=1``). The image file is ``<filename>`` in the
  image folder, or, when that does not exist, the XML's stem with ``.jpg``/``.png``/``.jpeg``/
  ``.bmp``. The 2021 XMLs spell one class ``mandatoty``: class names are matched after
  stripping and lower-casing, through ``CLASS_ALIASES`` (``mandatoty -> mandatory``; pass
  ``class_aliases`` for others).

Coordinates are taken as ``(x1, y1, x2, y2)`` pixels without any +-1 (neither release says
whether ``x2`` is inclusive; the difference is one pixel). The image size always comes from the
image file itself (read from the PNG/JPEG header, EXIF orientation applied, so it equals what
``LoadImageFromFile`` decodes; other formats are decoded), never from the annotation. Boxes
reaching beyond the image are clipped to it (counted in one log line).

Each image becomes one dict of the data list, the layout of :class:`CocoDataset`::

    dict(img_path='data/cctsdb/images/00000.png', img_id=0, height=720, width=1280,
         instances=[dict(bbox=[527.0, 377.0, 555.0, 404.0], bbox_label=0, ignore_flag=0)])

``img_id`` is the file stem as an int when every stem is a distinct number (``00042.png`` ->
42), else the position in the data list plus one.

Bad input, and what happens (``tests/test_cctsdb.py`` checks each row). A *malformed entry*
raises ``ValueError`` naming ``file:line`` and what is wrong with ``on_error='raise'`` (the
default); with ``on_error='warn'`` it is skipped (a whole XML file when it cannot be parsed)
and one warning gives the number of such entries and the first one.

============================================  ===============================================
problem                                       what happens
============================================  ===============================================
``ann_file`` missing; an XML folder without   ``FileNotFoundError`` naming it
``.xml`` files
an empty ``GroundTruth.txt`` (no box line)    ``ValueError`` naming the file
a line without 6 ``;`` fields, an empty       malformed entry
image name
a coordinate that is not a number, NaN or     malformed entry
infinite
an empty box (``x2 <= x1`` or ``y2 <= y1``),  malformed entry
negative width or height
a box wholly outside its image (e.g. all      malformed entry
coordinates negative)
a box partly outside its image                clipped to the image; counted in one log line
an unknown class (after ``CLASS_ALIASES``)    malformed entry; the message lists the classes
an XML file that is empty, not well-formed    malformed entry (the whole file)
or whose root is not ``<annotation>``
an ``<object>`` without ``<name>``,           malformed entry
``<bndbox>`` or one of its four values
two XML files naming the same image           malformed entry (the second file)
the same image on several text lines          normal (one line per box): merged into one image
the same box, class and difficulty twice for  the repeat is dropped; counted in one warning
one image
an image that is not in the image folder      ``FileNotFoundError`` naming ``file:line``;
                                              ``skip_missing_images=True`` skips and counts it
                                              (the 2021 XML package holds the annotations of
                                              the training and the test split together; the
                                              image folder then selects the split)
an image whose size cannot be read (empty,    ``bad_sample`` decides: ``'error'`` raises
not an image) while loading; an image that    naming it, ``'skip'`` leaves it out in training
cannot be decoded in the pipeline             (warned once, in ``skipped_files``); see
                                              :mod:`detkit.datasets.bad_samples`
no image left at all                          ``ValueError`` with the counts
============================================  ===============================================
"""
from __future__ import annotations

import logging
import math
import os
import struct
import warnings
import xml.parsers.expat
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from mmengine.logging import print_log

from detkit.registry import DATASETS, TRANSFORMS

from .base_det_dataset import FILTER_KEYS, BaseDetDataset, DataInfo, PipelineStep
from .transforms.loading import ImageDecodeError, decode_image

CCTSDB_CLASSES = ('warning', 'prohibitory', 'mandatory')

# Spellings found in the releases -> the class name. The 2021 VOC XMLs write 'mandatoty'.
CLASS_ALIASES = {'mandatoty': 'mandatory'}

IMAGE_EXTENSIONS = ('.jpg', '.png', '.jpeg', '.bmp')
ON_ERROR_CHOICES = ('raise', 'warn')

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# JPEG start-of-frame markers (baseline, progressive, lossless, ...); not DHT/JPG/DAC.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def image_size(path: str) -> tuple[int, int]:
    """The ``(height, width)`` of an image file as :func:`decode_image` returns it.

    PNG and JPEG sizes come from the file header (a few hundred bytes; a JPEG's EXIF orientation
    5-8 swaps the sides, as OpenCV rotates such images when decoding); a PNG with an ``eXIf``
    chunk (OpenCV 5 applies its orientation) and any other file are decoded.

    Args:
        path: the image file.

    Returns:
        ``(height, width)`` in pixels.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageDecodeError: (a ``ValueError``) the file is not a readable image.
    """
    with open(path, 'rb') as f:
        head = f.read(64 * 1024)
    size = None
    if head.startswith(_PNG_SIGNATURE) and head[12:16] == b'IHDR' and _png_has_no_exif(head):
        width, height = struct.unpack('>II', head[16:24])
        size = (int(height), int(width))
    elif head.startswith(b'\xff\xd8'):
        size = _jpeg_size(head)
    if size is None or min(size) <= 0:
        height, width = decode_image(path).shape[:2]
        size = (int(height), int(width))
    return size


def _png_has_no_exif(head: bytes) -> bool:
    """Whether the chunks of a PNG before its first ``IDAT`` (within ``head``) hold no ``eXIf``.

    ``False`` also when ``head`` ends before the first ``IDAT``: the size is then decoded.
    """
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(head):
        (length,) = struct.unpack('>I', head[pos:pos + 4])
        chunk_type = head[pos + 4:pos + 8]
        if chunk_type == b'IDAT':
            return True
        if chunk_type == b'eXIf':
            return False
        pos += 12 + length
    return False


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` from a JPEG's start-of-frame and EXIF orientation; None if not found.

    ``data`` is the start of the file; the frame header must lie within it.
    """
    pos, orientation = 2, 1
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        (length,) = struct.unpack('>H', data[pos + 2:pos + 4])
        segment = data[pos + 4:pos + 2 + length]
        if marker == 0xE1 and segment.startswith(b'Exif\x00\x00'):
            orientation = _exif_orientation(segment[6:])
        elif marker in _JPEG_SOF_MARKERS:
            if len(segment) < 5:
                return None
            height, width = struct.unpack('>HH', segment[1:5])
            if orientation in (5, 6, 7, 8):  # rotated by 90 degrees when decoded
                height, width = width, height
            return int(height), int(width)
        pos += 2 + length
    return None


def _exif_orientation(tiff: bytes) -> int:
    """The EXIF orientation tag (0x0112) of IFD0 in a TIFF block; 1 when absent or unreadable."""
    if len(tiff) < 8 or tiff[:2] not in (b'II', b'MM'):
        return 1
    order = '<' if tiff[:2] == b'II' else '>'
    try:
        (ifd,) = struct.unpack(order + 'I', tiff[4:8])
        (count,) = struct.unpack(order + 'H', tiff[ifd:ifd + 2])
        for k in range(count):
            entry = tiff[ifd + 2 + 12 * k:ifd + 14 + 12 * k]
            tag, kind = struct.unpack(order + 'HH', entry[:4])
            if tag == 0x0112 and kind == 3:  # SHORT
                return int(struct.unpack(order + 'H', entry[8:10])[0])
    except struct.error:
        return 1
    return 1


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


class _EntryError(ValueError):
    """One malformed annotation entry; the message already names ``file:line``."""


def load_cctsdb(ann_file: str, img_dir: str, on_error: str = 'raise',
                skip_missing_images: bool = False,
                class_aliases: dict[str, str] | None = None,
                on_unreadable_image: Callable[[str, Exception, str], None] | None = None
                ) -> list[DataInfo]:
    """Read CCTSDB annotations (2017 text file or 2021 VOC XML folder) into a data list.

    See the module docstring for the formats, the error policy and the dict layout.

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
        raise ValueError(f"CCTSDBDataset: on_error={on_error!r}; expected one of "
                         f'{list(ON_ERROR_CHOICES)}')
    aliases = {**CLASS_ALIASES, **{k.strip().lower(): v for k, v in (class_aliases or {}).items()}}
    unknown_targets = sorted(set(aliases.values()) - set(CCTSDB_CLASSES))
    if unknown_targets:
        raise ValueError(f'CCTSDBDataset: class_aliases map to {unknown_targets}, which are not '
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
        raise ValueError(f'CCTSDBDataset: no image of {ann_file} could be read from {img_dir} '
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
        raise ValueError(f'CCTSDBDataset: {ann_file} is empty (no "image;x1;y1;x2;y2;class" '
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
            root = _parse_xml(xml_path)
        except _EntryError as err:
            _entry_problem(err, on_error, problems)
            continue
        stem = os.path.splitext(xml_name)[0]
        filename = (_child_text(root, 'filename') or '').strip()
        names = ([filename] if filename else []) + [stem + ext for ext in IMAGE_EXTENSIONS]
        try:
            entry = reader.entry(names, f'{xml_path}:{root.line}')
        except _EntryError as err:
            _entry_problem(err, on_error, problems)
            continue
        if entry is None:
            continue
        for obj in root.children:
            if obj.tag != 'object':
                continue
            where = f'{xml_path}:{obj.line}'
            try:
                entry['instances'].append(_voc_instance(obj, where, aliases, entry, problems))
            except _EntryError as err:
                _entry_problem(err, on_error, problems)
        data_list.append(entry)
    return data_list


def _voc_instance(obj: '_Node', where: str, aliases: dict[str, str], entry: DataInfo,
                  problems: _Problems) -> dict[str, Any]:
    """One ``<object>`` -> an instance dict."""
    name = _child_text(obj, 'name')
    if name is None:
        raise _EntryError(f'{where}: <object> has no <name>')
    label = _class_label(name, where, aliases)
    box = obj.child('bndbox')
    if box is None:
        raise _EntryError(f'{where}: <object> has no <bndbox>')
    values = []
    for key in ('xmin', 'ymin', 'xmax', 'ymax'):
        text = _child_text(box, key)
        if text is None:
            raise _EntryError(f'{where}: <bndbox> (line {box.line}) has no <{key}>')
        values.append(text)
    coords = _parse_coordinates(values, where)
    difficult = (_child_text(obj, 'difficult') or '0').strip()
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


def _entry_problem(err: _EntryError, on_error: str, problems: _Problems) -> None:
    """Raise ``err`` as a ``ValueError`` or count it, following ``on_error``."""
    if on_error == 'raise':
        raise ValueError(f'CCTSDBDataset: {err}') from None
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


class _Node:
    """An XML element: tag, text, children and the line it starts on."""

    __slots__ = ('tag', 'line', 'text', 'children')

    def __init__(self, tag: str, line: int) -> None:
        self.tag, self.line, self.text = tag, line, ''
        self.children: list[_Node] = []

    def child(self, tag: str) -> '_Node | None':
        return next((c for c in self.children if c.tag == tag), None)


def _child_text(node: _Node, tag: str) -> str | None:
    child = node.child(tag)
    return None if child is None else child.text


def _parse_xml(path: str) -> _Node:
    """Parse an XML file into ``_Node`` s with line numbers; the root must be <annotation>."""
    parser = xml.parsers.expat.ParserCreate()
    stack: list[_Node] = []
    roots: list[_Node] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        node = _Node(tag, parser.CurrentLineNumber)
        (stack[-1].children if stack else roots).append(node)
        stack.append(node)

    def end(tag: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        if stack:
            stack[-1].text += data

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    with open(path, 'rb') as f:
        data = f.read()
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as err:
        raise _EntryError(f'{path}:{err.lineno}: not a well-formed XML file: '
                          f'{xml.parsers.expat.ErrorString(err.code)}') from None
    if not roots or roots[0].tag != 'annotation':
        raise _EntryError(f'{path}:1: the root element must be <annotation> (Pascal VOC), got '
                          f'<{roots[0].tag if roots else ""}>')
    return roots[0]


@DATASETS.register_module()
class CCTSDBDataset(BaseDetDataset):
    """CCTSDB traffic signs (2017 ``GroundTruth.txt`` or 2021 VOC XML folder), boxes only.

    Labels ``0, 1, 2`` are ``warning``, ``prohibitory``, ``mandatory`` (``CCTSDB_CLASSES``).
    The module docstring describes the formats, the error policy and the data-list layout
    (that of :class:`CocoDataset`, so the transforms and a :class:`JointDataset` treat both
    alike).

    Args:
        ann_file: ``GroundTruth.txt`` (2017) or the folder of 2021 XML files, relative to
            ``data_root`` unless absolute.
        data_root: the folder holding the data set, e.g. ``'data/cctsdb/'``.
        data_prefix: ``dict(img=folder)``: the image folder, relative to ``data_root`` unless
            absolute.
        on_error: ``'raise'`` or ``'warn'`` for malformed entries (see the module docstring).
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
        data_prefix = dict(img='') if data_prefix is None else dict(data_prefix)
        if 'img' not in data_prefix:
            raise KeyError(f"CCTSDBDataset: data_prefix must have the key 'img' (the image "
                           f'folder), got {data_prefix}')
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f'CCTSDBDataset: on_error={on_error!r}; expected one of '
                             f'{list(ON_ERROR_CHOICES)}')
        unknown = sorted(set(filter_cfg or {}) - set(FILTER_KEYS))
        if unknown:
            raise ValueError(f'CCTSDBDataset: unknown filter_cfg keys {unknown}; expected some '
                             f'of {list(FILTER_KEYS)}')
        if metainfo is not None and tuple(metainfo.get('classes', CCTSDB_CLASSES)) != \
                CCTSDB_CLASSES:
            raise ValueError(f"CCTSDBDataset: metainfo['classes'] must be {CCTSDB_CLASSES} (the "
                             f"labels are fixed), got {metainfo.get('classes')!r}")
        self.on_error = on_error
        self.skip_missing_images = skip_missing_images
        self.class_aliases = dict(class_aliases or {})
        built = [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in pipeline]
        super().__init__(bad_sample=bad_sample, ann_file=ann_file, metainfo=metainfo,
                         data_root=data_root, data_prefix=data_prefix, filter_cfg=filter_cfg,
                         indices=indices, serialize_data=serialize_data, pipeline=built,
                         test_mode=test_mode, lazy_init=lazy_init, max_refetch=max_refetch)

    def load_data_list(self) -> list[DataInfo]:
        """Read ``ann_file`` (see :func:`load_cctsdb`).

        Returns:
            One dict per image (see the module docstring).
        """
        def unreadable(path: str, err: Exception, where: str) -> None:
            self.bad_samples.unreadable(path, err, test_mode=self.test_mode, where=where)

        return load_cctsdb(self.ann_file, self.data_prefix['img'], on_error=self.on_error,
                           skip_missing_images=self.skip_missing_images,
                           class_aliases=self.class_aliases, on_unreadable_image=unreadable)
