"""What every detkit detector shares: preprocessor, backbone, neck and mmengine's mode switch."""
from __future__ import annotations

from typing import Any, Sequence

from mmengine.model import BaseModel
from torch import Tensor

from detkit.registry import MODELS, build_if_config
from detkit.structures import DetSample, Detections

MODES = ('loss', 'predict', 'tensor')


class BaseDetector(BaseModel):
    """A data preprocessor, a backbone and an optional neck; subclasses add the heads.

    ``forward(inputs, data_samples, mode)`` follows mmengine's ``BaseModel`` contract and calls
    the subclass's ``loss`` (``mode='loss'``: a dict of scalar losses), ``predict``
    (``mode='predict'``: the samples with ``pred`` set, boxes in original-image pixels) or
    ``_forward_tensor`` (``mode='tensor'``: the heads' raw outputs).

    Args:
        backbone: the backbone module or its config (e.g. ``dict(type='ResNet', depth=50)``).
        neck: the neck or its config (``None``: the heads read the backbone outputs directly).
        data_preprocessor: normalisation and padding (default ``DetDataPreprocessor()``).
        init_cfg: mmengine init config of the whole detector.
    """

    def __init__(self, backbone: Any, neck: Any = None, data_preprocessor: Any = None,
                 init_cfg: dict | None = None) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type='DetDataPreprocessor')
        super().__init__(data_preprocessor=build_if_config(data_preprocessor, MODELS),
                         init_cfg=init_cfg)
        self.backbone = build_if_config(backbone, MODELS)
        self.neck = build_if_config(neck, MODELS) if neck is not None else None

    def extract_feat(self, inputs: Tensor) -> tuple[Tensor, ...]:
        """Backbone (and neck) features.

        Args:
            inputs: ``(B, 3, H, W)`` normalised, padded batch.

        Returns:
            The feature maps the heads read, e.g. P3-P7 ``(B, 256, H/s, W/s)``.
        """
        feats = self.backbone(inputs)
        return tuple(self.neck(feats)) if self.neck is not None else tuple(feats)

    def forward(self, inputs: Tensor, data_samples: Sequence[DetSample] | None = None,
                mode: str = 'tensor') -> Any:
        """Dispatch on ``mode`` (see the class docstring).

        Args:
            inputs: ``(B, 3, H, W)`` batch from the data preprocessor.
            data_samples: B samples; required for ``'loss'`` and ``'predict'``.
            mode: ``'loss'``, ``'predict'`` or ``'tensor'``.

        Returns:
            A loss dict, the samples with detections, or the heads' raw outputs.
        """
        name = type(self).__name__
        if mode not in MODES:
            raise ValueError(f"{name}.forward: mode={mode!r}; expected 'loss', 'predict' or "
                             "'tensor'")
        if mode == 'tensor':
            return self._forward_tensor(inputs, data_samples)
        if data_samples is None:
            raise ValueError(f'{name}.forward(mode={mode!r}) needs data_samples')
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        return self.predict(inputs, data_samples)

    @staticmethod
    def attach_detections(data_samples: Sequence[DetSample],
                          detections: Sequence[Detections]) -> list[DetSample]:
        """Write each image's detections into its sample's ``pred``; return the samples."""
        for sample, dets in zip(data_samples, detections):
            sample.pred = dets
        return list(data_samples)

    def loss(self, inputs: Tensor, data_samples: Sequence[DetSample]) -> dict[str, Tensor]:
        raise NotImplementedError

    def predict(self, inputs: Tensor, data_samples: Sequence[DetSample],
                rescale: bool = True) -> list[DetSample]:
        raise NotImplementedError

    def _forward_tensor(self, inputs: Tensor,
                        data_samples: Sequence[DetSample] | None) -> Any:
        raise NotImplementedError
