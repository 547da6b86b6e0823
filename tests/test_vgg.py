"""VGG backbone: torchvision parity, output-size arithmetic, freezing, key conversion."""
import math

import pytest
import torch
import torchvision
from mmengine.registry import DefaultScope
from torch import nn

from detkit.models.backbones.vgg import VGG, convert_torchvision_vgg
from detkit.registry import MODELS

# The stage outputs (before each pool) are torchvision's features[:end] for these ends.
TV_STAGE_ENDS = {False: (4, 9, 16, 23, 30), True: (6, 13, 23, 33, 43)}


def _random_bn(model: nn.Module, seed: int) -> None:
    """Give every BN random affine parameters and statistics (so parity covers every BN term)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                m.bias.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
                m.running_mean.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)


@pytest.fixture(scope='module', params=[False, True], ids=['vgg16', 'vgg16_bn'])
def torchvision_vgg16(request):
    """``(with_bn, torchvision features in eval mode, its state dict)`` with random weights."""
    with_bn = request.param
    torch.manual_seed(0)
    tv = (torchvision.models.vgg16_bn() if with_bn else torchvision.models.vgg16()).eval()
    _random_bn(tv, seed=1)
    with torch.no_grad():  # non-zero conv biases, so that the bias keys are checked too
        for m in tv.features:
            if isinstance(m, nn.Conv2d):
                m.bias.uniform_(-0.1, 0.1)
    return with_bn, tv.features, tv.state_dict()


def test_features_match_torchvision_at_every_stage(torchvision_vgg16):
    with_bn, features, state = torchvision_vgg16
    model = VGG(16, with_bn=with_bn, out_indices=(0, 1, 2, 3, 4)).eval()
    result = model.load_state_dict(convert_torchvision_vgg(state, with_bn), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = model(x)
        reference = [features[:end](x) for end in TV_STAGE_ENDS[with_bn]]
    assert [tuple(o.shape) for o in ours] == [(1, 64, 64, 64), (1, 128, 32, 32),
                                              (1, 256, 16, 16), (1, 512, 8, 8), (1, 512, 4, 4)]
    for out, ref in zip(ours, reference):
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_detection_out_indices(torchvision_vgg16):
    with_bn, features, state = torchvision_vgg16
    model = VGG(16, with_bn=with_bn).eval()
    model.load_state_dict(convert_torchvision_vgg(state, with_bn))
    assert model.out_indices == (2, 3, 4) and model.out_channels == (256, 512, 512)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = model(x)
        reference = [features[:end](x) for end in TV_STAGE_ENDS[with_bn][2:]]
    assert [64 // o.shape[-1] for o in ours] == [4, 8, 16]
    for out, ref in zip(ours, reference):
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('depth', [11, 13, 19])
@pytest.mark.parametrize('with_bn', [False, True])
def test_converted_keys_and_shapes_match_other_depths(depth, with_bn):
    name = f'vgg{depth}' + ('_bn' if with_bn else '')
    with torch.device('meta'):  # shapes only, no memory and no initialization
        state = getattr(torchvision.models, name)().state_dict()
    converted = convert_torchvision_vgg(state, with_bn)
    ours = VGG(depth, with_bn=with_bn).state_dict()
    assert set(converted) == set(ours)
    assert all(converted[k].shape == ours[k].shape for k in ours)


def test_converter_names():
    with torch.device('meta'):
        state = torchvision.models.vgg16_bn().state_dict()
    converted = convert_torchvision_vgg(state, with_bn=True)
    assert converted['layer1.0.conv.weight'] is state['features.0.weight']
    assert converted['layer1.1.bn.running_var'] is state['features.4.running_var']
    assert converted['layer2.0.conv.bias'] is state['features.7.bias']
    assert converted['layer5.2.bn.weight'] is state['features.41.weight']
    assert not any(k.startswith('classifier.') for k in converted)


def test_converter_rejects_the_wrong_with_bn():
    with torch.device('meta'):
        plain = torchvision.models.vgg11().state_dict()
        with_bn = torchvision.models.vgg11_bn().state_dict()
    with pytest.raises(ValueError, match='with_bn=True'):
        convert_torchvision_vgg(plain, with_bn=True)
    with pytest.raises(ValueError, match='with_bn=False'):
        convert_torchvision_vgg(with_bn, with_bn=False)


def _halvings(size: int, ceil: bool, times: int) -> list[int]:
    sizes = [size]
    for _ in range(times):
        # (I + 2P - K) / S + 1 with P=0, K=2, S=2, rounded down or up.
        rounding = math.ceil if ceil else math.floor
        sizes.append(rounding((sizes[-1] - 2) / 2) + 1)
    return sizes


@pytest.mark.parametrize('ceil_mode, heights, widths', [
    (False, [37, 18, 9, 4, 2], [45, 22, 11, 5, 2]),
    (True, [37, 19, 10, 5, 3], [45, 23, 12, 6, 3]),
])
def test_ceil_mode_output_sizes(ceil_mode, heights, widths):
    assert _halvings(37, ceil_mode, 4) == heights and _halvings(45, ceil_mode, 4) == widths
    model = VGG(11, ceil_mode=ceil_mode, out_indices=(0, 1, 2, 3, 4)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 37, 45))
    assert [tuple(o.shape[2:]) for o in outs] == list(zip(heights, widths))


def test_frozen_stages_and_norm_eval():
    model = VGG(11, with_bn=True, frozen_stages=2, norm_eval=False).train()
    assert all(not p.requires_grad for name in ('layer1', 'layer2')
               for p in getattr(model, name).parameters())
    assert all(p.requires_grad for name in ('layer3', 'layer4', 'layer5')
               for p in getattr(model, name).parameters())
    assert not model.layer2[0].bn.training and model.layer3[0].bn.training
    frozen_mean = model.layer1[0].bn.running_mean.clone()
    trained_mean = model.layer3[0].bn.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert torch.equal(model.layer1[0].bn.running_mean, frozen_mean)
    assert not torch.equal(model.layer3[0].bn.running_mean, trained_mean)

    assert all(p.requires_grad for p in VGG(11, frozen_stages=0).parameters())
    norm_eval = VGG(11, with_bn=True).train()
    assert not any(m.training for m in norm_eval.modules() if isinstance(m, nn.BatchNorm2d))
    assert norm_eval.layer1.training


def test_stages_after_the_last_out_index_are_not_run():
    model = VGG(11, out_indices=(1, 0)).eval()
    calls = []
    model.layer3.register_forward_hook(lambda *_: calls.append('layer3'))
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 32, 32), (1, 128, 16, 16)]
    assert calls == [] and model.out_channels == (64, 128)


@pytest.mark.parametrize('kwargs, word', [
    (dict(depth=15), 'depth=15'),
    (dict(depth=16, out_indices=(5,)), 'out_indices'),
    (dict(depth=16, num_stages=3, out_indices=(2, 3)), 'out_indices'),
    (dict(depth=16, out_indices=(2, 2)), 'out_indices'),
    (dict(depth=16, num_stages=6), 'num_stages'),
    (dict(depth=16, frozen_stages=6), 'frozen_stages'),
])
def test_invalid_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        VGG(**kwargs)


def test_built_through_registry_with_detkit_scope():
    with DefaultScope.overwrite_default_scope('detkit'):
        model = MODELS.build(dict(type='VGG', depth=13, num_stages=4, out_indices=(3,)))
    assert isinstance(model, VGG) and model.out_channels == (512,)
    assert not hasattr(model, 'layer5')
