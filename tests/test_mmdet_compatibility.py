"""Where detkit now trains and evaluates as mmdetection 3.3 does (docs/mmdet_compatibility.md):
anchors of a mixed-size batch, small boxes in post-processing, and COCOeval's maxDets."""
from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkit.evaluation import CocoMetric
from detkit.models.detectors import head_arguments
from detkit.models.task_utils import AnchorGenerator, ProposalConfig, trainable_anchors
from detkit.registry import MODELS
from detkit.structures import Detections, DetSample

STRIDES = [8, 16, 32]
CHANNELS = 8
# image A is 96x128, image B 128x160: the batch is 128x160 and A's anchors below row 96 and
# right of column 128 lie over padding
SHAPES = [(96, 128), (128, 160)]
GT = [torch.tensor([[10., 12., 60., 70.], [64., 20., 120., 90.]]),
      torch.tensor([[30., 40., 110., 120.], [100., 8., 150., 60.]])]


def samples(pad_shapes=SHAPES) -> list[DetSample]:
    return [DetSample(img_shape=shape, ori_shape=shape, pad_shape=pad,
                      batch_input_shape=SHAPES[1], gt_bboxes=gt,
                      gt_labels=torch.tensor([0, 2]))
            for shape, pad, gt in zip(SHAPES, pad_shapes, GT)]


def grid(shape: tuple[int, int]) -> list[tuple[int, int]]:
    return [(math.ceil(shape[0] / s), math.ceil(shape[1] / s)) for s in STRIDES]


def head_outputs(head, seed=0):
    generator = torch.Generator().manual_seed(seed)
    feats = [torch.randn(2, CHANNELS, h, w, generator=generator) for h, w in grid(SHAPES[1])]
    with torch.no_grad():
        return head(feats)


def crop(maps: list[torch.Tensor], image: int) -> list[torch.Tensor]:
    """Image ``image``'s outputs at its own padded size (the batch's grid cut to it)."""
    return [m[image:image + 1, :, :h, :w] for m, (h, w) in zip(maps, grid(SHAPES[image]))]


def retina_head():
    torch.manual_seed(0)
    head = MODELS.build(dict(
        type='RetinaHead', num_classes=3, in_channels=CHANNELS, feat_channels=CHANNELS,
        stacked_convs=1,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=2,
                              ratios=[0.5, 1.0, 2.0], strides=STRIDES),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
        loss_cls=dict(type='FocalLoss'), loss_bbox=dict(type='L1Loss'),
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)))
    for p in head.parameters():  # logits and deltas far from zero, so every anchor counts
        torch.nn.init.normal_(p, std=0.5)
    return head


def rpn_head():
    torch.manual_seed(0)
    head = MODELS.build(dict(
        type='RPNHead', in_channels=CHANNELS, feat_channels=CHANNELS,
        anchor_generator=dict(type='AnchorGenerator', scales=[4], ratios=[0.5, 1.0, 2.0],
                              strides=STRIDES),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True), loss_bbox=dict(type='L1Loss'),
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3),
        # more than every anchor: all positives and negatives are sampled, no randomness
        sampler=dict(type='RandomSampler', num=100000, pos_fraction=0.5,
                     add_gt_as_proposals=False)))
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return head


# ---------------------------------------------------------------------------- 1. valid anchors
def test_valid_flags_follow_each_images_padded_extent():
    generator = AnchorGenerator(strides=[8, 16], ratios=[1.0], scales=[4])
    sizes = [(16, 20), (8, 10)]                 # a 128x160 batch
    flags = generator.valid_flags(sizes, (96, 128))
    # level 0: rows < 12 and columns < 16 of 16x20; level 1: rows < 6, columns < 8 of 8x10
    assert flags[0].view(16, 20)[:12, :16].all() and not flags[0].view(16, 20)[12:].any()
    assert not flags[0].view(16, 20)[:, 16:].any()
    assert int(flags[1].sum()) == 6 * 8
    # ceil: a 100x130 image padded to divisor 1 still owns the partly covered locations
    assert int(generator.valid_flags(sizes, (100, 130))[0].sum()) == 13 * 17


def test_allowed_border_keeps_anchors_inside_the_image():
    generator = AnchorGenerator(strides=[16], ratios=[1.0], scales=[2])  # 32 px anchors
    anchors = torch.cat(generator.grid_anchors([(4, 4)]))                  # centres 0..48
    sample = DetSample(img_shape=(64, 64), pad_shape=(64, 64))
    assert trainable_anchors(generator, anchors, [(4, 4)], sample, -1).all()
    inside = trainable_anchors(generator, anchors, [(4, 4)], sample, 0)
    # x1 = centre - 16 >= 0 and x2 = centre + 16 < 64: centres 16 and 32 on both axes
    assert inside.view(4, 4).nonzero().tolist() == [[1, 1], [1, 2], [2, 1], [2, 2]]
    assert int(trainable_anchors(generator, anchors, [(4, 4)], sample, 16).sum()) == 16


def test_preprocessor_gives_each_image_its_own_pad_shape():
    pre = MODELS.build(dict(type='DetDataPreprocessor', pad_size_divisor=32))
    images = [torch.zeros(3, 90, 120, dtype=torch.uint8), torch.zeros(3, 128, 150,
                                                                      dtype=torch.uint8)]
    out = pre(dict(inputs=images, data_samples=[DetSample(), DetSample()]))
    assert out['inputs'].shape == (2, 3, 128, 160)
    assert [s.pad_shape for s in out['data_samples']] == [(96, 128), (128, 160)]
    assert [s.batch_input_shape for s in out['data_samples']] == [(128, 160), (128, 160)]


def test_retinanet_loss_of_a_mixed_size_batch_is_the_image_by_image_loss():
    """The batch loss equals each image's loss at its own size (summed, over all positives)."""
    head = retina_head()
    cls_scores, bbox_preds = head_outputs(head)
    batch = head.loss(cls_scores, bbox_preds, samples())
    sums, positives = {'loss_cls': 0.0, 'loss_bbox': 0.0}, 0
    for i in range(2):
        alone = samples()[i]
        alone.batch_input_shape = alone.pad_shape
        own = head.loss(crop(cls_scores, i), crop(bbox_preds, i), [alone])
        anchors = torch.cat(head.anchors(grid(SHAPES[i]), torch.device('cpu')))
        labels, _ = head.assign_anchors_to_gt(anchors, alone)
        count = int(((labels >= 0) & (labels < 3)).sum())
        assert count > 0
        positives += count
        for key in sums:
            sums[key] += float(own[key]) * count
    for key in sums:
        assert float(batch[key]) == pytest.approx(sums[key] / positives, rel=1e-5)
    # before: image A's anchors over B's padding trained as background, a different loss
    everything = head.loss(cls_scores, bbox_preds, samples(pad_shapes=[(0, 0), (0, 0)]))
    assert float(everything['loss_cls']) > float(batch['loss_cls']) * 1.01


def test_rpn_loss_of_a_mixed_size_batch_is_the_image_by_image_loss():
    head = rpn_head()
    cls_scores, bbox_preds = head_outputs(head)
    batch = head.loss(cls_scores, bbox_preds, samples())
    sums, sampled = {'loss_rpn_cls': 0.0, 'loss_rpn_bbox': 0.0}, 0
    for i in range(2):
        alone = samples()[i]
        alone.batch_input_shape = alone.pad_shape
        own = head.loss(crop(cls_scores, i), crop(bbox_preds, i), [alone])
        anchors = torch.cat(head.anchors(grid(SHAPES[i]), torch.device('cpu')))
        labels, _ = head.assign_and_sample_anchors(anchors, alone)
        count = int((labels >= 0).sum())  # every assigned anchor is sampled
        assert count > int((labels == 0).sum()) > 0
        sampled += count
        for key in sums:
            sums[key] += float(own[key]) * count
    for key in sums:
        assert float(batch[key]) == pytest.approx(sums[key] / sampled, rel=1e-5)
    everything = head.loss(cls_scores, bbox_preds, samples(pad_shapes=[(0, 0), (0, 0)]))
    assert float(everything['loss_rpn_cls']) != pytest.approx(float(batch['loss_rpn_cls']),
                                                              rel=1e-3)
    with pytest.raises(ValueError, match='set add_gt_as_proposals=False'):
        MODELS.build(dict(type='RPNHead', in_channels=CHANNELS, anchor_generator=dict(
            type='AnchorGenerator', scales=[4], ratios=[1.0], strides=STRIDES),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder'), loss_bbox=dict(type='L1Loss'),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True),
            sampler=dict(type='RandomSampler', num=256, pos_fraction=0.5)))


def test_mmdetections_train_cfg_is_accepted_as_written():
    """mmdetection 3.3's retinanet_r50_fpn.py and faster-rcnn_r50_fpn.py train_cfg, verbatim."""
    retina = dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4,
                                min_pos_iou=0, ignore_iof_thr=-1),
                  sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1,
                  debug=False)
    args = head_arguments(retina, None, ('bbox_head',), 'RetinaNet')['bbox_head']
    assert args == {'assigner': retina['assigner'], 'allowed_border': -1}
    rpn = dict(assigner=dict(type='MaxIoUAssigner'), sampler=dict(type='RandomSampler', num=256),
               allowed_border=-1, pos_weight=-1, debug=False)
    rcnn = dict(assigner=dict(type='MaxIoUAssigner'), sampler=dict(type='RandomSampler',
                                                                     num=512),
                pos_weight=-1, debug=False)
    args = head_arguments(dict(rpn=rpn, rcnn=rcnn), None, ('rpn_head', 'roi_head'), 'FasterRCNN')
    assert args == {'rpn_head': {'assigner': rpn['assigner'], 'sampler': rpn['sampler'],
                                 'allowed_border': -1},
                    'roi_head': {'assigner': rcnn['assigner'], 'sampler': rcnn['sampler']}}
    with pytest.raises(ValueError, match=r"model.train_cfg.pos_weight=2.0: detkit implements "
                                         r"pos_weight=-1 only"):
        head_arguments(dict(retina, pos_weight=2.0), None, ('bbox_head',), 'RetinaNet')
    with pytest.raises(KeyError, match=r"model.train_cfg has unknown keys \['sampler'\]"):
        head_arguments(dict(retina, sampler=dict(type='RandomSampler')), None, ('bbox_head',),
                       'RetinaNet')


# ---------------------------------------------------------------------------- 2. small boxes
def test_retinanet_drops_empty_boxes_with_min_bbox_size_zero():
    head = retina_head()
    sample = DetSample(img_shape=(64, 64), ori_shape=(64, 64))
    anchors = torch.tensor([[0., 0., 32., 32.], [64., 10., 96., 40.]])  # the second starts at
    boxes = head.bbox_coder.decode(anchors, torch.zeros(2, 4), max_shape=(64, 64))  # the edge
    assert boxes[1].tolist() == [64., 10., 64., 40.]                     # clipped: zero width

    def detections(min_bbox_size):
        head.test_cfg = head.test_cfg.from_config(dict(min_bbox_size=min_bbox_size))
        probs = torch.tensor([[0.9, 0.0, 0.0], [0.8, 0.0, 0.0]])
        return head._predict_single([anchors], [torch.logit(probs)],
                                    [torch.zeros(2, 4)], sample, rescale=True)

    assert len(detections(0)) == 1 and len(detections(-1)) == 2
    # the size is measured in original-image pixels, after rescaling (mmdetection's order)
    sample.scale_factor = (4.0, 4.0)
    assert len(detections(10)) == 0 and len(detections(7.9)) == 1


def test_rpn_min_bbox_size_minus_one_keeps_empty_proposals():
    from detkit.models.heads import select_proposals
    boxes = torch.tensor([[0., 0., 10., 10.], [5., 5., 5., 9.]])
    scores, levels = torch.tensor([0.9, 0.8]), torch.tensor([0, 1])
    kept, _ = select_proposals(boxes, scores, levels, ProposalConfig(min_bbox_size=0))
    assert len(kept) == 1
    kept, _ = select_proposals(boxes, scores, levels, ProposalConfig(min_bbox_size=-1))
    assert len(kept) == 2
    assert ProposalConfig().min_bbox_size == -1  # mmdetection's cfg.get('min_bbox_size', -1)


# ---------------------------------------------------------------------------- 3. maxDets
def crowded_image(tmp_path):
    """One 1000x1000 image with 150 objects of one class, and a detection on each."""
    boxes = [[(k % 15) * 60.0, (k // 15) * 90.0, 50.0, 80.0] for k in range(150)]
    gt = dict(images=[dict(id=1, width=1000, height=1000, file_name='a.png')],
              categories=[dict(id=1, name='thing')],
              annotations=[dict(id=k + 1, image_id=1, category_id=1, bbox=b, area=b[2] * b[3],
                                iscrowd=0) for k, b in enumerate(boxes)])
    path = tmp_path / 'gt.json'
    path.write_text(json.dumps(gt))
    xyxy = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in boxes])
    scores = torch.linspace(0.99, 0.5, 150)
    sample = DetSample(img_id=1, ori_shape=(1000, 1000),
                       pred=Detections(bboxes=xyxy, scores=scores,
                                       labels=torch.zeros(150, dtype=torch.int64)))
    return str(path), sample


def test_coco_metric_counts_up_to_1000_detections_per_image_as_mmdetection(tmp_path):
    """150 objects and 150 right detections in one image: AP50, AP75, APs/m/l and the
    per-class AP count all of them with mmdetection's maxDets (100, 300, 1000), 100 of them with
    pycocotools' default (1, 10, 100). pycocotools' summarize() reads bbox_mAP at maxDets=100
    in both (its first line is fixed at 100)."""
    ann_file, sample = crowded_image(tmp_path)
    results = {}
    for nums in ((100, 300, 1000), (1, 10, 100)):
        metric = CocoMetric(ann_file=ann_file, proposal_nums=nums, classwise=True)
        metric.dataset_meta = dict(classes=('thing',))
        metric.process({}, [sample])
        results[nums] = metric.compute_metrics(metric.results)
    mmdet, pycoco = results[(100, 300, 1000)], results[(1, 10, 100)]
    assert CocoMetric().proposal_nums == [100, 300, 1000]
    assert mmdet['bbox_mAP_50'] == mmdet['bbox_mAP_75'] == mmdet['thing_precision'] == 1.0
    at_100 = pycocotools_ap(ann_file, sample, 100)     # recall 100/150 at every IoU
    assert at_100 < 0.7
    for key in ('bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_m', 'thing_precision'):
        assert pycoco[key] == pytest.approx(at_100, abs=1e-3)
    assert mmdet['bbox_mAP'] == pycoco['bbox_mAP'] == pytest.approx(at_100, abs=1e-3)
    with pytest.raises(ValueError, match='proposal_nums must be three positive numbers'):
        CocoMetric(proposal_nums=(100, 1000))


def pycocotools_ap(ann_file: str, sample: DetSample, max_dets: int) -> float:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann_file)
        assert sample.pred is not None
        dets = [dict(image_id=1, category_id=1, bbox=[x1, y1, x2 - x1, y2 - y1], score=s)
                for (x1, y1, x2, y2), s in zip(sample.pred.bboxes.tolist(),
                                               sample.pred.scores.tolist())]
        evaluator = COCOeval(gt, gt.loadRes(dets), 'bbox')
        evaluator.params.maxDets = [1, 10, max_dets]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


# ---------------------------------------------------------------------------- data
def test_coco_boxes_under_a_pixel_are_dropped_and_counted_as_mmdetection_does(tmp_path):
    from detkit.datasets import CocoDataset
    coco = dict(images=[dict(id=1, file_name='a.png', width=100, height=80)],
                categories=[dict(id=1, name='a')],
                annotations=[dict(id=k + 1, image_id=1, category_id=1, bbox=box, area=0.0,
                                  iscrowd=0)
                             for k, box in enumerate([[10, 10, 20, 30], [40, 40, 0.5, 10],
                                                      [50, 50, 10, 0.99], [60, 60, 1, 1]])])
    path = tmp_path / 'ann.json'
    path.write_text(json.dumps(coco))
    with pytest.warns(UserWarning, match=r'dropped 2 of 4 annotations .*2 with bbox width or '
                                         r'height under 1 px \(as mmdetection drops them\)'):
        dataset = CocoDataset(ann_file=str(path), metainfo=dict(classes=('a',)))
    # area 0 (as many converters write it) is kept: mmdetection would drop all four
    assert [i['bbox'] for i in dataset.get_data_info(0)['instances']] == [
        [10.0, 10.0, 30.0, 40.0], [60.0, 60.0, 61.0, 61.0]]
