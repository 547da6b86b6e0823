"""Two-stage detectors: backbone -> neck -> RPN proposals -> RoI head, e.g. Faster R-CNN."""
from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor

from detkit.models.detectors.base import BaseDetector
from detkit.models.detectors.head_arguments import head_arguments, reject_config_beside_built_head
from detkit.models.heads.roi_head import boxes_to_rois
from detkit.models.task_utils.graph_ops import shape_of
from detkit.registry import MODELS
from detkit.structures import Detections, DetSample


@MODELS.register_module()
class TwoStageDetector(BaseDetector):
    """A backbone, an optional neck, an RPN head and an RoI head, run on a preprocessed batch.

    ``forward(inputs, data_samples, mode)`` follows mmengine's ``BaseModel`` contract:

    - ``mode='loss'``: ``dict(loss_rpn_cls, loss_rpn_bbox, loss_cls, loss_bbox, acc)``; ``acc``
      (the RoI classification accuracy in percent) is logged, not trained (its key holds no
      ``'loss'``). The RoI head trains on proposals made from the detached RPN outputs.
    - ``mode='predict'``: the ``data_samples`` with ``pred`` filled in (boxes in original-image
      pixels).
    - ``mode='tensor'``: ``((rpn_cls_scores, rpn_bbox_preds), (cls_score, bbox_pred))``, the RPN's
      per-level outputs and the RoI head's outputs on the test-time proposals.

    The sections of ``train_cfg`` / ``test_cfg`` (mmdetection's layout) become the heads'
    arguments at construction (:func:`head_arguments`): ``train_cfg.rpn`` (assigner, sampler),
    ``train_cfg.rpn_proposal`` and ``test_cfg.rpn`` the RPN head's, ``train_cfg.rcnn``
    (assigner, sampler) and ``test_cfg.rcnn`` (thresholds) the RoI head's.

    Args:
        backbone: the backbone module or its config.
        rpn_head: the RPN head or its config.
        roi_head: the RoI head or its config.
        neck: the neck or its config (``None``: the heads read the backbone outputs).
        train_cfg: ``dict(rpn=..., rpn_proposal=..., rcnn=...)``.
        test_cfg: ``dict(rpn=..., rcnn=...)``.
        data_preprocessor: normalisation and padding, see ``DetDataPreprocessor``.
        init_cfg: mmengine init config of the whole detector.
        nonfinite_loss: ``'stop'`` or ``'skip'``, see :class:`BaseDetector`.
    """

    def __init__(self, backbone: Any, rpn_head: Any, roi_head: Any, neck: Any = None,
                 train_cfg: dict | None = None, test_cfg: dict | None = None,
                 data_preprocessor: Any = None, init_cfg: dict | None = None,
                 nonfinite_loss: str = 'stop') -> None:
        super().__init__(backbone, neck, data_preprocessor, init_cfg, nonfinite_loss)
        name = type(self).__name__
        arguments = head_arguments(train_cfg, test_cfg, ('rpn_head', 'roi_head'), name)
        reject_config_beside_built_head(rpn_head, 'rpn_head', name, arguments['rpn_head'])
        reject_config_beside_built_head(roi_head, 'roi_head', name, arguments['roi_head'])
        self.rpn_head = (MODELS.build(dict(rpn_head, **arguments['rpn_head']))
                         if isinstance(rpn_head, dict) else rpn_head)
        self.roi_head = (MODELS.build(dict(roi_head, **arguments['roi_head']))
                         if isinstance(roi_head, dict) else roi_head)
        self.adopt_memory_format()

    def loss(self, inputs: Tensor, data_samples: Sequence[DetSample]) -> dict[str, Tensor]:
        """RPN and RoI head losses for a batch with ground truth."""
        feats = self.extract_feat(inputs)
        rpn_cls_scores, rpn_bbox_preds = self.rpn_head(feats)
        losses = self.rpn_head.loss(rpn_cls_scores, rpn_bbox_preds, data_samples)
        proposals = self.rpn_head.predict_proposals(rpn_cls_scores, rpn_bbox_preds, data_samples,
                                                    for_training=True)
        losses.update(self.roi_head.loss(feats, [p.bboxes for p in proposals], data_samples))
        return losses

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
        feats = self.extract_feat(inputs)
        proposals = self.rpn_head.predict_proposals(*self.rpn_head(feats), data_samples)
        detections = self.roi_head.predict(feats, [p.bboxes for p in proposals], data_samples,
                                           rescale)
        return self.attach_detections(data_samples, detections)

    def predict_in_graph(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Detections of a normalised batch as fixed-size tensors, in input pixels (what an
        exported graph computes): :meth:`RPNHead.proposals_in_graph` then
        :meth:`StandardRoIHead.predict_in_graph`.

        Args:
            inputs: ``(N, 3, H, W)`` normalised images that fill the input (no padding).

        Returns:
            ``dets (N, K, 5)`` and ``labels (N, K)``, K the RoI head's ``max_per_img``.
        """
        feats = self.extract_feat(inputs)
        input_hw = shape_of(inputs)[2:]
        proposals, valid = self.rpn_head.proposals_in_graph(*self.rpn_head(feats), input_hw)
        return self.roi_head.predict_in_graph(feats, proposals[..., :4], valid, input_hw)

    def _forward_tensor(self, inputs: Tensor, data_samples: Sequence[DetSample] | None) -> tuple:
        feats = self.extract_feat(inputs)
        rpn_outs = self.rpn_head(feats)
        if data_samples is None:  # proposals clipped to the whole input
            height, width = inputs.shape[-2:]
            data_samples = [DetSample(img_shape=(height, width), pad_shape=(height, width),
                                      batch_input_shape=(height, width))
                            for _ in range(inputs.shape[0])]
        proposals: list[Detections] = self.rpn_head.predict_proposals(*rpn_outs, data_samples)
        rois = boxes_to_rois([p.bboxes for p in proposals]).to(inputs.device)
        return rpn_outs, self.roi_head(feats, rois)


@MODELS.register_module()
class FasterRCNN(TwoStageDetector):
    """Faster R-CNN (Ren et al., 2015): ResNet + FPN (P2-P6) + :class:`RPNHead` +
    :class:`StandardRoIHead` with a :class:`Shared2FCBBoxHead`."""
