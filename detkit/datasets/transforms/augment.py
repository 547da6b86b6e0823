"""Training augmentation: random resize, expand, IoU-constrained crop, photometric distortion.

Each transform reads and writes the pipeline's results dict (``img`` ``(H, W, 3)`` uint8 BGR,
``gt_bboxes`` / ``gt_ignore_bboxes`` ``(N, 4)`` float32 xyxy pixels, ``gt_labels``) and keeps
the boxes exact: a geometric change is applied to the box coordinates in float, and a box is
only removed where the transform's own rule says so (named in its docstring). Draws use
numpy's global random state, which mmengine seeds per worker. The semantics follow
mmdetection 3.x's transforms of the same names.
"""
from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

from detkit.datasets.transforms.geometric import BOX_KEYS, Resize
from detkit.registry import TRANSFORMS


@TRANSFORMS.register_module()
class RandomResize:
    """Resize to a scale drawn between two scales, keeping the aspect ratio (multi-scale
    training).

    The long-edge limit is drawn uniformly (an integer) between the two scales' long edges and
    the short-edge limit between their short edges; then :class:`Resize` with that scale.

    Args:
        scale: two scales ``(long, short)`` (either order inside each), e.g.
            ``[(1333, 640), (1333, 800)]``.
        interpolation: see :class:`Resize`.
    """

    def __init__(self, scale: Sequence[tuple[int, int]],
                 interpolation: str = 'bilinear') -> None:
        if (len(scale) != 2 or not all(len(s) == 2 and all(isinstance(v, int) and v > 0
                                                           for v in s) for s in scale)):
            raise ValueError(f'RandomResize: scale must be two (long, short) pairs of positive '
                             f'ints, got {scale!r}')
        longs = sorted(max(s) for s in scale)
        shorts = sorted(min(s) for s in scale)
        self.long_range, self.short_range = (longs[0], longs[1]), (shorts[0], shorts[1])
        self.interpolation = interpolation
        Resize(scale=(longs[0], shorts[0]), interpolation=interpolation)   # checks the name

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        long_edge = int(np.random.randint(self.long_range[0], self.long_range[1] + 1))
        short_edge = int(np.random.randint(self.short_range[0], self.short_range[1] + 1))
        results['scale'] = (long_edge, short_edge)
        return Resize(scale=(long_edge, short_edge), interpolation=self.interpolation)(results)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(long={self.long_range}, short={self.short_range}, '
                f'interpolation={self.interpolation!r})')


@TRANSFORMS.register_module()
class Expand:
    """Place the image on a larger canvas of the mean colour (zoom out, for small objects).

    With probability ``prob``, a ratio ``r`` is drawn from ``ratio_range``; the canvas is
    ``r`` times the image in each side, the image goes to a random ``(left, top)`` in it, and
    every box moves by ``(left, top)``. No box is removed.

    Args:
        mean: the canvas colour, in the image's channel order (BGR for cv2-decoded images).
        ratio_range: ``(min, max)`` canvas/image ratio, ``1 <= min <= max``.
        prob: the probability of expanding.
    """

    def __init__(self, mean: Sequence[float] = (103.53, 116.28, 123.675),
                 ratio_range: tuple[float, float] = (1.0, 4.0), prob: float = 0.5) -> None:
        if len(mean) != 3:
            raise ValueError(f'Expand: mean needs 3 values, got {list(mean)}')
        if not 1.0 <= ratio_range[0] <= ratio_range[1]:
            raise ValueError(f'Expand: ratio_range must be (min, max) with 1 <= min <= max, got '
                             f'{ratio_range!r}')
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f'Expand: prob must be in [0, 1], got {prob!r}')
        self.mean, self.ratio_range, self.prob = tuple(float(m) for m in mean), ratio_range, prob

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        if np.random.random() >= self.prob:
            return results
        img = results['img']
        height, width = img.shape[:2]
        ratio = np.random.uniform(*self.ratio_range)
        canvas_h, canvas_w = int(height * ratio), int(width * ratio)
        left = int(np.random.uniform(0, canvas_w - width))
        top = int(np.random.uniform(0, canvas_h - height))
        canvas = np.empty((canvas_h, canvas_w, img.shape[2]), dtype=img.dtype)
        canvas[:] = np.asarray(self.mean).round().clip(0, 255).astype(img.dtype)
        canvas[top:top + height, left:left + width] = img
        results['img'] = canvas
        results['img_shape'] = (canvas_h, canvas_w)
        shift = np.array([left, top, left, top], dtype=np.float32)
        for key in BOX_KEYS:
            if key in results:
                results[key] = (results[key] + shift).astype(np.float32)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(mean={self.mean}, ratio_range={self.ratio_range}, '
                f'prob={self.prob})')


def box_iou(patch: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy ``patch`` with each of ``boxes`` ``(N, 4)``."""
    x1 = np.maximum(patch[0], boxes[:, 0])
    y1 = np.maximum(patch[1], boxes[:, 1])
    x2 = np.minimum(patch[2], boxes[:, 2])
    y2 = np.minimum(patch[3], boxes[:, 3])
    inter = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    area_patch = (patch[2] - patch[0]) * (patch[3] - patch[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    iou: np.ndarray = inter / np.maximum(area_patch + areas - inter, 1e-6)
    return iou


@TRANSFORMS.register_module()
class MinIoURandomCrop:
    """Crop a random patch whose IoU with every box is at least a drawn threshold (SSD).

    1. Draw a mode from ``(1, *min_ious)``; mode 1 keeps the image as it is.
    2. Up to 50 times: draw a patch ``w`` in ``[min_crop_size * W, W]``, ``h`` likewise, with
       ``0.5 <= h / w <= 2``, at a random place; reject it if any box's IoU with it is below the
       mode, or if no box's centre lies inside it.
    3. Keep the boxes whose centre lies inside the patch (the rule that removes boxes: the
       others are cut away with the image), clipped to the patch and shifted to its frame; the
       labels follow. Ignore regions are kept the same way.
    After 50 rejected patches a new mode is drawn (mmdetection loops likewise). An image with no
    box is cropped under the IoU-free mode rules (any patch).

    Args:
        min_ious: the IoU thresholds to draw from.
        min_crop_size: the smallest patch side as a fraction of the image side.
    """

    def __init__(self, min_ious: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
                 min_crop_size: float = 0.3) -> None:
        if not all(0.0 <= v <= 1.0 for v in min_ious):
            raise ValueError(f'MinIoURandomCrop: min_ious must lie in [0, 1], got {min_ious!r}')
        if not 0.0 < min_crop_size <= 1.0:
            raise ValueError(f'MinIoURandomCrop: min_crop_size must be in (0, 1], got '
                             f'{min_crop_size!r}')
        self.min_ious, self.min_crop_size = tuple(min_ious), min_crop_size

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        img = results['img']
        height, width = img.shape[:2]
        boxes = results.get('gt_bboxes', np.zeros((0, 4), np.float32))
        modes = (1.0, *self.min_ious)
        for _ in range(100):   # modes; each gets 50 patches
            mode = modes[np.random.randint(len(modes))]
            if mode == 1.0:
                return results
            for _ in range(50):
                new_w = np.random.uniform(self.min_crop_size * width, width)
                new_h = np.random.uniform(self.min_crop_size * height, height)
                if not 0.5 <= new_h / new_w <= 2:
                    continue
                left = np.random.uniform(width - new_w)
                top = np.random.uniform(height - new_h)
                patch = np.array([int(left), int(top), int(left + new_w), int(top + new_h)])
                if patch[2] <= patch[0] or patch[3] <= patch[1]:
                    continue
                if len(boxes):
                    if box_iou(patch, boxes).min() < mode:
                        continue
                    if not self._centres_inside(boxes, patch).any():
                        continue
                return self._crop(results, patch)
        return results

    @staticmethod
    def _centres_inside(boxes: np.ndarray, patch: np.ndarray) -> np.ndarray:
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        inside: np.ndarray = (cx > patch[0]) & (cy > patch[1]) & (cx < patch[2]) & (cy < patch[3])
        return inside

    def _crop(self, results: dict[str, Any], patch: np.ndarray) -> dict[str, Any]:
        x1, y1, x2, y2 = (int(v) for v in patch)
        results['img'] = np.ascontiguousarray(results['img'][y1:y2, x1:x2])
        results['img_shape'] = (y2 - y1, x2 - x1)
        for key in BOX_KEYS:
            if key not in results:
                continue
            boxes = results[key]
            inside = self._centres_inside(boxes, patch)
            kept = boxes[inside].copy()
            kept[:, 0::2] = kept[:, 0::2].clip(x1, x2) - x1
            kept[:, 1::2] = kept[:, 1::2].clip(y1, y2) - y1
            results[key] = kept.astype(np.float32)
            if key == 'gt_bboxes' and 'gt_labels' in results:
                results['gt_labels'] = results['gt_labels'][inside]
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(min_ious={self.min_ious}, '
                f'min_crop_size={self.min_crop_size})')


@TRANSFORMS.register_module()
class PhotoMetricDistortion:
    """Random brightness, contrast, saturation and hue, each with probability 1/2; boxes stay.

    In order: brightness (add a value in ``[-brightness_delta, brightness_delta]``), contrast
    first or last (at random; multiply by a value in ``contrast_range``), then in HSV
    saturation (multiply S by a value in ``saturation_range``) and hue (add a value in
    ``[-hue_delta, hue_delta]`` to H, in OpenCV's 0-180 degrees/2 units), the result clipped to
    0-255 and returned as uint8 BGR.

    Args:
        brightness_delta: the largest brightness change (pixel values).
        contrast_range: ``(low, high)`` contrast factors.
        saturation_range: ``(low, high)`` saturation factors.
        hue_delta: the largest hue shift (OpenCV hue units, 0-180).
    """

    def __init__(self, brightness_delta: int = 32,
                 contrast_range: tuple[float, float] = (0.5, 1.5),
                 saturation_range: tuple[float, float] = (0.5, 1.5),
                 hue_delta: int = 18) -> None:
        for name, (low, high) in (('contrast_range', contrast_range),
                                  ('saturation_range', saturation_range)):
            if not 0 <= low <= high:
                raise ValueError(f'PhotoMetricDistortion: {name} must be (low, high) with '
                                 f'0 <= low <= high, got {(low, high)!r}')
        if brightness_delta < 0 or not 0 <= hue_delta <= 180:
            raise ValueError(f'PhotoMetricDistortion: need brightness_delta >= 0 and hue_delta '
                             f'in [0, 180], got {brightness_delta!r} and {hue_delta!r}')
        self.brightness_delta = brightness_delta
        self.contrast_range, self.saturation_range = contrast_range, saturation_range
        self.hue_delta = hue_delta

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        img = results['img'].astype(np.float32)
        if np.random.randint(2):
            img += np.random.uniform(-self.brightness_delta, self.brightness_delta)
        contrast_first = bool(np.random.randint(2))
        if contrast_first and np.random.randint(2):
            img *= np.random.uniform(*self.contrast_range)
        saturate, shift_hue = np.random.randint(2), np.random.randint(2)
        if saturate or shift_hue:
            hsv = cv2.cvtColor(img.clip(0, 255).astype(np.uint8), cv2.COLOR_BGR2HSV)
            hsv = hsv.astype(np.float32)
            if saturate:
                hsv[..., 1] *= np.random.uniform(*self.saturation_range)
            if shift_hue:
                hsv[..., 0] = (hsv[..., 0] + np.random.uniform(-self.hue_delta,
                                                               self.hue_delta)) % 180
            hsv = hsv.clip(0, [180, 255, 255]).astype(np.uint8)
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR).astype(np.float32)
        if not contrast_first and np.random.randint(2):
            img *= np.random.uniform(*self.contrast_range)
        results['img'] = img.clip(0, 255).astype(np.uint8)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(brightness_delta={self.brightness_delta}, '
                f'contrast_range={self.contrast_range}, '
                f'saturation_range={self.saturation_range}, hue_delta={self.hue_delta})')


@TRANSFORMS.register_module()
class RandomAffine:
    """Random rotation, scaling, shear and translation of the image and its boxes (YOLOX).

    The warp is ``translate @ shear @ rotate @ scale`` (rotation and shear about the top-left
    corner, as mmdetection's ``RandomAffine``) with the angle in ``[-max_rotate_degree,
    max_rotate_degree]``, the scale in ``scaling_ratio_range``, shears in ``[-max_shear_degree,
    max_shear_degree]`` and shifts in ``[-max_translate_ratio, max_translate_ratio]`` of the
    side (plus ``border``); the output is ``(H + 2 * border[0], W + 2 * border[1])``, filled
    with ``border_val``. A box becomes the extent of its four warped corners, clipped to the
    output; it is removed when it is no more than ``min_bbox_size`` wide or high, when its
    area is below ``min_area_ratio`` of the scaled original, or when its aspect ratio exceeds
    ``max_aspect_ratio`` (mostly warped or cut away). The matrix is stored as
    ``results['homography_matrix']``.

    Args:
        max_rotate_degree: largest rotation, degrees.
        max_translate_ratio: largest shift, as a fraction of the output side.
        scaling_ratio_range: ``(low, high)`` scale.
        max_shear_degree: largest shear, degrees.
        border: ``(rows, columns)`` added on each side.
        border_val: the fill colour.
        min_bbox_size: a box this narrow or low (pixels) is removed.
        min_area_ratio: see above.
        max_aspect_ratio: see above.
    """

    def __init__(self, max_rotate_degree: float = 10.0, max_translate_ratio: float = 0.1,
                 scaling_ratio_range: tuple[float, float] = (0.5, 1.5),
                 max_shear_degree: float = 2.0, border: tuple[int, int] = (0, 0),
                 border_val: tuple[int, int, int] = (114, 114, 114), min_bbox_size: float = 2,
                 min_area_ratio: float = 0.2, max_aspect_ratio: float = 20) -> None:
        if not 0 <= max_translate_ratio <= 1:
            raise ValueError(f'RandomAffine: max_translate_ratio must be in [0, 1], got '
                             f'{max_translate_ratio!r}')
        if not 0 < scaling_ratio_range[0] <= scaling_ratio_range[1]:
            raise ValueError(f'RandomAffine: scaling_ratio_range must be (low, high) with '
                             f'0 < low <= high, got {scaling_ratio_range!r}')
        self.max_rotate_degree, self.max_translate_ratio = max_rotate_degree, max_translate_ratio
        self.scaling_ratio_range, self.max_shear_degree = scaling_ratio_range, max_shear_degree
        self.border, self.border_val = border, border_val
        self.min_bbox_size, self.min_area_ratio = min_bbox_size, min_area_ratio
        self.max_aspect_ratio = max_aspect_ratio

    def _matrix(self, height: int, width: int) -> tuple[np.ndarray, float]:
        angle = np.deg2rad(np.random.uniform(-self.max_rotate_degree, self.max_rotate_degree))
        scale = np.random.uniform(*self.scaling_ratio_range)
        shear_x, shear_y = (np.tan(np.deg2rad(np.random.uniform(-self.max_shear_degree,
                                                                self.max_shear_degree)))
                            for _ in range(2))
        shift_x = np.random.uniform(-self.max_translate_ratio, self.max_translate_ratio) * width
        shift_y = np.random.uniform(-self.max_translate_ratio, self.max_translate_ratio) * height
        cos, sin = np.cos(angle), np.sin(angle)
        rotate = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])
        scaling = np.diag([scale, scale, 1.0])
        shear = np.array([[1, shear_x, 0], [shear_y, 1, 0], [0, 0, 1]])
        translate = np.array([[1, 0, shift_x + self.border[1]],
                              [0, 1, shift_y + self.border[0]], [0, 0, 1]])
        return translate @ shear @ rotate @ scaling, scale

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        img = results['img']
        height = img.shape[0] + 2 * self.border[0]
        width = img.shape[1] + 2 * self.border[1]
        matrix, scale = self._matrix(height, width)
        results['img'] = cv2.warpPerspective(img, matrix, dsize=(width, height),
                                             borderValue=self.border_val)
        results['img_shape'] = (height, width)
        results['homography_matrix'] = matrix.astype(np.float32)
        for key in BOX_KEYS:
            if key not in results or not len(results[key]):
                continue
            boxes = results[key].astype(np.float64)
            warped = warp_boxes(boxes, matrix, height, width)
            keep = self._keep(boxes, warped, scale)
            results[key] = warped[keep].astype(np.float32)
            if key == 'gt_bboxes' and 'gt_labels' in results:
                results['gt_labels'] = results['gt_labels'][keep]
        return results

    def _keep(self, before: np.ndarray, after: np.ndarray, scale: float) -> np.ndarray:
        w, h = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
        area_before = ((before[:, 2] - before[:, 0]) * (before[:, 3] - before[:, 1]) *
                       scale * scale)
        aspect = np.maximum(w / np.maximum(h, 1e-16), h / np.maximum(w, 1e-16))
        keep: np.ndarray = ((w > self.min_bbox_size) & (h > self.min_bbox_size)
                            & (w * h > self.min_area_ratio * area_before)
                            & (aspect < self.max_aspect_ratio))
        return keep

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(max_rotate_degree={self.max_rotate_degree}, '
                f'max_translate_ratio={self.max_translate_ratio}, '
                f'scaling_ratio_range={self.scaling_ratio_range}, '
                f'max_shear_degree={self.max_shear_degree}, border={self.border})')


def warp_boxes(boxes: np.ndarray, matrix: np.ndarray, height: int, width: int) -> np.ndarray:
    """The extent of each box's four corners under the 3x3 ``matrix``, clipped to the image.

    Args:
        boxes: ``(N, 4)`` xyxy.
        matrix: a homography (the last row ``(0, 0, 1)`` for an affine one).
        height: the output height.
        width: the output width.

    Returns:
        ``(N, 4)`` float64 xyxy.
    """
    x1, y1, x2, y2 = boxes.T
    corners = np.stack([np.stack([x1, y1]), np.stack([x2, y1]), np.stack([x1, y2]),
                        np.stack([x2, y2])], axis=0)           # (4, 2, N)
    points = np.concatenate([corners, np.ones((4, 1, boxes.shape[0]))], axis=1)  # (4, 3, N)
    warped = np.einsum('ij,cjn->cin', matrix, points)
    xy = warped[:, :2] / warped[:, 2:3]
    out = np.stack([xy[:, 0].min(0), xy[:, 1].min(0), xy[:, 0].max(0), xy[:, 1].max(0)], 1)
    out[:, 0::2] = out[:, 0::2].clip(0, width)
    out[:, 1::2] = out[:, 1::2].clip(0, height)
    return out
