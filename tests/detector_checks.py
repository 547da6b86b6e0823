"""Checks shared by the detector tests (RetinaNet, Faster R-CNN)."""
from __future__ import annotations

import copy
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from detkit.registry import MODELS
from detkit.structures import Detections, DetSample

IMAGE_SIZE = 128
RETINANET_CONFIG = (Path(__file__).resolve().parents[1]
                    / 'configs/_base_/models/retinanet_r50_fpn.py')
RETINANET_NUM_CLASSES = 3
COLOURS_BGR = ((255, 255, 255), (0, 255, 0), (0, 0, 255))  # one colour per class


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """One intra-op thread for a test module that imports this fixture: on a small shared CPU
    two threads spin against each other and run small convolutions many times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def seed_everything(seed: int = 0) -> None:
    """Seed Python's, numpy's and torch's random generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def painted_batch(objects, size: int = IMAGE_SIZE, seed: int = 0):
    """Square BGR uint8 images of dark noise with a bright rectangle per object.

    Args:
        objects: per image ``(boxes, labels)``: xyxy pixel boxes and class indices (0-2, the
            index into ``COLOURS_BGR``).
        size: the image side in pixels.
        seed: seeds the noise.

    Returns:
        ``(images, samples)``: ``(3, size, size)`` uint8 tensors and their DetSamples (boxes in
        pixels of these images).
    """
    generator = torch.Generator().manual_seed(seed)
    images, samples = [], []
    for boxes, labels in objects:
        image = torch.randint(0, 40, (3, size, size), generator=generator, dtype=torch.uint8)
        for (x1, y1, x2, y2), label in zip(boxes, labels):
            colour = torch.tensor(COLOURS_BGR[label], dtype=torch.uint8).view(3, 1, 1)
            image[:, int(y1):int(y2), int(x1):int(x2)] = colour
        images.append(image)
        samples.append(DetSample(ori_shape=(size, size), img_shape=(size, size),
                                 gt_bboxes=torch.tensor(boxes), gt_labels=torch.tensor(labels)))
    return images, samples


def predict_with_rescaled_second_image(model, images, samples, num_classes: int):
    """Predict on two images, the second declared resized from (h=256, w=64), and check that
    boxes in original pixels are the resized-image boxes divided by ``scale_factor``.

    Args:
        model: a trained detector.
        images: two ``(3, H, W)`` uint8 images.
        samples: their DetSamples.
        num_classes: K; every label must lie in ``0 .. K-1``.

    Returns:
        ``(batch, predicted, resized)``: the preprocessed batch and the samples predicted with
        and without rescaling.
    """
    samples = copy.deepcopy(samples)
    samples[1].ori_shape = (256, 64)
    samples[1].scale_factor = (2.0, 0.5)  # its boxes go back by (w / 2, h * 2)
    batch = model.data_preprocessor(dict(inputs=images, data_samples=samples), False)
    with torch.no_grad():
        predicted = model(batch['inputs'], batch['data_samples'], mode='predict')
        resized = model.predict(batch['inputs'], copy.deepcopy(batch['data_samples']),
                                rescale=False)
    assert len(predicted) == 2
    for sample, in_resized in zip(predicted, resized):
        dets = sample.pred
        assert isinstance(dets, Detections)
        assert 0 < len(dets) <= 100
        assert dets.bboxes.shape == (len(dets), 4) and dets.labels.dtype == torch.int64
        assert torch.all(dets.scores[:-1] >= dets.scores[1:])
        assert torch.all(dets.scores > 0.05)
        assert torch.all((dets.labels >= 0) & (dets.labels < num_classes))
        w_scale, h_scale = sample.scale_factor
        scale = torch.tensor([w_scale, h_scale, w_scale, h_scale])
        assert torch.equal(dets.scores, in_resized.pred.scores)
        torch.testing.assert_close(dets.bboxes, in_resized.pred.bboxes / scale)
        ori_h, ori_w = sample.ori_shape  # inside the original image
        assert torch.all(dets.bboxes >= 0)
        assert torch.all(dets.bboxes[:, [0, 2]] <= ori_w + 1e-4)
        assert torch.all(dets.bboxes[:, [1, 3]] <= ori_h + 1e-4)
    return batch, predicted, resized


# ---------------------------------------------------------------------------- a small RetinaNet
def small_retinanet_config():
    """RetinaNet with a ResNet-18, a 32-channel FPN and a one-conv head, for CPU tests."""
    cfg = Config.fromfile(str(RETINANET_CONFIG)).model
    cfg.backbone = dict(type='ResNet', depth=18, out_indices=(0, 1, 2, 3), frozen_stages=-1,
                        norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False)
    cfg.neck.in_channels = [64, 128, 256, 512]
    cfg.neck.out_channels = 32
    cfg.bbox_head.update(num_classes=RETINANET_NUM_CLASSES, in_channels=32, feat_channels=32,
                         stacked_convs=1)
    return cfg


def synthetic_batch():
    """Two 128x128 BGR uint8 images of dark noise with a bright rectangle per object.

    Returns:
        ``(images, samples)``: 2 ``(3, 128, 128)`` uint8 tensors and their DetSamples.
    """
    return painted_batch([([[16., 20., 60., 56.], [72., 64., 120., 120.]], [0, 2]),
                          ([[30., 30., 100., 90.]], [1])])


def build_small_retinanet(seed=0):
    seed_everything(seed)
    model = MODELS.build(small_retinanet_config())
    model.init_weights()
    return model
