"""RPNHead: shapes of both objectness layouts, anchors, the random sampler's counts, the loss
values at zero logits (sigmoid, softmax, GroupSoftmax), proposals (clip, min size, NMS per level
with level ids, limits) and the sigmoid CrossEntropyLoss."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

from detkit.models.heads import RPNHead, select_proposals
from detkit.models.losses import CrossEntropyLoss, GroupSoftmaxLoss
from detkit.models.task_utils import AssignResult, ProposalConfig, RandomSampler
from detkit.registry import MODELS
from detkit.structures import DetSample

CONFIG = Path(__file__).resolve().parents[1] / 'configs/_base_/models/faster_rcnn_r50_fpn.py'
SIZES = [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]  # P2-P6 of a 128x128 input
CHANNELS = 8
GROUP_SOFTMAX = dict(type='GroupSoftmaxLoss')
SOFTMAX = dict(type='CrossEntropyLoss', use_sigmoid=False)


def build_rpn(**overrides):
    """The Faster R-CNN config's RPN head (train and test settings included), 8 channels."""
    model = Config.fromfile(str(CONFIG)).model
    cfg = dict(model.rpn_head, in_channels=CHANNELS, feat_channels=CHANNELS,
               **model.train_cfg.rpn, train_proposal_cfg=model.train_cfg.rpn_proposal,
               test_cfg=model.test_cfg.rpn)
    cfg.update(overrides)
    head = MODELS.build(cfg)
    head.init_weights()
    return head


def features(batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, CHANNELS, h, w, generator=generator) for h, w in SIZES]


def samples_128(dataset_indices=(0, 0)):
    boxes = [[[10., 10., 60., 70.], [50., 40., 120., 120.]], [[30., 20., 100., 110.]]]
    return [DetSample(img_shape=(128, 128), ori_shape=(128, 128), gt_bboxes=torch.tensor(b),
                      gt_labels=torch.zeros(len(b), dtype=torch.long), dataset_index=d)
            for b, d in zip(boxes, dataset_indices)]


def zero_head(head):
    with torch.no_grad():
        for p in head.parameters():
            p.zero_()
    return head


# ---------------------------------------------------------------------------- shapes, anchors
def test_sigmoid_and_joint_softmax_output_shapes():
    head = build_rpn()
    assert isinstance(head, RPNHead)
    assert head.num_anchors == 3 and head.cls_out_channels == 1
    assert isinstance(head.loss_cls, CrossEntropyLoss) and head.loss_cls.use_sigmoid
    cls_scores, bbox_preds = head(features())
    assert [tuple(c.shape) for c in cls_scores] == [(2, 3, h, w) for h, w in SIZES]
    assert [tuple(b.shape) for b in bbox_preds] == [(2, 12, h, w) for h, w in SIZES]
    assert {k: tuple(v.shape) for k, v in head.state_dict().items()} == {
        'rpn_conv.weight': (8, 8, 3, 3), 'rpn_conv.bias': (8,),
        'rpn_cls.weight': (3, 8, 1, 1), 'rpn_cls.bias': (3,),
        'rpn_reg.weight': (12, 8, 1, 1), 'rpn_reg.bias': (12,)}

    joint = build_rpn(num_datasets=2, loss_cls=GROUP_SOFTMAX)
    assert joint.cls_out_channels == 3 and isinstance(joint.loss_cls, GroupSoftmaxLoss)
    cls_scores, _ = joint(features())
    assert [tuple(c.shape) for c in cls_scores] == [(2, 9, h, w) for h, w in SIZES]
    # the group table: dataset d's object alone in group 1; background and the rest group 0
    assert joint.group_table.tolist() == [[1, 0, 0], [0, 1, 0]]
    assert 'group_table' not in joint.state_dict()  # checkpoints keep mmdetection's keys


def test_anchors_one_scale_three_ratios_per_level():
    head = build_rpn()
    anchors = head.anchors(SIZES, torch.device('cpu'))
    assert [a.shape[0] for a in anchors] == [3 * h * w for h, w in SIZES]
    for level, stride in enumerate([4, 8, 16, 32, 64]):
        first = anchors[level][:3]  # the three ratios at location (0, 0)
        w, h = first[:, 2] - first[:, 0], first[:, 3] - first[:, 1]
        torch.testing.assert_close(w * h, torch.full((3,), (8.0 * stride) ** 2))
        torch.testing.assert_close(h / w, torch.tensor([0.5, 1.0, 2.0]))
        torch.testing.assert_close((first[:, :2] + first[:, 2:]) / 2, torch.zeros(3, 2))


# ---------------------------------------------------------------------------- sampler
def assignment(num_pos, num_neg, num_ignored):
    gt_inds = torch.cat([torch.ones(num_pos, dtype=torch.long), torch.zeros(num_neg).long(),
                         torch.full((num_ignored,), -1)])
    perm = torch.randperm(gt_inds.numel(), generator=torch.Generator().manual_seed(3))
    gt_inds = gt_inds[perm]
    return AssignResult(num_gts=1, gt_inds=gt_inds, max_overlaps=torch.zeros(gt_inds.numel()),
                        labels=torch.where(gt_inds > 0, 0, -1))


@pytest.mark.parametrize('num_pos, num_neg, neg_pos_ub, want_pos, want_neg', [
    (500, 1000, -1, 128, 128),   # many positives: half of 256
    (10, 1000, -1, 10, 246),     # few positives: negatives fill up to 256
    (10, 1000, 2, 10, 20),       # negatives capped at 2 per positive
    (0, 1000, 2, 0, 2),          # ... and at 2 when there is no positive
    (10, 50, -1, 10, 50),        # fewer priors than 256: every one of them
])
def test_random_sampler_counts(num_pos, num_neg, neg_pos_ub, want_pos, want_neg):
    torch.manual_seed(0)
    sampler = RandomSampler(num=256, pos_fraction=0.5, neg_pos_ub=neg_pos_ub,
                            add_gt_as_proposals=False)
    assigned = assignment(num_pos, num_neg, num_ignored=300)
    priors = torch.rand(assigned.gt_inds.numel(), 4)
    result = sampler.sample(assigned, priors, torch.tensor([[0., 0., 1., 1.]]),
                            torch.tensor([0]))
    assert (result.num_pos, result.num_neg) == (want_pos, want_neg)
    assert result.num_pos <= 256 * 0.5 and result.num_pos + result.num_neg <= 256
    assert torch.all(assigned.gt_inds[result.pos_inds] > 0)
    assert torch.all(assigned.gt_inds[result.neg_inds] == 0)  # never an ignored prior
    assert result.pos_inds.unique().numel() == want_pos  # without replacement
    assert result.neg_inds.unique().numel() == want_neg
    assert not result.pos_is_gt.any()
    assert torch.equal(result.priors, torch.cat([priors[result.pos_inds],
                                                 priors[result.neg_inds]]))


# ---------------------------------------------------------------------------- loss
def test_sigmoid_loss_at_zero_logits_is_log2_per_sampled_anchor():
    torch.manual_seed(0)
    head = zero_head(build_rpn())
    anchors = torch.cat(head.anchors(SIZES, torch.device('cpu')))
    samples = samples_128()
    labels, targets = head.assign_and_sample_anchors(anchors, samples[0])
    num_pos, num_neg = int((labels == 0).sum()), int((labels == 1).sum())
    assert 0 < num_pos <= 128 and num_pos + num_neg == 256
    assert int((labels == -1).sum()) == anchors.shape[0] - 256
    assert torch.all(targets[labels != 0] == 0) and targets[labels == 0].abs().sum() > 0

    with torch.no_grad():
        losses = head.loss(*head(features()), samples)
    assert set(losses) == {'loss_rpn_cls', 'loss_rpn_bbox'}
    assert float(losses['loss_rpn_cls']) == pytest.approx(math.log(2), rel=1e-6)
    # deltas are 0, so loss_rpn_bbox = sum |target| over positives / 512 sampled anchors
    torch.manual_seed(1)
    targets = [head.assign_and_sample_anchors(anchors, s) for s in samples]
    expected = sum(float(t[labels == 0].abs().sum()) for labels, t in targets) / 512
    torch.manual_seed(1)
    with torch.no_grad():
        losses = head.loss(*head(features()), samples)
    assert float(losses['loss_rpn_bbox']) == pytest.approx(expected, rel=1e-5)


def test_joint_softmax_labels_and_group_softmax_loss_at_zero_logits():
    torch.manual_seed(0)
    head = zero_head(build_rpn(num_datasets=2, loss_cls=GROUP_SOFTMAX))
    anchors = torch.cat(head.anchors(SIZES, torch.device('cpu')))
    samples = samples_128(dataset_indices=(0, 1))
    counts = []
    for sample in samples:
        labels, _ = head.assign_and_sample_anchors(anchors, sample)
        # positives are "object of this image's dataset", negatives background (index D = 2)
        assert set(labels.unique().tolist()) == {-1, sample.dataset_index, 2}
        counts.append((int((labels == sample.dataset_index).sum()), int((labels == 2).sum())))
    num_pos = sum(c[0] for c in counts)
    num_neg = sum(c[1] for c in counts)
    # zero logits, p = 1/3 each: a positive's group {d} gives log 3; a negative's group
    # {background, other dataset's object} gives log 3 - log 2
    expected = (num_pos * math.log(3) + num_neg * math.log(1.5)) / (num_pos + num_neg)
    torch.manual_seed(0)
    with torch.no_grad():
        losses = head.loss(*head(features()), samples)
    assert float(losses['loss_rpn_cls']) == pytest.approx(expected, rel=1e-6)

    plain = zero_head(build_rpn(num_datasets=2, loss_cls=SOFTMAX))
    assert isinstance(plain.loss_cls, CrossEntropyLoss) and not plain.loss_cls.use_sigmoid
    with torch.no_grad():
        losses = plain.loss(*plain(features()), samples)
    assert float(losses['loss_rpn_cls']) == pytest.approx(math.log(3), rel=1e-6)

    with pytest.raises(ValueError, match='dataset_index=2, expected 0..1'):
        head.loss(*head(features()), samples_128(dataset_indices=(0, 2)))


def test_joint_objectness_is_one_minus_background_probability():
    head = build_rpn(num_datasets=2, loss_cls=GROUP_SOFTMAX)
    logits = torch.tensor([[1.0, -1.0, 0.5], [0.0, 0.0, 3.0]])  # two anchors, A = 3 needs 9
    cls_score = torch.zeros(1, 9, 1, 1)
    cls_score[0, :3, 0, 0] = logits[0]
    cls_score[0, 3:6, 0, 0] = logits[1]
    objectness = head.objectness(cls_score)
    assert objectness.shape == (1, 3)
    expected = 1 - logits.softmax(dim=1)[:, 2]
    torch.testing.assert_close(objectness[0, :2], expected)
    assert float(objectness[0, 2]) == pytest.approx(2 / 3)
    sigmoid_head = build_rpn()
    torch.testing.assert_close(sigmoid_head.objectness(torch.full((1, 3, 1, 1), 2.0)),
                               torch.full((1, 3), 1 / (1 + math.exp(-2.0))))


def test_layout_and_loss_must_agree():
    with pytest.raises(ValueError, match=r"loss_cls=GroupSoftmaxLoss does not fit the sigmoid "
                                         r"objectness of num_datasets=None; use loss_cls=dict\("
                                         r"type='CrossEntropyLoss', use_sigmoid=True\)"):
        build_rpn(loss_cls=GROUP_SOFTMAX)
    with pytest.raises(ValueError, match=r"loss_cls=CrossEntropyLoss\(use_sigmoid=True\) does "
                                         r"not fit the softmax objectness of num_datasets=2"):
        build_rpn(num_datasets=2)  # the config's sigmoid CE
    with pytest.raises(ValueError, match='does not fit the sigmoid objectness'):
        build_rpn(loss_cls=dict(type='CrossEntropyLoss'))
    with pytest.raises(ValueError, match='GroupSoftmaxLoss is a softmax over groups'):
        build_rpn(num_datasets=2, loss_cls=dict(type='GroupSoftmaxLoss', use_sigmoid=True))


def test_use_group_softmax_says_what_to_write_instead():
    with pytest.raises(TypeError, match=r"RPNHead no longer takes use_group_softmax: GroupSoftmax "
                                        r"is chosen by naming its loss.*loss_cls=dict\("
                                        r"type='GroupSoftmaxLoss'\)"):
        build_rpn(num_datasets=2, use_group_softmax=True)


# ---------------------------------------------------------------------------- proposals
def test_select_proposals_nms_per_level_min_size_and_limit():
    box = [10., 10., 50., 50.]
    boxes = torch.tensor([box, box, [11., 10., 51., 50.], [60., 60., 60., 90.],
                          [70., 70., 70.5, 80.], [0., 0., 100., 100.]])
    scores = torch.tensor([0.9, 0.8, 0.95, 0.99, 0.7, 0.1])
    levels = torch.tensor([0, 1, 0, 0, 2, 3])
    kept, kept_scores = select_proposals(boxes, scores, levels,
                                         ProposalConfig(nms_iou_thr=0.7, min_bbox_size=0))
    # the zero-width box is removed; the near-duplicate on level 0 suppresses the 0.9 box, but
    # the identical box on level 1 survives; the 0.5 px wide box passes min_bbox_size 0
    assert kept_scores.tolist() == pytest.approx([0.95, 0.8, 0.7, 0.1])
    assert kept[1].tolist() == box
    kept, kept_scores = select_proposals(boxes, scores, levels,
                                         ProposalConfig(min_bbox_size=1.0, max_per_img=2))
    assert kept_scores.tolist() == pytest.approx([0.95, 0.8])
    # two identical boxes on two levels both survive: level ids are the NMS groups
    same = torch.tensor([box, box])
    kept, _ = select_proposals(same, torch.tensor([0.9, 0.8]), torch.tensor([2, 4]),
                               ProposalConfig())
    assert kept.tolist() == [box, box]
    kept, _ = select_proposals(same, torch.tensor([0.9, 0.8]), torch.tensor([2, 2]),
                               ProposalConfig())
    assert kept.tolist() == [box]


def test_proposals_are_clipped_limited_and_sorted():
    head = zero_head(build_rpn())
    feats = features(batch=1)
    samples = [DetSample(img_shape=(100, 120))]  # smaller than the 128x128 input
    with torch.no_grad():
        head.rpn_reg.bias.copy_(torch.tensor([0., 0., math.log(3), math.log(3)] * 3))
        head.rpn_cls.bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
        cls_scores, bbox_preds = head(feats)
    # each level's ratio-2 anchors (score sigmoid(3)) come first; every box is 3x its anchor
    proposals = head.predict_proposals(cls_scores, bbox_preds, samples)[0]
    assert 0 < len(proposals) <= 1000
    assert torch.all(proposals.bboxes >= 0)
    assert torch.all(proposals.bboxes[:, [0, 2]] <= 120)
    assert torch.all(proposals.bboxes[:, [1, 3]] <= 100)
    assert (proposals.bboxes[:, 2] == 120).any() and (proposals.bboxes[:, 3] == 100).any()
    assert torch.all(proposals.scores[:-1] >= proposals.scores[1:])
    assert torch.all(proposals.labels == 0)
    # nms_pre=2 per level: at most 2 candidates of each of the 5 levels
    head.test_cfg = ProposalConfig(nms_pre=2, max_per_img=1000, nms_iou_thr=0.7, min_bbox_size=0)
    few = head.predict_proposals(cls_scores, bbox_preds, samples)[0]
    assert len(few) <= 10
    torch.testing.assert_close(few.scores, torch.full((len(few),), 1 / (1 + math.exp(-3.0))))
    # training proposals keep up to nms_pre 2000 per level and 1000 in all
    assert head.train_proposal_cfg == ProposalConfig(nms_pre=2000, max_per_img=1000,
                                                     nms_iou_thr=0.7, min_bbox_size=0)
    # boxes pushed out of the image are clipped to empty boxes and removed: no proposal
    with torch.no_grad():
        head.rpn_reg.bias.copy_(torch.tensor([-20., 0., 0., 0.] * 3))
        cls_scores, bbox_preds = head(feats)
    empty = head.predict_proposals(cls_scores, bbox_preds, samples)[0]
    assert len(empty) == 0 and empty.bboxes.shape == (0, 4)


def test_proposal_config_reads_mmdetection_keys():
    cfg = ProposalConfig.from_config(dict(nms_pre=1000, max_per_img=1000, min_bbox_size=0,
                                          nms=dict(type='nms', iou_threshold=0.7)),
                                     'test_cfg.rpn')
    assert cfg == ProposalConfig(1000, 1000, 0.7, 0)
    with pytest.raises(KeyError, match="test_cfg.rpn has unknown keys \\['max_num'\\]"):
        ProposalConfig.from_config(dict(max_num=1000), 'test_cfg.rpn')


# ---------------------------------------------------------------------------- sigmoid CE
def test_sigmoid_cross_entropy_matches_torch_and_ignores_minus_one():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 1, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 1, -1, 0, 1, -1])  # 0 object, 1 background, -1 not sampled
    targets = (labels == 0).double()[:, None]
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction='none')[:, 0]
    trained = labels >= 0
    loss = CrossEntropyLoss(use_sigmoid=True, loss_weight=2.0)
    assert float(loss(logits, labels)) == pytest.approx(2 * float(bce[trained].mean()),
                                                        rel=1e-12)
    assert float(loss(logits, labels, avg_factor=8.0)) == pytest.approx(
        2 * float(bce[trained].sum()) / 8, rel=1e-12)
    weight = torch.arange(6, dtype=torch.float64)
    assert float(loss(logits, labels, weight=weight, avg_factor=1.0)) == pytest.approx(
        2 * float((bce * weight)[trained].sum()), rel=1e-12)
    # several classes: the mean runs over non-ignored elements
    logits = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    labels = torch.tensor([2, 3, -1, 0])
    onehot = F.one_hot(labels.clamp(min=0), 4)[:, :3].double()
    bce = F.binary_cross_entropy_with_logits(logits, onehot, reduction='none')
    assert float(CrossEntropyLoss(use_sigmoid=True)(logits, labels)) == pytest.approx(
        float(bce[labels >= 0].mean()), rel=1e-12)
    with pytest.raises(ValueError, match='labels must lie in \\[-1, 3\\]'):
        CrossEntropyLoss(use_sigmoid=True)(logits, torch.tensor([0, 4, 1, 1]))
