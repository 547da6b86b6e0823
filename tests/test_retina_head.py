"""RetinaHead: output shapes, prior init, anchor labelling, loss parity with torch, predict."""
import math

import pytest
import torch
import torch.nn.functional as F

from detkit.models.task_utils import DenseTestConfig
from detkit.registry import MODELS
from detkit.structures import DetSample

RETINA_ASSIGNER = dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0,
                       ignore_iof_thr=0.5)


def build_head(num_classes=3, in_channels=8, anchor_generator=None, test_cfg=None,
               gamma=2.0, alpha=0.25, **kwargs):
    """A small RetinaHead from config dicts, built through the MODELS registry."""
    if anchor_generator is None:
        anchor_generator = dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                                ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32])
    cfg = dict(type='RetinaHead', num_classes=num_classes, in_channels=in_channels,
               feat_channels=kwargs.pop('feat_channels', 16),
               stacked_convs=kwargs.pop('stacked_convs', 2),
               anchor_generator=anchor_generator,
               bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                               target_stds=[1.0] * 4),
               loss_cls=dict(type='FocalLoss', gamma=gamma, alpha=alpha, loss_weight=1.0),
               loss_bbox=dict(type='L1Loss', loss_weight=1.0),
               assigner=kwargs.pop('assigner', RETINA_ASSIGNER),
               test_cfg=test_cfg, **kwargs)
    return MODELS.build(cfg)


# ---------------------------------------------------------------------------- forward and init
def test_forward_shapes_per_level():
    torch.manual_seed(0)
    head = build_head(num_classes=5, in_channels=8)
    sizes = [(12, 10), (6, 5), (3, 3)]
    feats = [torch.randn(2, 8, h, w) for h, w in sizes]
    cls_scores, bbox_preds = head(feats)
    assert head.num_anchors == 9
    assert [tuple(c.shape) for c in cls_scores] == [(2, 9 * 5, h, w) for h, w in sizes]
    assert [tuple(b.shape) for b in bbox_preds] == [(2, 9 * 4, h, w) for h, w in sizes]
    # mmdetection's module names and sizes
    assert len(head.cls_convs) == 2 and len(head.reg_convs) == 2
    assert head.retina_cls.out_channels == 45 and head.retina_reg.out_channels == 36


def test_prior_probability_init():
    torch.manual_seed(0)
    head = build_head(num_classes=4, in_channels=8, feat_channels=16)
    head.init_weights()
    assert torch.allclose(head.retina_cls.bias, torch.full((36,), -math.log(99.0)))
    assert torch.all(head.retina_reg.bias == 0)
    for conv in [m.conv for m in head.cls_convs] + [head.retina_cls]:
        assert abs(float(conv.weight.detach().std()) - 0.01) < 0.002
    with torch.no_grad():
        cls_scores, _ = head([torch.randn(2, 8, 8, 8)] * 3)
    probs = torch.cat([c.flatten() for c in cls_scores]).sigmoid()
    assert abs(float(probs.mean()) - 0.01) < 1e-3
    assert float(probs.min()) > 0.008 and float(probs.max()) < 0.012


# ---------------------------------------------------------------------------- anchor labelling
def small_grid_head(num_classes=3):
    """One level, stride 16, two concentric square anchors (16 and 32 px) centred in each cell.

    On a 2x2 feature map the anchors are, in row order ``(y * W + x) * A + a``::

        0 [0, 0, 16, 16]    1 [-8, -8, 24, 24]      (x=0, y=0)
        2 [16, 0, 32, 16]   3 [8, -8, 40, 24]       (x=1, y=0)
        4 [0, 16, 16, 32]   5 [-8, 8, 24, 40]       (x=0, y=1)
        6 [16, 16, 32, 32]  7 [8, 8, 40, 40]        (x=1, y=1)
    """
    generator = dict(type='AnchorGenerator', strides=[16], ratios=[1.0], scales=[1.0, 2.0],
                     center_offset=0.5)
    return build_head(num_classes=num_classes, anchor_generator=generator)


def test_assign_anchors_to_gt_labels_and_targets():
    head = small_grid_head(num_classes=3)
    anchors = torch.cat(head.anchors([(2, 2)], torch.device('cpu')))
    assert torch.equal(anchors[[0, 1, 3, 7]], torch.tensor(
        [[0., 0., 16., 16.], [-8., -8., 24., 24.], [8., -8., 40., 24.], [8., 8., 40., 40.]]))
    sample = DetSample(
        # gt 0: IoU 256/441 = 0.58 with anchor 0 (positive), 441/1024 = 0.43 with anchor 1
        # (between neg 0.4 and pos 0.5: ignored); gt 1: IoU 0.75 with anchor 2.
        gt_bboxes=torch.tensor([[0., 0., 21., 21.], [20., 0., 32., 16.]]),
        gt_labels=torch.tensor([2, 1]),
        # anchor 6 lies wholly inside the crowd region (IoF 1); anchor 7 only 25% (kept)
        gt_ignore_bboxes=torch.tensor([[16., 16., 32., 32.]]))
    labels, bbox_targets = head.assign_anchors_to_gt(anchors, sample)
    background = 3
    assert labels.dtype == torch.int64
    assert labels.tolist() == [2, -1, 1, background, background, background, -1, background]
    expected = torch.zeros(8, 4)
    expected[0] = head.bbox_coder.encode(anchors[0], sample.gt_bboxes[0])
    expected[2] = head.bbox_coder.encode(anchors[2], sample.gt_bboxes[1])
    assert torch.allclose(bbox_targets, expected)
    # by hand: anchor 0 centre 8, size 16; gt 0 centre 10.5, size 21
    assert torch.allclose(bbox_targets[0], torch.tensor(
        [2.5 / 16, 2.5 / 16, math.log(21 / 16), math.log(21 / 16)]))


def test_assign_without_gt_is_all_background_except_ignore_region():
    head = small_grid_head(num_classes=3)
    anchors = torch.cat(head.anchors([(2, 2)], torch.device('cpu')))
    sample = DetSample(gt_ignore_bboxes=torch.tensor([[16., 16., 32., 32.]]))
    labels, bbox_targets = head.assign_anchors_to_gt(anchors, sample)
    assert labels.tolist() == [3, 3, 3, 3, 3, 3, -1, 3]
    assert torch.all(bbox_targets == 0)


def test_assign_needs_an_assigner():
    head = MODELS.build(dict(
        type='RetinaHead', num_classes=2, in_channels=4, feat_channels=4, stacked_convs=1,
        anchor_generator=dict(type='AnchorGenerator', strides=[8], ratios=[1.0], scales=[4.0]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder'), loss_cls=dict(type='FocalLoss'),
        loss_bbox=dict(type='L1Loss')))
    with pytest.raises(RuntimeError, match='assigner'):
        head.assign_anchors_to_gt(torch.zeros(1, 4), DetSample())


# ---------------------------------------------------------------------------- loss parity
def focal_loss_by_formula(logits, labels, gamma, alpha):
    """Sum over non-ignored anchors and all classes of the focal loss, written out in float64.

    ``logits`` is ``(N, K)``; ``labels`` is ``(N,)`` with ``K`` background and ``-1`` ignored.
    """
    logits = logits.double()
    num_classes = logits.shape[1]
    target = torch.zeros_like(logits)
    positive = (labels >= 0) & (labels < num_classes)
    target[positive, labels[positive]] = 1.0
    prob = logits.sigmoid()
    log_p, log_1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
    per_element = (-alpha * target * (1 - prob) ** gamma * log_p
                   - (1 - alpha) * (1 - target) * prob ** gamma * log_1mp)
    return per_element[labels >= 0].sum()


def flatten_like_anchors(maps, channels_per_anchor, num_anchors):
    """``(B, A*c, H, W)`` maps -> ``(B, sum H*W*A, c)``, row ``(y * W + x) * A + a``."""
    out = []
    for m in maps:
        b, _, h, w = m.shape
        m = m.reshape(b, num_anchors, channels_per_anchor, h, w)  # channel = a * c + k
        out.append(m.permute(0, 3, 4, 1, 2).reshape(b, h * w * num_anchors, channels_per_anchor))
    return torch.cat(out, dim=1)


def loss_by_formula(head, cls_scores, bbox_preds, samples, gamma, alpha):
    """loss_cls and loss_bbox from the raw outputs, with plain torch and the real assigner."""
    sizes = [tuple(c.shape[-2:]) for c in cls_scores]
    anchors = torch.cat(head.anchor_generator.grid_anchors(sizes))
    logits = flatten_like_anchors(cls_scores, head.num_classes, head.num_anchors)
    deltas = flatten_like_anchors(bbox_preds, 4, head.num_anchors)
    focal, l1, num_pos = 0.0, 0.0, 0
    for i, sample in enumerate(samples):
        result = head.assigner.assign(anchors, sample.gt_bboxes, sample.gt_labels,
                                      sample.gt_ignore_bboxes)
        labels = torch.full((anchors.shape[0],), head.num_classes)
        labels[result.gt_inds < 0] = -1
        pos = result.gt_inds > 0
        labels[pos] = sample.gt_labels[result.gt_inds[pos] - 1]
        focal = focal + focal_loss_by_formula(logits[i], labels, gamma, alpha)
        if pos.any():
            gt = sample.gt_bboxes[result.gt_inds[pos] - 1].double()
            prior = anchors[pos].double()
            pw, ph = prior[:, 2] - prior[:, 0], prior[:, 3] - prior[:, 1]
            gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
            target = torch.stack([
                (gt[:, 0] + gt[:, 2] - prior[:, 0] - prior[:, 2]) / 2 / pw,
                (gt[:, 1] + gt[:, 3] - prior[:, 1] - prior[:, 3]) / 2 / ph,
                torch.log(gw / pw), torch.log(gh / ph)], dim=1)
            l1 = l1 + (deltas[i][pos].double() - target).abs().sum()
        num_pos += int(pos.sum())
    avg = max(num_pos, 1)
    return focal / avg, l1 / avg, num_pos


def loss_case():
    torch.manual_seed(0)
    head = build_head(num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1)
    head.init_weights()
    # a 64x64 batch: strides 8/16/32 -> 8x8, 4x4, 2x2 maps; perturb so logits are varied
    with torch.no_grad():
        head.retina_cls.weight.normal_(std=0.3)
        head.retina_reg.weight.normal_(std=0.3)
    feats = [torch.randn(2, 8, s, s) for s in (8, 4, 2)]
    samples = [
        DetSample(img_shape=(64, 64),
                  gt_bboxes=torch.tensor([[4., 6., 40., 36.], [30., 20., 60., 62.]]),
                  gt_labels=torch.tensor([0, 2]),
                  gt_ignore_bboxes=torch.tensor([[0., 44., 20., 64.]])),
        DetSample(img_shape=(64, 64), gt_bboxes=torch.tensor([[10., 10., 26., 50.]]),
                  gt_labels=torch.tensor([1]))]
    return head, feats, samples


def test_loss_equals_direct_computation():
    head, feats, samples = loss_case()
    cls_scores, bbox_preds = head(feats)
    losses = head.loss(cls_scores, bbox_preds, samples)
    assert set(losses) == {'loss_cls', 'loss_bbox'}
    with torch.no_grad():
        want_cls, want_bbox, num_pos = loss_by_formula(head, cls_scores, bbox_preds, samples,
                                                       gamma=2.0, alpha=0.25)
    assert num_pos >= 3  # every gt got at least one positive anchor
    assert float(losses['loss_cls'].detach()) == pytest.approx(float(want_cls), rel=1e-5)
    assert float(losses['loss_bbox'].detach()) == pytest.approx(float(want_bbox), rel=1e-5)
    assert float(losses['loss_bbox'].detach()) > 0
    # gradients reach the towers through both losses
    (losses['loss_cls'] + losses['loss_bbox']).backward()
    assert float(head.retina_cls.weight.grad.abs().sum()) > 0
    assert float(head.retina_reg.weight.grad.abs().sum()) > 0


def test_loss_with_other_focal_parameters_tracks_them():
    head, feats, samples = loss_case()
    head.loss_cls = MODELS.build(dict(type='FocalLoss', gamma=1.0, alpha=0.6))
    with torch.no_grad():
        cls_scores, bbox_preds = head(feats)
        losses = head.loss(cls_scores, bbox_preds, samples)
    want_cls, _, _ = loss_by_formula(head, cls_scores, bbox_preds, samples, gamma=1.0, alpha=0.6)
    assert float(losses['loss_cls']) == pytest.approx(float(want_cls), rel=1e-5)


def test_loss_of_an_image_without_gt():
    head, feats, _ = loss_case()
    empty = [DetSample(img_shape=(64, 64)), DetSample(img_shape=(64, 64))]
    with torch.no_grad():
        cls_scores, bbox_preds = head(feats)
        losses = head.loss(cls_scores, bbox_preds, empty)
    assert float(losses['loss_bbox']) == 0.0
    assert math.isfinite(float(losses['loss_cls']))
    # avg_factor clamps to 1: the plain sum of the negatives' focal loss
    logits = flatten_like_anchors(cls_scores, 3, head.num_anchors).reshape(-1, 3)
    background = torch.full((logits.shape[0],), 3)
    want = focal_loss_by_formula(logits, background, 2.0, 0.25)
    assert float(losses['loss_cls']) == pytest.approx(float(want), rel=1e-5)
    assert float(losses['loss_cls']) > 0


# ---------------------------------------------------------------------------- predict
NEG_LOGIT = -30.0  # sigmoid ~ 1e-13: below any score threshold


def predict_head(num_classes=3, **test_cfg):
    """Strides 8 and 16, two concentric square anchors per location (sizes 16/20 and 32/40),
    centred on ``(x * stride, y * stride)``; on a 64x64 batch the maps are 8x8 and 4x4."""
    generator = dict(type='AnchorGenerator', strides=[8, 16], ratios=[1.0], scales=[2.0, 2.5])
    cfg = dict(nms_pre=1000, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
               max_per_img=100, min_bbox_size=0)
    cfg.update(test_cfg)
    return build_head(num_classes=num_classes, anchor_generator=generator, test_cfg=cfg)


def anchor_box(level, x, y, a):
    """The anchor of ``predict_head`` at a location, by hand."""
    stride = (8, 16)[level]
    half = (8.0, 10.0)[a] * stride / 8
    return [x * stride - half, y * stride - half, x * stride + half, y * stride + half]


def run_predict(head, entries, sample=None, deltas=None, rescale=True):
    """Predict from maps that are ``NEG_LOGIT`` everywhere except at ``entries``.

    Args:
        entries: ``(level, x, y, a, k, score)`` tuples: anchor ``a`` at ``(x, y)`` of ``level``
            scores ``score`` for class ``k``.
        deltas: ``{(level, x, y, a): (dx, dy, dw, dh)}``; every other delta is 0.
    """
    k_total, num_anchors = head.num_classes, head.num_anchors
    cls_scores = [torch.full((1, num_anchors * k_total, s, s), NEG_LOGIT) for s in (8, 4)]
    bbox_preds = [torch.zeros(1, num_anchors * 4, s, s) for s in (8, 4)]
    for level, x, y, a, k, score in entries:
        cls_scores[level][0, a * k_total + k, y, x] = math.log(score / (1 - score))
    for (level, x, y, a), value in (deltas or {}).items():
        bbox_preds[level][0, a * 4:(a + 1) * 4, y, x] = torch.tensor(value)
    if sample is None:
        sample = DetSample(img_shape=(64, 64), ori_shape=(64, 64))
    return head.predict(cls_scores, bbox_preds, [sample], rescale=rescale)[0]


def test_predict_decodes_anchors_sorts_and_rescales():
    head = predict_head()
    entries = [(0, 2, 2, 0, 1, 0.9),   # [8, 8, 24, 24]
               (0, 6, 2, 1, 0, 0.6),   # [38, 6, 58, 26]
               (1, 2, 2, 0, 2, 0.8)]   # [16, 16, 48, 48] (IoU 0.25 with the first)
    sample = DetSample(img_shape=(64, 64), ori_shape=(128, 32), scale_factor=(2.0, 0.5))
    dets = run_predict(head, entries, sample)
    assert torch.allclose(dets.scores, torch.tensor([0.9, 0.8, 0.6]))
    assert dets.labels.tolist() == [1, 2, 0]
    resized = torch.tensor([anchor_box(0, 2, 2, 0), anchor_box(1, 2, 2, 0),
                            anchor_box(0, 6, 2, 1)])
    assert torch.allclose(resized, torch.tensor(
        [[8., 8., 24., 24.], [16., 16., 48., 48.], [38., 6., 58., 26.]]))
    assert torch.allclose(dets.bboxes, resized / torch.tensor([2.0, 0.5, 2.0, 0.5]))
    not_rescaled = run_predict(head, entries, sample, rescale=False)
    assert torch.allclose(not_rescaled.bboxes, resized)


def test_predict_applies_the_deltas():
    head = predict_head()
    # anchor [8, 8, 24, 24]: centre (16, 16), size 16 -> shift by (+4, -2), width x2, height /2
    deltas = {(0, 2, 2, 0): (0.25, -0.125, math.log(2.0), math.log(0.5))}
    dets = run_predict(head, [(0, 2, 2, 0, 0, 0.7)], deltas=deltas)
    assert torch.allclose(dets.bboxes, torch.tensor([[4., 10., 36., 18.]]))


def test_predict_score_threshold():
    head = predict_head(score_thr=0.3)
    entries = [(0, 2, 2, 0, 0, 0.29), (0, 6, 6, 0, 0, 0.31), (1, 1, 1, 0, 1, 0.5)]
    dets = run_predict(head, entries)
    assert torch.allclose(dets.scores, torch.tensor([0.5, 0.31]))
    assert dets.labels.tolist() == [1, 0]


def test_predict_nms_pre_keeps_top_k_per_level():
    head = predict_head(nms_pre=2)
    entries = [(0, 1, 1, 0, 0, 0.9), (0, 4, 1, 0, 0, 0.7), (0, 1, 4, 0, 0, 0.5),
               (0, 4, 4, 0, 0, 0.95),  # level 0: keeps 0.95 and 0.9
               (1, 1, 1, 0, 1, 0.3), (1, 3, 3, 0, 1, 0.2), (1, 3, 1, 0, 1, 0.1)]  # 0.3, 0.2
    dets = run_predict(head, entries)
    # a global top-2 would keep only two; per level it is 2 + 2
    assert torch.allclose(dets.scores, torch.tensor([0.95, 0.9, 0.3, 0.2]))
    assert torch.allclose(dets.bboxes, torch.tensor(
        [anchor_box(0, 4, 4, 0), anchor_box(0, 1, 1, 0), anchor_box(1, 1, 1, 0),
         anchor_box(1, 3, 3, 0)]).clamp(0, 64))


def test_predict_nms_is_class_aware():
    head = predict_head()
    # anchors 0 and 1 at (3, 3) are concentric (16 and 20 px): IoU 256 / 400 = 0.64 > 0.5
    same_class = run_predict(head, [(0, 3, 3, 0, 2, 0.8), (0, 3, 3, 1, 2, 0.7)])
    assert same_class.scores.tolist() == pytest.approx([0.8])
    assert torch.allclose(same_class.bboxes, torch.tensor([anchor_box(0, 3, 3, 0)]))
    other_class = run_predict(head, [(0, 3, 3, 0, 2, 0.8), (0, 3, 3, 1, 1, 0.7)])
    assert other_class.scores.tolist() == pytest.approx([0.8, 0.7])
    assert other_class.labels.tolist() == [2, 1]
    # the same anchor scoring for two classes gives two detections of the same box
    one_box = run_predict(head, [(0, 3, 3, 0, 0, 0.6), (0, 3, 3, 0, 1, 0.9)])
    assert one_box.labels.tolist() == [1, 0]
    assert torch.equal(one_box.bboxes[0], one_box.bboxes[1])
    # below the IoU threshold the lower box of the same class survives
    loose = predict_head(nms=dict(type='nms', iou_threshold=0.7))
    both = run_predict(loose, [(0, 3, 3, 0, 2, 0.8), (0, 3, 3, 1, 2, 0.7)])
    assert both.scores.tolist() == pytest.approx([0.8, 0.7])


def test_predict_max_per_img_keeps_the_best():
    head = predict_head(max_per_img=2)
    entries = [(0, 1, 1, 0, 0, 0.4), (0, 5, 1, 0, 1, 0.9), (0, 1, 5, 0, 2, 0.6),
               (0, 5, 5, 0, 0, 0.8)]
    dets = run_predict(head, entries)
    assert len(dets) == 2
    assert torch.allclose(dets.scores, torch.tensor([0.9, 0.8]))
    assert dets.labels.tolist() == [1, 0]


def test_predict_clips_to_img_shape_and_drops_small_boxes():
    # the batch is 64x64 but the image only (h=48, w=56): boxes are clipped to it
    sample = DetSample(img_shape=(48, 56), ori_shape=(48, 56))
    entries = [(1, 3, 3, 0, 0, 0.9),   # [32, 32, 64, 64] -> [32, 32, 56, 48] (24 x 16)
               (0, 0, 0, 0, 1, 0.8),   # [-8, -8, 8, 8] -> [0, 0, 8, 8] (8 x 8)
               (0, 3, 1, 0, 2, 0.7)]   # [16, 0, 32, 16] (16 x 16), inside
    dets = run_predict(predict_head(), entries, sample)
    assert torch.allclose(dets.bboxes, torch.tensor(
        [[32., 32., 56., 48.], [0., 0., 8., 8.], [16., 0., 32., 16.]]))
    # min_bbox_size: width or height at most the size is dropped
    dets = run_predict(predict_head(min_bbox_size=8), entries, sample)
    assert dets.labels.tolist() == [0, 2]
    dets = run_predict(predict_head(min_bbox_size=16), entries, sample)
    assert dets.labels.tolist() == []
    assert dets.bboxes.shape == (0, 4)


def test_predict_batch_of_two_images_is_per_image():
    head = predict_head()
    cls_scores = [torch.full((2, 6, s, s), NEG_LOGIT) for s in (8, 4)]
    bbox_preds = [torch.zeros(2, 8, s, s) for s in (8, 4)]
    cls_scores[0][0, 0, 2, 2] = 2.0   # image 0: class 0, anchor 0 at (2, 2)
    cls_scores[1][1, 3 + 1, 1, 1] = 1.0  # image 1: class 1, anchor 1 at (1, 1) of level 1
    samples = [DetSample(img_shape=(64, 64)), DetSample(img_shape=(64, 64))]
    first, second = head.predict(cls_scores, bbox_preds, samples)
    assert first.labels.tolist() == [0] and second.labels.tolist() == [1]
    assert torch.allclose(first.scores, torch.sigmoid(torch.tensor([2.0])))
    assert torch.allclose(second.bboxes, torch.tensor([anchor_box(1, 1, 1, 1)]).clamp(0, 64))


# ---------------------------------------------------------------------------- test_cfg
def test_dense_test_config_reads_mmdetection_keys():
    cfg = DenseTestConfig.from_config(dict(nms_pre=500, min_bbox_size=2, score_thr=0.1,
                                           nms=dict(type='nms', iou_threshold=0.6),
                                           max_per_img=50))
    assert cfg == DenseTestConfig(nms_pre=500, score_thr=0.1, nms_iou_thr=0.6, max_per_img=50,
                                  min_bbox_size=2)
    assert DenseTestConfig.from_config(None) == DenseTestConfig()


def test_dense_test_config_rejects_unknown_keys_and_nms_types():
    with pytest.raises(KeyError, match=r"test_cfg has unknown keys \['score_threshold'\]"):
        DenseTestConfig.from_config(dict(score_threshold=0.1))
    with pytest.raises(KeyError, match=r"test_cfg.nms has unknown keys \['iou_thr'\]"):
        DenseTestConfig.from_config(dict(nms=dict(type='nms', iou_thr=0.5)))
    with pytest.raises(ValueError, match=r"test_cfg.nms.type='soft_nms' is not supported"):
        DenseTestConfig.from_config(dict(nms=dict(type='soft_nms', iou_threshold=0.5)))
    with pytest.raises(KeyError, match='max_per_image'):
        build_head(test_cfg=dict(max_per_image=10))


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('score_thr', [1e-6, 0.01, 0.05, 0.3, 0.5, 0.9, 0.999])
def test_the_logit_bound_keeps_every_logit_whose_score_passes(dtype, score_thr):
    from detkit.models.task_utils import logit_lower_bound
    # every representable value of dtype from -20 to 20 (float32: a dense grid of them)
    if dtype == torch.bfloat16:
        grid = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
        logits = grid[(grid.float() > -20) & (grid.float() < 20)]
    else:
        logits = torch.linspace(-20, 20, 2_000_001, dtype=torch.float32)
    bound = logit_lower_bound(score_thr)
    passes = logits.float().sigmoid() > score_thr
    kept = logits > bound   # compared in the logits' dtype, as RetinaHead compares them
    assert bool(passes.any()) and not bool((passes & ~kept).any())
    # and the bound is tight: what it keeps but the threshold drops lies within its margin
    extra = logits[kept & ~passes].float()
    exact = math.log(score_thr / (1 - score_thr))
    assert extra.numel() == 0 or float(extra.min()) > exact - 0.06 - abs(exact) * 2 ** -5


def test_the_logit_bound_at_the_ends():
    from detkit.models.task_utils import logit_lower_bound
    assert logit_lower_bound(0.0) == logit_lower_bound(-1.0) == -math.inf
    assert logit_lower_bound(1.0) == logit_lower_bound(2.0) == math.inf
    assert logit_lower_bound(0.5) == pytest.approx(-0.05)
