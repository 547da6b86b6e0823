"""Tests of detkit.models.layers: norm and activation builders, FrozenBatchNorm2d, ConvModule."""
import math

import pytest
import torch
from torch import nn

from detkit.models.layers import (
    ConvModule,
    FrozenBatchNorm2d,
    add_into,
    build_activation_layer,
    build_norm_layer,
)
from detkit.registry import MODELS


# --------------------------------------------------------------------------- norms
@pytest.mark.parametrize('cfg, postfix, name, cls', [
    (dict(type='BN'), 1, 'bn1', nn.BatchNorm2d),
    (dict(type='SyncBN'), '', 'bn', nn.SyncBatchNorm),
    (dict(type='GN', num_groups=4), 2, 'gn2', nn.GroupNorm),
    (dict(type='FrozenBN'), 'x', 'bnx', FrozenBatchNorm2d),
])
def test_build_norm_layer_names_and_classes(cfg, postfix, name, cls):
    built_name, layer = build_norm_layer(cfg, 16, postfix=postfix)
    assert built_name == name
    assert type(layer) is cls
    if cls is nn.GroupNorm:
        assert (layer.num_groups, layer.num_channels) == (4, 16)
    else:
        assert layer.num_features == 16


def test_build_norm_layer_passes_kwargs_and_requires_grad():
    _, bn = build_norm_layer(dict(type='BN', eps=1e-3, momentum=0.03, requires_grad=False), 8)
    assert bn.eps == 1e-3 and bn.momentum == 0.03
    assert [p.requires_grad for p in bn.parameters()] == [False, False]
    _, gn = build_norm_layer(dict(type='GN', num_groups=2, eps=1e-6), 8)
    assert gn.eps == 1e-6
    assert all(p.requires_grad for p in gn.parameters())


def test_build_norm_layer_errors():
    with pytest.raises(ValueError, match=r"type='LN'.*\['BN', 'FrozenBN', 'GN', 'SyncBN'\]"):
        build_norm_layer(dict(type='LN'), 8)
    with pytest.raises(ValueError, match='num_groups'):
        build_norm_layer(dict(type='GN'), 8)
    with pytest.raises(ValueError, match='num_groups=3 must divide the number of channels 8'):
        build_norm_layer(dict(type='GN', num_groups=3), 8)
    with pytest.raises(ValueError, match='"type"'):
        build_norm_layer('BN', 8)
    with pytest.raises(ValueError, match="type='BN': unexpected keys"):
        build_norm_layer(dict(type='BN', num_groups=2), 8)


def test_norms_registered_in_models_registry():
    assert MODELS.get('BN') is nn.BatchNorm2d
    assert MODELS.get('GN') is nn.GroupNorm
    assert MODELS.get('FrozenBN') is FrozenBatchNorm2d


def _random_bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    bn.num_batches_tracked.fill_(7)
    return bn.eval()


def test_frozen_bn_matches_batchnorm_eval_and_loads_its_state_dict():
    torch.manual_seed(0)
    bn = _random_bn(6)
    frozen = FrozenBatchNorm2d(6)
    # num_batches_tracked is in the BN state dict and must be accepted under strict loading.
    assert 'num_batches_tracked' in bn.state_dict()
    result = frozen.load_state_dict(bn.state_dict(), strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert sorted(frozen.state_dict()) == ['bias', 'running_mean', 'running_var', 'weight']
    x = torch.randn(2, 6, 5, 5)
    torch.testing.assert_close(frozen(x), bn(x), atol=1e-6, rtol=1e-5)
    # Nothing to train and the statistics do not move in training mode.
    assert list(frozen.parameters()) == []
    frozen.train()
    mean_before = frozen.running_mean.clone()
    frozen(x)
    assert torch.equal(frozen.running_mean, mean_before)


def test_frozen_bn_passes_gradient_to_input_only():
    frozen = FrozenBatchNorm2d(3)
    frozen.weight.fill_(2.0)
    frozen.running_var.fill_(1.0 - 1e-5)  # so that 1/sqrt(var + eps) is exactly 1
    x = torch.randn(1, 3, 2, 2, requires_grad=True)
    frozen(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 2.0))
    assert frozen.weight.grad is None


def test_frozen_bn_rejects_bad_input():
    with pytest.raises(ValueError, match=r'expects input of shape \(N, 4, H, W\)'):
        FrozenBatchNorm2d(4)(torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match='num_features'):
        FrozenBatchNorm2d(0)


# --------------------------------------------------------------------------- activations
def test_build_activation_layer_types_and_values():
    x = torch.tensor([-4.0, -1.0, 0.0, 2.0, 8.0])
    relu6 = build_activation_layer(dict(type='ReLU6'))
    assert relu6(x).tolist() == [0.0, 0.0, 0.0, 2.0, 6.0]
    leaky = build_activation_layer(dict(type='LeakyReLU', negative_slope=0.1))
    torch.testing.assert_close(leaky(x), torch.tensor([-0.4, -0.1, 0.0, 2.0, 8.0]))
    hsig = build_activation_layer(dict(type='HSigmoid'))
    torch.testing.assert_close(hsig(x), torch.tensor([0.0, 2 / 6, 0.5, 5 / 6, 1.0]))
    torch.testing.assert_close(build_activation_layer(dict(type='SiLU'))(x), x * torch.sigmoid(x))
    torch.testing.assert_close(build_activation_layer(dict(type='Sigmoid'))(x), torch.sigmoid(x))
    assert isinstance(build_activation_layer(dict(type='GELU')), nn.GELU)
    relu = build_activation_layer(dict(type='ReLU', inplace=True))
    assert isinstance(relu, nn.ReLU) and relu.inplace
    assert MODELS.get('ReLU') is nn.ReLU


def test_build_activation_layer_errors():
    with pytest.raises(ValueError, match=r"type='Swish'.*'ReLU'"):
        build_activation_layer(dict(type='Swish'))
    with pytest.raises(ValueError, match=r"type='Sigmoid' does not take \"inplace\""):
        build_activation_layer(dict(type='Sigmoid', inplace=True))
    with pytest.raises(ValueError, match="type='ReLU': unexpected keys"):
        build_activation_layer(dict(type='ReLU', slope=2))
    with pytest.raises(ValueError, match='act_cfg must be a dict'):
        build_activation_layer(None)


# --------------------------------------------------------------------------- ConvModule
def test_conv_module_state_dict_keys_match_mmdet_naming():
    bn = ConvModule(3, 8, 3, padding=1, norm_cfg=dict(type='BN'))
    assert list(bn.state_dict()) == ['conv.weight', 'bn.weight', 'bn.bias', 'bn.running_mean',
                                     'bn.running_var', 'bn.num_batches_tracked']
    gn = ConvModule(3, 8, 1, norm_cfg=dict(type='GN', num_groups=2))
    assert list(gn.state_dict()) == ['conv.weight', 'gn.weight', 'gn.bias']
    plain = ConvModule(3, 8, 1, act_cfg=None)
    assert list(plain.state_dict()) == ['conv.weight', 'conv.bias']
    assert plain.norm is None and plain.activate is None
    assert bn.norm is bn.bn and gn.norm is gn.gn
    assert isinstance(bn.conv, nn.Conv2d) and isinstance(bn.activate, nn.ReLU)


def test_conv_module_bias_auto_and_explicit():
    assert ConvModule(3, 4, 1).conv.bias is not None
    assert ConvModule(3, 4, 1, norm_cfg=dict(type='BN')).conv.bias is None
    assert ConvModule(3, 4, 1, norm_cfg=dict(type='BN'), bias=True).conv.bias is not None
    assert ConvModule(3, 4, 1, bias=False).conv.bias is None


def test_conv_module_forward_is_conv_norm_act():
    torch.manual_seed(0)
    m = ConvModule(3, 4, 3, stride=2, padding=1, norm_cfg=dict(type='BN'),
                   act_cfg=dict(type='LeakyReLU', negative_slope=0.2)).eval()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.bias.uniform_(-1, 1)
    x = torch.randn(2, 3, 9, 9)
    expected = nn.functional.leaky_relu(m.bn(m.conv(x)), 0.2)
    out = m(x)
    assert out.shape == (2, 4, 5, 5)
    torch.testing.assert_close(out, expected)
    no_act = ConvModule(3, 4, 1, act_cfg=None)
    torch.testing.assert_close(no_act(x), no_act.conv(x))


def test_conv_module_inplace_flag_reaches_activation():
    assert ConvModule(3, 4, 1).activate.inplace is True
    assert ConvModule(3, 4, 1, inplace=False).activate.inplace is False
    assert ConvModule(3, 4, 1, act_cfg=dict(type='ReLU', inplace=False)).activate.inplace is False
    assert isinstance(ConvModule(3, 4, 1, act_cfg=dict(type='Sigmoid')).activate, nn.Sigmoid)


def test_conv_module_initialization_is_kaiming_fan_out():
    torch.manual_seed(0)
    m = ConvModule(64, 64, 3, padding=1, bias=True, norm_cfg=dict(type='BN'))
    fan_out = 64 * 3 * 3
    std = m.conv.weight.std().item()
    assert abs(std - math.sqrt(2.0 / fan_out)) / math.sqrt(2.0 / fan_out) < 0.05
    assert torch.count_nonzero(m.conv.bias) == 0
    assert torch.equal(m.bn.weight, torch.ones(64)) and torch.equal(m.bn.bias, torch.zeros(64))
    leaky = ConvModule(64, 64, 3, act_cfg=dict(type='LeakyReLU', negative_slope=0.5))
    expected = math.sqrt(2.0 / (1 + 0.5 ** 2) / fan_out)
    assert abs(leaky.conv.weight.std().item() - expected) / expected < 0.05


def test_conv_module_errors():
    with pytest.raises(ValueError, match='conv_cfg'):
        ConvModule(3, 4, 1, conv_cfg=dict(type='DCN'))
    with pytest.raises(ValueError, match="bias must be 'auto', True or False"):
        ConvModule(3, 4, 1, bias='yes')
    with pytest.raises(ValueError, match='groups=2 must divide in_channels=3'):
        ConvModule(3, 4, 1, groups=2)
    with pytest.raises(ValueError, match='out_channels must be a positive int'):
        ConvModule(3, 0, 1)
    assert ConvModule(3, 4, 1, conv_cfg=dict(type='Conv2d'))(torch.zeros(1, 3, 2, 2)).shape == (
        1, 4, 2, 2)


def test_add_into_reuses_the_map_only_without_autograd():
    weight = torch.ones(1, requires_grad=True)
    x, y = torch.arange(6.).view(1, 2, 3, 1), torch.full((1, 2, 1, 1), 10.)
    with torch.no_grad():
        inferred = x * weight                 # a layer's output in inference: no graph
        summed = add_into(inferred, y)
    assert summed.data_ptr() == inferred.data_ptr()
    assert summed.flatten().tolist() == [10., 11., 12., 13., 14., 15.]
    trained = x * weight                      # autograd: a new map, the input untouched
    summed = add_into(trained, y)
    assert summed.data_ptr() != trained.data_ptr()
    assert trained.flatten().tolist() == x.flatten().tolist()
    summed.sum().backward()
    assert weight.grad.tolist() == [15.]      # d/dw sum(x * w + y) = sum(x)
    frozen = x.clone()                        # a frozen stage while training: no graph
    assert add_into(frozen, y).data_ptr() == frozen.data_ptr() and frozen[0, 1, 0, 0] == 13.
