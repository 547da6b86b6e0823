"""A folder of LabelMe JSON files as one COCO JSON dict.

Each ``*.json`` of the folder (sorted by name, not recursive) describes one image:
``imagePath`` (relative to the JSON's folder), ``imageHeight``, ``imageWidth`` and ``shapes``,
each with a ``label``, ``points`` (``[[x, y], ...]`` in pixels) and a ``shape_type``
(``rectangle``: two opposite corners; ``polygon``: three or more points; LabelMe writes
``polygon`` when the key is absent). Both become the box of their points' minimum and maximum,
clipped to the image.
"""
from __future__ import annotations

import json
import math
import os
import os.path as osp
from typing import Any, Callable

from detkit.datasets.base_det_dataset import image_size
from detkit.datasets.converters.yolo import ConversionLog
from detkit.errors import InputError

SHAPE_TYPES = ('rectangle', 'polygon')


class LabelMeFormatError(InputError):
    """A LabelMe file breaks the format: names the file (and shape) and what was expected."""


def read_class_file(path: str) -> list[str]:
    """One class name per line (blank lines ignored).

    Raises:
        FileNotFoundError: the file does not exist.
        LabelMeFormatError: a name is listed twice (naming both lines), or none is.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'labelme2coco: --classes {path!r} does not exist')
    names: dict[str, int] = {}
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as error:
        raise LabelMeFormatError(f'labelme2coco: --classes {path!r} is not UTF-8 text '
                                 f'({error})') from None
    for number, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            continue
        if name in names:
            raise LabelMeFormatError(f'{path}:{number}: class {name!r} is already on line '
                                     f'{names[name]}')
        names[name] = number
    if not names:
        raise LabelMeFormatError(f'{path}: lists no class')
    return list(names)


def _shape_box(shape: Any, where: str) -> tuple[str, list[float]]:
    """``(label, [x1, y1, x2, y2])`` of one shape (not clipped); ValueError says why not."""
    if not isinstance(shape, dict):
        raise ValueError(f'{where}: expected an object, got {type(shape).__name__}')
    label = shape.get('label')
    if not isinstance(label, str) or not label:
        raise ValueError(f'{where}: label must be a non-empty string, got {label!r}')
    kind = shape.get('shape_type') or 'polygon'
    if kind not in SHAPE_TYPES:
        raise ValueError(f'{where} ({label!r}): shape_type {kind!r} is not one of {SHAPE_TYPES}')
    points = shape.get('points')
    wanted = 2 if kind == 'rectangle' else 3
    if (not isinstance(points, list) or not all(
            isinstance(p, (list, tuple)) and len(p) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    for v in p) for p in points)):
        raise ValueError(f'{where} ({label!r}): points must be a list of [x, y] numbers, got '
                         f'{points!r}')
    if (kind == 'rectangle' and len(points) != 2) or len(points) < wanted:
        raise ValueError(f'{where} ({label!r}): a {kind} needs '
                         f'{"2" if kind == "rectangle" else "3 or more"} points, got '
                         f'{len(points)}')
    xs, ys = [float(p[0]) for p in points], [float(p[1]) for p in points]
    return label, [min(xs), min(ys), max(xs), max(ys)]


def labelme_to_coco(folder: str, classes: list[str] | None = None, *, skip_bad: bool = False,
                    log: ConversionLog | None = None,
                    warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Convert every LabelMe JSON of ``folder``.

    Args:
        folder: the folder of ``*.json`` files.
        classes: the category order (ids from 1); None: the labels found, sorted by name.
        skip_bad: a bad shape, or an image whose file is missing or unreadable, is skipped with
            a message through ``warn`` instead of stopping.
        log: collects the skipped items and the clipped boxes.
        warn: receives one message per skipped item.

    Returns:
        ``dict(images, annotations, categories)``; ``file_name`` is relative to ``folder``.

    Raises:
        FileNotFoundError: the folder does not exist or holds no JSON.
        LabelMeFormatError: the first bad file or shape (without ``skip_bad``), or a label that
            ``classes`` does not list.
    """
    log = log if log is not None else ConversionLog()
    if not osp.isdir(folder):
        raise FileNotFoundError(f'labelme2coco: {folder!r} is not a folder')
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith('.json'))
    if not files:
        raise FileNotFoundError(f'labelme2coco: {folder!r} holds no .json file')

    def bad(message: str) -> None:
        log.reject(message, skip_bad, LabelMeFormatError, warn)

    entries = []   # (file_name, height, width, [(label, box)])
    for name in files:
        path = osp.join(folder, name)
        try:
            with open(path, encoding='utf-8') as f:
                content = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            bad(f'{path}: not a JSON file ({error})')
            continue
        image_path = content.get('imagePath') if isinstance(content, dict) else None
        if not isinstance(image_path, str) or not image_path:
            bad(f'{path}: imagePath is missing (detkit reads the image file, not imageData)')
            continue
        full = osp.normpath(osp.join(folder, image_path.replace('\\', '/')))
        if not osp.isfile(full):
            bad(f'{path}: imagePath {image_path!r} names a missing image ({full})')
            continue
        try:
            height, width = image_size(full)
        except ValueError as error:
            bad(f'{path}: image {full!r} is unreadable ({error})')
            continue
        stated = (content.get('imageHeight'), content.get('imageWidth'))
        if stated != (None, None) and stated != (height, width):
            bad(f'{path}: imageHeight x imageWidth {stated[0]}x{stated[1]} differ from the '
                f'image {full!r} ({height}x{width})')
            continue
        boxes = []
        shapes = content.get('shapes', [])
        if not isinstance(shapes, list):
            bad(f'{path}: shapes must be a list, got {type(shapes).__name__}')
            continue
        for index, shape in enumerate(shapes):
            try:
                boxes.append(_shape_box(shape, f'{path}: shapes[{index}]'))
            except ValueError as error:
                bad(str(error))
        entries.append((osp.relpath(full, folder).replace(os.sep, '/'), height, width, boxes,
                        path))
    found = sorted({label for entry in entries for label, _ in entry[3]})
    names = list(classes) if classes is not None else found
    ids = {name: index + 1 for index, name in enumerate(names)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for file_name, height, width, boxes, path in entries:
        image_id = len(images) + 1
        images.append(dict(id=image_id, file_name=file_name, height=height, width=width))
        for label, box in boxes:
            if label not in ids:
                raise LabelMeFormatError(f'{path}: label {label!r} is not in --classes '
                                         f'({", ".join(names)})')
            log.add_box(annotations, box, image_id=image_id, category_id=ids[label],
                        height=height, width=width)
    categories = [dict(id=ids[name], name=name) for name in names]
    return dict(images=images, annotations=annotations, categories=categories)
