"""Draw boxes with class names and scores on BGR images (cv2), readable at any image size."""
from __future__ import annotations

import colorsys
from typing import Sequence

import cv2
import numpy as np

_GOLDEN_RATIO = 0.618033988749895


def class_color(label: int) -> tuple[int, int, int]:
    """A distinct, stable BGR colour for a class index.

    Hues step by the golden ratio, so neighbouring labels get far-apart colours and label ``i``
    has the same colour in every picture.

    Args:
        label: the class index (>= 0).

    Returns:
        ``(b, g, r)`` ints in ``[0, 255]``.
    """
    hue = (0.07 + label * _GOLDEN_RATIO) % 1.0
    saturation, value = (0.85, 0.95) if label % 2 == 0 else (0.65, 0.85)
    red, green, blue = colorsys.hsv_to_rgb(hue, saturation, value)
    return int(blue * 255), int(green * 255), int(red * 255)


def draw_detections(image: np.ndarray, bboxes: np.ndarray | Sequence, labels: Sequence[int],
                    scores: Sequence[float] | None = None,
                    class_names: Sequence[str] | None = None,
                    score_thr: float = 0.0) -> np.ndarray:
    """Draw boxes, class names and scores on a copy of ``image``.

    Line width and text size follow the image size (a 1-pixel line on a 200 px thumbnail, thicker
    on a 4K frame). Each label sits on a filled box in its class colour, above the box, or inside
    it when the box touches the top edge; the text is black or white, whichever contrasts more.

    Args:
        image: ``(H, W, 3)`` uint8 BGR image; not modified.
        bboxes: ``(N, 4)`` xyxy boxes in pixels of ``image``.
        labels: ``(N,)`` class indices.
        scores: ``(N,)`` confidences (``None``: ground truth, no score is written).
        class_names: names by class index (``None`` or too short: ``class_<i>``).
        score_thr: boxes scoring below it are not drawn.

    Returns:
        The annotated ``(H, W, 3)`` uint8 image.

    Raises:
        ValueError: ``image`` is not ``(H, W, 3)`` uint8, or the lengths disagree.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3:
        raise ValueError('draw_detections: image must be an (H, W, 3) uint8 BGR array, got '
                         f'{getattr(image, "shape", type(image).__name__)} '
                         f'{getattr(image, "dtype", "")}')
    boxes = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
    labels = [int(v) for v in np.asarray(labels).reshape(-1)]
    score_list = None if scores is None else [float(v) for v in np.asarray(scores).reshape(-1)]
    if len(labels) != len(boxes) or (score_list is not None and len(score_list) != len(boxes)):
        raise ValueError(f'draw_detections: {len(boxes)} boxes, {len(labels)} labels and '
                         f'{"no" if score_list is None else len(score_list)} scores; they must '
                         'have one entry per box')
    canvas = image.copy()
    height, width = canvas.shape[:2]
    short_side = min(height, width)
    thickness = max(1, round(short_side / 400))
    font_scale = float(np.clip(short_side / 900, 0.35, 1.5))
    font = cv2.FONT_HERSHEY_SIMPLEX
    order = range(len(boxes)) if score_list is None else np.argsort(score_list)  # best on top
    for i in order:
        if score_list is not None and score_list[i] < score_thr:
            continue
        color = class_color(labels[i])
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
        x1, x2 = (min(max(v, 0), width - 1) for v in (x1, x2))
        y1, y2 = (min(max(v, 0), height - 1) for v in (y1, y2))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)  # crisp, axis-aligned
        name = (class_names[labels[i]] if class_names is not None
                and 0 <= labels[i] < len(class_names) else f'class_{labels[i]}')
        text = name if score_list is None else f'{name} {score_list[i]:.2f}'
        (text_w, text_h), baseline = cv2.getTextSize(text, font, font_scale, 1)
        pad = max(1, thickness)
        top = y1 - text_h - baseline - 2 * pad
        if top < 0:  # no room above the box: put the label inside it
            top = y1
        left = min(x1, max(0, width - text_w - 2 * pad))
        cv2.rectangle(canvas, (left, top), (left + text_w + 2 * pad, top + text_h + baseline
                                            + 2 * pad), color, cv2.FILLED)
        luminance = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
        text_color = (0, 0, 0) if luminance > 140 else (255, 255, 255)
        cv2.putText(canvas, text, (left + pad, top + pad + text_h), font, font_scale,
                    text_color, 1, cv2.LINE_AA)
    return canvas
