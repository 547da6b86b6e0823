"""The whole detector as one function of raw pixels: what ``export_onnx`` traces.

``images`` float32 ``(N, 3, H, W)``, BGR 0-255 as ``cv2.imread`` gives them, already resized
(and padded) to the model's test input -> ``dets (N, K, 5)`` (x1, y1, x2, y2 in input pixels,
score; sorted by score, zero rows after the last detection) and ``labels (N, K)`` (int64, -1
after the last detection). The channel swap and ``(x - mean) / std`` of the model's
:class:`~detkit.models.data_preprocessors.DetDataPreprocessor` happen inside; the detector's
``predict_in_graph`` does the rest with fixed-size tensors.
"""
from __future__ import annotations

from typing import Any, Protocol, cast

import torch
from torch import Tensor, nn

INPUT_NAMES = ('images',)
OUTPUT_NAMES = ('dets', 'labels')


class _GraphDetector(Protocol):
    def predict_in_graph(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        ...


class ExportableDetector(nn.Module):
    """A detector behind its own normalisation, with the graph contract above.

    Args:
        detector: a detkit detector in eval mode whose class has ``predict_in_graph``
            (``RetinaNet``, ``FasterRCNN`` and their relatives) and whose data preprocessor has
            ``mean``, ``std`` and ``bgr_to_rgb``.

    Raises:
        TypeError: the detector cannot be exported (names its class and what is missing).
    """

    mean: Tensor
    std: Tensor

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        name = type(detector).__name__
        if not hasattr(detector, 'predict_in_graph'):
            raise TypeError(f'{name} cannot be exported: it has no predict_in_graph (the '
                            'fixed-size post-processing of RetinaNet and Faster R-CNN)')
        pre: Any = getattr(detector, 'data_preprocessor', None)
        if not all(hasattr(pre, key) for key in ('mean', 'std', 'bgr_to_rgb')):
            raise TypeError(f'{name} cannot be exported: its data_preprocessor '
                            f'{type(pre).__name__} has no mean/std/bgr_to_rgb; the graph needs '
                            'them to normalise raw pixels (DetDataPreprocessor has them)')
        self.detector = detector
        assert pre is not None
        # mean / std follow the channel order after the swap; the graph swaps with a Gather
        self.register_buffer('mean', pre.mean.detach().float().reshape(1, 3, 1, 1).clone(),
                             persistent=False)
        self.register_buffer('std', pre.std.detach().float().reshape(1, 3, 1, 1).clone(),
                             persistent=False)
        self.swap_channels = bool(pre.bgr_to_rgb)

    def normalise(self, images: Tensor) -> Tensor:
        """Raw BGR pixels ``(N, 3, H, W)`` -> the detector's normalised input."""
        images = images.float()
        if self.swap_channels:
            images = images[:, [2, 1, 0]]
        return (images - self.mean) / self.std

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``images (N, 3, H, W)`` raw BGR -> ``dets (N, K, 5)``, ``labels (N, K)``."""
        with torch.no_grad():
            return cast(_GraphDetector, self.detector).predict_in_graph(self.normalise(images))
