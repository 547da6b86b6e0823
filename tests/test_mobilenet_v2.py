"""MobileNetV2 backbone: torchvision parity, widths, residuals, freezing, checkpointing."""
import pytest
import torch
import torchvision
from mmengine.registry import DefaultScope
from torch import nn

from detkit.models.backbones.mobilenet_v2 import (
    InvertedResidual,
    MobileNetV2,
    convert_torchvision_mobilenet_v2,
    make_divisible,
)
from detkit.registry import MODELS

# Output of out index i is torchvision's features[:TV_END[i]].
TV_END = (2, 4, 7, 11, 14, 17, 18, 19)


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


def _torchvision_pair(widen_factor: float = 1.0) -> tuple[nn.Module, MobileNetV2]:
    torch.manual_seed(0)
    tv = torchvision.models.mobilenet_v2(width_mult=widen_factor).eval()
    _random_bn(tv, seed=1)
    model = MobileNetV2(widen_factor=widen_factor, out_indices=tuple(range(8))).eval()
    result = model.load_state_dict(convert_torchvision_mobilenet_v2(tv.state_dict()),
                                   strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    return tv, model


def _torchvision_features(tv: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    feats, start = [], 0
    for end in TV_END:
        x = tv.features[start:end](x)
        feats.append(x)
        start = end
    return feats


def test_features_match_torchvision_at_every_out_index():
    tv, model = _torchvision_pair()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = model(x)
        reference = _torchvision_features(tv, x)
    assert len(ours) == 8
    for index, (out, ref) in enumerate(zip(ours, reference)):
        assert out.shape == ref.shape, index
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    strides = [64 // out.shape[-1] for out in ours]
    assert strides == [2, 4, 8, 16, 16, 32, 32, 32]
    assert model.out_channels == (16, 24, 32, 64, 96, 160, 320, 1280)


def test_default_out_indices_are_c3_to_c5():
    model = MobileNetV2().eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 96, 64))
    assert model.out_indices == (2, 4, 7)
    assert model.out_channels == (32, 96, 1280)
    assert [tuple(o.shape) for o in outs] == [(1, 32, 12, 8), (1, 96, 6, 4), (1, 1280, 3, 2)]


def test_converter_key_mapping_and_classifier_dropped():
    state = torchvision.models.mobilenet_v2().state_dict()
    converted = convert_torchvision_mobilenet_v2(state)
    assert not any(k.startswith(('classifier.', 'features.')) for k in converted)
    assert len(converted) == len(state) - 2
    expected = {
        'features.0.0.weight': 'stem.conv.weight',
        'features.0.1.running_var': 'stem.bn.running_var',
        'features.1.conv.0.0.weight': 'layer1.0.depthwise_conv.conv.weight',
        'features.1.conv.2.bias': 'layer1.0.project_conv.bn.bias',
        'features.3.conv.0.1.weight': 'layer2.1.expand_conv.bn.weight',
        'features.6.conv.1.0.weight': 'layer3.2.depthwise_conv.conv.weight',
        'features.17.conv.2.weight': 'layer7.0.project_conv.conv.weight',
        'features.18.1.running_mean': 'final_conv.bn.running_mean',
    }
    for tv_key, our_key in expected.items():
        assert converted[our_key] is state[tv_key]


def test_residual_only_where_stride_1_and_same_channels():
    model = MobileNetV2(out_indices=tuple(range(8))).eval()
    flags = [[block.use_residual for block in getattr(model, f'layer{i}')] for i in range(1, 8)]
    assert flags == [[False], [False, True], [False, True, True], [False, True, True, True],
                     [False, True, True], [False, True, True], [False]]
    assert model.layer1[0].expand_conv is None
    assert all(block.expand_conv is not None for i in range(2, 8)
               for block in getattr(model, f'layer{i}'))


@pytest.mark.parametrize('residual', [True, False])
def test_zeroed_projection_leaves_exactly_the_shortcut(residual):
    channels_in = 24
    channels_out = 24 if residual else 32
    block = InvertedResidual(channels_in, channels_out, 1, 6, norm_cfg=dict(type='BN'),
                             act_cfg=dict(type='ReLU6')).eval()
    with torch.no_grad():
        block.project_conv.bn.weight.zero_()
        block.project_conv.bn.bias.zero_()
    x = torch.randn(2, channels_in, 8, 8)
    with torch.no_grad():
        out = block(x)
    expected = x if residual else torch.zeros(2, channels_out, 8, 8)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


def test_make_divisible_rule():
    assert [make_divisible(v) for v in (8, 12, 16, 22.4, 33.6, 44.8, 89.6, 134.4, 1792)] == \
        [8, 16, 16, 24, 32, 48, 88, 136, 1792]
    # 0.9 rule: 10 would round to 8 (< 9), so one more divisor is added.
    assert make_divisible(10) == 16 and make_divisible(4) == 8
    assert make_divisible(91, divisor=16) == 96


@pytest.mark.parametrize('widen_factor, stem, channels', [
    (0.5, 16, (8, 16, 16, 32, 48, 80, 160, 1280)),
    (1.4, 48, (24, 32, 48, 88, 136, 224, 448, 1792)),
])
def test_widen_factor_channels_match_torchvision(widen_factor, stem, channels):
    tv, model = _torchvision_pair(widen_factor)
    assert model.stem.conv.out_channels == stem
    assert model.stage_channels == channels
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ours = model(x)
        reference = _torchvision_features(tv, x)
    assert tuple(o.shape[1] for o in ours) == channels
    for out, ref in zip(ours, reference):
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_with_cp_gives_the_same_gradients_and_recomputes():
    torch.manual_seed(0)
    plain = MobileNetV2(out_indices=(2, 4), norm_eval=True).train()
    checkpointed = MobileNetV2(out_indices=(2, 4), norm_eval=True, with_cp=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    calls = {'plain': 0, 'cp': 0}
    plain.layer3[1].depthwise_conv.register_forward_hook(
        lambda *_: calls.__setitem__('plain', calls['plain'] + 1))
    checkpointed.layer3[1].depthwise_conv.register_forward_hook(
        lambda *_: calls.__setitem__('cp', calls['cp'] + 1))

    x = torch.randn(2, 3, 32, 32)
    grads = []
    for model in (plain, checkpointed):
        inp = x.clone().requires_grad_(True)
        outs = model(inp)
        sum(o.square().sum() for o in outs).backward()
        grads.append((inp.grad, {n: p.grad for n, p in model.named_parameters()
                                 if p.grad is not None}))
    assert calls == {'plain': 1, 'cp': 2}  # the checkpointed block ran again in backward
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-6, rtol=1e-5)
    assert grads[0][1].keys() == grads[1][1].keys() and len(grads[0][1]) > 0
    for name, grad in grads[0][1].items():
        torch.testing.assert_close(grad, grads[1][1][name], atol=1e-6, rtol=1e-5)

    with torch.no_grad():  # no grad needed: the block runs once
        checkpointed(x)
    assert calls['cp'] == 3


def test_frozen_stages_and_norm_eval():
    model = MobileNetV2(frozen_stages=2, norm_eval=False, out_indices=(2, 4, 7))
    model.train()
    frozen = [model.stem, model.layer1, model.layer2]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for name in ('layer3', 'layer7', 'final_conv')
               for p in getattr(model, name).parameters())
    assert all(not m.training for f in frozen for m in f.modules())
    assert model.layer3.training and model.layer3[0].depthwise_conv.bn.training

    stem_mean = model.stem.bn.running_mean.clone()
    layer3_mean = model.layer3[0].depthwise_conv.bn.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert torch.equal(model.stem.bn.running_mean, stem_mean)
    assert not torch.equal(model.layer3[0].depthwise_conv.bn.running_mean, layer3_mean)

    everything = MobileNetV2(frozen_stages=8)
    assert not any(p.requires_grad for p in everything.parameters())

    norm_eval = MobileNetV2(norm_eval=True).train()
    assert not any(m.training for m in norm_eval.modules() if isinstance(m, nn.BatchNorm2d))
    assert norm_eval.layer3.training  # only the norms are in eval


@pytest.mark.parametrize('out_indices', [(8,), (-1,), (2, 2), (), (1.0,)])
def test_invalid_out_indices(out_indices):
    with pytest.raises(ValueError, match='out_indices'):
        MobileNetV2(out_indices=out_indices)


@pytest.mark.parametrize('kwargs, word', [(dict(frozen_stages=9), 'frozen_stages'),
                                          (dict(frozen_stages=-2), 'frozen_stages'),
                                          (dict(widen_factor=0), 'widen_factor'),
                                          (dict(widen_factor='1'), 'widen_factor')])
def test_invalid_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        MobileNetV2(**kwargs)


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r'\(N, 3, H, W\).*\(1, 1, 32, 32\)'):
        MobileNetV2()(torch.randn(1, 1, 32, 32))


def test_modules_after_last_out_index_are_not_run():
    model = MobileNetV2(out_indices=(1,)).eval()
    calls = []
    model.final_conv.register_forward_hook(lambda *_: calls.append('final'))
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(1, 24, 8, 8)] and calls == []


def test_built_through_registry_with_detkit_scope():
    with DefaultScope.overwrite_default_scope('detkit'):
        model = MODELS.build(dict(type='MobileNetV2', widen_factor=0.5, out_indices=(2, 4, 6)))
    assert isinstance(model, MobileNetV2)
    assert model.out_channels == (16, 48, 160)
