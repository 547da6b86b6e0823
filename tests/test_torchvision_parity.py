"""torchvision interop: converted RetinaNet / Faster R-CNN R50-FPN checkpoints give torchvision's
detections, and every option that makes them do so matches torchvision's numbers on its own.

End to end: a torchvision model with random weights, perturbed (seeded) so that every image gets
at least 50 detections spread over all pyramid levels, some of them with box deltas beyond the
``log(1000 / 16)`` clamp; its BatchNorm layers are ``FrozenBatchNorm2d`` with ``eps=0``, which is
what ``*_resnet50_fpn(weights=COCO_V1)`` builds. Its state dict goes through the converter, detkit
loads it with ``init_detector`` and both run on the same images. The images need no resize (short
side 800, long side <= 1333) and their padded batch, 800 x 1088, is not a multiple of 128, so the
anchors of P6 / P7 are 61 / 114 px apart vertically and P7's 120 px horizontally; the second
image alone (the single-image call) pads to 800 x 800 and has them 61 / 114 px apart both ways.

Pixel values are drawn, per channel, from the uint8 values ``u`` whose normalisation rounds to
the same float32 both ways, torchvision's ``(u / 255 - 0.485) / 0.229`` and detkit's
``(u - 123.675) / 58.395`` (128, 96 and 61 of the 256 values of R, G, B). For the other values
the two differ by one float32 rounding step (at most 4.8e-7), which 50 random layers amplify
to about 2e-3 px on the largest boxes; with equal inputs every remaining difference comes from
the model, and the boxes agree within 1e-4 px.
"""
import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models.detection import fasterrcnn_resnet50_fpn, retinanet_resnet50_fpn
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.poolers import LevelMapper

from detkit.apis import inference_detector, init_detector
from detkit.models.converters import (
    COCO_CATEGORIES,
    convert_torchvision_detector,
    faster_rcnn_key_map,
    retinanet_key_map,
    save_checkpoint_atomic,
)
from detkit.models.heads import RetinaHead, RPNHead
from detkit.models.task_utils import AnchorGenerator, DeltaXYWHBBoxCoder
from detkit.models.task_utils.roi_extractor import (
    MultiLevelRoIAlign,
    map_rois_to_canonical_levels,
    map_rois_to_levels,
)
from detkit.registry import MODELS
from detkit.structures import DetSample

from detector_checks import one_thread  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {'retinanet': ROOT / 'configs/torchvision/retinanet_r50_fpn_tv.py',
           'faster_rcnn': ROOT / 'configs/torchvision/faster_rcnn_r50_fpn_tv.py'}
TOOL = ROOT / 'tools/model_converters/torchvision_to_detkit.py'
TV_MEAN, TV_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DETKIT_MEAN, DETKIT_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
IMAGE_SHAPES = ((800, 1067), (800, 800))  # padded together to 800 x 1088
# P3-P7 of an 800 x 1088 batch and the anchor spacing torchvision gives them
RETINA_FEATMAPS = [(100, 136), (50, 68), (25, 34), (13, 17), (7, 9)]
RETINA_STRIDES = [(8, 8), (16, 16), (32, 32), (61, 64), (114, 120)]
BOX_TOL, SCORE_TOL = 1e-3, 1e-4
TIE = 1e-5  # detections whose scores differ by less than this may come in either order


# ---------------------------------------------------------------------------- helpers
def exact_uint8_values():
    """Per RGB channel, the uint8 values both normalisations map to the same float32."""
    u = torch.arange(256, dtype=torch.float32)
    return [torch.nonzero((u / 255 - m) / s == (u - dm) / ds).flatten().numpy().astype(np.uint8)
            for m, s, dm, ds in zip(TV_MEAN, TV_STD, DETKIT_MEAN, DETKIT_STD)]


def make_image(height, width, rng):
    """A BGR uint8 image: noise and 40 solid rectangles, from :func:`exact_uint8_values`."""
    values = exact_uint8_values()
    rgb = np.stack([rng.choice(v, size=(height, width)) for v in values], axis=-1)
    for _ in range(40):
        box_h, box_w = rng.randint(16, 400, size=2)
        y, x = rng.randint(0, height - box_h), rng.randint(0, width - box_w)
        rgb[y:y + box_h, x:x + box_w] = [rng.choice(v) for v in values]
    return np.ascontiguousarray(rgb[:, :, ::-1])


def to_torchvision(image_bgr):
    """torchvision's input: an RGB float (3, H, W) tensor in [0, 1]."""
    return torch.from_numpy(image_bgr[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255


def freeze_batchnorm(module, generator):
    """Replace every ``nn.BatchNorm2d`` by a ``FrozenBatchNorm2d(eps=0)`` with random statistics
    and affine parameters, as the COCO_V1 builders have it (FrozenBN, ``overwrite_eps(0.0)``)."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            n = child.num_features
            frozen = FrozenBatchNorm2d(n, eps=0.0)
            frozen.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.5)
            frozen.bias.copy_(torch.randn(n, generator=generator) * 0.1)
            frozen.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            frozen.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child, generator)


def perturbed_torchvision_model(arch):
    """torchvision's model with random weights, perturbed so that many boxes of every level pass
    the score threshold and some deltas shrink boxes beyond the clamp (see the module docstring).
    """
    torch.manual_seed(0)
    builder = retinanet_resnet50_fpn if arch == 'retinanet' else fasterrcnn_resnet50_fpn
    model = builder(weights=None, weights_backbone=None).eval()
    g = torch.Generator().manual_seed(0)

    def normal_(tensor, std, mean=0.0):
        tensor.copy_(torch.randn(tensor.shape, generator=g) * std + mean)

    with torch.no_grad():
        freeze_batchnorm(model.backbone, g)
        if arch == 'retinanet':
            head = model.head
            for branch in (head.classification_head, head.regression_head):
                for block in branch.conv:
                    normal_(block[0].weight, 0.03)
                    normal_(block[0].bias, 0.05)
            normal_(head.classification_head.cls_logits.weight, 0.01)
            normal_(head.classification_head.cls_logits.bias, 0.3, mean=-3.5)
            normal_(head.regression_head.bbox_reg.weight, 0.005)
            normal_(head.regression_head.bbox_reg.bias, 0.1)
            head.regression_head.bbox_reg.bias[2:4] = -5.0  # anchor 0: dw, dh below -4.135
            # stronger P6 / P7 features, so that their anchors compete with P3's
            model.backbone.fpn.extra_blocks.p6.weight *= 1.5
            model.backbone.fpn.extra_blocks.p7.weight *= 2.5
        else:
            rpn = model.rpn.head
            normal_(rpn.conv[0][0].weight, 0.03)
            normal_(rpn.conv[0][0].bias, 0.05)
            normal_(rpn.cls_logits.weight, 0.05)
            normal_(rpn.cls_logits.bias, 0.1)
            normal_(rpn.bbox_pred.weight, 0.005)
            normal_(rpn.bbox_pred.bias, 0.05)
            rpn.bbox_pred.bias[6:8] = -4.6  # anchor 1: dw, dh below -4.135
            model.backbone.fpn.layer_blocks[3][0].weight *= 3.0  # P5 / P6 proposals compete
            # fc6 blind to each channel's mean over the 7x7 window and zero-sum class rows: the
            # class scores then vary from RoI to RoI instead of following the image's mean
            fc6 = model.roi_heads.box_head.fc6.weight
            fc6_windows = fc6.view(fc6.shape[0], 256, 49)
            fc6_windows -= fc6_windows.mean(2, keepdim=True)
            predictor = model.roi_heads.box_predictor
            normal_(predictor.cls_score.weight, 2.0)
            predictor.cls_score.weight -= predictor.cls_score.weight.mean(1, keepdim=True)
            normal_(predictor.cls_score.bias, 0.1)
            normal_(predictor.bbox_pred.weight, 0.05)
            normal_(predictor.bbox_pred.bias, 0.3)
            # every third class: dw / 5 = -4.4, below -4.135
            predictor.bbox_pred.bias[4 * torch.arange(1, 91, 3) + 2] = -22.0
    return model


def assert_same_detections(tv_result, dk_result, label_offset):
    """Same count; per score-ordered position the same label, box and score, detections whose
    scores differ by less than ``TIE`` matched as a set. Returns the largest differences."""
    tv_boxes, tv_scores, tv_labels = tv_result['boxes'], tv_result['scores'], tv_result['labels']
    boxes, scores, labels = dk_result.bboxes, dk_result.scores, dk_result.labels + label_offset
    count = len(tv_scores)
    assert len(scores) == count
    max_box = max_score = 0.0
    start = 0
    while start < count:
        end = start + 1
        while end < count and tv_scores[end - 1] - tv_scores[end] < TIE:
            end += 1
        free = list(range(start, end))
        for i in range(start, end):
            candidates = [j for j in free if labels[j] == tv_labels[i]]
            assert candidates, f'torchvision detection {i} (label {int(tv_labels[i])}) is ' \
                               f'missing from detkit\'s positions {start}..{end - 1}'
            j = min(candidates, key=lambda j: float((boxes[j] - tv_boxes[i]).abs().max()))
            free.remove(j)
            max_box = max(max_box, float((boxes[j] - tv_boxes[i]).abs().max()))
            max_score = max(max_score, abs(float(scores[j] - tv_scores[i])))
        start = end
    assert max_box <= BOX_TOL and max_score <= SCORE_TOL, (max_box, max_score)
    return max_box, max_score


@pytest.fixture(scope='module')
def images():
    rng = np.random.RandomState(0)
    return [make_image(h, w, rng) for h, w in IMAGE_SHAPES]


def run_pair(arch, images, tmp_path_factory):
    """The perturbed torchvision model's detections on ``images`` (one batch) and on
    ``images[1]`` alone (padded to 800 x 800), and the detkit model built from its converted
    checkpoint. (The same image gives slightly different features in a batch of 1 and of 2:
    torch's convolutions sum in another order.)"""
    tv_model = perturbed_torchvision_model(arch)
    path = tmp_path_factory.mktemp(arch) / f'{arch}_tv.pth'
    save_checkpoint_atomic(convert_torchvision_detector(tv_model.state_dict(), arch), path)
    with torch.no_grad():
        tv_batch = tv_model([to_torchvision(image) for image in images])
        tv_single = tv_model([to_torchvision(images[1])])[0]
    return tv_batch, tv_single, init_detector(str(CONFIGS[arch]), str(path), device='cpu')


@pytest.fixture(scope='module')
def retinanet_pair(images, tmp_path_factory):
    return run_pair('retinanet', images, tmp_path_factory)


@pytest.fixture(scope='module')
def faster_rcnn_pair(images, tmp_path_factory):
    return run_pair('faster_rcnn', images, tmp_path_factory)


# ---------------------------------------------------------------------------- end to end
def test_retinanet_detections_equal_torchvision(retinanet_pair, images):
    tv_results, tv_single, model = retinanet_pair
    assert model.dataset_meta['classes'] == COCO_CATEGORIES
    batch = inference_detector(model, images)
    single = inference_detector(model, images[1])
    for tv_result, result in zip(tv_results + [tv_single], batch + [single]):
        assert len(result) >= 50 and result.class_names == COCO_CATEGORIES
        assert_same_detections(tv_result, result, label_offset=0)
    # the detections exercise the P6 / P7 spacing and the unclamped shrinking
    sides = torch.cat([r['boxes'][:, 2:] - r['boxes'][:, :2] for r in tv_results])
    assert (sides.max(1).values > 450).sum() >= 10      # P6 / P7 anchors (>= 256 px)
    assert (sides.max(1).values < 1).sum() >= 10        # anchor 0 shrunk by exp(-5)


def test_faster_rcnn_detections_equal_torchvision(faster_rcnn_pair, images):
    tv_results, tv_single, model = faster_rcnn_pair
    assert model.dataset_meta['classes'] == COCO_CATEGORIES[1:]
    batch = inference_detector(model, images)
    single = inference_detector(model, images[1])
    for tv_result, result in zip(tv_results + [tv_single], batch + [single]):
        assert len(result) >= 50 and result.class_names == COCO_CATEGORIES[1:]
        assert_same_detections(tv_result, result, label_offset=1)  # detkit label + 1
    labels = torch.cat([r['labels'] for r in tv_results])
    assert len(set(labels.tolist())) >= 10
    sides = torch.cat([r['boxes'][:, 2:] - r['boxes'][:, :2] for r in tv_results])
    assert (sides.max(1).values > 450).sum() >= 10      # RoIs from P5 / P6 proposals
    narrow = torch.isin(labels, torch.arange(1, 91, 3)) & (sides[:, 0] < sides[:, 1] / 20)
    assert narrow.sum() >= 10                           # dw / 5 = -4.4, not clamped


def test_preprocessing_equals_torchvision_transform(images):
    """Same padded size and values: equal on the images' pixel values, within one float32
    rounding step (4.8e-7) on any uint8 value."""
    from detkit.models.data_preprocessors import DetDataPreprocessor
    transform = GeneralizedRCNNTransform(800, 1333, list(TV_MEAN), list(TV_STD)).eval()
    preprocessor = DetDataPreprocessor(mean=DETKIT_MEAN, std=DETKIT_STD, bgr_to_rgb=True,
                                       pad_size_divisor=32)
    inputs = [torch.from_numpy(image).permute(2, 0, 1) for image in images]
    expected = transform([to_torchvision(image) for image in images])[0].tensors
    batch = preprocessor(dict(inputs=inputs, data_samples=None))['inputs']
    assert tuple(batch.shape) == tuple(expected.shape) == (2, 3, 800, 1088)
    assert torch.equal(batch, expected)
    every_value = torch.arange(256, dtype=torch.uint8).repeat(3, 1, 1)  # (3, 1, 256), BGR
    tv_all = transform.normalize(every_value.flip(0).float() / 255)
    detkit_all = preprocessor(dict(inputs=[every_value], data_samples=None))['inputs']
    difference = float((tv_all - detkit_all[0, :, :1, :]).abs().max())
    assert 0 < difference <= 4.8e-7


# ---------------------------------------------------------------------------- anchors
def test_sizes_and_rounding_give_torchvisions_base_anchors():
    sizes = [[32, 40, 50], [64, 80, 101]]
    gen = AnchorGenerator(strides=[8, 16], ratios=[0.5, 1.0, 2.0], sizes=sizes,
                          round_base_anchors=True)
    # ratio 0.5, side 32: w = 32 * sqrt 2 = 45.25, h = 22.63 -> halves 22.63, 11.31 -> 23, 11
    assert gen.base_anchors[0].tolist() == [
        [-23, -11, 23, 11], [-28, -14, 28, 14], [-35, -18, 35, 18],
        [-16, -16, 16, 16], [-20, -20, 20, 20], [-25, -25, 25, 25],
        [-11, -23, 11, 23], [-14, -28, 14, 28], [-18, -35, 18, 35]]
    unrounded = AnchorGenerator(strides=[8, 16], ratios=[0.5, 1.0, 2.0], sizes=sizes)
    assert unrounded.base_anchors[0][0].tolist() == pytest.approx(
        [-22.627417, -11.313708, 22.627417, 11.313708], abs=1e-5)
    assert gen.num_base_anchors == [9, 9]
    reference = TVAnchorGenerator(tuple(tuple(s) for s in sizes), ((0.5, 1.0, 2.0),) * 2)
    for ours, theirs in zip(gen.base_anchors, reference.cell_anchors):
        assert torch.equal(ours, theirs)


def test_strides_from_image_follow_the_padded_size():
    gen = AnchorGenerator(strides=[8, 16, 32, 64, 128], ratios=[1.0], sizes=[[32]] * 5,
                          strides_from_image=True)
    assert gen.level_strides(RETINA_FEATMAPS, (800, 1088)) == RETINA_STRIDES
    p7 = gen.grid_anchors(RETINA_FEATMAPS, input_shape=(800, 1088))[4].reshape(7, 9, 4)
    assert p7[1, 1].tolist() == [120 - 16, 114 - 16, 120 + 16, 114 + 16]  # (x, y) = (120, 114)
    assert p7[6, 8].tolist() == [960 - 16, 684 - 16, 960 + 16, 684 + 16]
    nominal = AnchorGenerator(strides=[8, 16, 32, 64, 128], ratios=[1.0], sizes=[[32]] * 5)
    assert nominal.level_strides(RETINA_FEATMAPS, (800, 1088))[3:] == [(64, 64), (128, 128)]
    assert nominal.grid_anchors(RETINA_FEATMAPS, input_shape=(800, 1088))[4].reshape(
        7, 9, 4)[1, 1].tolist() == [112, 112, 144, 144]
    with pytest.raises(ValueError, match=r'strides_from_image=True\) needs input_shape'):
        gen.grid_anchors(RETINA_FEATMAPS)


def test_sizes_are_checked():
    with pytest.raises(ValueError, match=r"\['scales'\] must not be given with it"):
        AnchorGenerator(strides=[8], ratios=[1.0], sizes=[[32]], scales=[1.0])
    with pytest.raises(ValueError, match='one list of anchor sides per level'):
        AnchorGenerator(strides=[8, 16], ratios=[1.0], sizes=[[32]])
    with pytest.raises(ValueError, match='the same number of sides'):
        AnchorGenerator(strides=[8, 16], ratios=[1.0], sizes=[[32, 40], [64]])
    with pytest.raises(ValueError, match=r'sizes\[1\] must be a non-empty list of positive'):
        AnchorGenerator(strides=[8, 16], ratios=[1.0], sizes=[[32], [-64]])


@pytest.mark.parametrize('arch', ['retinanet', 'faster_rcnn'])
def test_config_anchors_equal_torchvision_anchors(arch, torchvision_models):
    from mmengine.config import Config
    model_cfg = Config.fromfile(str(CONFIGS[arch])).model
    head_cfg = model_cfg.bbox_head if arch == 'retinanet' else model_cfg.rpn_head
    gen = AnchorGenerator(**{k: v for k, v in head_cfg.anchor_generator.items() if k != 'type'})
    if arch == 'retinanet':
        reference = torchvision_models[arch].anchor_generator
        featmaps = RETINA_FEATMAPS
    else:
        reference = torchvision_models[arch].rpn.anchor_generator
        featmaps = [(200, 272), (100, 136), (50, 68), (25, 34), (13, 17)]
    feats = [torch.zeros(1, 1, h, w) for h, w in featmaps]
    expected = reference(ImageList(torch.zeros(1, 3, 800, 1088), [(800, 1067)]), feats)[0]
    ours = torch.cat(gen.grid_anchors(featmaps, input_shape=(800, 1088)))
    assert torch.equal(ours, expected)


def test_heads_read_the_batch_shape_from_the_samples():
    head = RetinaHead(num_classes=1, in_channels=4, feat_channels=4, stacked_convs=1,
                      anchor_generator=dict(type='AnchorGenerator', strides=[8, 16],
                                            ratios=[1.0], sizes=[[4], [6]],
                                            strides_from_image=True),
                      bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
                      loss_cls=dict(type='FocalLoss'), loss_bbox=dict(type='L1Loss'))
    with torch.no_grad():
        for param in head.parameters():
            param.zero_()  # every score sigmoid(0) = 0.5, every delta 0: the boxes are anchors
    cls_scores, bbox_preds = head([torch.zeros(1, 4, 5, 5), torch.zeros(1, 4, 3, 3)])
    sample = DetSample(img_shape=(40, 40), pad_shape=(40, 40), batch_input_shape=(40, 40))
    dets = head.predict(cls_scores, bbox_preds, [sample])[0]
    assert len(dets) == 25 + 9
    # level 1 is 3x3 in a 40 px input: its 6 px anchors are 40 // 3 = 13 px apart, not 16
    widths = dets.bboxes[:, 2] - dets.bboxes[:, 0]
    assert sorted(dets.bboxes[widths == 6, 0].tolist()) == [10.0] * 3 + [23.0] * 3
    with pytest.raises(ValueError, match='batch_input_shape'):
        head.predict(cls_scores, bbox_preds, [DetSample(img_shape=(40, 40))])


# ---------------------------------------------------------------------------- box coder, RPN
def test_decode_without_clamp_shrink_equals_torchvision_box_coder():
    priors = torch.tensor([[10., 20., 110., 70.], [0., 0., 32., 32.]])
    deltas = torch.tensor([[0.5, -1.0, -30.0, 10.0], [2.0, 0.3, -22.0, 25.0]])  # raw (10,10,5,5)
    stds = (0.1, 0.1, 0.2, 0.2)
    expected = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)).decode_single(deltas, priors)
    ours = DeltaXYWHBBoxCoder(target_stds=stds, clamp_shrink=False).decode(priors, deltas)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-6)
    # dw = -30 / 5 = -6: width 100 * exp(-6) = 0.248 px; the default clamps at -log(62.5)
    assert float(ours[0, 2] - ours[0, 0]) == pytest.approx(100 * np.exp(-6.0), abs=1e-5)
    clamped = DeltaXYWHBBoxCoder(target_stds=stds).decode(priors, deltas)
    assert float(clamped[0, 2] - clamped[0, 0]) == pytest.approx(100 * 16 / 1000, abs=1e-5)
    assert torch.equal(clamped[:, [1, 3]], ours[:, [1, 3]])  # growth is clamped by both


def test_rpn_ranks_by_logit_where_the_sigmoid_ties():
    head = RPNHead(in_channels=4, feat_channels=4,
                   anchor_generator=dict(type='AnchorGenerator', strides=[16], ratios=[1.0],
                                         scales=[2.0]),
                   bbox_coder=dict(type='DeltaXYWHBBoxCoder'), loss_bbox=dict(type='L1Loss'),
                   loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True),
                   test_cfg=dict(nms_pre=1, max_per_img=1))
    cls_score = torch.tensor([[[[18.0, 19.0]]]])  # sigmoid: both exactly 1.0 in float32
    assert torch.sigmoid(cls_score[0, 0, 0, 0]) == torch.sigmoid(cls_score[0, 0, 0, 1])
    proposals = head.predict_proposals([cls_score], [torch.zeros(1, 4, 1, 2)],
                                       [DetSample(img_shape=(16, 32))])[0]
    assert proposals.bboxes.tolist() == [[0.0, 0.0, 32.0, 16.0]]  # the anchor at x = 16


# ---------------------------------------------------------------------------- RoI levels
def test_canonical_level_mapping_equals_torchvision_at_the_boundaries():
    # scale = sqrt(w * h): 112, 224, 448 exactly, just below them, and 224 * (1 - 4e-7), where
    # the two placements of the 1e-6 disagree
    sides = [[112, 112], [224, 224], [448, 448], [111.99, 112], [223.99, 224],
             [447.99, 448], [224, 224 * (1 - 8e-7)], [10, 10], [1000, 1000]]
    boxes = torch.tensor([[0.0, 0.0, w, h] for w, h in sides])
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(1000, 2, generator=generator) * 600
    random_boxes = torch.cat([corners, corners + torch.rand(1000, 2, generator=generator) * 900
                              + 1], dim=1)
    boxes = torch.cat([boxes, random_boxes])
    expected = LevelMapper(2, 5)([boxes])
    ours = map_rois_to_canonical_levels(boxes, min_level=2, max_level=5)
    assert torch.equal(ours, expected)
    assert ours[:9].tolist() == [1, 2, 3, 0, 1, 2, 2, 0, 3]
    assert map_rois_to_levels(boxes[:9], num_levels=4).tolist() == [1, 2, 3, 0, 1, 2, 1, 0, 3]


def test_roi_align_with_canonical_scale_equals_multi_scale_roi_align():
    extractor = MultiLevelRoIAlign(featmap_strides=[4, 8, 16, 32], output_size=7,
                                   sampling_ratio=2, aligned=False, canonical_scale=224)
    generator = torch.Generator().manual_seed(1)
    feats = [torch.randn(2, 8, 160 // s, 224 // s, generator=generator) for s in (4, 8, 16, 32)]
    corners = torch.rand(2, 60, 2, generator=generator) * torch.tensor([200.0, 140.0])
    boxes = torch.cat([corners, corners + 4 + torch.rand(2, 60, 2, generator=generator) * 600],
                      dim=2)
    pooler = MultiScaleRoIAlign(['0', '1', '2', '3'], 7, 2)
    expected = pooler({str(i): f for i, f in enumerate(feats)}, list(boxes),
                      [(160, 224), (150, 200)])
    rois = torch.cat([torch.cat([torch.full((60, 1), float(i)), boxes[i]], 1) for i in (0, 1)])
    assert torch.equal(extractor(feats, rois), expected)
    assert set(extractor.map_rois_to_levels(rois).tolist()) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match='power-of-2'):
        MultiLevelRoIAlign(featmap_strides=[4, 12], canonical_scale=224)


# ---------------------------------------------------------------------------- converter
@pytest.fixture(scope='module')
def torchvision_models():
    """Both models as torchvision's builders make them without weights (nn.BatchNorm2d)."""
    torch.manual_seed(0)
    return {'retinanet': retinanet_resnet50_fpn(weights=None, weights_backbone=None),
            'faster_rcnn': fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)}


@pytest.fixture(scope='module')
def torchvision_state_dicts(torchvision_models):
    return {arch: model.state_dict() for arch, model in torchvision_models.items()}


def detkit_shapes(arch):
    from mmengine.config import Config
    model = MODELS.build(Config.fromfile(str(CONFIGS[arch])).model)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize('arch', ['retinanet', 'faster_rcnn'])
def test_converted_keys_and_shapes_are_the_detkit_models(arch, torchvision_state_dicts):
    state = torchvision_state_dicts[arch]
    assert any(k.endswith('num_batches_tracked') for k in state)
    checkpoint = convert_torchvision_detector(state)  # arch told from the keys
    converted = checkpoint['state_dict']
    assert {k: tuple(v.shape) for k, v in converted.items()} == detkit_shapes(arch)
    key_map = retinanet_key_map() if arch == 'retinanet' else faster_rcnn_key_map()
    assert set(key_map) == set(converted)
    assert torch.equal(converted['backbone.layer3.5.bn2.running_var'],
                       state['backbone.body.layer3.5.bn2.running_var'])
    assert torch.equal(converted['neck.lateral_convs.0.conv.weight'],
                       state['backbone.fpn.inner_blocks.0.0.weight'])
    meta = checkpoint['meta']
    assert meta['converted_from'] == ('torchvision retinanet_resnet50_fpn (v1)'
                                      if arch == 'retinanet' else
                                      'torchvision fasterrcnn_resnet50_fpn (v1)')
    classes = meta['dataset_meta']['classes']
    assert len(COCO_CATEGORIES) == 91 and COCO_CATEGORIES[:2] == ('__background__', 'person')
    assert classes == (COCO_CATEGORIES if arch == 'retinanet' else COCO_CATEGORIES[1:])
    if arch == 'retinanet':
        assert torch.equal(converted['neck.fpn_convs.4.conv.weight'],
                           state['backbone.fpn.extra_blocks.p7.weight'])
        assert torch.equal(converted['bbox_head.cls_convs.3.conv.bias'],
                           state['head.classification_head.conv.3.0.bias'])


def test_faster_rcnn_classes_move_background_last(torchvision_state_dicts):
    state = torchvision_state_dicts['faster_rcnn']
    converted = convert_torchvision_detector(state, 'faster_rcnn')['state_dict']
    cls_w, cls_b = (state[f'roi_heads.box_predictor.cls_score.{p}'] for p in ('weight', 'bias'))
    reg_w, reg_b = (state[f'roi_heads.box_predictor.bbox_pred.{p}'] for p in ('weight', 'bias'))
    ours_w = converted['roi_head.bbox_head.fc_cls.weight']
    assert ours_w.shape == (91, 1024)
    assert torch.equal(ours_w[0], cls_w[1])      # person: torchvision 1 -> detkit 0
    assert torch.equal(ours_w[89], cls_w[90])    # toothbrush: 90 -> 89
    assert torch.equal(ours_w[90], cls_w[0])     # background last
    assert torch.equal(converted['roi_head.bbox_head.fc_cls.bias'],
                       torch.cat([cls_b[1:], cls_b[:1]]))
    assert converted['roi_head.bbox_head.fc_reg.weight'].shape == (360, 1024)
    assert torch.equal(converted['roi_head.bbox_head.fc_reg.weight'][:4], reg_w[4:8])
    assert torch.equal(converted['roi_head.bbox_head.fc_reg.bias'], reg_b[4:])


def old_style(state):
    """The keys torchvision < 0.10 wrote (no Conv2dNormActivation wrappers)."""
    renamed = {}
    for key, value in state.items():
        parts = key.split('.')
        if key.startswith(('backbone.fpn.inner_blocks.', 'backbone.fpn.layer_blocks.')):
            key = '.'.join(parts[:4] + parts[5:])                    # inner_blocks.{i}.0.w
        elif key.startswith('head.') and parts[2] == 'conv':
            key = '.'.join(parts[:3] + [str(2 * int(parts[3]))] + parts[5:])  # conv.{2i}.w
        elif key.startswith('rpn.head.conv.0.0.'):
            key = 'rpn.head.conv.' + parts[-1]
        renamed[key] = value
    return renamed


@pytest.mark.parametrize('arch', ['retinanet', 'faster_rcnn'])
def test_old_torchvision_key_style_converts_the_same(arch, torchvision_state_dicts):
    state = torchvision_state_dicts[arch]
    old = old_style(state)
    assert len(set(old) & set(state)) < len(state)  # something was renamed
    new_result = convert_torchvision_detector(state)['state_dict']
    old_result = convert_torchvision_detector(old)['state_dict']
    assert list(new_result) == list(old_result)
    assert all(torch.equal(new_result[k], old_result[k]) for k in new_result)


def test_wrapped_checkpoints_and_module_prefix(torchvision_state_dicts):
    state = torchvision_state_dicts['retinanet']
    plain = convert_torchvision_detector(state)['state_dict']
    for wrapped in ({'model': state, 'epoch': 3}, {'state_dict': state},
                    {f'module.{k}': v for k, v in state.items()}):
        converted = convert_torchvision_detector(wrapped)['state_dict']
        assert list(converted) == list(plain)


def test_converter_errors_name_the_keys(torchvision_state_dicts):
    state = dict(torchvision_state_dicts['faster_rcnn'])
    with pytest.raises(ValueError, match=r"1 unknown keys .*: roi_heads\.mask_head\.0\.weight"):
        convert_torchvision_detector({**state, 'roi_heads.mask_head.0.weight': torch.zeros(1)})
    missing = {k: v for k, v in state.items() if k != 'backbone.fpn.layer_blocks.2.0.bias'}
    with pytest.raises(ValueError,
                       match=r'1 missing keys: backbone\.fpn\.layer_blocks\.2\.0\.bias '
                             r'or backbone\.fpn\.layer_blocks\.2\.bias'):
        convert_torchvision_detector(missing)
    doubled = {**state, 'rpn.head.conv.weight': state['rpn.head.conv.0.0.weight']}
    with pytest.raises(ValueError, match=r'both the old and the new .*rpn\.head\.conv\.0\.0\.'
                                         r'weight and rpn\.head\.conv\.weight'):
        convert_torchvision_detector(doubled)
    torch.manual_seed(0)
    voc = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=21)
    with pytest.raises(ValueError, match=r'fc_cls\.weight has 21 output rows \(21 classes\).*91 '
                                         'COCO categories'):
        convert_torchvision_detector(voc.state_dict())
    with pytest.raises(ValueError, match="cannot tell the torchvision architecture.*"
                                         "'backbone.body.conv1.weight'"):
        convert_torchvision_detector({k: v for k, v in state.items()
                                      if k.startswith('backbone.')})
    with pytest.raises(ValueError, match="arch='mask_rcnn' is not supported"):
        convert_torchvision_detector(state, 'mask_rcnn')
    with pytest.raises(ValueError, match="holds a dict with keys \\['epoch', 'optimizer'\\]"):
        convert_torchvision_detector({'epoch': 1, 'optimizer': {}})
    with pytest.raises(ValueError, match='unknown keys'):  # a RetinaNet read as Faster R-CNN
        convert_torchvision_detector(torchvision_state_dicts['retinanet'], 'faster_rcnn')


def test_atomic_save_replaces_or_keeps_the_file(tmp_path):
    path = tmp_path / 'out' / 'model.pth'
    save_checkpoint_atomic({'state_dict': {'a': torch.ones(2)}}, path)
    save_checkpoint_atomic({'state_dict': {'a': torch.zeros(3)}}, path)
    assert torch.load(path, weights_only=True)['state_dict']['a'].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(Exception):
        save_checkpoint_atomic({'state_dict': {'a': lambda: 0}}, path)  # cannot be pickled
    assert torch.load(path, weights_only=True)['state_dict']['a'].tolist() == [0.0, 0.0, 0.0]
    assert sorted(p.name for p in path.parent.iterdir()) == ['model.pth']


def test_tool_converts_a_reference_training_checkpoint(tmp_path, torchvision_state_dicts):
    state = torchvision_state_dicts['faster_rcnn']
    source = tmp_path / 'model_25.pth'  # torchvision's references/detection/train.py layout
    torch.save({'model': state, 'epoch': 25, 'args': argparse.Namespace(lr=0.02)}, source)
    out = tmp_path / 'converted' / 'faster_rcnn_tv.pth'
    run = subprocess.run([sys.executable, str(TOOL), str(source), str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert 'configs/torchvision/faster_rcnn_r50_fpn_tv.py' in run.stdout
    assert 'torchvision fasterrcnn_resnet50_fpn (v1) model_25.pth' in run.stdout
    written = torch.load(out, weights_only=True)
    expected = convert_torchvision_detector(state, 'faster_rcnn', source='model_25.pth')
    assert written['meta'] == expected['meta']
    assert list(written['state_dict']) == list(expected['state_dict'])
    assert all(torch.equal(written['state_dict'][k], v)
               for k, v in expected['state_dict'].items())
    # errors end the tool with their message (in process: a second interpreter costs 6 s)
    spec = importlib.util.spec_from_file_location('torchvision_to_detkit', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(SystemExit, match=r'torchvision_to_detkit\.py: .*missing keys'):
        tool.main([str(source), str(out), '--arch', 'retinanet'])
    with pytest.raises(SystemExit, match=r"checkpoint '.*nothing\.pth' does not exist"):
        tool.main([str(tmp_path / 'nothing.pth'), str(out)])
