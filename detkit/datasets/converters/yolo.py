"""An Ultralytics-style YOLO data set (``DATA.yaml`` + ``labels/*.txt``) as COCO JSON dicts.

``DATA.yaml`` names the root (``path``: absolute, or relative to the yaml's folder; the yaml's
folder when absent), one images folder per split (``train``, ``val``, ``test``, relative to the
root) and the classes (``names``: a list, or a dict from index 0..n-1 to name). The label file
of ``<root>/.../images/.../a.jpg`` is ``<root>/.../labels/.../a.txt`` (the last ``images``
folder of the path becomes ``labels``); each line is ``class cx cy w h`` (normalised to the
image, 0-1) or ``class x1 y1 x2 y2 x3 y3 ...`` (a polygon of three or more points: its bounding
box). Coordinates are fractions of the image as displayed (EXIF orientation applied, as
``cv2.imread`` and Ultralytics read it).
"""
from __future__ import annotations

import math
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Callable

from detkit.datasets.base_det_dataset import image_size
from detkit.errors import InputError

SPLITS = ('train', 'val', 'test')
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
TOLERANCE = 1e-6   # how far past [0, 1] a normalised coordinate may lie (float text rounding)


class YoloFormatError(InputError):
    """A YOLO data set breaks the format: names the file (and line) and what was expected."""


@dataclass
class ConversionLog:
    """What a conversion skipped (with ``skip_bad``) or changed.

    Attributes:
        skipped: one message per skipped line or image (``file:line: why: 'text'``).
        clipped: boxes that reached past the image border, clipped to it.
    """

    skipped: list[str] = field(default_factory=list)
    clipped: int = 0

    def reject(self, message: str, skip_bad: bool, error: type[ValueError],
               warn: Callable[[str], None] | None) -> None:
        """A bad item: raise ``error`` (naming ``--skip-bad``), or with ``skip_bad`` record
        it and pass the message to ``warn``."""
        if not skip_bad:
            raise error(message + ' (--skip-bad skips it with a warning)')
        self.skipped.append(message)
        if warn is not None:
            warn(message)

    def add_box(self, annotations: list[dict[str, Any]], box: list[float], *, image_id: int,
                category_id: int, height: int, width: int) -> None:
        """Append the COCO annotation of an xyxy pixel ``box``, clipped to the image (counted
        in :attr:`clipped` when that moved it), ids counting from 1."""
        clipped = [min(max(box[0], 0.0), width), min(max(box[1], 0.0), height),
                   min(max(box[2], 0.0), width), min(max(box[3], 0.0), height)]
        self.clipped += clipped != box
        w, h = clipped[2] - clipped[0], clipped[3] - clipped[1]
        annotations.append(dict(id=len(annotations) + 1, image_id=image_id,
                                category_id=category_id, bbox=[clipped[0], clipped[1], w, h],
                                area=w * h, iscrowd=0, segmentation=[]))

    def summary(self) -> list[str]:
        """The lines a converter prints at the end: clipped boxes, skipped items."""
        lines = []
        if self.clipped:
            lines.append(f'{self.clipped} boxes reached past their image and were clipped to it')
        if self.skipped:
            lines.append(f'skipped {len(self.skipped)} bad items (--skip-bad); see the warnings')
        return lines


@dataclass
class YoloDataset:
    """``DATA.yaml`` read: the root folder, each split's images folder, the class names."""

    root: str
    splits: dict[str, str]
    names: list[str]


def read_data_yaml(path: str) -> YoloDataset:
    """Read and check ``DATA.yaml``.

    Raises:
        FileNotFoundError: the yaml, the root or a split's folder does not exist.
        YoloFormatError: a key is missing or has the wrong type (naming it).
    """
    import yaml

    if not osp.isfile(path):
        raise FileNotFoundError(f'yolo2coco: {path!r} does not exist')
    with open(path, encoding='utf-8') as f:
        try:
            content = yaml.safe_load(f)
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise YoloFormatError(f'{path}: not valid YAML in UTF-8 ({error})') from None
    if not isinstance(content, dict):
        raise YoloFormatError(f'{path}: expected a mapping with path, train/val/test and names, '
                              f'got {type(content).__name__}')
    root = content.get('path') or '.'
    if not isinstance(root, str):
        raise YoloFormatError(f'{path}: path must be a folder name, got {root!r}')
    root = osp.normpath(osp.join(osp.dirname(osp.abspath(path)), osp.expanduser(root)))
    if not osp.isdir(root):
        raise FileNotFoundError(f'{path}: path {content.get("path")!r} is not a folder '
                                f'({root})')
    names = _read_names(content.get('names'), path)
    splits = {}
    for split in SPLITS:
        folder = content.get(split)
        if folder is None:
            continue
        if not isinstance(folder, str):
            raise YoloFormatError(f'{path}: {split} must name an images folder relative to '
                                  f'path, got {folder!r}')
        if folder.endswith('.txt'):
            raise YoloFormatError(f'{path}: {split}: {folder!r} is a list file; yolo2coco reads '
                                  'an images folder per split')
        full = osp.normpath(osp.join(root, folder))
        if not osp.isdir(full):
            raise FileNotFoundError(f'{path}: {split} folder {folder!r} does not exist ({full})')
        splits[split] = full
    if not splits:
        raise YoloFormatError(f'{path}: names none of the splits {SPLITS}')
    return YoloDataset(root, splits, names)


def _read_names(names: Any, path: str) -> list[str]:
    if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        return list(names)
    if isinstance(names, dict) and names:
        keys = sorted(names, key=str)   # keys of mixed types sort too, and then fail below
        if keys != list(range(len(names))):
            raise YoloFormatError(f'{path}: names must map the indices 0..{len(names) - 1} to '
                                  f'class names, got the keys {keys}')
        return [str(names[k]) for k in keys]
    raise YoloFormatError(f'{path}: names must be a list of class names or a dict from index '
                          f'to name, got {names!r}')


def label_file(image_path: str) -> str:
    """The label file of an image: the last ``images`` folder of its path -> ``labels``, the
    suffix -> ``.txt``."""
    parts = image_path.split(os.sep)
    for index in range(len(parts) - 2, -1, -1):
        if parts[index] == 'images':
            parts[index] = 'labels'
            break
    return osp.splitext(os.sep.join(parts))[0] + '.txt'


def parse_label_line(line: str, num_classes: int) -> tuple[int, list[float]]:
    """One label line -> ``(class, [x1, y1, x2, y2])`` normalised (not clipped).

    Raises:
        ValueError: the reason (the caller adds file, line number and text).
    """
    tokens = line.split()
    try:
        label = int(tokens[0])
    except ValueError:
        raise ValueError(f'the class {tokens[0]!r} is not an integer') from None
    if not 0 <= label < num_classes:
        raise ValueError(f'class {label} is outside names (0..{num_classes - 1})')
    try:
        values = [float(v) for v in tokens[1:]]
    except ValueError as error:
        raise ValueError(f'a coordinate is not a number ({error})') from None
    if len(values) != 4 and (len(values) < 6 or len(values) % 2):
        raise ValueError(f'expected "class cx cy w h" or "class x1 y1 x2 y2 x3 y3 ..." (3 or '
                         f'more points), got {len(values)} numbers after the class')
    bad = [v for v in values if not math.isfinite(v) or v < -TOLERANCE or v > 1 + TOLERANCE]
    if bad:
        raise ValueError(f'coordinate {bad[0]!r} is outside [0, 1]')
    if len(values) == 4:
        cx, cy, w, h = values
        return label, [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    xs, ys = values[0::2], values[1::2]
    return label, [min(xs), min(ys), max(xs), max(ys)]


def split_to_coco(dataset: YoloDataset, split: str, *, skip_bad: bool = False,
                  log: ConversionLog | None = None,
                  warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One split as a COCO dict: every image (with or without labels) and every box.

    Args:
        dataset: from :func:`read_data_yaml`.
        split: ``'train'``, ``'val'`` or ``'test'``.
        skip_bad: a bad line (or an unreadable image) is skipped with a message through
            ``warn`` instead of stopping.
        log: collects the skipped lines and the clipped boxes.
        warn: receives one message per skipped line or image.

    Raises:
        YoloFormatError: the first bad line (``file:line: why: 'text'``) without ``skip_bad``.
    """
    log = log if log is not None else ConversionLog()
    folder = dataset.splits[split]
    files = sorted(osp.join(d, f) for d, _, names in os.walk(folder) for f in names
                   if f.lower().endswith(IMAGE_EXTENSIONS))
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []

    def bad(message: str) -> None:
        log.reject(message, skip_bad, YoloFormatError, warn)

    for image_path in files:
        try:
            height, width = image_size(image_path)
        except ValueError as error:   # ImageDecodeError names the file
            bad(f'{image_path}: unreadable image ({error})')
            continue
        image_id = len(images) + 1
        images.append(dict(id=image_id, width=width, height=height,
                           file_name=osp.relpath(image_path, dataset.root).replace(os.sep, '/')))
        labels = label_file(image_path)
        if not osp.isfile(labels):
            continue
        try:
            with open(labels, encoding='utf-8') as f:
                lines = f.read().splitlines()
        except UnicodeDecodeError as error:
            bad(f'{labels}: not UTF-8 text ({error})')
            continue
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                label, (x1, y1, x2, y2) = parse_label_line(line, len(dataset.names))
            except ValueError as error:
                bad(f'{labels}:{number}: {error}: {line!r}')
                continue
            log.add_box(annotations, [x1 * width, y1 * height, x2 * width, y2 * height],
                        image_id=image_id, category_id=label + 1, height=height, width=width)
    for labels in _orphan_label_files(folder, files):
        bad(f'{labels}: boxes without an image (no {osp.splitext(labels)[0]}.* image with one '
            f'of the extensions {", ".join(IMAGE_EXTENSIONS)} in {folder})')
    categories = [dict(id=index + 1, name=name) for index, name in enumerate(dataset.names)]
    return dict(images=images, annotations=annotations, categories=categories)


def _orphan_label_files(folder: str, images: list[str]) -> list[str]:
    """The label files of a split's labels folder that hold boxes and belong to none of its
    ``images`` (a label file without its image would be dropped without a word)."""
    labels_folder = osp.dirname(label_file(osp.join(folder, 'x.jpg')))
    if labels_folder == folder or not osp.isdir(labels_folder):
        return []
    used = {label_file(path) for path in images}
    orphans = []
    for directory, _, names in os.walk(labels_folder):
        for name in sorted(names):
            path = osp.join(directory, name)
            if not name.endswith('.txt') or path in used or name == 'classes.txt':
                continue   # classes.txt: labelImg's list of names, not an image's boxes
            with open(path, encoding='utf-8', errors='replace') as f:
                if any(line.strip() for line in f):
                    orphans.append(path)
    return sorted(orphans)
