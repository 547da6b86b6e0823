"""Synthetic detection data sets written in COCO format, for tests and quick experiments.

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
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter

import cv2
import numpy as np

SHAPES_CATEGORIES = (
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
SMALL_AREA, MEDIUM_AREA = 32 ** 2, 96 ** 2   # COCO's area ranges
_SPLITS = {'train': 0, 'val': 1}


def make_shapes(out_dir: str, num_train: int = 300, num_val: int = 60, min_size: int = 256,
                max_size: int = 512, seed: int = 0) -> dict[str, str]:
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

    Returns:
        ``dict(train=path, val=path)``: the two annotation files.
    """
    _check_arguments('make_shapes', num_train, num_val, min_size, max_size)
    os.makedirs(os.path.join(out_dir, 'annotations'), exist_ok=True)
    ann_files = {}
    for split, num_images in (('train', num_train), ('val', num_val)):
        images, annotations = _draw_split(out_dir, split, num_images, min_size, max_size, seed)
        ann_files[split] = os.path.join(out_dir, 'annotations', f'instances_{split}.json')
        _write_coco(ann_files[split], f'detkit synthetic shapes ({split}), seed {seed}', images,
                    annotations, SHAPES_CATEGORIES)
    return ann_files


def make_shapes_partial(out_dir: str, num_train: int = 600, num_val: int = 100,
                        min_size: int = 256, max_size: int = 512,
                        seed: int = 0) -> dict[str, str]:
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

    images, annotations = _draw_split(out_dir, 'train', num_train, min_size, max_size, seed)
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

    images, annotations = _draw_split(out_dir, 'val', num_val, min_size, max_size, seed)
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
                seed: int) -> tuple[list[dict], list[dict]]:
    """Draw and write ``out_dir/split/NNNNNN.jpg``; return the COCO images and annotations.

    Image ``index`` is drawn from ``default_rng((seed, _SPLITS[split], index))`` and gets the
    id ``index + 1``; annotation ids count from 1 in the order drawn.
    """
    os.makedirs(os.path.join(out_dir, split), exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        rng = np.random.default_rng((seed, _SPLITS[split], index))
        img, objects = draw_shapes_image(rng, min_size, max_size)
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


def _write_coco(ann_file: str, description: str, images: list[dict], annotations: list[dict],
                categories: tuple[dict, ...] | list[dict]) -> None:
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


def draw_shapes_image(rng: np.random.Generator, min_size: int,
                      max_size: int) -> tuple[np.ndarray, list[tuple[int, list[int], int]]]:
    """Draw one image of the shapes data set.

    Args:
        rng: the random generator (everything is drawn from it).
        min_size: the smallest image side in pixels.
        max_size: the largest image side in pixels.

    Returns:
        ``(img, objects)``: ``img`` ``(H, W, 3)`` uint8 BGR and one ``(category_id, [x, y, w,
        h], iscrowd)`` per object, the box in COCO ``xywh`` pixels of its visible part.
    """
    height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    img = _background(rng, height, width)
    _draw_clutter(rng, img, count=int(rng.integers(1, 7)))
    scene = _Scene(img)
    if rng.random() < CROWD_PROBABILITY:
        category_index = int(rng.integers(len(SHAPES_CATEGORIES)))
        for _ in range(5):
            if scene.place(rng, _crowd_mask(rng, category_index), category_index, iscrowd=1):
                break
    largest = min(MAX_OBJECT_SIZE, 0.85 * min(height, width))
    num_objects = int(rng.integers(1, MAX_OBJECTS + 1))
    attempts = 0
    while scene.num_objects(iscrowd=0) < num_objects and attempts < 8 * num_objects:
        attempts += 1
        category_index = int(rng.integers(len(SHAPES_CATEGORIES)))
        size = math.exp(rng.uniform(math.log(MIN_OBJECT_SIZE), math.log(largest)))
        scene.place(rng, _shape_mask(rng, category_index, size), category_index, iscrowd=0)
    _draw_clutter(rng, img, count=int(rng.integers(0, 3)), thin_only=True)
    noise = rng.integers(-4, 5, size=img.shape, dtype=np.int16)
    img[:] = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return img, scene.annotations()


class _Scene:
    """The objects placed on one image so far, with a map of which object shows at each pixel."""

    def __init__(self, img: np.ndarray) -> None:
        self.img = img
        self.owner = np.full(img.shape[:2], -1, dtype=np.int16)  # index of the top object
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
        if self.boxes and _box_iou(box, np.stack(self.boxes)).max() >= MAX_BOX_IOU:
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
    return inter / (area + areas - inter)


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
        return corners @ np.array([[c, s], [-s, c]])
    return np.stack([radii * np.cos(t), radii * np.sin(t)], axis=1)


def _shape_mask(rng: np.random.Generator, category_index: int, size: float) -> np.ndarray:
    """The pixels ``(S, S)`` uint8 of one shape about ``size`` pixels across, filled or outlined."""
    radius = size / 2
    filled = size < 28 or rng.random() < 0.6
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
    best, best_distance = None, -1.0
    for _ in range(8):
        colour = rng.integers(0, 256, size=3)
        distance = float(np.abs(colour - mean).sum())
        if distance >= 150:
            return colour.astype(np.uint8)
        if distance > best_distance:
            best, best_distance = colour, distance
    return np.where(mean > 127, 0, 255).astype(np.uint8) if best_distance < 100 else \
        best.astype(np.uint8)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured background ``(H, W, 3)`` uint8: a gradient plus stripes, blotches or noise."""
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (xs * math.cos(angle) + ys * math.sin(angle))
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    start, end = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    img = start + ramp[..., None] * (end - start)
    kind = rng.integers(3)
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
    else:  # grain
        img += rng.integers(-25, 26, size=(height, width, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


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
