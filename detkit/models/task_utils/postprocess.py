"""What the heads share around their outputs: test-time settings, flattening, NMS and rescaling.

* One settings type per use, each listing only the fields it reads: :class:`DenseTestConfig`
  (RetinaNet's ``test_cfg``), :class:`ProposalConfig` (the RPN's ``rpn`` / ``rpn_proposal``),
  :class:`RoITestConfig` (the RoI head's ``rcnn``). All read mmdetection's layout, ``nms=dict(
  type='nms', iou_threshold=...)`` included, through :func:`read_test_config`.
* :func:`flatten_levels`: per-level head outputs ``(B, A*c, Hl, Wl)`` to anchor order.
* :func:`batch_input_shape`: the padded batch size the samples carry.
* :func:`rescale_and_nms`: boxes back to the original image, tiny ones dropped, class-aware
  NMS, the best ``max_per_img``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence, TypeVar, cast

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from detkit.structures import Detections, DetSample

_Config = TypeVar('_Config', bound='_ReadFromConfig')


def read_test_config(cls: type[_Config], cfg: Any, key: str) -> _Config:
    """Read one of the settings types from an mmdetection-style dict.

    ``nms=dict(type='nms', iou_threshold=t)`` becomes the field ``nms_iou_thr``; every other key
    must be a field of ``cls``.

    Args:
        cls: :class:`DenseTestConfig`, :class:`ProposalConfig` or :class:`RoITestConfig`.
        cfg: the dict, an instance of ``cls`` (returned as it is), or None (the defaults).
        key: the config key, for error messages (``test_cfg.rpn``).

    Returns:
        The settings.

    Raises:
        KeyError: an unknown key (naming ``key`` and the expected ones).
        ValueError: an NMS type other than ``'nms'``.
    """
    if cfg is None:
        return cls()
    if isinstance(cfg, cls):
        return cfg
    values = dict(cfg)
    nms = dict(values.pop('nms', {}) or {})
    nms_type = nms.pop('type', 'nms')
    if nms_type != 'nms':
        raise ValueError(f"{key}.nms.type={nms_type!r} is not supported; only 'nms' "
                         '(class-aware, torchvision.ops.batched_nms) is')
    if 'iou_threshold' in nms:
        values['nms_iou_thr'] = nms.pop('iou_threshold')
    if nms:
        raise KeyError(f'{key}.nms has unknown keys {sorted(nms)}; expected iou_threshold')
    # the settings types are dataclasses: their fields are the keys a config may set
    names = {f.name for f in dataclasses.fields(cast(Any, cls))}
    unknown = set(values) - names
    if unknown:
        expected = sorted((names - {'nms_iou_thr'}) | {'nms'})
        raise KeyError(f'{key} has unknown keys {sorted(unknown)}; expected a subset of '
                       f'{expected}')
    return cls(**values)


class _ReadFromConfig:
    """``from_config`` of the settings types below (dataclasses): :func:`read_test_config`."""

    config_key: ClassVar[str]  # the config key the settings usually come from

    @classmethod
    def from_config(cls: type[_Config], cfg: Any, key: str | None = None) -> _Config:
        """Read the settings from ``cfg``; ``key`` (default :attr:`config_key`) names it in
        error messages."""
        return read_test_config(cls, cfg, key or cls.config_key)


@dataclass(frozen=True)
class DenseTestConfig(_ReadFromConfig):
    """Post-processing of a dense detection head (RetinaNet's ``test_cfg``).

    Attributes:
        nms_pre: per level, at most this many (anchor, class) candidates enter NMS (0: all).
        score_thr: candidates scoring at or below this are dropped before the top-k.
        nms_iou_thr: IoU above which a lower-scoring box of the same class is suppressed.
        max_per_img: detections kept per image after NMS.
        min_bbox_size: with ``>= 0``, boxes whose width or height is at most this (in
            original-image pixels) are dropped, so 0 drops empty boxes; -1 (the default when a
            config leaves it out, as in mmdetection): none.
    """

    config_key: ClassVar[str] = 'test_cfg'
    nms_pre: int = 1000
    score_thr: float = 0.05
    nms_iou_thr: float = 0.5
    max_per_img: int = 100
    min_bbox_size: float = -1.0


@dataclass(frozen=True)
class ProposalConfig(_ReadFromConfig):
    """How the RPN turns its outputs into proposals (mmdetection's ``rpn`` / ``rpn_proposal``).

    Attributes:
        nms_pre: per level, the top this many anchors by objectness are decoded (0: all).
        max_per_img: proposals kept per image after NMS.
        nms_iou_thr: IoU above which the lower-scoring of two proposals of the same level is
            suppressed.
        min_bbox_size: with ``>= 0``, proposals whose width or height is at most this are
            removed (0 removes only empty boxes, e.g. those clipped to a line at the image
            border); -1 (the default when a config leaves it out, as in mmdetection): none.
    """

    config_key: ClassVar[str] = 'test_cfg.rpn'
    nms_pre: int = 1000
    max_per_img: int = 1000
    nms_iou_thr: float = 0.7
    min_bbox_size: float = -1.0


@dataclass(frozen=True)
class RoITestConfig(_ReadFromConfig):
    """Post-processing of the RoI head (mmdetection's ``test_cfg.rcnn``).

    Attributes:
        score_thr: (RoI, class) pairs scoring at or below this are dropped.
        nms_iou_thr: IoU above which a lower-scoring box of the same class is suppressed.
        max_per_img: detections kept per image after NMS.
        min_bbox_size: with ``>= 0``, boxes whose width or height is at most this are dropped
            before NMS; -1 (the default): none, as in mmdetection (torchvision's Faster R-CNN
            drops boxes under 1e-2 px).
    """

    config_key: ClassVar[str] = 'test_cfg.rcnn'
    score_thr: float = 0.05
    nms_iou_thr: float = 0.5
    max_per_img: int = 100
    min_bbox_size: float = -1.0


def flatten_levels(maps: Sequence[Tensor], channels: int) -> Tensor:
    """L maps ``(B, A*c, Hl, Wl)`` -> ``(B, sum_l Hl*Wl*A, c)`` in anchor order.

    Anchors are ordered location-major (``(y * Wl + x) * A + a``), levels concatenated: the
    order of :meth:`AnchorGenerator.grid_anchors`.
    """
    batch = maps[0].shape[0]
    return torch.cat([m.permute(0, 2, 3, 1).reshape(batch, -1, channels) for m in maps], 1)


def batch_input_shape(samples: Sequence[DetSample]) -> tuple[int, int] | None:
    """The ``(H, W)`` of the padded input batch, from the samples' ``batch_input_shape``.

    Args:
        samples: the batch's samples; the data preprocessor sets every ``batch_input_shape`` to
            the batch tensor's size.

    Returns:
        ``(H, W)``, or None when the samples do not know it (unset, ``(0, 0)``).
    """
    if not samples:
        return None
    height, width = (int(v) for v in samples[0].batch_input_shape)
    return (height, width) if min(height, width) > 0 else None


def logit_lower_bound(score_thr: float) -> float:
    """A logit below which no sigmoid score exceeds ``score_thr``, with room for rounding.

    ``sigmoid(x) > t`` holds exactly when ``x > log(t / (1 - t))``. A head can then take the
    sigmoid of only the logits above this bound and threshold those: the candidates are those
    of taking the sigmoid of every logit. The bound sits below the exact logit ``x`` by
    ``0.05 + 2**-6 |x|``: more than the rounding of the bound to bfloat16 when the comparison
    runs in the logits' dtype (half a bfloat16 step is at most ``2**-8 |x|``) and than a float32
    sigmoid's error.

    Args:
        score_thr: the score threshold, any float.

    Returns:
        The bound; ``-inf`` when every score can pass (``score_thr <= 0``), ``inf`` when none
        can (``score_thr >= 1``).
    """
    if not score_thr > 0:
        return -math.inf
    if score_thr >= 1:
        return math.inf
    exact = math.log(score_thr / (1 - score_thr))
    return exact - 0.05 - abs(exact) * 2 ** -6


def rescale_and_nms(boxes: Tensor, scores: Tensor, labels: Tensor, *, nms_iou_thr: float,
                    max_per_img: int, sample: DetSample, rescale: bool,
                    min_bbox_size: float = -1) -> Detections:
    """Map boxes back to the original image, drop tiny ones, run class-aware NMS, keep the best
    ``max_per_img``: mmdetection's order (``BaseDenseHead._bbox_post_process``), so that the size
    test and the IoUs are those of original-image pixels.

    Args:
        boxes: ``(N, 4)`` candidates, xyxy in resized-image pixels.
        scores: ``(N,)`` their scores.
        labels: ``(N,)`` their classes.
        nms_iou_thr: IoU above which the lower-scoring of two boxes of a class is suppressed.
        max_per_img: detections kept.
        sample: gives ``scale_factor`` for rescaling.
        rescale: divide the boxes by ``scale_factor`` (back to original-image pixels).
        min_bbox_size: with ``>= 0``, boxes whose width or height is at most this are dropped
            (0 drops the empty boxes that clipping to the image makes); ``-1``: none.

    Returns:
        The image's :class:`Detections`, sorted by decreasing score.
    """
    if rescale:
        w_scale, h_scale = sample.scale_factor
        boxes = boxes / boxes.new_tensor([w_scale, h_scale, w_scale, h_scale])
    if min_bbox_size >= 0:
        wh = boxes[:, 2:] - boxes[:, :2]
        large = (wh > min_bbox_size).all(dim=1)
        boxes, scores, labels = boxes[large], scores[large], labels[large]
    keep = batched_nms(boxes, scores, labels, nms_iou_thr)[:max_per_img]
    return Detections(bboxes=boxes[keep], scores=scores[keep], labels=labels[keep])
