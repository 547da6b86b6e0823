"""Every RetinaNet config: its backbone plugs into FPN + RetinaHead, loads its ImageNet weights,
trains and predicts.

For each ``configs/retinanet*.py``:

- the pyramid the neck builds on the backbone has exactly the strides of the head's anchors
  (feature map size ``ceil(input size / stride)`` per level, square and non-square inputs);
- the ``init_cfg`` names torchvision weights that load into the backbone with no key left over
  (a torchvision model with random weights stands in for the ImageNet file in the hub cache);
- the model, with a slimmer FPN and head but the config's real backbone, trains on one synthetic
  batch with falling loss and predicts boxes inside the image.
"""
import math
from pathlib import Path

import pytest
import torch
import torchvision
from mmengine.config import Config

from detkit.models.weight_init import (
    TORCHVISION_PREFIX,
    convert_torchvision_state_dict,
    resolve_checkpoint,
)
from detkit.registry import MODELS
from detkit.structures import Detections

from detector_checks import IMAGE_SIZE, one_thread, painted_batch, seed_everything  # noqa: F401

CONFIG_DIR = Path(__file__).resolve().parents[1] / 'configs'
RETINANET_CONFIGS = sorted(path.stem for path in CONFIG_DIR.glob('retinanet*.py'))
ANCHOR_STRIDES = [8, 16, 32, 64, 128]
# Config -> the torchvision model whose ImageNet weights its backbone starts from, and the
# backbone keys that those weights do not hold (the plugins, which start untrained).
PRETRAINED = {
    'retinanet_r50': ('resnet50', None),
    'retinanet_r50_se': ('resnet50', 'se_block_after_conv3'),
    'retinanet_r50_gcb': ('resnet50', 'context_block_after_conv3'),
    'retinanet_mobilenetv2': ('mobilenet_v2', None),
    'retinanet_vgg16': ('vgg16_bn', None),
}
NUM_CLASSES = 3
TRAIN_ITERATIONS = 15


def load_model_config(name):
    """The ``model`` config of ``configs/<name>.py`` with no weights to load and 3 classes."""
    model_cfg = Config.fromfile(str(CONFIG_DIR / f'{name}.py')).model
    model_cfg.backbone.init_cfg = None  # the ImageNet weights are not available offline
    model_cfg.bbox_head.num_classes = NUM_CLASSES
    return model_cfg


def test_every_retinanet_config_is_covered():
    """The RetinaNet configs are the ``retinanet*.py`` files, and PRETRAINED lists those that
    start from torchvision weights (so a new config is not silently left out)."""
    retinanets, pretrained = set(), {}
    for path in sorted(CONFIG_DIR.glob('*.py')):
        model_cfg = Config.fromfile(str(path)).get('model')
        if model_cfg is None or model_cfg.get('type') != 'RetinaNet':
            continue
        retinanets.add(path.stem)
        init_cfg = model_cfg.backbone.get('init_cfg')
        if init_cfg is not None and init_cfg['type'] == 'Pretrained':
            pretrained[path.stem] = init_cfg['checkpoint']
    assert retinanets == set(RETINANET_CONFIGS)
    assert {'retinanet_r50', 'retinanet_r50_shapes', 'retinanet_mobilenetv2',
            'retinanet_vgg16', 'retinanet_r50_se'} <= retinanets
    assert set(pretrained) == set(PRETRAINED)
    assert all(checkpoint.startswith(TORCHVISION_PREFIX) for checkpoint in pretrained.values())


# ---------------------------------------------------------------------------- pyramid strides
@pytest.mark.parametrize('height, width', [(128, 128), (96, 160)])
@pytest.mark.parametrize('name', RETINANET_CONFIGS)
def test_pyramid_strides_match_the_anchor_strides(name, height, width):
    """Level ``l`` of the neck has size ``ceil(H / s_l)`` where ``s_l`` is the anchor stride."""
    seed_everything(0)
    model = MODELS.build(load_model_config(name)).eval()
    assert model.bbox_head.anchor_generator.strides == ANCHOR_STRIDES
    assert list(model.backbone.out_channels) == model.neck.in_channels
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, height, width))
        cls_scores, bbox_preds = model.bbox_head(feats)
    expected = [(math.ceil(height / s), math.ceil(width / s)) for s in ANCHOR_STRIDES]
    assert [tuple(f.shape[2:]) for f in feats] == expected
    assert all(f.shape[:2] == (1, model.neck.out_channels) for f in feats)
    num_anchors = 9  # 3 scales x 3 ratios
    assert [tuple(c.shape) for c in cls_scores] == [(1, num_anchors * NUM_CLASSES, h, w)
                                                    for h, w in expected]
    assert [tuple(b.shape) for b in bbox_preds] == [(1, num_anchors * 4, h, w)
                                                    for h, w in expected]
    # the anchors of each level tile the image: the last centre lies within one stride of
    # the image border
    anchors = model.bbox_head.anchor_generator.grid_anchors(expected, torch.device('cpu'))
    for level_anchors, stride, (h, w) in zip(anchors, ANCHOR_STRIDES, expected):
        assert level_anchors.shape == (h * w * num_anchors, 4)
        centres = (level_anchors[:, :2] + level_anchors[:, 2:]) / 2
        assert 0 <= float(centres[:, 0].max()) < width and 0 <= float(centres[:, 1].max()) < height
        assert float(centres[:, 0].max()) >= width - stride
        assert float(centres[:, 1].max()) >= height - stride


# ---------------------------------------------------------------------------- pretrained weights
@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """An empty torch hub cache ``tmp_path/torch/hub/checkpoints`` (via ``$TORCH_HOME``)."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)  # undo any torch.hub.set_dir()
    checkpoints = tmp_path / 'torch' / 'hub' / 'checkpoints'
    checkpoints.mkdir(parents=True)
    return checkpoints


@pytest.mark.parametrize('name', sorted(PRETRAINED))
def test_config_loads_its_torchvision_weights(name, hub_dir):
    """A torchvision model of the named architecture, saved where the weights would be, loads
    into the config's backbone: every backbone tensor but the plugins' comes from it."""
    tv_name, plugin_key = PRETRAINED[name]
    init_cfg = Config.fromfile(str(CONFIG_DIR / f'{name}.py')).model.backbone.init_cfg
    weights_name = init_cfg['checkpoint'][len(TORCHVISION_PREFIX):]
    weights = (torchvision.models.get_weight(weights_name) if '.' in weights_name
               else torchvision.models.get_model_weights(weights_name).DEFAULT)
    seed_everything(0)
    tv_state = {key: torch.rand_like(value) if value.is_floating_point() else value
                for key, value in torchvision.models.get_model(tv_name).state_dict().items()
                if not key.startswith(('fc.', 'classifier.'))}  # heads are dropped at load
    torch.save(tv_state, hub_dir / Path(weights.url).name)
    assert resolve_checkpoint(init_cfg['checkpoint']).torchvision_model == tv_name

    model_cfg = Config.fromfile(str(CONFIG_DIR / f'{name}.py')).model
    backbone = MODELS.build(model_cfg.backbone)
    backbone.init_weights()  # PretrainedInit: reads the hub file, converts torchvision keys

    loaded = backbone.state_dict()
    expected = convert_torchvision_state_dict(tv_name, tv_state)
    assert set(expected) <= set(loaded)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
    not_from_checkpoint = sorted(set(loaded) - set(expected))
    if plugin_key is None:
        assert not_from_checkpoint == []
    else:  # 13 blocks in stages 2-4 (4 + 6 + 3) carry a plugin
        assert not_from_checkpoint and all(plugin_key in key for key in not_from_checkpoint)
        assert len({key.split(plugin_key)[0] for key in not_from_checkpoint}) == 13


# ---------------------------------------------------------------------------- train and predict
def synthetic_batch():
    """Two 128x128 BGR uint8 images of dark noise with a bright rectangle per object.

    Returns:
        ``(images, samples)``: 2 ``(3, 128, 128)`` uint8 tensors and their DetSamples (boxes
        xyxy in pixels of these images).
    """
    return painted_batch([([[16., 20., 60., 56.], [72., 64., 120., 120.]], [0, 2]),
                          ([[30., 30., 100., 90.]], [1])])


def slim_model_config(name):
    """The config's model with its real backbone, a 64-channel FPN and a one-conv head.

    The backbone keeps its frozen stages; only its BatchNorm layers train (``norm_eval=False``):
    without the ImageNet weights their running statistics are the initial ones (mean 0, var 1)
    and would pass the random features on unnormalised, as configs/retinanet_r50_shapes.py,
    which trains from scratch, also has it.
    """
    model_cfg = load_model_config(name)
    model_cfg.backbone.norm_eval = False
    model_cfg.neck.out_channels = 64
    model_cfg.bbox_head.update(in_channels=64, feat_channels=64, stacked_convs=1)
    # a few steps from random weights leave most scores near the 0.01 prior: keep them all
    model_cfg.test_cfg.score_thr = 0.0
    return model_cfg


@pytest.mark.parametrize('name', RETINANET_CONFIGS)
def test_config_trains_on_one_batch_and_predicts(name):
    """15 SGD steps on one batch cut the loss by over 30%; predict gives boxes in the image."""
    seed_everything(0)
    model = MODELS.build(slim_model_config(name))
    model.init_weights()
    images, samples = synthetic_batch()
    batch = model.data_preprocessor(dict(inputs=images, data_samples=samples), True)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train()
    totals = []
    for _ in range(TRAIN_ITERATIONS):
        losses = model(batch['inputs'], batch['data_samples'], mode='loss')
        total = losses['loss_cls'] + losses['loss_bbox']
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(float(total.detach()))
    # at init: focal loss ~1.13 (prior 0.01) plus L1 ~0.7; after 15 steps every config is at
    # 0.3-0.55 of it (averaged over the last three steps, which oscillate)
    assert 1.4 < totals[0] < 2.4
    assert all(math.isfinite(t) for t in totals)
    assert sum(totals[-3:]) / 3 < 0.7 * totals[0], totals

    model.eval()
    with torch.no_grad():
        predicted = model.test_step(dict(inputs=images, data_samples=samples))
    assert len(predicted) == 2
    for sample in predicted:
        dets = sample.pred
        assert isinstance(dets, Detections)
        assert len(dets) == 100  # max_per_img of the config
        assert dets.bboxes.shape == (len(dets), 4)
        assert torch.all(dets.scores > 0) and torch.all(dets.scores[:-1] >= dets.scores[1:])
        assert torch.all((dets.labels >= 0) & (dets.labels < NUM_CLASSES))
        assert torch.all(dets.bboxes >= 0) and torch.all(dets.bboxes <= IMAGE_SIZE)
        assert torch.all(dets.bboxes[:, 2:] >= dets.bboxes[:, :2])
