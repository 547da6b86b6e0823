"""``tools/test.py --show-dir DIR``: each test image's ground truth beside its detections."""
from __future__ import annotations

import os
import os.path as osp
from typing import Any

import cv2
import numpy as np
from mmengine.hooks import Hook

from detkit.datasets.transforms.loading import decode_image
from detkit.registry import HOOKS
from detkit.visualization import draw_detections


def side_by_side(image: np.ndarray, sample: Any, class_names: tuple[str, ...],
                 score_thr: float) -> np.ndarray:
    """The image with its ground truth (left) and its detections at or above ``score_thr``
    (right), both in original-image pixels, with a 4 px white gap between."""
    gt = getattr(sample, 'gt_bboxes', None)
    gt_boxes = np.zeros((0, 4)) if gt is None else gt.cpu().numpy().reshape(-1, 4)
    gt_labels = [] if gt is None else sample.gt_labels.cpu().tolist()
    left = draw_detections(image, gt_boxes, gt_labels, None, class_names)
    pred = sample.pred
    right = draw_detections(image, pred.bboxes.cpu().float().numpy(), pred.labels.cpu().tolist(),
                            pred.scores.cpu().float().tolist(), class_names, score_thr)
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([left, gap, right], axis=1)


@HOOKS.register_module()
class ShowResultsHook(Hook):
    """Write ``<out_dir>/<image file stem>.png`` (lossless) for every test image: ground
    truth | detections.

    Args:
        out_dir: the folder (created).
        score_thr: detections below it are not drawn.
    """

    priority = 'LOW'

    def __init__(self, out_dir: str, score_thr: float = 0.3) -> None:
        self.out_dir, self.score_thr = out_dir, score_thr

    def after_test_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                        outputs: Any = None) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        classes = tuple(runner.test_dataloader.dataset.metainfo.get('classes', ()))
        for sample in outputs or []:
            image = decode_image(sample.img_path)
            stem = osp.splitext(osp.basename(sample.img_path))[0] or str(sample.img_id)
            name = stem + '.png'
            drawn = side_by_side(image, sample, classes, self.score_thr)
            if not cv2.imwrite(osp.join(self.out_dir, name), drawn):
                raise OSError(f'ShowResultsHook: cannot write {osp.join(self.out_dir, name)}')
