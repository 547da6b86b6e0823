"""Synthetic detection data sets (COCO format; Pascal VOC for the face masks), for tests and
quick experiments.

``make_shapes`` draws five shape classes (circle, square, triangle, star, cross) on textured
backgrounds with clutter, so a detector has something real to learn in minutes on a CPU:

* objects from ~12 px to several hundred px, so COCO's small (area < 32^2), medium and large
  ranges all occur; 1-8 objects an image, filled or drawn as a thick outline, in varied
  colours (contrasting with the background under them) and rotations;
* overlaps are allowed, but a new object's box has IoU < 0.5 with every box already placed,
  and every object keeps at least 60 % of its pixels visible (not covered, not off the image);
* a box is the tight extent of the object's *visible* pixels: a pixel column ``c`` spans
  ``[c, c + 1)``, so a box is ``(x_min, y_min, x_max + 1 - x_min, y_max + 1 - y_min)`` in COCO
  ``xywh``. ``area`` is the box area (there are no masks);
* clutter (lines, elongated blobs, speckles) that is not an object; backgrounds mixing
  gradients, stripes, low-frequency blotches and noise;
* now and then a "crowd": a cluster of tiny shapes of one class annotated by one
  ``iscrowd=1`` box, which a detector should treat as an ignore region;
* image sizes drawn between ``min_size`` and ``max_size`` for each side, so landscape and
  portrait images both occur.

The category ids are deliberately not contiguous (1, 2, 4, 7, 9) to exercise the id -> label
mapping. Everything is drawn from ``numpy.random.default_rng((seed, split, index))``: the same
seed gives the same bytes, and an image does not depend on how many others are generated.

``make_shapes_partial`` writes the same images as a partial-label benchmark: two training
subsets from one image distribution, subset A annotating circle/square/triangle only and subset
B star/cross only, and a fully labelled val set (see its docstring and data/README.md).

``make_facemask`` draws cartoon faces without a mask, with a mask over nose and mouth, or with
the mask worn below the nose, in the Pascal VOC layout of the Kaggle face-mask set
(``annotations/*.xml``, ``images/*.png``, ``train.txt``/``val.txt``; see its docstring).
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from typing import Any

import cv2
import numpy as np

from .voc import FACEMASK_CLASSES, FaceMaskDataset

JsonDict = dict[str, Any]  # one entry of a COCO file

SHAPES_CATEGORIES: tuple[JsonDict, ...] = (
    dict(id=1, name='circle', supercategory='shape'),
    dict(id=2, name='square', supercategory='shape'),
    dict(id=4, name='triangle', supercategory='shape'),
    dict(id=7, name='star', supercategory='shape'),
    dict(id=9, name='cross', supercategory='shape'),
)
SHAPES_CLASSES = tuple(c['name'] for c in SHAPES_CATEGORIES)
# The classes each training subset of the partial-label set annotates (make_shapes_partial).
PARTIAL_CLASSES = dict(a=('circle', 'square', 'triangle'), b=('star', 'cross'))

MIN_OBJECT_SIZE = 12          # smallest object extent in pixels
MAX_OBJECT_SIZE = 400         # largest object extent in pixels (also <= 0.85 * shorter side)
MAX_OBJECTS = 8
MAX_BOX_IOU = 0.5             # a new object's box vs. every placed box
MIN_VISIBLE_FRACTION = 0.6    # of an object's pixels, after occlusion and the image border
CROWD_PROBABILITY = 0.08      # per image
# Scene styles: 'cluttered' (the default) adds clutter lines and blobs, crowd regions and objects
# down to MIN_OBJECT_SIZE; 'plain' draws only the objects, none smaller than PLAIN_MIN_OBJECT_SIZE,
# on the same backgrounds: a detector trained from scratch learns it in far fewer iterations;
# 'simple' draws 1 to SIMPLE_MAX_OBJECTS filled shapes of SIMPLE_MIN_OBJECT_SIZE px and more,
# none overlapping another, on a smooth gradient: what a ResNet-50 RetinaNet learns from scratch
# in minutes on a CPU (the quick start).
SCENES = ('cluttered', 'plain', 'simple')
PLAIN_MIN_OBJECT_SIZE = 24
SIMPLE_MIN_OBJECT_SIZE = 32
SIMPLE_MAX_OBJECTS = 4
SIMPLE_MAX_BOX_IOU = 1e-6     # no two boxes of a 'simple' image overlap
SMALL_AREA, MEDIUM_AREA = 32 ** 2, 96 ** 2   # COCO's area ranges
_SPLITS = {'train': 0, 'val': 1}


def make_shapes(out_dir: str, num_train: int = 300, num_val: int = 60, min_size: int = 256,
                max_size: int = 512, seed: int = 0, scene: str = 'cluttered') -> dict[str, str]:
    """Generate the shapes data set in COCO layout under ``out_dir``.

    Writes ``out_dir/{train,val}/NNNNNN.jpg`` and
    ``out_dir/annotations/instances_{train,val}.json``; use it with
    ``CocoDataset(ann_file='annotations/instances_train.json', data_root=out_dir,
    data_prefix=dict(img='train/'), metainfo=dict(classes=SHAPES_CLASSES))``.

    Args:
        out_dir: the output folder (created; existing files of the same names are overwritten).
        num_train: the number of training images.
        num_val: the number of validation images.
        min_size: the smallest image side in pixels (>= 64).
        max_size: the largest image side in pixels (>= ``min_size``).
        seed: the random seed; the same seed gives byte-identical files.
        scene: ``'cluttered'`` or ``'plain'`` (the objects alone), see :func:`draw_shapes_image`.

    Returns:
        ``dict(train=path, val=path)``: the two annotation files.
    """
    _check_arguments('make_shapes', num_train, num_val, min_size, max_size)
    if scene not in SCENES:
        raise ValueError(f'make_shapes: scene must be one of {SCENES}, got {scene!r}')
    os.makedirs(os.path.join(out_dir, 'annotations'), exist_ok=True)
    ann_files = {}
    for split, num_images in (('train', num_train), ('val', num_val)):
        images, annotations = _draw_split(out_dir, split, num_images, min_size, max_size, seed,
                                          scene)
        ann_files[split] = os.path.join(out_dir, 'annotations', f'instances_{split}.json')
        _write_coco(ann_files[split], f'detkit synthetic shapes ({split}, {scene}), seed {seed}',
                    images, annotations, SHAPES_CATEGORIES)
    return ann_files


def make_shapes_partial(out_dir: str, num_train: int = 600, num_val: int = 100,
                        min_size: int = 256, max_size: int = 512, seed: int = 0,
                        scene: str = 'cluttered') -> dict[str, str]:
    """Generate the partial-label shapes set: two training subsets that each label some classes.

    The training images are drawn exactly as :func:`make_shapes` draws them (the same seed gives
    the same images), with all five classes in both halves. The first ``(num_train + 1) // 2``
    images form subset A, which annotates only ``PARTIAL_CLASSES['a']`` (circle, square,
    triangle); the others form subset B, which annotates only ``PARTIAL_CLASSES['b']`` (star,
    cross). The other classes' annotations (crowd regions included) are removed, while the
    objects stay in the images: a detector trained with plain softmax learns them as background.
    The validation set is fully labelled.

    Writes ``out_dir/train/NNNNNN.jpg`` (both subsets, disjoint), ``out_dir/val/NNNNNN.jpg`` and
    in ``out_dir/annotations/``: ``instances_train_a.json`` (categories: A's classes only),
    ``instances_train_b.json`` (B's only), ``instances_val.json`` (all five) and
    ``instances_train_full.json`` (every training image fully labelled: the oracle to compare
    partial-label training with). Image ids are ``index + 1`` within each split, so ids of
    subsets A and B never collide; annotation ids are those of the fully labelled file.

    Args:
        out_dir: the output folder (created; existing files of the same names are overwritten).
        num_train: the number of training images of both subsets together (>= 2).
        num_val: the number of validation images.
        min_size: the smallest image side in pixels (>= 64).
        max_size: the largest image side in pixels (>= ``min_size``).
        seed: the random seed; the same seed gives byte-identical files.
        scene: ``'cluttered'`` (the shapes images) or ``'plain'`` (objects only, none under
            ``PLAIN_MIN_OBJECT_SIZE`` px; see :func:`draw_shapes_image`).

    Returns:
        ``dict(train_a=path, train_b=path, val=path, train_full=path)``: the annotation files.
    """
    _check_arguments('make_shapes_partial', num_train, num_val, min_size, max_size)
    if num_train < 2:
        raise ValueError(f'make_shapes_partial: num_train must be >= 2 (one image per subset), '
                         f'got {num_train}')
    os.makedirs(os.path.join(out_dir, 'annotations'), exist_ok=True)
    ann_dir = os.path.join(out_dir, 'annotations')
    ann_files = {}

    images, annotations = _draw_split(out_dir, 'train', num_train, min_size, max_size, seed,
                                      scene)
    num_a = (num_train + 1) // 2
    subset_images = dict(a=images[:num_a], b=images[num_a:])
    for subset, classes in PARTIAL_CLASSES.items():
        categories = [c for c in SHAPES_CATEGORIES if c['name'] in classes]
        category_ids = {c['id'] for c in categories}
        image_ids = {img['id'] for img in subset_images[subset]}
        kept = [a for a in annotations
                if a['image_id'] in image_ids and a['category_id'] in category_ids]
        ann_files[f'train_{subset}'] = os.path.join(ann_dir, f'instances_train_{subset}.json')
        _write_coco(ann_files[f'train_{subset}'],
                    f'detkit synthetic shapes, partial labels: subset {subset.upper()} '
                    f'(annotates only {", ".join(classes)}), seed {seed}',
                    subset_images[subset], kept, categories)
    ann_files['train_full'] = os.path.join(ann_dir, 'instances_train_full.json')
    _write_coco(ann_files['train_full'], f'detkit synthetic shapes, partial-label set, training '
                f'images fully labelled (oracle), seed {seed}', images, annotations,
                SHAPES_CATEGORIES)

    images, annotations = _draw_split(out_dir, 'val', num_val, min_size, max_size, seed, scene)
    ann_files['val'] = os.path.join(ann_dir, 'instances_val.json')
    _write_coco(ann_files['val'], f'detkit synthetic shapes, partial-label set, val (fully '
                f'labelled), seed {seed}', images, annotations, SHAPES_CATEGORIES)
    return {key: ann_files[key] for key in ('train_a', 'train_b', 'val', 'train_full')}


def _check_arguments(caller: str, num_train: int, num_val: int, min_size: int,
                     max_size: int) -> None:
    """Raise ``ValueError`` for negative image counts or image sides outside 64 <= min <= max."""
    if num_train < 0 or num_val < 0:
        raise ValueError(f'{caller}: num_train and num_val must be >= 0, got {num_train}, '
                         f'{num_val}')
    if min_size < 64 or max_size < min_size:
        raise ValueError(f'{caller}: need 64 <= min_size <= max_size, got min_size='
                         f'{min_size}, max_size={max_size}')


def _draw_split(out_dir: str, split: str, num_images: int, min_size: int, max_size: int,
                seed: int, scene: str = 'cluttered') -> tuple[list[JsonDict], list[JsonDict]]:
    """Draw and write ``out_dir/split/NNNNNN.jpg``; return the COCO images and annotations.

    Image ``index`` is drawn from ``default_rng((seed, _SPLITS[split], index))`` and gets the
    id ``index + 1``; annotation ids count from 1 in the order drawn.
    """
    os.makedirs(os.path.join(out_dir, split), exist_ok=True)
    images: list[JsonDict] = []
    annotations: list[JsonDict] = []
    for index in range(num_images):
        rng = np.random.default_rng((seed, _SPLITS[split], index))
        img, objects = draw_shapes_image(rng, min_size, max_size, scene)
        file_name = f'{index:06d}.jpg'
        ok, encoded = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise RuntimeError(f'make_shapes: OpenCV failed to encode {file_name}')
        encoded.tofile(os.path.join(out_dir, split, file_name))
        image_id = index + 1
        images.append(dict(id=image_id, file_name=file_name, height=int(img.shape[0]),
                           width=int(img.shape[1])))
        for category_id, (x, y, w, h), iscrowd in objects:
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id,
                                    category_id=category_id, bbox=[x, y, w, h], area=w * h,
                                    iscrowd=iscrowd, segmentation=[]))
    return images, annotations


def _write_coco(ann_file: str, description: str, images: list[JsonDict],
                annotations: list[JsonDict],
                categories: tuple[JsonDict, ...] | list[JsonDict]) -> None:
    """Write one COCO detection file (compact JSON)."""
    coco = dict(info=dict(description=description), licenses=[], images=images,
                annotations=annotations, categories=[dict(c) for c in categories])
    with open(ann_file, 'w', encoding='utf-8') as f:
        json.dump(coco, f, separators=(',', ':'))


def summarize_coco(ann_file: str) -> str:
    """A short text summary of a COCO file: images, objects per class, COCO area ranges.

    Args:
        ann_file: a COCO JSON file.

    Returns:
        Lines such as ``images: 300 (landscape 151, portrait 149)``, ``objects per class: ...``
        and ``small/medium/large: ...`` (by box area; crowd regions counted apart).
    """
    with open(ann_file, encoding='utf-8') as f:
        coco = json.load(f)
    names = {c['id']: c['name'] for c in coco['categories']}
    portrait = sum(img['width'] < img['height'] for img in coco['images'])
    per_class: Counter[str] = Counter()
    ranges: Counter[str] = Counter()
    num_crowd = 0
    for ann in coco['annotations']:
        if ann.get('iscrowd', 0):
            num_crowd += 1
            continue
        per_class[names[ann['category_id']]] += 1
        area = ann['bbox'][2] * ann['bbox'][3]
        ranges['small' if area < SMALL_AREA else 'medium' if area < MEDIUM_AREA else 'large'] += 1
    num_objects = sum(per_class.values())
    return '\n'.join([
        f'{ann_file}',
        f"  images: {len(coco['images'])} (landscape {len(coco['images']) - portrait}, "
        f'portrait {portrait})',
        f'  objects: {num_objects}, crowd regions: {num_crowd}',
        '  objects per class: ' + ', '.join(f'{names[c]}={per_class[names[c]]}'
                                             for c in sorted(names)),
        f"  small/medium/large: {ranges['small']}/{ranges['medium']}/{ranges['large']}",
    ])


def draw_shapes_image(rng: np.random.Generator, min_size: int, max_size: int,
                      scene: str = 'cluttered'
                      ) -> tuple[np.ndarray, list[tuple[int, list[int], int]]]:
    """Draw one image of the shapes data set.

    Args:
        rng: the random generator (everything is drawn from it).
        min_size: the smallest image side in pixels.
        max_size: the largest image side in pixels.
        scene: ``'cluttered'``: clutter under and over the objects, crowd regions (8% of the
            images), objects from ``MIN_OBJECT_SIZE`` px; ``'plain'``: the objects alone, from
            ``PLAIN_MIN_OBJECT_SIZE`` px; ``'simple'``: 1 to ``SIMPLE_MAX_OBJECTS`` filled
            objects from ``SIMPLE_MIN_OBJECT_SIZE`` px whose boxes do not overlap, on a smooth
            gradient.

    Returns:
        ``(img, objects)``: ``img`` ``(H, W, 3)`` uint8 BGR and one ``(category_id, [x, y, w,
        h], iscrowd)`` per object, the box in COCO ``xywh`` pixels of its visible part.
    """
    if scene not in SCENES:
        raise ValueError(f'draw_shapes_image: scene must be one of {SCENES}, got {scene!r}')
    cluttered, simple = scene == 'cluttered', scene == 'simple'
    height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    img = _background(rng, height, width, textured=not simple)
    if cluttered:
        _draw_clutter(rng, img, count=int(rng.integers(1, 7)))
    objects = _Scene(img, max_box_iou=SIMPLE_MAX_BOX_IOU if simple else MAX_BOX_IOU)
    if cluttered and rng.random() < CROWD_PROBABILITY:
        category_index = int(rng.integers(len(SHAPES_CATEGORIES)))
        for _ in range(5):
            if objects.place(rng, _crowd_mask(rng, category_index), category_index, iscrowd=1):
                break
    largest = min(MAX_OBJECT_SIZE, 0.85 * min(height, width))
    smallest = (MIN_OBJECT_SIZE if cluttered else SIMPLE_MIN_OBJECT_SIZE if simple
                else PLAIN_MIN_OBJECT_SIZE)
    num_objects = int(rng.integers(1, (SIMPLE_MAX_OBJECTS if simple else MAX_OBJECTS) + 1))
    attempts = 0
    while objects.num_objects(iscrowd=0) < num_objects and attempts < 8 * num_objects:
        attempts += 1
        category_index = int(rng.integers(len(SHAPES_CATEGORIES)))
        size = math.exp(rng.uniform(math.log(smallest), math.log(largest)))
        objects.place(rng, _shape_mask(rng, category_index, size, always_filled=simple),
                      category_index, iscrowd=0)
    if cluttered:
        _draw_clutter(rng, img, count=int(rng.integers(0, 3)), thin_only=True)
    noise = rng.integers(-4, 5, size=img.shape, dtype=np.int16)
    img[:] = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return img, objects.annotations()


class _Scene:
    """The objects placed on one image so far, with a map of which object shows at each pixel."""

    def __init__(self, img: np.ndarray, max_box_iou: float = MAX_BOX_IOU) -> None:
        self.img = img
        self.max_box_iou = max_box_iou  # a new object's box vs. every placed box
        height, width = img.shape[:2]
        self.owner = np.full((height, width), -1, dtype=np.int16)  # index of the top object
        self.windows: list[tuple[int, int, int, int]] = []  # x0, y0, x1, y1 in the image
        self.boxes: list[np.ndarray] = []    # xyxy of the visible pixels when placed
        self.total: list[int] = []           # pixels of the whole object (on and off image)
        self.visible: list[int] = []         # pixels still visible
        self.category_index: list[int] = []
        self.iscrowd: list[int] = []

    def num_objects(self, iscrowd: int) -> int:
        return sum(1 for c in self.iscrowd if c == iscrowd)

    def place(self, rng: np.random.Generator, mask: np.ndarray, category_index: int,
              iscrowd: int) -> bool:
        """Put ``mask`` (an object's pixels) at a random spot if the placement rules allow it.

        Returns:
            Whether the object was placed (and drawn).
        """
        height, width = self.owner.shape
        mask_h, mask_w = mask.shape
        # The centre may lie a little outside the image: border-truncated objects occur.
        cx = int(rng.integers(-mask_w // 5, width + mask_w // 5 + 1))
        cy = int(rng.integers(-mask_h // 5, height + mask_h // 5 + 1))
        x0, y0 = cx - mask_w // 2, cy - mask_h // 2
        ix0, iy0 = max(x0, 0), max(y0, 0)
        ix1, iy1 = min(x0 + mask_w, width), min(y0 + mask_h, height)
        if ix1 <= ix0 or iy1 <= iy0:
            return False
        inside = mask[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] > 0
        total, num_inside = int(np.count_nonzero(mask)), int(np.count_nonzero(inside))
        if num_inside < MIN_VISIBLE_FRACTION * total:
            return False
        rows, cols = np.nonzero(inside.any(axis=1))[0], np.nonzero(inside.any(axis=0))[0]
        box = np.array([ix0 + cols[0], iy0 + rows[0], ix0 + cols[-1] + 1, iy0 + rows[-1] + 1],
                       dtype=np.float64)
        if self.boxes and _box_iou(box, np.stack(self.boxes)).max() >= self.max_box_iou:
            return False
        owner = self.owner[iy0:iy1, ix0:ix1]
        covered = owner[inside]
        lost = np.bincount(covered[covered >= 0], minlength=len(self.total))
        for j, num_lost in enumerate(lost):
            if self.visible[j] - num_lost < MIN_VISIBLE_FRACTION * self.total[j]:
                return False
        region = self.img[iy0:iy1, ix0:ix1]
        region[inside] = _contrasting_colour(rng, region[inside])
        owner[inside] = len(self.total)
        for j, num_lost in enumerate(lost):
            self.visible[j] -= int(num_lost)
        self.windows.append((ix0, iy0, ix1, iy1))
        self.boxes.append(box)
        self.total.append(total)
        self.visible.append(num_inside)
        self.category_index.append(category_index)
        self.iscrowd.append(iscrowd)
        return True

    def annotations(self) -> list[tuple[int, list[int], int]]:
        """``(category_id, [x, y, w, h], iscrowd)`` of each object's visible pixels."""
        out = []
        for k, (x0, y0, x1, y1) in enumerate(self.windows):
            mine = self.owner[y0:y1, x0:x1] == k
            rows, cols = np.nonzero(mine.any(axis=1))[0], np.nonzero(mine.any(axis=0))[0]
            x, y = x0 + int(cols[0]), y0 + int(rows[0])
            w, h = int(cols[-1] - cols[0]) + 1, int(rows[-1] - rows[0]) + 1
            out.append((SHAPES_CATEGORIES[self.category_index[k]]['id'], [x, y, w, h],
                        self.iscrowd[k]))
        return out


def _box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box ``(4,)`` with each of ``boxes`` ``(N, 4)``; returns ``(N,)``."""
    iw = (np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])).clip(0)
    ih = (np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])).clip(0)
    inter = iw * ih
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    iou: np.ndarray = inter / (area + areas - inter)
    return iou


def _shape_outline(category_index: int, radius: float, angle: float,
                   rng: np.random.Generator) -> np.ndarray:
    """The polygon ``(K, 2)`` of a square/triangle/star/cross centred at ``(0, 0)``."""
    name = SHAPES_CATEGORIES[category_index]['name']
    if name == 'square':
        t = angle + np.pi / 4 + np.arange(4) * np.pi / 2
        radii = np.full(4, radius)
    elif name == 'triangle':
        t = angle + np.arange(3) * 2 * np.pi / 3
        radii = np.full(3, radius)
    elif name == 'star':
        t = angle + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, radius, radius * rng.uniform(0.38, 0.5))
    else:  # cross: a plus sign with arms of half-width a
        a = radius * rng.uniform(0.22, 0.34)
        r = radius
        corners = np.array([[a, r], [a, a], [r, a], [r, -a], [a, -a], [a, -r],
                            [-a, -r], [-a, -a], [-r, -a], [-r, a], [-a, a], [-a, r]])
        c, s = math.cos(angle), math.sin(angle)
        rotated: np.ndarray = corners @ np.array([[c, s], [-s, c]])
        return rotated
    return np.stack([radii * np.cos(t), radii * np.sin(t)], axis=1)


def _shape_mask(rng: np.random.Generator, category_index: int, size: float,
                always_filled: bool = False) -> np.ndarray:
    """The pixels ``(S, S)`` uint8 of one shape about ``size`` pixels across, filled or (unless
    ``always_filled``) outlined."""
    radius = size / 2
    filled = always_filled or size < 28 or rng.random() < 0.6
    thickness = 0 if filled else max(2, int(round(size * rng.uniform(0.07, 0.14))))
    half = int(math.ceil(radius + thickness)) + 2
    mask = np.zeros((2 * half + 1, 2 * half + 1), dtype=np.uint8)
    name = SHAPES_CATEGORIES[category_index]['name']
    if name == 'circle':
        cv2.circle(mask, (half, half), int(round(radius)), 255, -1 if filled else thickness)
    else:
        points = _shape_outline(category_index, radius, rng.uniform(0, 2 * np.pi), rng) + half
        points = np.round(points).astype(np.int32).reshape(-1, 1, 2)
        if filled:
            cv2.fillPoly(mask, [points], 255)
        else:
            cv2.polylines(mask, [points], True, 255, thickness)
    return mask


def _crowd_mask(rng: np.random.Generator, category_index: int) -> np.ndarray:
    """A cluster of 5-12 tiny shapes of one class (6-10 px) in a 40-100 px window."""
    side = int(rng.integers(40, 101))
    mask = np.zeros((side, side), dtype=np.uint8)
    for _ in range(int(rng.integers(5, 13))):
        shape = _shape_mask(rng, category_index, rng.uniform(6, 10))
        s = shape.shape[0]
        x, y = (int(v) for v in rng.integers(0, side - s + 1, size=2))
        mask[y:y + s, x:x + s] |= shape
    return mask


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A BGR colour ``(3,)`` that differs clearly (L1 >= 150) from the mean of ``under``."""
    mean = under.reshape(-1, 3).mean(axis=0)
    best: np.ndarray | None = None
    best_distance = -1.0
    for _ in range(8):
        colour = rng.integers(0, 256, size=3)
        distance = float(np.abs(colour - mean).sum())
        if distance >= 150:
            return colour.astype(np.uint8)
        if distance > best_distance:
            best, best_distance = colour, distance
    if best is None or best_distance < 100:
        return np.where(mean > 127, 0, 255).astype(np.uint8)
    return best.astype(np.uint8)


def _background(rng: np.random.Generator, height: int, width: int,
                textured: bool = True) -> np.ndarray:
    """A background ``(H, W, 3)`` uint8: a gradient plus, when ``textured``, stripes, blotches
    or noise."""
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (xs * math.cos(angle) + ys * math.sin(angle))
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    start, end = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    img: np.ndarray = start + ramp[..., None] * (end - start)
    kind = rng.integers(3) if textured else -1
    if kind == 0:  # stripes
        period = rng.uniform(6, 40)
        stripe_angle = rng.uniform(0, np.pi)
        phase = (np.arange(width, dtype=np.float32)[None, :] * math.cos(stripe_angle)
                 + np.arange(height, dtype=np.float32)[:, None] * math.sin(stripe_angle))
        stripes = np.sin(phase * (2 * np.pi / period))
        if rng.random() < 0.5:
            stripes = np.sign(stripes)
        img += stripes[..., None] * rng.uniform(10, 45, size=3).astype(np.float32)
    elif kind == 1:  # low-frequency blotches
        grid = rng.uniform(-50, 50, size=(max(2, height // 48), max(2, width // 48), 3))
        img += cv2.resize(grid.astype(np.float32), (width, height),
                          interpolation=cv2.INTER_CUBIC)
    elif kind == 2:  # grain
        img += rng.integers(-25, 26, size=(height, width, 1)).astype(np.float32)
    clipped: np.ndarray = np.clip(img, 0, 255).astype(np.uint8)
    return clipped


def _draw_clutter(rng: np.random.Generator, img: np.ndarray, count: int,
                  thin_only: bool = False) -> None:
    """Draw ``count`` distractors in place: polylines, elongated ellipses or speckles."""
    height, width = img.shape[:2]
    for _ in range(count):
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        kind = 0 if thin_only else int(rng.integers(3))
        if kind == 0:  # a random-walk polyline
            steps = rng.normal(0, max(width, height) / 10, size=(int(rng.integers(2, 6)), 2))
            start = rng.uniform((0, 0), (width, height))
            points = np.round(start + np.cumsum(steps, axis=0)).astype(np.int32)
            thickness = int(rng.integers(1, 3 if thin_only else 5))
            cv2.polylines(img, [points.reshape(-1, 1, 2)], False, colour, thickness,
                          cv2.LINE_AA)
        elif kind == 1:  # an elongated ellipse (axis ratio >= 3, so never a circle)
            minor = float(rng.uniform(2, 12))
            major = minor * rng.uniform(3, 8)
            centre = tuple(int(v) for v in rng.uniform((0, 0), (width, height)))
            cv2.ellipse(img, centre, (int(major), int(minor)), float(rng.uniform(0, 180)), 0,
                        360, colour, -1, cv2.LINE_AA)
        else:  # speckles
            n = int(rng.integers(10, 60))
            xs = rng.integers(0, width, size=n)
            ys = rng.integers(0, height, size=n)
            for x, y in zip(xs, ys):
                cv2.circle(img, (int(x), int(y)), int(rng.integers(1, 3)), colour, -1)


# ------------------------------------------------------------------------------ face masks
# make_facemask: cartoon faces in the Pascal VOC layout of the Kaggle face-mask set.
FACEMASK_CLASS_PROBABILITIES = (0.4, 0.35, 0.25)  # with_mask, without_mask, mask_weared_incorrect
MIN_FACE_SIZE = 24            # smallest face box height in pixels
MAX_FACE_SIZE = 160           # largest face box height (also <= 0.7 * shorter image side)
MAX_FACES = 6
MAX_FACE_OVERLAP = 0.2        # intersection / smaller box area, between any two face boxes
MIN_FACE_INSIDE = 0.75        # of a face box's area, inside the image
SMALL_FACE_DIFFICULT = (30, 0.25)   # faces shorter than 30 px are "difficult" with p = 0.25
_FACEMASK_STREAM = 7          # keeps the facemask random streams apart from the shapes ones
# (class name, (xmin, ymin, xmax, ymax) VOC 1-based inclusive pixel indices, difficult, truncated)
FaceAnnotation = tuple[str, tuple[int, int, int, int], int, int]

# RGB, light to dark, and hair colours (RGB); drawn in BGR.
_SKIN_TONES_RGB = ((255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66),
                   (141, 85, 36), (92, 58, 40))
_HAIR_RGB = ((20, 18, 18), (60, 40, 25), (110, 70, 35), (200, 160, 90), (150, 150, 150),
             (150, 60, 30))
_MASK_RGB = ((150, 200, 235), (150, 215, 200), (240, 240, 240), (35, 35, 40))


def make_facemask(out_dir: str, num_train: int = 240, num_val: int = 60, min_size: int = 256,
                  max_size: int = 448, seed: int = 0) -> dict[str, str]:
    """Generate the synthetic face-mask set in the Pascal VOC layout of the Kaggle set.

    Cartoon faces (a skin-tone ellipse with eyes, eyebrows, hair, often ears, a neck and
    shoulders) in the three classes of the Kaggle face-mask set, which the detector tells
    apart by what covers the lower face:

    * ``with_mask``: a mask (pleats, ear loops) from just below the eyes to the chin; nose
      and mouth are hidden;
    * ``without_mask``: nose and mouth visible;
    * ``mask_weared_incorrect``: the mask worn low, below the nose tip (the nose and skin
      between eyes and mask visible), or now and then on the chin below the mouth.

    Classes are drawn with probabilities ``FACEMASK_CLASS_PROBABILITIES``; 1-6 faces an
    image, face boxes 24-160 px high (log-uniform, at most 0.7 of the shorter image side),
    boxes overlapping by at most 20 % of the smaller one (larger faces drawn in front), up to a
    quarter of a face cut off by the image border (``<truncated>1``); faces under 30 px are
    ``<difficult>1</difficult>`` with probability 0.25. Backgrounds and clutter are those of
    :func:`make_shapes`.

    A face's box covers the face ellipse and the hair on top of it (not ears, long hair or the
    mask's ear loops): the continuous box ``[x1, x2) x [y1, y2)`` is written as the VOC pixel
    indices ``xmin = floor(x1) + 1``, ``xmax = ceil(x2)`` (1-based, inclusive; see
    :mod:`detkit.datasets.voc`), clipped to the image.

    Writes ``out_dir/images/{train,val}NNNNN.png``, ``out_dir/annotations/<stem>.xml`` and the
    split files ``out_dir/train.txt`` and ``out_dir/val.txt`` (one stem per line); read it with
    ``FaceMaskDataset(ann_file='train.txt', data_root=out_dir)``. Image ``index`` of a split is
    drawn from ``default_rng((seed, 7, split, index))``: the same seed gives the same bytes, and
    an image does not depend on how many others are generated.

    Args:
        out_dir: the output folder (created; existing files of the same names are overwritten).
        num_train: the number of training images.
        num_val: the number of validation images.
        min_size: the smallest image side in pixels (>= 64).
        max_size: the largest image side in pixels (>= ``min_size``).
        seed: the random seed.

    Returns:
        ``dict(train=path, val=path)``: the two split files.
    """
    _check_arguments('make_facemask', num_train, num_val, min_size, max_size)
    for folder in ('images', 'annotations'):
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    split_files = {}
    for split, num_images in (('train', num_train), ('val', num_val)):
        stems = []
        for index in range(num_images):
            rng = np.random.default_rng((seed, _FACEMASK_STREAM, _SPLITS[split], index))
            img, faces = draw_facemask_image(rng, min_size, max_size)
            stem = f'{split}{index:05d}'
            ok, encoded = cv2.imencode('.png', img)
            if not ok:
                raise RuntimeError(f'make_facemask: OpenCV failed to encode {stem}.png')
            encoded.tofile(os.path.join(out_dir, 'images', f'{stem}.png'))
            with open(os.path.join(out_dir, 'annotations', f'{stem}.xml'), 'w',
                      encoding='utf-8') as f:
                f.write(_voc_xml(f'{stem}.png', img.shape, faces))
            stems.append(stem)
        split_files[split] = os.path.join(out_dir, f'{split}.txt')
        with open(split_files[split], 'w', encoding='utf-8') as f:
            f.write(''.join(f'{stem}\n' for stem in stems))
    return split_files


def draw_facemask_image(rng: np.random.Generator, min_size: int,
                        max_size: int) -> tuple[np.ndarray, list[FaceAnnotation]]:
    """Draw one image of the synthetic face-mask set (see :func:`make_facemask`).

    Args:
        rng: the random generator (everything is drawn from it).
        min_size: the smallest image side in pixels.
        max_size: the largest image side in pixels.

    Returns:
        ``(img, faces)``: ``img`` ``(H, W, 3)`` uint8 BGR and one ``(class name, (xmin, ymin,
        xmax, ymax), difficult, truncated)`` per face, the box in VOC's 1-based inclusive pixel
        indices.
    """
    height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    img = _background(rng, height, width)
    _draw_clutter(rng, img, count=int(rng.integers(1, 5)))
    largest = min(MAX_FACE_SIZE, 0.7 * min(height, width))
    num_faces = int(rng.integers(1, MAX_FACES + 1))
    faces: list[_Face] = []
    attempts = 0
    while len(faces) < num_faces and attempts < 10 * num_faces:
        attempts += 1
        face = _Face.sample(rng, height, width, largest)
        if face is not None and not any(face.collides(f) for f in faces):
            faces.append(face)
    faces.sort(key=lambda f: f.box_height)  # larger (nearer) people are drawn in front
    for face in faces:
        face.draw_body(img)
        face.draw_head(img)
    noise = rng.integers(-3, 4, size=img.shape, dtype=np.int16)
    img[:] = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)

    annotations = []
    for face in faces:
        x1, y1, x2, y2 = face.box
        xmin, ymin = max(int(math.floor(x1)) + 1, 1), max(int(math.floor(y1)) + 1, 1)
        xmax, ymax = min(int(math.ceil(x2)), width), min(int(math.ceil(y2)), height)
        truncated = int(x1 < 0 or y1 < 0 or x2 > width or y2 > height)
        annotations.append((FACEMASK_CLASSES[face.class_index], (xmin, ymin, xmax, ymax),
                            face.difficult, truncated))
    return img, annotations


class _Face:
    """One cartoon person: the face's geometry, colours and class; body, then head."""

    def __init__(self, rng: np.random.Generator, cx: float, cy: float, a: float, b: float,
                 class_index: int, difficult: int) -> None:
        self.cx, self.cy, self.a, self.b = cx, cy, a, b  # face ellipse centre and semi-axes
        self.class_index, self.difficult = class_index, difficult
        self.skin = _jitter(rng, _SKIN_TONES_RGB[int(rng.integers(len(_SKIN_TONES_RGB)))], 12)
        self.hair = _jitter(rng, _HAIR_RGB[int(rng.integers(len(_HAIR_RGB)))], 10)
        self.clothes = rng.integers(0, 256, size=3).astype(np.float64)
        self.hair_style = ('bald', 'short', 'long')[int(rng.choice(3, p=(0.1, 0.6, 0.3)))]
        self.has_ears = self.hair_style != 'long' and rng.random() < 0.8
        self.look = float(rng.uniform(-0.12, 0.12)) * a  # features shifted sideways
        self.hair_top = 0.0 if self.hair_style == 'bald' else float(rng.uniform(0.1, 0.2)) * b
        self.mouth_open = rng.random() < 0.3
        self.mask_colour = self._mask_colour(rng)
        if class_index == 0:      # with_mask: from just below the eyes to the chin
            self.mask_span: tuple[float, float] | None = (float(rng.uniform(-0.14, -0.06)),
                                                          float(rng.uniform(0.85, 1.0)))
        elif class_index == 2:    # worn low: below the nose tip, or on the chin
            top = rng.uniform(0.62, 0.7) if rng.random() < 0.25 else rng.uniform(0.28, 0.36)
            self.mask_span = (float(top), float(rng.uniform(0.95, 1.05)))
        else:
            self.mask_span = None

    @classmethod
    def sample(cls, rng: np.random.Generator, height: int, width: int,
               largest: float) -> '_Face | None':
        """A random face with its box mostly inside the image, or None if it falls outside."""
        class_index = int(rng.choice(3, p=FACEMASK_CLASS_PROBABILITIES))
        box_height = math.exp(rng.uniform(math.log(MIN_FACE_SIZE), math.log(largest)))
        b = box_height / 2.15          # the hair on top adds up to 0.2 b (see hair_top)
        a = b / rng.uniform(1.15, 1.32)
        cx = float(rng.uniform(-0.3 * a, width + 0.3 * a))
        cy = float(rng.uniform(-0.3 * b, height + 0.3 * b))
        small, p_difficult = SMALL_FACE_DIFFICULT
        difficult = int(box_height < small and rng.random() < p_difficult)
        face = cls(rng, cx, cy, a, b, class_index, difficult)
        x1, y1, x2, y2 = face.box
        inside = ((min(x2, width) - max(x1, 0)) * (min(y2, height) - max(y1, 0))
                  if x2 > 0 and y2 > 0 and x1 < width and y1 < height else 0.0)
        return face if inside >= MIN_FACE_INSIDE * (x2 - x1) * (y2 - y1) else None

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The continuous face box ``(x1, y1, x2, y2)``: the face ellipse and the hair on top."""
        return (self.cx - self.a, self.cy - self.b - self.hair_top, self.cx + self.a,
                self.cy + self.b)

    @property
    def box_height(self) -> float:
        return self.b * 2 + self.hair_top

    @property
    def body_box(self) -> tuple[float, float, float, float]:
        """The continuous box of the shoulders (the ellipse of :meth:`draw_body`)."""
        return (self.cx - 1.9 * self.a, self.cy + self.b, self.cx + 1.9 * self.a,
                self.cy + 3.2 * self.b)

    def collides(self, other: '_Face') -> bool:
        """Whether the two faces overlap too much to be drawn together.

        Face boxes may overlap by ``MAX_FACE_OVERLAP`` of the smaller one, and the nearer
        (larger) person's shoulders, drawn in front, may cover as much of the other's face.
        """
        if _overlap_of_smaller(self.box, other.box) > MAX_FACE_OVERLAP:
            return True
        far, near = sorted((self, other), key=lambda f: f.box_height)
        return _overlap_of_first(far.box, near.body_box) > MAX_FACE_OVERLAP

    def _mask_colour(self, rng: np.random.Generator) -> np.ndarray:
        """A mask colour (RGB) that stands out from the skin (L1 distance >= 150)."""
        for _ in range(6):
            if rng.random() < 0.7:
                colour = _jitter(rng, _MASK_RGB[int(rng.integers(len(_MASK_RGB)))], 8)
            else:
                colour = rng.integers(0, 256, size=3).astype(np.float64)
            if np.abs(colour - self.skin).sum() >= 150:
                return colour
        return np.array([240.0, 240, 240]) if self.skin.mean() < 140 else np.array([35.0, 35, 40])

    def _point(self, dx: float, dy: float) -> tuple[int, int]:
        """Image pixel of ``(cx + dx * a + look, cy + dy * b)``."""
        return (int(round(self.cx + dx * self.a + self.look)),
                int(round(self.cy + dy * self.b)))

    def _axes(self, ax: float, by: float) -> tuple[int, int]:
        return max(1, int(round(ax * self.a))), max(1, int(round(by * self.b)))

    def draw_body(self, img: np.ndarray) -> None:
        """Shoulders and neck below the face (drawn before its head)."""
        centre = (int(round(self.cx)), int(round(self.cy + 2.1 * self.b)))
        cv2.ellipse(img, centre, self._axes(1.9, 1.1), 0, 0, 360, _bgr(self.clothes), -1,
                    cv2.LINE_AA)
        x0, x1 = int(round(self.cx - 0.38 * self.a)), int(round(self.cx + 0.38 * self.a))
        y0, y1 = int(round(self.cy + 0.5 * self.b)), int(round(self.cy + 1.25 * self.b))
        cv2.rectangle(img, (x0, y0), (x1, y1), _bgr(self.skin * 0.85), -1)

    def draw_head(self, img: np.ndarray) -> None:
        """Hair, ears, face, eyes, eyebrows, nose, mouth and the mask, in that order."""
        cx, cy, a, b = self.cx, self.cy, self.a, self.b
        centre = (int(round(cx)), int(round(cy)))
        thin = max(1, int(round(0.06 * a)))
        if self.hair_style == 'long':
            cv2.ellipse(img, (centre[0], int(round(cy + 0.1 * b))), self._axes(1.18, 1.2), 0, 0,
                        360, _bgr(self.hair), -1, cv2.LINE_AA)
        if self.has_ears:
            for side in (-1, 1):
                ear = (int(round(cx + side * a)), int(round(cy - 0.05 * b)))
                cv2.ellipse(img, ear, self._axes(0.17, 0.22), 0, 0, 360,
                            _bgr(self.skin * 0.9), -1, cv2.LINE_AA)
        cv2.ellipse(img, centre, self._axes(1.0, 1.0), 0, 0, 360, _bgr(self.skin), -1,
                    cv2.LINE_AA)
        if self.hair_style != 'bald':  # a cap over the top of the head, hairline above the eyes
            cap_axes = (max(1, int(round(1.02 * a))),
                        max(1, int(round(0.55 * b + self.hair_top))))
            cv2.ellipse(img, (centre[0], int(round(cy - 0.45 * b))), cap_axes, 0, 180, 360,
                        _bgr(self.hair), -1, cv2.LINE_AA)
        for side in (-1, 1):  # eyes and eyebrows
            eye = self._point(side * 0.36, -0.22)
            if a >= 8:
                cv2.ellipse(img, eye, self._axes(0.17, 0.1), 0, 0, 360, (250, 250, 250), -1,
                            cv2.LINE_AA)
            cv2.circle(img, eye, max(1, int(round(0.08 * a))), (30, 25, 20), -1, cv2.LINE_AA)
            brow = self._point(side * 0.36, -0.38)
            half = int(round(0.16 * a))
            cv2.line(img, (brow[0] - half, brow[1]), (brow[0] + half, brow[1]),
                     _bgr(self.hair * 0.8), thin, cv2.LINE_AA)
        nose = np.array([self._point(0, -0.1), self._point(-0.15, 0.2), self._point(0.15, 0.2)],
                        dtype=np.int32)
        cv2.fillPoly(img, [nose.reshape(-1, 1, 2)], _bgr(self.skin * 0.65), cv2.LINE_AA)
        for side in (-1, 1):
            cv2.circle(img, self._point(side * 0.07, 0.19), max(1, int(round(0.04 * a))),
                       _bgr(self.skin * 0.35), -1)
        mouth = self._point(0, 0.5)
        lips = (60, 40, 170)  # BGR dark red
        if self.mouth_open:
            cv2.ellipse(img, mouth, self._axes(0.26, 0.12), 0, 0, 360, lips, -1, cv2.LINE_AA)
        else:
            cv2.ellipse(img, (mouth[0], mouth[1] - int(round(0.08 * b))), self._axes(0.3, 0.14),
                        0, 20, 160, lips, max(1, int(round(0.08 * a))), cv2.LINE_AA)
        if self.mask_span is not None:
            self._draw_mask(img, self.mask_span)

    def _draw_mask(self, img: np.ndarray, span: tuple[float, float]) -> None:
        """The mask: the face ellipse (slightly widened) between ``span`` (in units of b)."""
        cx, cy, a, b = self.cx, self.cy, self.a, self.b
        height, width = img.shape[:2]
        top, bottom = (cy + s * b for s in span)
        x0, x1 = max(int(math.floor(cx - 1.05 * a)), 0), min(int(math.ceil(cx + 1.05 * a)) + 1,
                                                            width)
        y0, y1 = max(int(math.floor(top)), 0), min(int(math.ceil(bottom)) + 1, height)
        if x1 <= x0 or y1 <= y0:
            return
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5
        inside = (((xs - cx) / (1.05 * a)) ** 2 + ((ys - cy) / (1.03 * b)) ** 2 <= 1) & \
            (ys >= top) & (ys <= bottom)
        region = img[y0:y1, x0:x1]
        region[inside] = _bgr(self.mask_colour)
        pleat = np.zeros(inside.shape, dtype=bool)  # darker horizontal pleats
        for k in (1, 2, 3):
            row = top + (bottom - top) * k / 4.5 - y0
            thickness = max(0.6, 0.03 * b)
            pleat |= np.abs(ys - y0 - 0.5 - row) < thickness
        region[inside & pleat] = _bgr(self.mask_colour * 0.75)
        loop_y = int(round(top + 0.12 * b))
        for side in (-1, 1):  # ear loops from the mask's upper corners to the ears
            start = (int(round(cx + side * 0.95 * a)), loop_y)
            end = (int(round(cx + side * 1.0 * a)), int(round(cy - 0.15 * b)))
            cv2.line(img, start, end, _bgr(self.mask_colour * 0.85),
                     max(1, int(round(0.04 * a))), cv2.LINE_AA)


def _overlap_of_smaller(box: tuple[float, ...], other: tuple[float, ...]) -> float:
    """Intersection area of two xyxy boxes divided by the smaller box's area."""
    iw = min(box[2], other[2]) - max(box[0], other[0])
    ih = min(box[3], other[3]) - max(box[1], other[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((box[2] - box[0]) * (box[3] - box[1]),
                  (other[2] - other[0]) * (other[3] - other[1]))
    return iw * ih / smaller


def _overlap_of_first(box: tuple[float, ...], other: tuple[float, ...]) -> float:
    """Intersection area of two xyxy boxes divided by the first box's area."""
    iw = min(box[2], other[2]) - max(box[0], other[0])
    ih = min(box[3], other[3]) - max(box[1], other[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / ((box[2] - box[0]) * (box[3] - box[1]))


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int) -> np.ndarray:
    """``rgb`` plus uniform noise in ``[-amount, amount]`` per channel, as float64 ``(3,)``."""
    return np.clip(np.asarray(rgb, dtype=np.float64) + rng.uniform(-amount, amount, size=3),
                   0, 255)


def _bgr(rgb: np.ndarray) -> tuple[int, int, int]:
    """An RGB float colour -> a BGR int tuple for OpenCV."""
    r, g, b = (int(round(float(v))) for v in np.clip(rgb, 0, 255))
    return b, g, r


def _voc_xml(filename: str, shape: tuple[int, ...], faces: list[FaceAnnotation]) -> str:
    """The Pascal VOC XML of one image, laid out as the Kaggle face-mask files are."""
    height, width = shape[:2]
    lines = ['<annotation>', '    <folder>images</folder>', f'    <filename>{filename}</filename>',
             '    <size>', f'        <width>{width}</width>', f'        <height>{height}</height>',
             '        <depth>3</depth>', '    </size>', '    <segmented>0</segmented>']
    for name, (xmin, ymin, xmax, ymax), difficult, truncated in faces:
        lines += ['    <object>', f'        <name>{name}</name>',
                  '        <pose>Unspecified</pose>',
                  f'        <truncated>{truncated}</truncated>', '        <occluded>0</occluded>',
                  f'        <difficult>{difficult}</difficult>', '        <bndbox>',
                  f'            <xmin>{xmin}</xmin>', f'            <ymin>{ymin}</ymin>',
                  f'            <xmax>{xmax}</xmax>', f'            <ymax>{ymax}</ymax>',
                  '        </bndbox>', '    </object>']
    return '\n'.join(lines + ['</annotation>']) + '\n'


def summarize_voc(data_root: str, split_file: str) -> str:
    """A short text summary of one split of a face-mask VOC set: images, faces, sizes.

    Args:
        data_root: the folder with ``annotations/``, ``images/`` and the split file.
        split_file: the split file, relative to ``data_root`` (e.g. ``'train.txt'``).

    Returns:
        Lines such as ``images: 240``, ``faces per class: with_mask=..., ...`` (difficult ones
        counted apart) and ``face height: min/median/max``.
    """
    dataset = FaceMaskDataset(ann_file=split_file, data_root=data_root, test_mode=True,
                              serialize_data=False)
    classes = dataset.metainfo['classes']
    per_class: Counter[str] = Counter()
    heights = []
    num_difficult = 0
    for index in range(len(dataset)):
        for instance in dataset.get_data_info(index)['instances']:
            if instance['ignore_flag']:
                num_difficult += 1
                continue
            per_class[classes[instance['bbox_label']]] += 1
            heights.append(instance['bbox'][3] - instance['bbox'][1])
    heights_text = (f'{min(heights):.0f}/{float(np.median(heights)):.0f}/{max(heights):.0f} px'
                    if heights else '-')
    return '\n'.join([
        os.path.join(data_root, split_file),
        f'  images: {len(dataset)}',
        f'  faces: {sum(per_class.values())}, difficult (ignored): {num_difficult}',
        '  faces per class: ' + ', '.join(f'{c}={per_class[c]}' for c in classes),
        f'  face height min/median/max: {heights_text}',
    ])
