"""Faster R-CNN end to end: mmdetection checkpoint keys, a short training run of a small model
(plain and joint GroupSoftmax), predict in original pixels, modes and train_step."""
import copy
from pathlib import Path

import pytest
import torch
import torchvision
from mmengine.config import Config
from mmengine.optim import OptimWrapper

from detkit.models.losses import CrossEntropyLoss, GroupSoftmaxLoss
from detkit.models.task_utils import bbox_overlaps
from detkit.registry import MODELS
from detkit.structures import DetSample

from detector_checks import (  # noqa: F401
    IMAGE_SIZE,
    one_thread,
    painted_batch,
    predict_with_rescaled_second_image,
    seed_everything,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / 'configs/_base_/models/faster_rcnn_r50_fpn.py'
NUM_CLASSES = 3


# ---------------------------------------------------------------------------- R50 checkpoint keys
def mmdet_faster_rcnn_r50_state_dict_shapes():
    """The key -> shape map of mmdetection 3.x's ``faster-rcnn_r50_fpn_1x_coco`` checkpoint,
    written out independently of detkit."""
    shapes = {f'backbone.{k}': tuple(v.shape)
              for k, v in torchvision.models.resnet50(weights=None).state_dict().items()
              if not k.startswith('fc.')}
    for i, in_channels in enumerate((256, 512, 1024, 2048)):
        shapes[f'neck.lateral_convs.{i}.conv.weight'] = (256, in_channels, 1, 1)
        shapes[f'neck.lateral_convs.{i}.conv.bias'] = (256,)
        shapes[f'neck.fpn_convs.{i}.conv.weight'] = (256, 256, 3, 3)  # P6 is a max-pool
        shapes[f'neck.fpn_convs.{i}.conv.bias'] = (256,)
    shapes.update({
        'rpn_head.rpn_conv.weight': (256, 256, 3, 3), 'rpn_head.rpn_conv.bias': (256,),
        'rpn_head.rpn_cls.weight': (3, 256, 1, 1), 'rpn_head.rpn_cls.bias': (3,),
        'rpn_head.rpn_reg.weight': (12, 256, 1, 1), 'rpn_head.rpn_reg.bias': (12,),
        'roi_head.bbox_head.shared_fcs.0.weight': (1024, 256 * 7 * 7),
        'roi_head.bbox_head.shared_fcs.0.bias': (1024,),
        'roi_head.bbox_head.shared_fcs.1.weight': (1024, 1024),
        'roi_head.bbox_head.shared_fcs.1.bias': (1024,),
        'roi_head.bbox_head.fc_cls.weight': (81, 1024), 'roi_head.bbox_head.fc_cls.bias': (81,),
        'roi_head.bbox_head.fc_reg.weight': (320, 1024), 'roi_head.bbox_head.fc_reg.bias': (320,),
    })
    return shapes


def test_r50_config_loads_an_mmdetection_state_dict_strictly():
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.backbone.init_cfg = None  # no download of the ImageNet weights
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'FasterRCNN'
    shapes = mmdet_faster_rcnn_r50_state_dict_shapes()
    assert len(shapes) == 348  # 318 backbone + 16 neck + 6 RPN + 8 RoI head
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes

    generator = torch.Generator().manual_seed(0)
    checkpoint = {}
    for key, shape in shapes.items():
        if key.endswith('num_batches_tracked'):
            checkpoint[key] = torch.randint(1, 1000, shape, generator=generator)
        else:
            checkpoint[key] = torch.rand(shape, generator=generator)
    result = model.load_state_dict(checkpoint, strict=True)
    assert list(result.missing_keys) == [] and list(result.unexpected_keys) == []
    loaded = model.state_dict()
    for key, value in checkpoint.items():
        assert torch.equal(loaded[key], value), key
    assert torch.equal(model.roi_head.bbox_head.fc_reg.weight,
                       checkpoint['roi_head.bbox_head.fc_reg.weight'])
    assert torch.equal(model.rpn_head.rpn_cls.bias, checkpoint['rpn_head.rpn_cls.bias'])


def test_full_recipe_config_builds_with_the_1x_schedule():
    cfg = Config.fromfile(str(ROOT / 'configs/faster_rcnn_r50.py'))
    assert cfg.optim_wrapper.optimizer.lr == 0.02
    assert cfg.train_cfg.max_epochs == 12
    assert cfg.train_dataloader.dataset.type == 'CocoDataset'
    head = cfg.model.rpn_head
    assert head.anchor_generator.scales == [8] and head.anchor_generator.strides == [4, 8, 16,
                                                                                       32, 64]
    assert cfg.model.train_cfg.rpn_proposal.nms_pre == 2000
    assert cfg.model.test_cfg.rpn.nms_pre == 1000
    assert cfg.model.backbone.init_cfg.checkpoint == 'torchvision://ResNet50_Weights.IMAGENET1K_V1'


# ---------------------------------------------------------------------------- a small Faster R-CNN
def small_faster_rcnn_config(joint=False):
    """Faster R-CNN with a ResNet-18, a 32-channel FPN and 64-wide fc layers, for CPU tests.

    ``joint``: a 2-dataset softmax RPN and a RoI head, both trained with GroupSoftmax.
    """
    cfg = Config.fromfile(str(CONFIG)).model
    cfg.backbone = dict(type='ResNet', depth=18, out_indices=(0, 1, 2, 3), frozen_stages=-1,
                        norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False)
    cfg.neck.in_channels = [64, 128, 256, 512]
    cfg.neck.out_channels = 32
    cfg.rpn_head.update(in_channels=32, feat_channels=32)
    cfg.roi_head.bbox_head.update(in_channels=32, fc_out_channels=64, num_classes=NUM_CLASSES)
    cfg.train_cfg.rcnn.sampler.num = 128
    if joint:
        # ConfigDict.update merges: use_sigmoid=False replaces the base's sigmoid objectness
        cfg.rpn_head.update(num_datasets=2,
                            loss_cls=dict(type='GroupSoftmaxLoss', use_sigmoid=False))
        cfg.roi_head.bbox_head.update(loss_cls=dict(type='GroupSoftmaxLoss'))
    return cfg


# Dataset 0 annotates classes 0 and 1, dataset 1 annotates class 2 (background last, K = 3).
LABEL_GROUPS = (torch.tensor([1, 2, 0, 0]), torch.tensor([0, 0, 1, 0]))


def synthetic_batch(joint=False):
    """Two 128x128 BGR uint8 images of dark noise with a bright rectangle per object.

    With ``joint`` each image comes from one of two datasets and keeps only the boxes of the
    classes its dataset annotates (the other objects stay in the pixels, unlabelled).

    Returns:
        ``(images, samples)``: 2 ``(3, 128, 128)`` uint8 tensors and their DetSamples.
    """
    images, samples = painted_batch([([[16., 20., 60., 56.], [72., 64., 120., 120.]], [0, 2]),
                                     ([[30., 30., 100., 90.], [4., 96., 40., 124.]], [1, 2])])
    if joint:
        for index, sample in enumerate(samples):
            groups = LABEL_GROUPS[index]
            annotated = groups[sample.gt_labels] > 0
            sample.gt_bboxes = sample.gt_bboxes[annotated]
            sample.gt_labels = sample.gt_labels[annotated]
            sample.dataset_index = index
            sample.label_groups = groups
    return images, samples


def build_small_faster_rcnn(joint=False, seed=0):
    seed_everything(seed)
    model = MODELS.build(small_faster_rcnn_config(joint))
    model.init_weights()
    return model


def train(model, images, samples, steps=25, lr=0.02):
    """SGD on one batch; returns the loss history (floats)."""
    batch = model.data_preprocessor(dict(inputs=images, data_samples=samples), True)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    model.train()
    history = []
    for _ in range(steps):
        losses = model(batch['inputs'], batch['data_samples'], mode='loss')
        total = sum(v for k, v in losses.items() if k.startswith('loss'))
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in dict(losses, loss=total).items()})
    model.eval()
    return history


@pytest.fixture(scope='module')
def trained():
    """The small Faster R-CNN after 25 SGD steps on one synthetic batch, and its losses."""
    model = build_small_faster_rcnn()
    images, samples = synthetic_batch()
    history = train(model, images, samples)
    return model, images, samples, history


def test_training_on_one_batch_reduces_the_loss(trained):
    _, _, _, history = trained
    first, last = history[0], history[-1]
    assert set(first) == {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'acc',
                          'loss'}
    # at init: objectness log 2; a 4-way softmax near uniform, log 4
    assert first['loss_rpn_cls'] == pytest.approx(0.693, abs=0.01)
    assert 1.2 < first['loss_cls'] < 1.45
    assert last['loss'] < 0.6 * first['loss']
    assert last['loss_rpn_cls'] < 0.5 * first['loss_rpn_cls']
    assert last['loss_cls'] < 0.5 * first['loss_cls']
    assert last['acc'] > 80


def test_joint_group_softmax_model_trains():
    model = build_small_faster_rcnn(joint=True)
    assert model.rpn_head.cls_out_channels == 3
    assert isinstance(model.rpn_head.loss_cls, GroupSoftmaxLoss)
    assert isinstance(model.roi_head.bbox_head.loss_cls, GroupSoftmaxLoss)
    assert tuple(model.rpn_head.rpn_cls.weight.shape) == (9, 32, 1, 1)
    images, samples = synthetic_batch(joint=True)
    assert [s.gt_labels.tolist() for s in samples] == [[0], [2]]
    history = train(model, images, samples)
    first, last = history[0], history[-1]
    # at init, zero-ish logits: image 0's background group in the RoI head is {2, bg} etc.
    assert first['loss_rpn_cls'] < 0.9
    assert last['loss'] < 0.6 * first['loss']
    assert last['loss_cls'] < 0.5 * first['loss_cls']
    assert last['loss_rpn_cls'] < 0.5 * first['loss_rpn_cls']
    # predict works on the joint model and scores every class
    with torch.no_grad():
        predicted = model.test_step(dict(inputs=images, data_samples=copy.deepcopy(samples)))
    assert all(0 < len(s.pred) <= 100 for s in predicted)


def test_predict_rescales_boxes_to_the_original_image(trained):
    model, images, samples, _ = trained
    batch, predicted, resized = predict_with_rescaled_second_image(model, images, samples,
                                                                   NUM_CLASSES)
    assert float(predicted[1].pred.bboxes[:, 3].max()) > IMAGE_SIZE  # taller than the input
    # at most max_per_img detections even when many pass the score threshold
    model.roi_head.test_cfg = type(model.roi_head.test_cfg)(score_thr=0.0, max_per_img=7)
    with torch.no_grad():
        few = model.predict(batch['inputs'], copy.deepcopy(batch['data_samples']))
    model.roi_head.test_cfg = type(model.roi_head.test_cfg)()
    assert [len(s.pred) for s in few] == [7, 7]


def test_trained_model_finds_each_object(trained):
    """The best detection of each object's class covers that object (IoU > 0.5)."""
    model, images, samples, _ = trained
    with torch.no_grad():
        predicted = model.test_step(dict(inputs=images, data_samples=copy.deepcopy(samples)))
    for sample, truth in zip(predicted, samples):
        for box, label in zip(truth.gt_bboxes, truth.gt_labels):
            of_class = sample.pred.labels == label
            assert of_class.any()
            best = sample.pred.bboxes[of_class][0]  # detections are sorted by score
            assert float(bbox_overlaps(best[None], box[None])) > 0.5


def test_an_image_without_ground_truth_trains_as_background():
    model = build_small_faster_rcnn()
    images, samples = synthetic_batch()
    samples[1].gt_bboxes = torch.zeros(0, 4)
    samples[1].gt_labels = torch.zeros(0, dtype=torch.long)
    batch = model.data_preprocessor(dict(inputs=images, data_samples=samples), True)
    model.train()
    losses = model(batch['inputs'], batch['data_samples'], mode='loss')
    assert all(torch.isfinite(v).all() for v in losses.values())
    sum(v for k, v in losses.items() if k.startswith('loss')).backward()
    assert torch.isfinite(model.roi_head.bbox_head.fc_reg.weight.grad).all()
    # with no ground truth every proposal is a background RoI
    sampled = model.roi_head.assign_and_sample_proposals(torch.tensor([[0., 0., 50., 50.]]),
                                                         samples[1])
    assert (sampled.num_pos, sampled.num_neg) == (0, 1)


# ---------------------------------------------------------------------------- modes, train_step
def test_tensor_mode_returns_rpn_and_roi_outputs():
    model = build_small_faster_rcnn().eval()
    with torch.no_grad():
        (rpn_cls, rpn_reg), (cls_score, bbox_pred) = model(torch.randn(2, 3, 64, 96),
                                                            mode='tensor')
    sizes = [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]  # P2-P6
    assert [tuple(c.shape) for c in rpn_cls] == [(2, 3, h, w) for h, w in sizes]
    assert [tuple(r.shape) for r in rpn_reg] == [(2, 12, h, w) for h, w in sizes]
    assert cls_score.shape[1] == NUM_CLASSES + 1 and bbox_pred.shape[1] == 4 * NUM_CLASSES
    assert 0 < cls_score.shape[0] <= 2 * 1000 and bbox_pred.shape[0] == cls_score.shape[0]


def test_modes_needing_samples_and_unknown_modes_raise():
    model = build_small_faster_rcnn()
    inputs = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match="mode='predict'.*needs data_samples"):
        model(inputs, None, mode='predict')
    with pytest.raises(ValueError, match="mode='tensors'; expected 'loss', 'predict' or "
                                         "'tensor'"):
        model(inputs, [DetSample()], mode='tensors')
    cfg = small_faster_rcnn_config()
    cfg.train_cfg.rcnn_proposal = dict(nms_pre=10)
    with pytest.raises(KeyError, match=r"unknown sections \['rcnn_proposal'\]"):
        MODELS.build(cfg)


def test_train_step_with_an_optim_wrapper():
    model = build_small_faster_rcnn()
    images, samples = synthetic_batch()
    weight_before = model.roi_head.bbox_head.fc_cls.weight.detach().clone()
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    model.train()
    log_vars = model.train_step(dict(inputs=images, data_samples=samples), optim_wrapper)
    assert set(log_vars) == {'loss', 'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox',
                             'acc'}
    log_vars = {k: float(torch.as_tensor(v).detach()) for k, v in log_vars.items()}
    parts = sum(log_vars[k] for k in ('loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox'))
    assert log_vars['loss'] == pytest.approx(parts, rel=1e-6)  # acc is logged, not trained
    assert not torch.equal(model.roi_head.bbox_head.fc_cls.weight, weight_before)
    assert isinstance(model.rpn_head.loss_cls, CrossEntropyLoss)
