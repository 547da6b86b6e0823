"""fuse_conv_bn: batch norms folded into convolutions give the same function, for single layers
and for every backbone's features, and --amp's inference paths fold them; conv_norm: the fold
while training gives the same outputs and gradients."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from torch import nn

import detkit.models.backbones.resnet as resnet_module
from detkit.engine import InferenceFastPathHook
from detkit.engine.amp import enable_amp
from detkit.models.layers import ConvModule, FrozenBatchNorm2d, conv_norm, fuse_conv_bn
from detkit.models.layers import conv_module as conv_module_module
from detkit.models.layers import fuse as fuse_module
from detkit.registry import MODELS

CONFIGS = Path(__file__).resolve().parent.parent / 'configs'


def randomise_norms(model: nn.Module, seed: int = 0) -> None:
    """Statistics and affine parameters far from the identity, so that a missed or wrong fold
    shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=gen) * 2 + 0.2)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                    m.bias.copy_(torch.randn(c, generator=gen) * 0.3)


@pytest.mark.parametrize('bias,groups,norm', [(False, 1, 'BN'), (True, 1, 'BN'),
                                              (False, 4, 'FrozenBN'), (True, 1, 'BN-noaffine')])
def test_a_folded_pair_is_the_same_function(bias, groups, norm):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=groups, bias=bias)
    bn = {'BN': nn.BatchNorm2d(12), 'FrozenBN': FrozenBatchNorm2d(12, eps=1e-3),
          'BN-noaffine': nn.BatchNorm2d(12, affine=False)}[norm]
    model = nn.Sequential(conv, bn, nn.ReLU()).eval()
    randomise_norms(model)
    x = torch.randn(2, 8, 17, 20)
    expected = model(x)
    assert fuse_conv_bn(model) == 1
    assert isinstance(model[1], nn.Identity) and model[0].bias is not None
    assert not model[0].weight.requires_grad
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    # by hand for one output: s * (conv(x) + b - mean) + beta
    scale = (bn.weight if bn.weight is not None else 1) / (bn.running_var + bn.eps).sqrt()
    assert torch.allclose(model[0].weight, conv.weight * scale[:, None, None, None], atol=1e-6)


def test_the_layout_is_kept_and_what_cannot_fold_stays():
    conv = ConvModule(4, 6, 3, padding=1, norm_cfg=dict(type='GN', num_groups=2))
    lone_bn = nn.Sequential(nn.ReLU(), nn.BatchNorm2d(4))   # follows no convolution
    wrong_width = nn.Sequential(nn.Conv2d(4, 6, 1), nn.BatchNorm2d(4))
    kept = nn.Sequential(nn.Conv2d(4, 6, 1), nn.BatchNorm2d(6)).to(
        memory_format=torch.channels_last)
    model = nn.ModuleList([conv, lone_bn, wrong_width, kept]).eval()
    assert fuse_conv_bn(model) == 1
    assert isinstance(conv.gn, nn.GroupNorm) and isinstance(lone_bn[1], nn.BatchNorm2d)
    assert isinstance(wrong_width[1], nn.BatchNorm2d) and isinstance(kept[1], nn.Identity)
    assert kept[0].weight.is_contiguous(memory_format=torch.channels_last)


class PreActivation(nn.Module):
    """``conv(relu(bn(x)))`` with ``conv`` registered first: the norm feeds the convolution."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(6, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)

    def forward(self, x):
        return self.conv(torch.relu(self.bn(x)))


class StandardisedConv(nn.Conv2d):
    """A convolution that transforms its weight before use (weight standardisation)."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return self._conv_forward(x, w, self.bias)


def test_only_pairs_whose_dataflow_is_certain_are_folded():
    hooked = nn.Sequential(nn.Conv2d(6, 6, 1), nn.BatchNorm2d(6))
    hooked[0].register_forward_hook(lambda module, args, out: out * 2)
    model = nn.ModuleList([PreActivation(), nn.Sequential(StandardisedConv(6, 6, 1),
                                                          nn.BatchNorm2d(6)), hooked]).eval()
    randomise_norms(model)
    x = torch.randn(1, 6, 8, 8)
    expected = [m(x) for m in model]
    assert fuse_conv_bn(model) == 0
    for m, want in zip(model, expected):
        assert torch.equal(m(x), want)


def test_a_training_model_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match=r"batch norm\(s\) are in training mode \(first: '1'\); "
                                         r'call model.eval\(\) first'):
        fuse_conv_bn(model)


@pytest.mark.parametrize('config,pairs', [
    ('retinanet_r50.py', 53),                       # ResNet-50: stem + 16 blocks x 3 + 4 down
    ('torchvision/retinanet_r50_fpn_tv.py', 53),    # the same with FrozenBatchNorm2d
    ('retinanet_mobilenetv2.py', 52),               # stem, 17 blocks (2 or 3 convs), final conv
    ('faster_rcnn_r50.py', 53),
])
def test_every_backbone_gives_the_same_features_fused(config, pairs):
    cfg = Config.fromfile(str(CONFIGS / config))
    model_cfg = cfg.model.copy()
    model_cfg.backbone = dict(model_cfg.backbone, init_cfg=None)
    torch.manual_seed(0)
    model = MODELS.build(model_cfg).eval()
    randomise_norms(model)
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        expected = model.extract_feat(x)
        assert fuse_conv_bn(model) == pairs
        assert not [m for m in model.modules()
                    if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
        fused = model.extract_feat(x)
    for a, b in zip(fused, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


def test_amp_inference_paths_fold(monkeypatch, tmp_path):
    monkeypatch.setenv('DETKIT_CPU_BF16', '1')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = Config.fromfile(str(CONFIGS / 'retinanet_r50_shapes.py'))
    enable_amp(cfg, train=False)
    assert [h for h in cfg.custom_hooks if h['type'] == 'InferenceFastPathHook'] == [
        dict(type='InferenceFastPathHook', dtype='bfloat16')]
    enable_amp(cfg, train=False)   # a second call adds no second hook
    assert sum(h['type'] == 'InferenceFastPathHook' for h in cfg.custom_hooks) == 1
    training = Config.fromfile(str(CONFIGS / 'retinanet_r50_shapes.py'))
    enable_amp(training, train=True)
    assert not any(h['type'] == 'InferenceFastPathHook'
                   for h in training.get('custom_hooks', []))

    # the hook makes the test model inference-only: ResNet-50's 53 norms folded, 71 convolutions
    # (ResNet 53; FPN 3 lateral, 3 output, 2 extra; head 2 towers of 4, 2 predictors) in bfloat16
    class Runner:
        logger = __import__('logging').getLogger('test')
        hooks: list = []
    model_cfg = Config.fromfile(str(CONFIGS / 'retinanet_r50.py')).model
    model_cfg.backbone.init_cfg = None
    runner = Runner()
    runner.model = MODELS.build(model_cfg)
    hook = InferenceFastPathHook(dtype='bfloat16')
    hook.before_test(runner)
    assert (hook.fused, hook.cast) == (53, 71) and not runner.model.training
    convs = [m for m in runner.model.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.weight.dtype == torch.bfloat16 for m in convs)
    assert all(m.bias.dtype == torch.bfloat16 for m in convs if m.bias is not None)
    with pytest.raises(ValueError, match="dtype must be 'bfloat16' or 'float16', got 'int8'"):
        InferenceFastPathHook(dtype='int8')
    # with mmengine's EMAHook (parameters swapped by position) the model is left as it is
    from mmengine.hooks import EMAHook
    runner.model, runner.hooks = MODELS.build(model_cfg), [EMAHook()]
    hook = InferenceFastPathHook(dtype='bfloat16')
    hook.before_test(runner)
    assert (hook.fused, hook.cast) == (0, 0)
    assert len([m for m in runner.model.modules() if isinstance(m, nn.BatchNorm2d)]) == 53

    # init_detector(amp=True): an inference-only model, folded
    from detkit.apis import init_detector
    with pytest.warns(UserWarning, match='random weights'):
        detector = init_detector(str(CONFIGS / 'retinanet_r50.py'), None, amp=True)
    assert not [m for m in detector.modules() if isinstance(m, nn.BatchNorm2d)]
    assert detector.backbone.conv1.weight.dtype == torch.bfloat16
    with pytest.warns(UserWarning, match='random weights'):
        plain = init_detector(str(CONFIGS / 'retinanet_r50.py'), None)
    assert len([m for m in plain.modules() if isinstance(m, nn.BatchNorm2d)]) == 53


def test_an_inference_only_detector_refuses_to_train(monkeypatch):
    from detkit.engine.amp import prepare_inference_model
    model_cfg = Config.fromfile(str(CONFIGS / 'retinanet_r50.py')).model
    model_cfg.backbone.init_cfg = None
    model = MODELS.build(model_cfg)
    assert model.train() is model     # an ordinary detector trains
    prepare_inference_model(model, torch.bfloat16)
    assert model.inference_only and not model.training
    message = 'RetinaNet is inference-only: --amp inference .* build it again without amp'
    with pytest.raises(RuntimeError, match=message):
        model.train()
    with pytest.raises(RuntimeError, match=message):
        model(torch.zeros(1, 3, 64, 64), [], mode='loss')
    assert model.eval() is model and not model.training   # eval stays allowed


def two_modules(conv: nn.Module, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return norm(conv(x))


def outputs_and_gradients(model: nn.Module, x: torch.Tensor, seed: int = 0):
    """The output and the gradients of a fixed random projection of it, for x and every
    parameter."""
    x = x.clone().requires_grad_()
    out = model(x)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    gen = torch.Generator().manual_seed(seed)
    total = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outs)
    total.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return [o.detach() for o in outs], x.grad, grads


@pytest.mark.parametrize('bias,groups,norm', [(False, 1, 'BN'), (True, 1, 'BN'),
                                              (False, 4, 'FrozenBN'), (True, 1, 'BN-noaffine')])
def test_conv_norm_gives_the_outputs_and_gradients_of_the_two_modules(monkeypatch, bias, groups,
                                                                     norm):
    # the fold's algebra, checked in float32 (conv_norm folds only in reduced precision)
    monkeypatch.setattr(fuse_module, '_reduced_precision', lambda x: True)
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=groups, bias=bias)
    bn = {'BN': nn.BatchNorm2d(12), 'FrozenBN': FrozenBatchNorm2d(12, eps=1e-3),
          'BN-noaffine': nn.BatchNorm2d(12, affine=False)}[norm]
    randomise_norms(nn.Sequential(conv, bn))
    bn.eval()    # norm_eval: fixed statistics, learnable gamma and beta; the conv trains
    pair = nn.ModuleDict(dict(conv=conv, bn=bn))
    x = torch.randn(2, 8, 17, 20)

    class Pair(nn.Module):
        def __init__(self, apply):
            super().__init__()
            self.pair, self.apply_pair = pair, apply

        def forward(self, x):
            return self.apply_pair(self.pair['conv'], self.pair['bn'], x)

    (out,), x_grad, grads = outputs_and_gradients(Pair(conv_norm), x)
    (expected,), expected_x_grad, expected_grads = outputs_and_gradients(Pair(two_modules), x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_grad, expected_x_grad, rtol=1e-5, atol=1e-5)
    # the conv's weight (and bias), and gamma and beta where the norm learns them
    assert sorted(grads) == sorted(expected_grads) == sorted(
        f'pair.{name}' for name, p in pair.named_parameters() if p.requires_grad)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-4, msg=name)


def test_conv_norm_applies_a_training_norm_and_a_hooked_one_as_they_are():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6)   # training mode
    x = torch.randn(2, 4, 9, 9)
    reference = nn.BatchNorm2d(6)
    expected = reference(conv(x))
    assert torch.equal(conv_norm(conv, bn, x), expected)          # batch statistics
    assert torch.equal(bn.running_mean, reference.running_mean)   # and their update
    assert bn.num_batches_tracked.item() == 1
    bn.eval()
    seen = []
    bn.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    assert torch.equal(conv_norm(conv, bn, x), bn(conv(x)))
    assert seen == [torch.Size([2, 6, 9, 9])] * 2                 # the hook saw conv_norm's call


def test_conv_norm_folds_in_bfloat16_and_float16_only():
    """float32 runs the two modules (features equal torchvision's to the bit); bfloat16
    autocast and bfloat16 inputs run one convolution, within bfloat16 rounding of the two."""
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)
    randomise_norms(nn.Sequential(conv, bn))
    bn.eval()
    calls = []
    bn_forward = bn.forward
    bn.forward = lambda y: calls.append(y.dtype) or bn_forward(y)
    x = torch.randn(2, 8, 12, 12)
    assert torch.equal(conv_norm(conv, bn, x), bn_forward(conv(x)))
    assert calls == [torch.float32]
    with torch.autocast('cpu', dtype=torch.bfloat16):
        folded = conv_norm(conv, bn, x)
        expected = bn_forward(conv(x))
    assert calls == [torch.float32] and folded.dtype == torch.bfloat16   # bn did not run
    scale = expected.float().abs().max().item()
    torch.testing.assert_close(folded.float(), expected.float(), rtol=0, atol=2e-2 * scale)
    conv16, bn16 = conv.to(torch.bfloat16), bn.to(torch.bfloat16)
    folded = conv_norm(conv16, bn16, x.to(torch.bfloat16))
    assert calls == [torch.float32] and folded.dtype == torch.bfloat16
    torch.testing.assert_close(folded.float(), expected.float(), rtol=0, atol=2e-2 * scale)


@pytest.mark.parametrize('config', ['retinanet_r50.py', 'torchvision/retinanet_r50_fpn_tv.py',
                                    'retinanet_mobilenetv2.py'])
def test_training_backbones_fold_their_fixed_norms_exactly(monkeypatch, config):
    """norm_eval backbones in train mode: conv_norm's features and gradients are those of the
    convolution and the norm applied one after the other. In float64: with random weights and
    statistics the features grow to ~1e4 through 16 blocks, where float32 cancellation in the
    gradients (~1e-2 relative) would hide a wrong formula."""
    monkeypatch.setattr(fuse_module, '_reduced_precision', lambda x: True)   # fold in float64
    cfg = Config.fromfile(str(CONFIGS / config))
    torch.manual_seed(0)
    backbone = MODELS.build(dict(cfg.model.backbone, init_cfg=None)).train()
    randomise_norms(backbone)
    backbone.double()
    norms = [m for m in backbone.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
    assert norms and not any(m.training for m in norms if isinstance(m, nn.BatchNorm2d))
    x = torch.randn(1, 3, 96, 128, dtype=torch.float64)
    outs, _, grads = outputs_and_gradients(backbone, x)
    calls = []
    counting = lambda conv, norm, x: calls.append(1) or two_modules(conv, norm, x)  # noqa: E731
    for module in (resnet_module, conv_module_module):
        monkeypatch.setattr(module, 'conv_norm', counting)
    monkeypatch.setattr(resnet_module, 'sequential_conv_norm', lambda layers, x: layers(x))
    expected_outs, _, expected_grads = outputs_and_gradients(backbone, x)
    assert len(calls) > 15      # the comparison went through the replaced function
    for a, b in zip(outs, expected_outs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * b.abs().max().item())
    assert sorted(grads) == sorted(expected_grads)
    assert len(grads) > 20      # stages after the frozen ones, norms' gamma/beta included
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-8,
                                   atol=1e-9 * grad.abs().max().item(), msg=name)
