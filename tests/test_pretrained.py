"""Tests of pretrained loading: local files, torchvision:// through the hub cache, key reports."""
import collections
import logging
import os.path as osp

import pytest
import torch
import torchvision
from mmengine.logging import MMLogger
from mmengine.registry import WEIGHT_INITIALIZERS as MMENGINE_WEIGHT_INITIALIZERS
from mmengine.registry import DefaultScope
from torch import nn

from detkit.models.backbones.mobilenet_v2 import MobileNetV2
from detkit.models.backbones.resnet import ResNet
from detkit.models.backbones.vgg import VGG
from detkit.models.weight_init import (
    PretrainedInit,
    detkit_default_scope,
    load_pretrained,
    resolve_checkpoint,
)
from detkit.registry import MODELS

# File names of the torchvision urls (fixed by torchvision's weights enums).
RESNET18_FILE = 'resnet18-f37072fd.pth'
MOBILENET_V2_FILE = 'mobilenet_v2-7ebf99e0.pth'
VGG16_FILE = 'vgg16-397923af.pth'


def _random_bn(model: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                m.bias.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
                m.running_mean.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)


@pytest.fixture(scope='module')
def resnet18():
    """A torchvision ResNet-18 with random weights and BN statistics, in eval mode."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet18().eval()
    _random_bn(tv, seed=1)
    return tv


def _resnet_features(tv: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    feats = []
    for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4):
        x = layer(x)
        feats.append(x)
    return feats


def _assert_same_features(ours, reference):
    assert len(ours) == len(reference)
    for out, ref in zip(ours, reference):
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """An empty torch hub directory ``tmp_path/torch/hub`` (via ``$TORCH_HOME``)."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)  # undo any torch.hub.set_dir()
    checkpoints = tmp_path / 'torch' / 'hub' / 'checkpoints'
    checkpoints.mkdir(parents=True)
    assert torch.hub.get_dir() == str(tmp_path / 'torch' / 'hub')
    return checkpoints


@pytest.fixture
def no_default_scope(monkeypatch):
    """No mmengine DefaultScope, as for a backbone built without a Runner."""
    monkeypatch.setattr(DefaultScope, '_instance_dict', collections.OrderedDict())
    assert DefaultScope.get_current_instance() is None


@pytest.fixture
def log_records():
    """The records that mmengine's current logger emits during the test."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = MMLogger.get_current_instance()
    handler = Collect(level=logging.DEBUG)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def _warnings(records) -> str:
    return '\n'.join(r.getMessage() for r in records if r.levelno == logging.WARNING)


def test_local_file_direct_construction(resnet18, tmp_path, no_default_scope):
    path = tmp_path / 'resnet18_tv.pth'
    torch.save(resnet18.state_dict(), path)
    model = ResNet(depth=18, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _assert_same_features(model(x), _resnet_features(resnet18, x))


def test_local_file_through_registry_reports_unexpected_keys(resnet18, tmp_path, log_records):
    path = tmp_path / 'resnet18_tv.pth'
    torch.save(resnet18.state_dict(), path)
    with DefaultScope.overwrite_default_scope('detkit'):
        with MMENGINE_WEIGHT_INITIALIZERS.switch_scope_and_registry(None) as registry:
            assert registry.get('Pretrained') is PretrainedInit  # detkit's, not mmengine's
        model = MODELS.build(dict(type='ResNet', depth=18, init_cfg=dict(
            type='Pretrained', checkpoint=str(path))))
        model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _assert_same_features(model(x), _resnet_features(resnet18, x))
    warnings = _warnings(log_records)
    assert f'2 unexpected keys in checkpoint {path}' in warnings
    assert 'fc.weight, fc.bias' in warnings
    assert 'missing keys' not in warnings


def test_torchvision_name_resolves_to_the_hub_cache(resnet18, hub_dir, log_records):
    torch.save(resnet18.state_dict(), hub_dir / RESNET18_FILE)
    resolved = resolve_checkpoint('torchvision://resnet18')
    assert resolved.path == str(hub_dir / RESNET18_FILE)
    assert resolved.torchvision_model == 'resnet18'
    assert resolved.url == 'https://download.pytorch.org/models/' + RESNET18_FILE
    assert resolve_checkpoint('torchvision://ResNet18_Weights.IMAGENET1K_V1') == resolved

    with DefaultScope.overwrite_default_scope('detkit'):
        model = MODELS.build(dict(type='ResNet', depth=18, init_cfg=dict(
            type='Pretrained', checkpoint='torchvision://resnet18')))
        model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _assert_same_features(model(x), _resnet_features(resnet18, x))
    # fc.* is dropped by the torchvision conversion, so nothing is reported.
    assert _warnings(log_records) == ''
    assert any('loaded 120 tensors of ResNet' in r.getMessage() for r in log_records)


def test_missing_hub_file_raises_at_init_with_path_and_url(hub_dir):
    expected = str(hub_dir / 'resnet50-11ad3fa6.pth')
    with DefaultScope.overwrite_default_scope('detkit'):
        model = MODELS.build(dict(type='ResNet', depth=50, init_cfg=dict(
            type='Pretrained', checkpoint='torchvision://resnet50')))  # building does not load
        with pytest.raises(FileNotFoundError) as info:
            model.init_weights()
    message = str(info.value)
    assert expected in message
    assert 'https://download.pytorch.org/models/resnet50-11ad3fa6.pth' in message
    assert 'ResNet50_Weights.IMAGENET1K_V2' in message and 'checkpoint=' in message
    with pytest.raises(FileNotFoundError, match='resnet50-0676ba61.pth'):
        resolve_checkpoint('torchvision://ResNet50_Weights.IMAGENET1K_V1')


def test_missing_hub_file_raises_for_direct_construction(hub_dir, no_default_scope):
    model = MobileNetV2(init_cfg=dict(type='Pretrained', checkpoint='torchvision://mobilenet_v2'))
    with pytest.raises(FileNotFoundError, match=str(hub_dir / MOBILENET_V2_FILE)):
        model.init_weights()
    assert DefaultScope.get_current_instance() is None  # the scope is restored


def test_bad_checkpoint_names(tmp_path):
    with pytest.raises(ValueError, match="closest torchvision model names: resnet50"):
        resolve_checkpoint('torchvision://resnet5O')
    with pytest.raises(ValueError, match='ResNet50_Weights.IMAGENET1K_V9'):
        resolve_checkpoint('torchvision://ResNet50_Weights.IMAGENET1K_V9')
    with pytest.raises(ValueError, match='local files'):
        resolve_checkpoint('https://example.com/model.pth')
    missing = tmp_path / 'nowhere.pth'
    with pytest.raises(FileNotFoundError, match=str(missing)):
        resolve_checkpoint(str(missing))


def test_missing_and_unexpected_keys_are_logged(resnet18, tmp_path, log_records):
    state = {k: v for k, v in resnet18.state_dict().items() if not k.startswith('fc.')}
    del state['layer4.1.conv2.weight']
    for i in range(25):
        state[f'extra.{i}'] = torch.zeros(1)
    path = tmp_path / 'partial.pth'
    torch.save({'state_dict': state, 'meta': {'epoch': 3}}, path)
    model = ResNet(depth=18)
    before = model.layer4[1].conv2.weight.clone()
    report = load_pretrained(model, path)
    assert report.missing == ['layer4.1.conv2.weight']
    assert sorted(report.unexpected) == sorted(f'extra.{i}' for i in range(25))
    assert torch.equal(model.layer4[1].conv2.weight, before)  # left as initialized
    torch.testing.assert_close(model.conv1.weight, resnet18.conv1.weight, atol=0, rtol=0)
    warnings = _warnings(log_records)
    assert '1 missing keys, not in checkpoint' in warnings and 'layer4.1.conv2.weight' in warnings
    assert '25 unexpected keys' in warnings
    assert '... (15 more, 25 in all)' in warnings  # long lists are truncated


def test_nothing_matching_raises(tmp_path):
    path = tmp_path / 'other_model.pth'
    torch.save({'encoder.block.weight': torch.zeros(3), 'decoder.weight': torch.zeros(2)}, path)
    model = ResNet(depth=18, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with detkit_default_scope(), pytest.raises(ValueError) as info:
        model.init_weights()
    message = str(info.value)
    assert str(path) in message and 'none of its 2 keys matches ResNet' in message
    assert 'bn1.bias' in message and 'decoder.weight' in message


def test_shape_mismatch_names_key_and_shapes(resnet18, tmp_path):
    state = dict(resnet18.state_dict())
    state['conv1.weight'] = torch.zeros(32, 3, 7, 7)
    path = tmp_path / 'narrow.pth'
    torch.save(state, path)
    with pytest.raises(ValueError, match=r'conv1.weight: checkpoint \(32, 3, 7, 7\) vs model '
                                         r'\(64, 3, 7, 7\)'):
        load_pretrained(ResNet(depth=18), path)


def test_prefix_and_module_stripping(resnet18, tmp_path):
    state = {f'module.backbone.{k}': v for k, v in resnet18.state_dict().items()
             if not k.startswith('fc.')}
    state['module.neck.conv.weight'] = torch.zeros(1)
    path = tmp_path / 'detector.pth'
    torch.save({'state_dict': state}, path)
    model = ResNet(depth=18, init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                           prefix='backbone.'))
    with detkit_default_scope():
        model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        _assert_same_features(model(x), _resnet_features(resnet18, x))
    with pytest.raises(ValueError, match=r"prefix='head\.'.*backbone\., neck\."):
        load_pretrained(ResNet(depth=18), path, prefix='head')


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / 'pickled.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(1)}, 'obj': collections.UserDict()},
               path)
    with pytest.raises(ValueError, match=f'cannot read checkpoint file {path}'):
        load_pretrained(ResNet(depth=18), path)


def test_mobilenet_v2_from_torchvision_direct_construction(hub_dir, no_default_scope):
    torch.manual_seed(0)
    tv = torchvision.models.mobilenet_v2().eval()
    _random_bn(tv, seed=2)
    torch.save(tv.state_dict(), hub_dir / MOBILENET_V2_FILE)
    model = MobileNetV2(out_indices=(2, 4, 7), init_cfg=dict(
        type='Pretrained', checkpoint='torchvision://mobilenet_v2'))
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = [tv.features[:7](x)]
        reference.append(tv.features[7:14](reference[-1]))
        reference.append(tv.features[14:](reference[-1]))
        _assert_same_features(model(x), reference)

    # The same file copied elsewhere loads as a local path (torchvision layout detected).
    local = MobileNetV2(out_indices=(2, 4, 7), init_cfg=dict(
        type='Pretrained', checkpoint=str(hub_dir / MOBILENET_V2_FILE)))
    local.init_weights()
    local.eval()
    with torch.no_grad():
        _assert_same_features(local(x), reference)


def test_vgg16_from_torchvision_through_registry(hub_dir, log_records):
    torch.manual_seed(0)
    features = torchvision.models.vgg16().features.eval()
    with torch.no_grad():
        for m in features:
            if isinstance(m, nn.Conv2d):
                m.bias.uniform_(-0.1, 0.1)
    state = {f'features.{k}': v for k, v in features.state_dict().items()}
    state['classifier.0.bias'] = torch.zeros(4096)  # a classifier key is dropped, not reported
    torch.save(state, hub_dir / VGG16_FILE)
    with DefaultScope.overwrite_default_scope('detkit'):
        model = MODELS.build(dict(type='VGG', depth=16, init_cfg=dict(
            type='Pretrained', checkpoint='torchvision://vgg16')))
        model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _assert_same_features(model(x), [features[:end](x) for end in (16, 23, 30)])
    assert _warnings(log_records) == ''


def test_vgg16_bn_weights_into_plain_vgg_are_reported(hub_dir, tmp_path, log_records):
    with torch.device('meta'):
        state = torchvision.models.vgg11_bn().features.state_dict()
    state = {f'features.{k}': torch.zeros(v.shape) for k, v in state.items()}
    path = tmp_path / 'vgg11_bn_features.pth'
    torch.save(state, path)
    # A local torchvision file whose BN layout disagrees with the model: a clear error.
    with pytest.raises(ValueError, match='with_bn=False'):
        load_pretrained(VGG(11), path)
    report = load_pretrained(VGG(11, with_bn=True), path)
    assert report.missing == [] and report.unexpected == []
    assert osp.isfile(path)
