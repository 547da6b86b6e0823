"""Transforms that change the image geometry and move the boxes with it."""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from detkit.registry import TRANSFORMS

INTERPOLATIONS = {
    'nearest': cv2.INTER_NEAREST,
    'bilinear': cv2.INTER_LINEAR,
    'bicubic': cv2.INTER_CUBIC,
    'area': cv2.INTER_AREA,
    'lanczos': cv2.INTER_LANCZOS4,
}

BOX_KEYS = ('gt_bboxes', 'gt_ignore_bboxes')


def rescale_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """The size of an image rescaled, keeping its aspect ratio, to fit the edge limits ``scale``.

    The factor is ``min(max(scale) / max(h, w), min(scale) / min(h, w))``: the long side stays
    within ``max(scale)`` and the short side within ``min(scale)``, one of them reaching it.

    Args:
        width: the image width.
        height: the image height.
        scale: the two edge limits, in either order, e.g. ``(1333, 800)``.

    Returns:
        ``(new_width, new_height)``, each ``int(side * factor + 0.5)`` (at least 1).
    """
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return max(1, int(width * factor + 0.5)), max(1, int(height * factor + 0.5))


@TRANSFORMS.register_module()
class Resize:
    """Resize the image and scale the boxes with it.

    Updates ``img``, ``img_shape``, ``scale_factor`` (``(w_scale, h_scale)`` = ``img_shape /
    ori_shape``, so two resizes compound) and the boxes of ``gt_bboxes`` and
    ``gt_ignore_bboxes`` (xyxy pixels; multiplied by this resize's factors and clipped to the
    new image).

    Args:
        scale: with ``keep_ratio``: the long- and short-edge limits (either order, see
            :func:`rescale_size`); without: the exact output size ``(width, height)``.
        keep_ratio: keep the aspect ratio.
        interpolation: one of ``'nearest'``, ``'bilinear'``, ``'bicubic'``, ``'area'``,
            ``'lanczos'``.

    Example:
        >>> out = Resize(scale=(1333, 800))(dict(img=np.zeros((480, 640, 3), np.uint8)))
        >>> out['img_shape'], out['scale_factor']
        ((800, 1067), (1.6671875, 1.6666666666666667))
    """

    def __init__(self, scale: tuple[int, int] = (1333, 800), keep_ratio: bool = True,
                 interpolation: str = 'bilinear') -> None:
        if (not isinstance(scale, (tuple, list)) or len(scale) != 2
                or not all(isinstance(s, int) and s > 0 for s in scale)):
            raise ValueError(f'Resize: scale must be two positive ints, got {scale!r}')
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f'Resize: interpolation={interpolation!r} is not one of '
                             f'{list(INTERPOLATIONS)}')
        self.scale = (scale[0], scale[1])  # a tuple, also when given as a list
        self.keep_ratio = keep_ratio
        self.interpolation = interpolation

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        """Resize ``results['img']`` and the boxes.

        Args:
            results: a dict with ``img`` ``(H, W, 3)`` and optionally boxes ``(N, 4)``.

        Returns:
            ``results`` with the new ``img``, ``img_shape``, ``scale_factor`` and boxes.
        """
        img = results['img']
        height, width = img.shape[:2]
        if self.keep_ratio:
            new_width, new_height = rescale_size(width, height, self.scale)
        else:
            new_width, new_height = self.scale
        results['img'] = cv2.resize(img, (new_width, new_height),
                                    interpolation=INTERPOLATIONS[self.interpolation])
        w_scale, h_scale = new_width / width, new_height / height
        for key in BOX_KEYS:
            if key in results:
                boxes = results[key] * np.array([w_scale, h_scale, w_scale, h_scale],
                                                dtype=np.float32)
                boxes[:, 0::2] = boxes[:, 0::2].clip(0, new_width)
                boxes[:, 1::2] = boxes[:, 1::2].clip(0, new_height)
                results[key] = boxes.astype(np.float32)
        old_w_scale, old_h_scale = results.get('scale_factor', (1.0, 1.0))
        results['img_shape'] = (new_height, new_width)
        results['scale_factor'] = (old_w_scale * w_scale, old_h_scale * h_scale)
        results.setdefault('ori_shape', (height, width))
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(scale={self.scale}, keep_ratio={self.keep_ratio}, '
                f'interpolation={self.interpolation!r})')


@TRANSFORMS.register_module()
class RandomFlip:
    """Flip the image and its boxes horizontally with probability ``prob``.

    A flipped box is ``(w - x2, y1, w - x1, y2)`` for an image ``w`` pixels wide. The draw uses
    numpy's global random state, which mmengine seeds per worker.

    Args:
        prob: the probability of flipping, in ``[0, 1]``.
        direction: only ``'horizontal'``.
    """

    def __init__(self, prob: float = 0.5, direction: str = 'horizontal') -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f'RandomFlip: prob must be in [0, 1], got {prob!r}')
        if direction != 'horizontal':
            raise ValueError(f"RandomFlip: direction must be 'horizontal' (the only flip "
                             f'DetSample records), got {direction!r}')
        self.prob = prob
        self.direction = direction

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        """Flip (or not) ``results['img']`` and the boxes.

        Args:
            results: a dict with ``img`` ``(H, W, 3)`` and optionally boxes ``(N, 4)``.

        Returns:
            ``results``, with ``flip`` toggled when it flipped (``False`` set when absent).
        """
        results.setdefault('flip', False)
        if self.prob == 0 or np.random.random() >= self.prob:
            return results
        img = results['img']
        width = img.shape[1]
        results['img'] = np.ascontiguousarray(img[:, ::-1])
        for key in BOX_KEYS:
            if key in results:
                boxes = results[key].copy()
                boxes[:, 0] = width - results[key][:, 2]
                boxes[:, 2] = width - results[key][:, 0]
                results[key] = boxes
        results['flip'] = not results['flip']
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(prob={self.prob}, direction={self.direction!r})'
