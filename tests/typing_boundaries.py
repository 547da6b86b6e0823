"""Deliberately wrong calls at detkit's public boundaries, checked by mypy and never run.

Each call passes a wrong type and carries an exact ``# type: ignore[arg-type]``. mypy runs with
``warn_unused_ignores``: should a boundary lose its annotations (``Any``, a bare ``dict``), the
error disappears, the ignore becomes unused and ``mypy`` fails, naming the line. Nothing calls
the ``wrong_*`` functions, and pytest collects nothing here (no ``test_`` names).
"""
from __future__ import annotations

import torch
from torch import Tensor

from detkit.apis import inference_detector, init_detector
from detkit.datasets import CCTSDBDataset, CocoDataset, VOCDataset
from detkit.evaluation import CocoMetric, results_to_coco_json
from detkit.models.heads import RetinaHead, RPNHead, StandardRoIHead
from detkit.structures import Detections, DetSample


def wrong_init_detector() -> None:
    init_detector('config.py', checkpoint=42)  # type: ignore[arg-type]
    init_detector('config.py', cfg_options=['a.b=1'])  # type: ignore[arg-type]


def wrong_inference_detector(model: torch.nn.Module) -> None:
    inference_detector(model, 3.5)  # type: ignore[arg-type]
    inference_detector(model, 'demo.jpg', batch_size='4')  # type: ignore[arg-type]


def wrong_structures() -> None:
    DetSample(img_id='7')  # type: ignore[arg-type]
    DetSample(ori_shape=[480, 640])  # type: ignore[arg-type]
    Detections(bboxes=[[0.0, 0.0, 1.0, 1.0]])  # type: ignore[arg-type]


def wrong_datasets() -> None:
    CocoDataset(ann_file=1)  # type: ignore[arg-type]
    CocoDataset('ann.json', data_prefix='images/')  # type: ignore[arg-type]
    VOCDataset(use_difficult='yes')  # type: ignore[arg-type]
    VOCDataset(filter_cfg=['filter_empty_gt'])  # type: ignore[arg-type]
    CCTSDBDataset(ann_file=None)  # type: ignore[arg-type]


def wrong_metric(detections: list[Detections]) -> None:
    CocoMetric(ann_file=5)  # type: ignore[arg-type]
    CocoMetric(proposal_nums=100)  # type: ignore[arg-type]
    CocoMetric().process({}, detections)  # type: ignore[arg-type]
    results_to_coco_json([{'img_id': 1}], cat_ids=1)  # type: ignore[arg-type]


def wrong_heads(retina: RetinaHead, rpn: RPNHead, roi: StandardRoIHead, feats: list[Tensor],
                samples: list[DetSample]) -> None:
    retina.loss(feats[0], feats, samples)  # type: ignore[arg-type]
    retina.predict(feats, feats, samples[0])  # type: ignore[arg-type]
    rpn.predict_proposals(feats, feats, samples, for_training='yes')  # type: ignore[arg-type]
    roi.predict(feats, feats, samples, rescale=None)  # type: ignore[arg-type]
