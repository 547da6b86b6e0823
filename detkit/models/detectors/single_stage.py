"""Single-stage detectors: backbone -> neck -> dense head, e.g. RetinaNet."""
from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor

from detkit.models.detectors.base import BaseDetector
from detkit.models.detectors.head_arguments import head_arguments, reject_config_beside_built_head
from detkit.models.task_utils.graph_ops import shape_of
from detkit.registry import MODELS
from detkit.structures import DetSample


@MODELS.register_module()
class SingleStageDetector(BaseDetector):
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
        train_cfg: mmdetection's ``dict(assigner=...)``: becomes the head's ``assigner=``
            (:func:`head_arguments`).
        test_cfg: thresholds and NMS: becomes the head's ``test_cfg=``.
        data_preprocessor: normalisation and padding, see ``DetDataPreprocessor``.
        init_cfg: mmengine init config of the whole detector.
        nonfinite_loss: ``'stop'`` or ``'skip'``, see :class:`BaseDetector`.
    """

    def __init__(self, backbone: Any, bbox_head: Any, neck: Any = None,
                 train_cfg: dict | None = None, test_cfg: dict | None = None,
                 data_preprocessor: Any = None, init_cfg: dict | None = None,
                 nonfinite_loss: str = 'stop') -> None:
        super().__init__(backbone, neck, data_preprocessor, init_cfg, nonfinite_loss)
        name = type(self).__name__
        arguments = head_arguments(train_cfg, test_cfg, ('bbox_head',), name)['bbox_head']
        reject_config_beside_built_head(bbox_head, 'bbox_head', name, arguments)
        self.bbox_head = (MODELS.build(dict(bbox_head, **arguments))
                          if isinstance(bbox_head, dict) else bbox_head)
        self.adopt_memory_format()

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
        return self.attach_detections(data_samples, detections)

    def predict_in_graph(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Detections of a normalised batch as fixed-size tensors, in input pixels (what an
        exported graph computes; :meth:`RetinaHead.predict_in_graph`).

        Args:
            inputs: ``(N, 3, H, W)`` normalised images that fill the input (no padding).

        Returns:
            ``dets (N, K, 5)`` and ``labels (N, K)``, K the head's ``max_per_img``.
        """
        cls_scores, bbox_preds = self.bbox_head(self.extract_feat(inputs))
        return self.bbox_head.predict_in_graph(cls_scores, bbox_preds, shape_of(inputs)[2:])

    def _forward_tensor(self, inputs: Tensor,
                        data_samples: Sequence[DetSample] | None) -> tuple[list, list]:
        return self.bbox_head(self.extract_feat(inputs))


@MODELS.register_module()
class RetinaNet(SingleStageDetector):
    """RetinaNet: ResNet + FPN (P3-P7) + :class:`~detkit.models.heads.RetinaHead`."""
