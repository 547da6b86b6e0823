"""RoI stage: level mapping and multi-level RoIAlign against torchvision, the RoI sampler with
ground truth added, Shared2FCBBoxHead shapes/targets/losses (cross entropy and GroupSoftmax),
inference (threshold, class-aware NMS, limit, rescale) and the softmax CrossEntropyLoss."""
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from torchvision.ops import roi_align

from detkit.models.heads import Shared2FCBBoxHead, StandardRoIHead, boxes_to_rois
from detkit.models.losses import CrossEntropyLoss, GroupSoftmaxLoss, group_softmax_loss_reference
from detkit.models.task_utils import (
    MaxIoUAssigner,
    MultiLevelRoIAlign,
    RandomSampler,
    RoITestConfig,
    map_rois_to_levels,
)
from detkit.registry import MODELS, TASK_UTILS
from detkit.structures import DetSample, LabelGroups

CONFIG = Path(__file__).resolve().parents[1] / 'configs/_base_/models/faster_rcnn_r50_fpn.py'
K = 3
CHANNELS = 8
SIZES = [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]  # P2-P6 of a 128x128 input


def build_roi_head(**bbox_head_overrides):
    """The Faster R-CNN config's RoI head with 8 channels, fc 16 and K = 3."""
    model = Config.fromfile(str(CONFIG)).model
    bbox_head = dict(model.roi_head.bbox_head, in_channels=CHANNELS, fc_out_channels=16,
                     num_classes=K)
    bbox_head.update(bbox_head_overrides)
    head = MODELS.build(dict(model.roi_head, bbox_head=bbox_head, **model.train_cfg.rcnn,
                             test_cfg=model.test_cfg.rcnn))
    head.init_weights()
    return head


def features(batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, CHANNELS, h, w, generator=generator) for h, w in SIZES]


def square(size, x=0.0, y=0.0):
    return [x, y, x + size, y + size]


# ---------------------------------------------------------------------------- RoIAlign
def test_level_mapping_follows_the_scale_with_finest_scale_56():
    boxes = torch.tensor([square(s) for s in (50, 112, 224, 448, 900)])
    assert map_rois_to_levels(boxes, num_levels=4).tolist() == [0, 1, 2, 3, 3]
    # the boundaries: below 112 -> P2, [112, 224) -> P3; a 56x224 box has scale 112
    boxes = torch.tensor([square(56), square(111.9), square(223.9), [0., 0., 56., 224.]])
    assert map_rois_to_levels(boxes, num_levels=4).tolist() == [0, 0, 1, 1]
    rois = torch.tensor([[1.0] + square(448), [0.0] + square(20)])  # (R, 5) works too
    assert map_rois_to_levels(rois, num_levels=3).tolist() == [2, 0]


@pytest.mark.parametrize('aligned, sampling_ratio', [(True, 0), (False, 2)])
def test_multi_level_roi_align_pools_each_roi_from_its_level(aligned, sampling_ratio):
    extractor = TASK_UTILS.build(dict(type='MultiLevelRoIAlign', featmap_strides=[4, 8, 16, 32],
                                      output_size=7, sampling_ratio=sampling_ratio,
                                      aligned=aligned))
    assert isinstance(extractor, MultiLevelRoIAlign)
    feats = features()
    rois = torch.tensor([[0.] + square(50, 10, 20), [1.] + square(120, 3, 5),
                         [0.] + square(230), [1.] + square(60, 40, 40),
                         [1.] + [10., 10., 510., 470.]])
    pooled = extractor(feats, rois)
    assert pooled.shape == (5, CHANNELS, 7, 7)
    levels = [0, 1, 2, 0, 3]
    for i, (roi, level) in enumerate(zip(rois, levels)):
        expected = roi_align(feats[level], roi[None], output_size=7,
                             spatial_scale=1 / [4, 8, 16, 32][level],
                             sampling_ratio=sampling_ratio, aligned=aligned)
        torch.testing.assert_close(pooled[i], expected[0], rtol=0, atol=0)
    # constant maps (value = 10 * image + level) show which image and level were read
    const = [torch.stack([torch.full((CHANNELS, h, w), 10.0 * b + level) for b in range(2)])
             for level, (h, w) in enumerate(SIZES)]
    inside = torch.tensor([[0.] + square(50, 8, 8), [1.] + square(120, 4, 4),
                           [1.] + square(60, 30, 30)])
    values = extractor(const, inside).mean(dim=(1, 2, 3))
    torch.testing.assert_close(values, torch.tensor([0.0, 11.0, 10.0]))
    assert extractor(feats, torch.zeros(0, 5)).shape == (0, CHANNELS, 7, 7)


@pytest.mark.parametrize('reference', [False, True])
def test_bfloat16_maps_pool_float32_rois(reference, monkeypatch):
    """Under --amp the maps are bfloat16 but the RoIs keep float32: a box at x = 1000.3 px pools
    what float32 pools (rounded to bfloat16 once, at the end), not a box moved to 1000 px."""
    import detkit.ops._extension as extension
    if reference:   # the per-level torchvision fallback (what CUDA runs)
        monkeypatch.setattr(extension, 'kernels_for', lambda device: None)
    extractor = TASK_UTILS.build(dict(type='MultiLevelRoIAlign', featmap_strides=[4, 8, 16, 32],
                                      output_size=7, sampling_ratio=2))
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(1, 8, 1200 // s, 1200 // s, generator=gen).to(torch.bfloat16)
             for s in (4, 8, 16, 32)]
    rois = torch.tensor([[0., 1000.3, 601.7, 1100.9, 713.2], [0., 3.3, 5.1, 20.9, 30.4]])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # the fallback's one-time warning
        pooled = extractor(feats, rois)
        expected = extractor([f.float() for f in feats], rois)
    assert pooled.dtype == torch.bfloat16
    assert torch.equal(pooled, expected.to(torch.bfloat16))
    moved = extractor([f.float() for f in feats], rois.to(torch.bfloat16).float())
    assert not torch.equal(pooled, moved.to(torch.bfloat16))   # rounding the RoIs would show


# ---------------------------------------------------------------------------- RoI sampling
def test_roi_sampler_adds_ground_truth_as_positive_proposals():
    torch.manual_seed(0)
    head = build_roi_head()
    assert isinstance(head.assigner, MaxIoUAssigner) and isinstance(head.sampler, RandomSampler)
    assert (head.sampler.num, head.sampler.pos_fraction) == (512, 0.25)
    gt = torch.tensor([square(40, 10, 10), square(50, 60, 60)])
    sample = DetSample(img_shape=(128, 128), gt_bboxes=gt, gt_labels=torch.tensor([2, 0]))
    # 300 proposals around the first gt (positives) and 900 far away (negatives)
    generator = torch.Generator().manual_seed(1)
    near = gt[0] + torch.rand(300, 4, generator=generator) * 4 - 2
    far = torch.tensor(square(10, 110, 110)) + torch.rand(900, 4, generator=generator)
    sampled = head.assign_and_sample_proposals(torch.cat([near, far]), sample)
    assert sampled.num_pos == 128 and sampled.num_neg == 512 - 128
    # no proposal overlaps gt 1: it trains only as its own added proposal
    assert set(sampled.pos_gt_inds.tolist()) <= {0, 1}
    if 1 in sampled.pos_gt_inds.tolist():
        assert torch.all(sampled.pos_is_gt[sampled.pos_gt_inds == 1])
    assert torch.equal(sampled.pos_gt_labels, torch.tensor([2, 0])[sampled.pos_gt_inds])
    # with few proposals every gt is sampled as itself, indices count the gts first
    sampled = head.assign_and_sample_proposals(far[:20], sample)
    assert sampled.num_pos == 2 and sampled.pos_is_gt.all()
    assert sorted(sampled.pos_inds.tolist()) == [0, 1] and sampled.num_neg == 20
    assert torch.equal(sampled.pos_priors, gt[sampled.pos_inds])
    labels, targets = head.bbox_head.targets_from_sampling(sampled)
    assert labels.tolist() == [[2, 0][i] for i in sampled.pos_inds.tolist()] + [K] * 20
    assert torch.equal(targets, torch.zeros(22, 4))  # a gt's deltas onto itself are 0


# ---------------------------------------------------------------------------- box head
def test_box_head_shapes_and_mmdetection_names():
    head = build_roi_head()
    keys = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert keys == {'bbox_head.shared_fcs.0.weight': (16, CHANNELS * 49),
                    'bbox_head.shared_fcs.0.bias': (16,),
                    'bbox_head.shared_fcs.1.weight': (16, 16),
                    'bbox_head.shared_fcs.1.bias': (16,),
                    'bbox_head.fc_cls.weight': (K + 1, 16), 'bbox_head.fc_cls.bias': (K + 1,),
                    'bbox_head.fc_reg.weight': (4 * K, 16), 'bbox_head.fc_reg.bias': (4 * K,)}
    rois = boxes_to_rois([torch.tensor([square(30), square(200)]), torch.tensor([square(90)])])
    assert rois[:, 0].tolist() == [0, 0, 1]
    cls_score, bbox_pred = head(features(), rois)
    assert cls_score.shape == (3, K + 1) and bbox_pred.shape == (3, 4 * K)
    assert head.bbox_head.bbox_coder.target_stds == (0.1, 0.1, 0.2, 0.2)
    # init: fc_reg N(0, 0.001), fc_cls N(0, 0.01), zero biases
    with torch.no_grad():
        assert float(head.bbox_head.fc_reg.weight.std()) < 0.003
        assert 0.005 < float(head.bbox_head.fc_cls.weight.std()) < 0.02
        assert float(head.bbox_head.fc_cls.bias.abs().sum()) == 0


def test_box_loss_uses_the_ground_truth_class_deltas_and_averages_over_sampled_rois():
    head = build_roi_head().bbox_head
    generator = torch.Generator().manual_seed(0)
    cls_score = torch.randn(6, K + 1, generator=generator)
    bbox_pred = torch.randn(6, 4 * K, generator=generator)
    labels = torch.tensor([2, 0, K, K, 1, K])
    targets = torch.randn(6, 4, generator=generator)
    losses = head.loss(cls_score, bbox_pred, labels, targets)
    assert set(losses) == {'loss_cls', 'loss_bbox', 'acc'}
    torch.testing.assert_close(losses['loss_cls'], F.cross_entropy(cls_score, labels))
    chosen = torch.stack([bbox_pred[0, 8:12], bbox_pred[1, 0:4], bbox_pred[4, 4:8]])
    expected = (chosen - targets[[0, 1, 4]]).abs().sum() / 6  # / all 6 sampled RoIs
    torch.testing.assert_close(losses['loss_bbox'], expected)
    # other classes' deltas and the negatives' deltas do not matter
    changed = bbox_pred.clone()
    changed[0, :8] = 100.0
    changed[2] = -100.0
    torch.testing.assert_close(head.loss(cls_score, changed, labels, targets)['loss_bbox'],
                               expected)
    acc = (cls_score.argmax(1) == labels).float().mean() * 100
    assert float(losses['acc']) == pytest.approx(float(acc))


def test_group_softmax_roi_loss_uses_each_images_label_groups():
    torch.manual_seed(0)
    head = build_roi_head(loss_cls=dict(type='GroupSoftmaxLoss'))
    assert isinstance(head.bbox_head.loss_cls, GroupSoftmaxLoss)
    with torch.no_grad():
        head.bbox_head.fc_cls.weight.zero_()  # every logit 0: p = 1 / (K + 1)
    gt = [torch.tensor([square(40, 10, 10)]), torch.tensor([square(50, 60, 60)])]
    groups = [torch.tensor([1, 0, 0, 0]),   # dataset A labels class 0 only
              torch.tensor([0, 1, 2, 0])]   # dataset B labels classes 1 and 2
    samples = [DetSample(img_shape=(128, 128), gt_bboxes=g, gt_labels=torch.tensor([label]),
                         label_groups=grp, dataset_index=i)
               for i, (g, label, grp) in enumerate(zip(gt, [0, 2], groups))]
    proposals = [torch.cat([g + torch.randn(30, 4), torch.tensor([square(8, 100, 5)] * 5)])
                 for g in gt]
    torch.manual_seed(1)
    losses = head.loss(features(), proposals, samples)
    torch.manual_seed(1)
    labels = [head.bbox_head.targets_from_sampling(head.assign_and_sample_proposals(p, s))[0]
              for p, s in zip(proposals, samples)]
    # zero logits: L = log(K + 1) - log |G|; image A's background group is {1, 2, bg}
    expected = [math.log(4) - math.log(int(groups[i].eq(groups[i][t]).sum()))
                for i, image_labels in enumerate(labels) for t in image_labels.tolist()]
    assert float(losses['loss_cls'].detach()) == pytest.approx(sum(expected) / len(expected),
                                                               rel=1e-6)
    rows = torch.cat(labels)
    per_row_groups = torch.cat([g.expand(len(lab), -1) for g, lab in zip(groups, labels)])
    reference = group_softmax_loss_reference(torch.zeros(len(rows), K + 1), rows,
                                             per_row_groups).mean()
    assert float(losses['loss_cls'].detach()) == pytest.approx(float(reference), rel=1e-6)
    # zero logits predict class 0 everywhere: right where class 0 shares the target's group
    # (image A: targets of class 0; image B: background targets, which share group 0)
    right = [bool(groups[i][0] == groups[i][t]) for i, image_labels in enumerate(labels)
             for t in image_labels.tolist()]
    assert float(losses['acc']) == pytest.approx(100 * sum(right) / len(right), rel=1e-6)
    assert 0 < sum(right) < len(right)
    # without label_groups the error names the field
    samples[1].label_groups = None
    with pytest.raises(ValueError, match=r'DetSample.label_groups of shape \(4,\).*image 1'):
        head.loss(features(), proposals, samples)
    # the config's CrossEntropyLoss takes no groups, GroupSoftmaxLoss needs them
    head = build_roi_head()
    cls_score, labels = torch.zeros(3, K + 1), torch.tensor([0, 1, K])
    groups = LabelGroups(table=torch.stack(groups), row_index=torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match=r"CrossEntropyLoss takes no label groups "
                                         r"\(groups=\.\.\.\); GroupSoftmaxLoss does"):
        head.bbox_head.loss(cls_score, torch.zeros(3, 4 * K), labels, torch.zeros(3, 4), groups)
    with pytest.raises(ValueError, match=r"GroupSoftmaxLoss needs groups=LabelGroups\(\.\.\.\)"
                                         r".*without label groups use loss_cls=dict\("
                                         r"type='CrossEntropyLoss'\)"):
        GroupSoftmaxLoss()(cls_score, labels)
    with pytest.raises(ValueError, match=r'loss_cls=CrossEntropyLoss\(use_sigmoid=True\) does '
                                         r'not fit its softmax'):
        build_roi_head(loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True))
    with pytest.raises(TypeError, match='Shared2FCBBoxHead no longer takes use_group_softmax'):
        build_roi_head(use_group_softmax=True)


def test_predict_thresholds_runs_class_aware_nms_limits_and_rescales():
    head = build_roi_head().bbox_head
    rois = torch.tensor([square(20, 10, 10), square(20, 10, 10), square(20, 60, 60)]
                        + [square(4, 5 * i, 100) for i in range(20)], dtype=torch.float32)
    num = rois.shape[0]
    cls_score = torch.full((num, K + 1), -10.0)
    cls_score[0, 0] = 5.0            # class 0
    cls_score[1, 0] = 4.0            # class 0 again on the same box: suppressed
    cls_score[1, 1] = 4.0            # class 1 on that box: kept (class-aware NMS)
    cls_score[2, K] = 5.0            # background: nothing above 0.05
    cls_score[3:, 2] = 3.0           # 20 small boxes of class 2
    bbox_pred = torch.zeros(num, 4 * K)
    sample = DetSample(img_shape=(128, 128), ori_shape=(256, 64), scale_factor=(2.0, 0.5))
    cfg = RoITestConfig(score_thr=0.05, nms_iou_thr=0.5, max_per_img=100)
    dets = head.predict_single(rois, cls_score, bbox_pred, sample, cfg, rescale=False)
    assert len(dets) == 22 and torch.all(dets.scores > 0.05)
    assert sorted(dets.labels.tolist()) == [0, 1] + [2] * 20
    assert torch.all(dets.scores[:-1] >= dets.scores[1:])
    torch.testing.assert_close(dets.bboxes[dets.labels == 0][0], rois[0])
    rescaled = head.predict_single(rois, cls_score, bbox_pred, sample, cfg, rescale=True)
    torch.testing.assert_close(rescaled.bboxes, dets.bboxes / torch.tensor([2., .5, 2., .5]))
    limited = head.predict_single(rois, cls_score, bbox_pred, sample,
                                  RoITestConfig(max_per_img=5), rescale=False)
    assert len(limited) == 5
    # class-specific deltas: class 1 moves its box right by 0.1 * 20 * 10 px (std 0.1)
    bbox_pred[1, 4] = 10.0
    moved = head.predict_single(rois, cls_score, bbox_pred, sample, cfg, rescale=False)
    torch.testing.assert_close(moved.bboxes[moved.labels == 1][0],
                               torch.tensor([30., 10., 50., 30.]))
    torch.testing.assert_close(moved.bboxes[moved.labels == 0][0], rois[0])
    # clipped to img_shape
    bbox_pred[1, 4] = 100.0
    clipped = head.predict_single(rois, cls_score, bbox_pred, sample, cfg, rescale=False)
    assert float(clipped.bboxes[:, 2].max()) == 128.0
    empty = head.predict_single(torch.zeros(0, 4), torch.zeros(0, K + 1), torch.zeros(0, 4 * K),
                                sample, cfg, rescale=True)
    assert len(empty) == 0


# ---------------------------------------------------------------------------- softmax CE
def test_softmax_cross_entropy_ignores_minus_one_and_divides_by_trained_rows():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, K + 1, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, K, -1, 2, -1])
    trained = labels >= 0
    expected = F.cross_entropy(logits[trained], labels[trained], reduction='sum')
    loss = CrossEntropyLoss(loss_weight=0.5)
    assert float(loss(logits, labels)) == pytest.approx(0.5 * float(expected) / 3, rel=1e-12)
    assert float(loss(logits, labels, avg_factor=10.0)) == pytest.approx(
        0.5 * float(expected) / 10, rel=1e-12)
    weight = torch.tensor([1., 2., 3., 4., 5.], dtype=torch.float64)
    per_row = F.cross_entropy(logits[trained], labels[trained], reduction='none')
    assert float(loss(logits, labels, weight=weight)) == pytest.approx(
        0.5 * float((per_row * weight[trained]).sum()) / 3, rel=1e-12)
    all_ignored = torch.randn(3, K + 1, requires_grad=True)
    value = loss(all_ignored, torch.full((3,), -1))
    assert float(value.detach()) == 0.0
    (grad,) = torch.autograd.grad(value, all_ignored)
    assert torch.equal(grad, torch.zeros_like(grad))
    with pytest.raises(ValueError, match=r'labels must lie in \[-1, 3\]'):
        loss(logits, torch.tensor([0, 4, 1, 1, 1]))
    assert isinstance(MODELS.build(dict(type='CrossEntropyLoss')), CrossEntropyLoss)
    assert isinstance(build_roi_head(), StandardRoIHead)
    assert isinstance(build_roi_head().bbox_head, Shared2FCBBoxHead)
