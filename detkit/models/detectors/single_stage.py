"""Single-stage detectors: backbone -> neck -> dense head, e.g. RetinaNet."""
from __future__ import annotations

from typing import Any, Sequence

from mmengine.model import BaseModel
from torch import Tensor

from detkit.registry import MODELS, build_if_config
from detkit.structures import DetSample


@MODELS.register_module()
class SingleStageDetector(BaseModel):
    """A backbone, an optional neck and a dense head, run on a preprocessed batch.

    ``forward(inputs, data_samples, mode)`` follows mmengine's ``BaseModel`` contract:

    - ``mode='loss'``: a dict of scalar losses (``loss_cls``, ``loss_bbox``, ...).
    - ``mode='predict'``: the ``data_samples`` with ``pred`` filled in (boxes in original-image
      pixels).
    - ``mode='tensor'``: the head's raw outputs.

    Args:
        backbone: the backbone module or its config (e.g. ``dict(type='ResNet', depth=50)``).
        neck: the neck or its config (``None``: the head reads the backbone outputs directly).
        bbox_head: the dense head or its config.
        train_cfg: handed to the head as ``train_cfg`` (e.g. ``dict(assigner=...)``).
        test_cfg: handed to the head as ``test_cfg`` (thresholds and NMS).
        data_preprocessor: normalisation and padding, see ``DetDataPreprocessor``.
        init_cfg: mmengine init config of the whole detector.
    """

    def __init__(self, backbone: Any, bbox_head: Any, neck: Any = None,
                 train_cfg: dict | None = None, test_cfg: dict | None = None,
                 data_preprocessor: Any = None, init_cfg: dict | None = None) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type='DetDataPreprocessor')
        super().__init__(data_preprocessor=build_if_config(data_preprocessor, MODELS),
                         init_cfg=init_cfg)
        self.backbone = build_if_config(backbone, MODELS)
        self.neck = build_if_config(neck, MODELS) if neck is not None else None
        if isinstance(bbox_head, dict):
            bbox_head = MODELS.build(dict(bbox_head, train_cfg=train_cfg, test_cfg=test_cfg))
        self.bbox_head = bbox_head

    def extract_feat(self, inputs: Tensor) -> tuple[Tensor, ...]:
        """Backbone (and neck) features.

        Args:
            inputs: ``(B, 3, H, W)`` normalised, padded batch.

        Returns:
            The feature maps the head reads, e.g. P3-P7 ``(B, 256, H/s, W/s)``.
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
            A loss dict, the samples with detections, or the head's raw outputs.
        """
        if mode not in ('loss', 'predict', 'tensor'):
            raise ValueError(f"SingleStageDetector.forward: mode={mode!r}; expected 'loss', "
                             "'predict' or 'tensor'")
        if mode == 'tensor':
            return self.bbox_head(self.extract_feat(inputs))
        if data_samples is None:
            raise ValueError(f"SingleStageDetector.forward(mode={mode!r}) needs data_samples")
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        return self.predict(inputs, data_samples)

    def loss(self, inputs: Tensor, data_samples: Sequence[DetSample]) -> dict[str, Tensor]:
        """The head's losses for a batch with ground truth."""
        cls_scores, bbox_preds = self.bbox_head(self.extract_feat(inputs))
        return self.bbox_head.loss(cls_scores, bbox_preds, data_samples)

    def predict(self, inputs: Tensor, data_samples: Sequence[DetSample],
                rescale: bool = True) -> list[DetSample]:
        """Detections per image, written into each sample's ``pred``.

        Args:
            inputs: ``(B, 3, H, W)`` batch.
            data_samples: B samples with ``img_shape`` and ``scale_factor``.
            rescale: boxes in original-image pixels (else in resized-image pixels).

        Returns:
            The same samples, each with ``pred`` set.
        """
        cls_scores, bbox_preds = self.bbox_head(self.extract_feat(inputs))
        detections = self.bbox_head.predict(cls_scores, bbox_preds, data_samples, rescale)
        for sample, dets in zip(data_samples, detections):
            sample.pred = dets
        return list(data_samples)


@MODELS.register_module()
class RetinaNet(SingleStageDetector):
    """RetinaNet: ResNet + FPN (P3-P7) + :class:`~detkit.models.heads.RetinaHead`."""
