"""RetinaNet end to end: mmdetection keys, overfitting one batch, predict, modes, train_step."""
import copy

import pytest
import torch
import torchvision
from mmengine.config import Config
from mmengine.optim import OptimWrapper

from detkit.models.task_utils import bbox_overlaps
from detkit.registry import MODELS
from detkit.structures import DetSample

from detector_checks import (  # noqa: F401
    RETINANET_CONFIG,
    RETINANET_NUM_CLASSES,
    build_small_retinanet,
    one_thread,
    painted_batch,
    predict_with_rescaled_second_image,
    seed_everything,
    small_retinanet_config,
    synthetic_batch,
)

CONFIG = RETINANET_CONFIG
NUM_CLASSES = RETINANET_NUM_CLASSES


# ---------------------------------------------------------------------------- R50 checkpoint keys
def mmdet_retinanet_r50_state_dict_shapes():
    """The key -> shape map of mmdetection 3.x's ``retinanet_r50_fpn_1x_coco`` checkpoint,
    written out independently of detkit."""
    shapes = {f'backbone.{k}': tuple(v.shape)
              for k, v in torchvision.models.resnet50(weights=None).state_dict().items()
              if not k.startswith('fc.')}
    for i, in_channels in enumerate((512, 1024, 2048)):
        shapes[f'neck.lateral_convs.{i}.conv.weight'] = (256, in_channels, 1, 1)
        shapes[f'neck.lateral_convs.{i}.conv.bias'] = (256,)
    for i in range(5):
        # P3-P5 smooth the laterals; P6 reads C5 ('on_input'); P7 reads P6
        shapes[f'neck.fpn_convs.{i}.conv.weight'] = (256, 2048 if i == 3 else 256, 3, 3)
        shapes[f'neck.fpn_convs.{i}.conv.bias'] = (256,)
    for tower in ('cls_convs', 'reg_convs'):
        for i in range(4):
            shapes[f'bbox_head.{tower}.{i}.conv.weight'] = (256, 256, 3, 3)
            shapes[f'bbox_head.{tower}.{i}.conv.bias'] = (256,)
    shapes['bbox_head.retina_cls.weight'] = (9 * 80, 256, 3, 3)
    shapes['bbox_head.retina_cls.bias'] = (9 * 80,)
    shapes['bbox_head.retina_reg.weight'] = (9 * 4, 256, 3, 3)
    shapes['bbox_head.retina_reg.bias'] = (9 * 4,)
    return shapes


def test_r50_config_loads_an_mmdetection_state_dict_strictly():
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.backbone.init_cfg = None  # no download of the ImageNet weights
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'RetinaNet'
    shapes = mmdet_retinanet_r50_state_dict_shapes()
    assert len(shapes) == 354  # 318 backbone + 16 neck + 20 head
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
    assert torch.equal(model.bbox_head.retina_cls.bias, checkpoint['bbox_head.retina_cls.bias'])
    assert torch.equal(model.neck.fpn_convs[3].conv.weight,
                       checkpoint['neck.fpn_convs.3.conv.weight'])


def test_r50_config_output_shapes():
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.backbone.init_cfg = None
    seed_everything(0)
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        cls_scores, bbox_preds = model(torch.randn(1, 3, 64, 96), mode='tensor')
    sizes = [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1)]  # strides 8 .. 128, ceil
    assert [tuple(c.shape) for c in cls_scores] == [(1, 720, h, w) for h, w in sizes]
    assert [tuple(b.shape) for b in bbox_preds] == [(1, 36, h, w) for h, w in sizes]


# ---------------------------------------------------------------------------- a small RetinaNet
def test_training_on_one_batch_reduces_the_loss(trained):
    _, _, _, history = trained
    first, last = history[0], history[-1]
    # at init: focal loss ~ alpha * log(1 / 0.01) per positive; the boxes start far off
    assert 0.9 < first['loss_cls'] < 1.4 and first['loss_bbox'] > 0.3
    assert last['loss'] < 0.5 * first['loss']
    assert last['loss_cls'] < 0.5 * first['loss_cls']
    assert last['loss_bbox'] < 0.5 * first['loss_bbox']


def test_predict_after_training_rescales_boxes_to_the_original_image(trained):
    model, images, samples, _ = trained
    batch, predicted, resized = predict_with_rescaled_second_image(model, images, samples,
                                                                   NUM_CLASSES)
    assert predicted[1].scale_factor == (2.0, 0.5)
    assert not torch.allclose(predicted[1].pred.bboxes, resized[1].pred.bboxes)


def test_trained_model_finds_each_object(trained):
    """The best detection of each object's class covers that object (IoU > 0.5)."""
    model, images, samples, _ = trained
    with torch.no_grad():  # test_step: mmengine's path, preprocessor then mode='predict'
        predicted = model.test_step(dict(inputs=images, data_samples=copy.deepcopy(samples)))
    assert len(predicted) == 2
    for sample, truth in zip(predicted, samples):
        for box, label in zip(truth.gt_bboxes, truth.gt_labels):
            of_class = sample.pred.labels == label
            assert of_class.any()
            best = sample.pred.bboxes[of_class][0]  # detections are sorted by score
            assert float(bbox_overlaps(best[None], box[None])) > 0.5


# ---------------------------------------------------------------------------- modes, train_step
def test_tensor_mode_returns_raw_head_outputs():
    model = build_small_retinanet().eval()
    images, samples = synthetic_batch()
    batch = model.data_preprocessor(dict(inputs=images, data_samples=samples))
    with torch.no_grad():
        cls_scores, bbox_preds = model(batch['inputs'], mode='tensor')
        direct = model.bbox_head(model.neck(model.backbone(batch['inputs'])))
    sizes = [16, 8, 4, 2, 1]  # 128 / (8 .. 128)
    assert [tuple(c.shape) for c in cls_scores] == [(2, 9 * NUM_CLASSES, s, s) for s in sizes]
    assert [tuple(b.shape) for b in bbox_preds] == [(2, 9 * 4, s, s) for s in sizes]
    for got, want in zip(cls_scores + bbox_preds, direct[0] + direct[1]):
        assert torch.equal(got, want)
    # untrained: every score is near the 0.01 prior
    probs = torch.cat([c.flatten() for c in cls_scores]).sigmoid()
    assert abs(float(probs.mean()) - 0.01) < 0.005


def test_modes_needing_samples_and_unknown_modes_raise():
    model = build_small_retinanet()
    inputs = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match="mode='predict'.*needs data_samples"):
        model(inputs, None, mode='predict')
    with pytest.raises(ValueError, match="mode='loss'.*needs data_samples"):
        model(inputs, None, mode='loss')
    for samples in (None, [DetSample()]):
        with pytest.raises(ValueError, match="mode='tensors'; expected 'loss', 'predict' or "
                                             "'tensor'"):
            model(inputs, samples, mode='tensors')


def test_train_step_with_an_optim_wrapper():
    model = build_small_retinanet()
    model.train()
    images, samples = synthetic_batch()
    batch = model.data_preprocessor(dict(inputs=images, data_samples=copy.deepcopy(samples)),
                                    True)
    with torch.no_grad():
        expected = model(batch['inputs'], batch['data_samples'], mode='loss')
    weight_before = model.bbox_head.retina_cls.weight.detach().clone()
    optim_wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
    log_vars = model.train_step(dict(inputs=images, data_samples=samples), optim_wrapper)
    assert set(log_vars) == {'loss', 'loss_cls', 'loss_bbox'}
    log_vars = {k: float(torch.as_tensor(v).detach()) for k, v in log_vars.items()}
    assert log_vars['loss_cls'] == pytest.approx(float(expected['loss_cls']), rel=1e-5)
    assert log_vars['loss_bbox'] == pytest.approx(float(expected['loss_bbox']), rel=1e-5)
    assert log_vars['loss'] == pytest.approx(log_vars['loss_cls'] + log_vars['loss_bbox'],
                                             rel=1e-6)
    # one SGD step changed the head
    assert not torch.equal(model.bbox_head.retina_cls.weight, weight_before)
