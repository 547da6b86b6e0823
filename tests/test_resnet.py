"""Tests of the ResNet backbone and its plugins (SEBlock, ContextBlock)."""
import pytest
import torch
import torchvision
from torch import nn

from detkit.models.backbones.plugins import ContextBlock, SEBlock, plugin_base_name
from detkit.models.backbones.resnet import ResNet
from detkit.models.layers import FrozenBatchNorm2d
from detkit.registry import MODELS


def _torchvision_state_dict(depth: int) -> tuple[nn.Module, dict]:
    """A torchvision ResNet with random weights AND random BN statistics, and its state dict
    without ``fc`` (so that a parity check exercises every BN term)."""
    torch.manual_seed(depth)
    tv = getattr(torchvision.models, f'resnet{depth}')(weights=None).eval()
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    state = {k: v for k, v in tv.state_dict().items() if not k.startswith('fc.')}
    return tv, state


def _torchvision_features(tv: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    feats = []
    for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4):
        x = layer(x)
        feats.append(x)
    return feats


@pytest.mark.parametrize('depth, channels', [(18, (64, 128, 256, 512)),
                                             (50, (256, 512, 1024, 2048))])
def test_output_shapes(depth, channels):
    model = ResNet(depth=depth).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, c, 64 // s, 64 // s)
                                              for c, s in zip(channels, (4, 8, 16, 32))]
    assert model.out_channels == channels


@pytest.mark.parametrize('depth', [18, 50])
def test_torchvision_checkpoint_loads_strictly_and_features_match(depth):
    tv, state = _torchvision_state_dict(depth)
    model = ResNet(depth=depth).eval()
    assert set(model.state_dict()) == set(state)
    result = model.load_state_dict(state, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = model(x)
        reference = _torchvision_features(tv, x)
    for out, ref in zip(ours, reference):
        assert out.shape == ref.shape
        assert torch.allclose(out, ref, atol=1e-5)


def test_frozen_bn_resnet_matches_torchvision_checkpoint():
    tv, state = _torchvision_state_dict(18)
    model = ResNet(depth=18, norm_cfg=dict(type='FrozenBN'))
    model.load_state_dict(state, strict=True)  # num_batches_tracked entries are dropped
    assert isinstance(model.layer1[0].bn1, FrozenBatchNorm2d)
    model.train()  # frozen BN ignores the mode
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = model(x)
        reference = _torchvision_features(tv, x)
    for out, ref in zip(ours, reference):
        assert torch.allclose(out, ref, atol=1e-5)
    trainable_norm_params = [n for n, p in model.named_parameters() if 'bn' in n]
    assert trainable_norm_params == []


def test_default_state_dict_keys_are_torchvision_names():
    keys = list(ResNet(depth=50).state_dict())
    assert keys[:2] == ['conv1.weight', 'bn1.weight']
    for key in ('layer1.0.conv1.weight', 'layer1.0.bn1.running_var',
                'layer1.0.downsample.0.weight', 'layer1.0.downsample.1.weight',
                'layer4.2.bn3.num_batches_tracked'):
        assert key in keys


def test_out_indices_select_stages():
    model = ResNet(depth=18, out_indices=(1, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(1, 128, 4, 4), (1, 512, 1, 1)]
    assert model.out_channels == (128, 512)


def test_frozen_stages_freeze_params_and_stay_in_eval():
    model = ResNet(depth=18, frozen_stages=1, norm_eval=False)
    model.train()
    frozen = [model.conv1, model.bn1, model.layer1]
    for module in frozen:
        assert all(not p.requires_grad for p in module.parameters())
        assert all(not m.training for m in module.modules())
    assert all(p.requires_grad for p in model.layer2.parameters())
    assert model.layer2[0].bn1.training
    running_mean = model.layer1[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert torch.equal(model.layer1[0].bn1.running_mean, running_mean)


def test_norm_eval_keeps_bn_statistics_fixed():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32) * 3 + 1
    model = ResNet(depth=18, norm_eval=True).train()
    assert model.training and model.layer2.training
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)
    before = [bn.running_mean.clone() for bn in bns]
    model(x)
    assert all(torch.equal(bn.running_mean, b) for bn, b in zip(bns, before))
    # Without norm_eval the same forward moves the statistics.
    model = ResNet(depth=18, norm_eval=False).train()
    model(x)
    assert not torch.equal(model.bn1.running_mean, torch.zeros(64))


def test_with_cp_gradients_equal_plain_and_recompute():
    torch.manual_seed(0)
    kwargs = dict(depth=50, stem_channels=8, base_channels=8, zero_init_residual=False)
    plain = ResNet(**kwargs, with_cp=False).train()
    cp = ResNet(**kwargs, with_cp=True).train()
    cp.load_state_dict(plain.state_dict())
    calls = []
    cp.layer2[0].conv1.register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(2, 3, 32, 32)
    sum(o.pow(2).sum() for o in plain(x)).backward()
    sum(o.pow(2).sum() for o in cp(x)).backward()
    assert len(calls) == 2  # the block ran again during backward
    for (name, p1), (_, p2) in zip(plain.named_parameters(), cp.named_parameters()):
        assert torch.allclose(p1.grad, p2.grad, atol=1e-5, rtol=1e-4), name
    assert plain.conv1.weight.grad.abs().sum() > 0


def test_with_cp_checkpoints_the_first_trainable_block_behind_frozen_stages():
    # layer1 frozen: layer2.0's input needs no grad, but its weights do; it is recomputed too,
    # while the frozen layer1 blocks are not.
    torch.manual_seed(0)
    kwargs = dict(depth=50, stem_channels=8, base_channels=8, frozen_stages=1)
    plain = ResNet(**kwargs, with_cp=False).train()
    cp = ResNet(**kwargs, with_cp=True).train()
    cp.load_state_dict(plain.state_dict())
    trainable_calls, frozen_calls = [], []
    cp.layer2[0].conv1.register_forward_hook(lambda *args: trainable_calls.append(1))
    cp.layer1[0].conv1.register_forward_hook(lambda *args: frozen_calls.append(1))
    x = torch.randn(2, 3, 32, 32)
    sum(o.pow(2).sum() for o in plain(x)).backward()
    sum(o.pow(2).sum() for o in cp(x)).backward()
    assert len(trainable_calls) == 2 and len(frozen_calls) == 1
    for (name, p1), (_, p2) in zip(plain.named_parameters(), cp.named_parameters()):
        if p1.requires_grad:
            assert torch.allclose(p1.grad, p2.grad, atol=1e-5, rtol=1e-4), name
    with torch.no_grad():  # no backward will come: nothing is checkpointed
        trainable_calls.clear()
        cp(x)
    assert len(trainable_calls) == 1


def test_style_places_the_stride():
    pytorch = ResNet(depth=50, style='pytorch', base_channels=8, stem_channels=8)
    caffe = ResNet(depth=50, style='caffe', base_channels=8, stem_channels=8)
    assert pytorch.layer2[0].conv1.stride == (1, 1) and pytorch.layer2[0].conv2.stride == (2, 2)
    assert caffe.layer2[0].conv1.stride == (2, 2) and caffe.layer2[0].conv2.stride == (1, 1)
    with torch.no_grad():
        shapes = [tuple(o.shape) for o in caffe.eval()(torch.randn(1, 3, 64, 64))]
    assert shapes == [(1, 32, 16, 16), (1, 64, 8, 8), (1, 128, 4, 4), (1, 256, 2, 2)]


def test_deep_stem_and_avg_down():
    model = ResNet(depth=50, deep_stem=True, avg_down=True, stem_channels=16,
                   base_channels=8).eval()
    assert not hasattr(model, 'conv1')
    convs = [m for m in model.stem if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [
        (3, 8, (2, 2)), (8, 8, (1, 1)), (8, 16, (1, 1))]
    assert 'stem.0.weight' in model.state_dict() and 'stem.7.running_var' in model.state_dict()
    # Stage 1 (stride 1) only changes channels: no pooling. Stage 2 pools then convolves.
    assert [type(m) for m in model.layer1[0].downsample] == [nn.Conv2d, nn.BatchNorm2d]
    down = model.layer2[0].downsample
    assert [type(m) for m in down] == [nn.AvgPool2d, nn.Conv2d, nn.BatchNorm2d]
    assert down[0].kernel_size == 2 and down[1].stride == (1, 1)
    with torch.no_grad():
        shapes = [tuple(o.shape) for o in model(torch.randn(1, 3, 64, 64))]
    assert shapes == [(1, 32, 16, 16), (1, 64, 8, 8), (1, 128, 4, 4), (1, 256, 2, 2)]
    frozen = ResNet(depth=18, deep_stem=True, frozen_stages=0).train()
    assert all(not p.requires_grad for p in frozen.stem.parameters())
    assert not frozen.stem[1].training and all(p.requires_grad for p in frozen.layer1.parameters())


def test_dilation_keeps_resolution():
    model = ResNet(depth=50, base_channels=8, stem_channels=8, strides=(1, 2, 2, 1),
                   dilations=(1, 1, 1, 2)).eval()
    conv2 = model.layer4[1].conv2
    assert conv2.dilation == (2, 2) and conv2.padding == (2, 2)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 4]


def test_group_norm_backbone():
    model = ResNet(depth=50, base_channels=8, stem_channels=8,
                   norm_cfg=dict(type='GN', num_groups=4, requires_grad=True))
    keys = model.state_dict()
    assert 'gn1.weight' in keys and 'layer1.0.gn3.weight' in keys
    assert 'layer1.0.downsample.1.weight' in keys and 'bn1.weight' not in keys
    assert isinstance(model.layer1[0].gn2, nn.GroupNorm)
    outs = model.train()(torch.randn(1, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [32, 64, 128, 256]
    outs[-1].sum().backward()
    assert model.gn1.weight.grad is not None


def test_zero_init_residual():
    model = ResNet(depth=50, base_channels=8, stem_channels=8)
    last_norms = [block.bn3.weight for stage in (model.layer1, model.layer2, model.layer3,
                                                 model.layer4) for block in stage]
    assert len(last_norms) == 16 and all(torch.count_nonzero(w) == 0 for w in last_norms)
    assert torch.equal(model.layer1[0].bn2.weight, torch.ones(8))
    basic = ResNet(depth=18, zero_init_residual=True)
    assert torch.count_nonzero(basic.layer3[1].bn2.weight) == 0
    plain = ResNet(depth=50, base_channels=8, stem_channels=8, zero_init_residual=False)
    assert torch.equal(plain.layer1[0].bn3.weight, torch.ones(32))


SE = dict(type='SEBlock', ratio=4)


def test_plugins_shape_names_and_stages():
    model = ResNet(depth=50, base_channels=8, stem_channels=8, plugins=[
        dict(cfg=SE, stages=(False, True, True, True), position='after_conv3'),
        dict(cfg=SE, stages=(False, True, True, True), position='after_conv3'),
        dict(cfg=dict(type='ContextBlock', ratio=1 / 4), position='after_conv2')]).eval()
    block = model.layer2[0]
    assert block.plugin_names == {'after_conv1': [], 'after_conv2': ['context_block_after_conv2'],
                                  'after_conv3': ['se_block_after_conv3',
                                                  'se_block_after_conv3_2']}
    assert isinstance(block.se_block_after_conv3, SEBlock)
    assert block.se_block_after_conv3.in_channels == 64  # 4 * planes at after_conv3
    assert block.context_block_after_conv2.in_channels == 16  # planes at after_conv2
    assert not hasattr(model.layer1[0], 'se_block_after_conv3')
    assert model.layer1[0].context_block_after_conv2.in_channels == 8
    keys = model.state_dict()
    assert 'layer2.0.se_block_after_conv3.fc1.weight' in keys
    assert 'layer2.0.se_block_after_conv3_2.fc1.weight' in keys
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 16, 16), (1, 64, 8, 8), (1, 128, 4, 4),
                                              (1, 256, 2, 2)]


def test_se_plugin_receives_gradient_and_gates_channels():
    torch.manual_seed(0)
    model = ResNet(depth=18, zero_init_residual=False, plugins=[
        dict(cfg=dict(type='SEBlock', ratio=16), position='after_conv2')]).train()
    outs = model(torch.randn(2, 3, 32, 32))
    sum(o.sum() for o in outs).backward()
    se = model.layer3[1].se_block_after_conv2
    assert se.fc1.weight.grad.abs().sum() > 0 and se.fc2.weight.grad.abs().sum() > 0
    # The SE output is x times a gate in (0, 1) computed from the channel means.
    x = torch.randn(2, 256, 3, 3)
    with torch.no_grad():
        gate = torch.sigmoid(se.fc2(torch.relu(se.fc1(x.mean(dim=(2, 3))))))
        torch.testing.assert_close(se(x), x * gate[:, :, None, None])


def test_context_block_starts_as_identity_and_gets_gradients():
    torch.manual_seed(0)
    kwargs = dict(depth=50, base_channels=8, stem_channels=8, zero_init_residual=False)
    plain = ResNet(**kwargs).eval()
    with_gc = ResNet(**kwargs, plugins=[dict(cfg=dict(type='ContextBlock', ratio=1 / 4),
                                             stages=(False, True, True, True),
                                             position='after_conv3')]).eval()
    result = with_gc.load_state_dict(plain.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all('context_block_after_conv3' in k
                                       for k in result.missing_keys)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(plain(x), with_gc(x)):
            assert torch.equal(a, b)
    with_gc.train()
    sum(o.pow(2).sum() for o in with_gc(x)).backward()
    gc = with_gc.layer3[0].context_block_after_conv3
    assert all(p.grad is not None for p in gc.parameters())
    assert gc.channel_add_conv[3].weight.grad.abs().sum() > 0
    assert torch.count_nonzero(gc.channel_add_conv[3].weight) == 0  # no step taken yet


def test_context_block_computes_attention_pooled_context():
    torch.manual_seed(0)
    block = ContextBlock(8, ratio=1 / 2)
    nn.init.normal_(block.channel_add_conv[3].weight)
    x = torch.randn(2, 8, 3, 4)
    weights = block.conv_mask(x).flatten(2).softmax(-1)  # (N, 1, HW)
    context = (x.flatten(2) * weights).sum(-1)[:, :, None, None]
    expected = x + block.channel_add_conv(context)
    torch.testing.assert_close(block(x), expected)
    assert block(x).shape == (2, 8, 3, 4)


def test_plugin_errors():
    with pytest.raises(ValueError, match="'after_conv3' is not available.*BasicBlock"):
        ResNet(depth=18, plugins=[dict(cfg=SE, position='after_conv3')])
    with pytest.raises(ValueError, match=r"plugins\[0\].position='after_conv4'"):
        ResNet(depth=50, plugins=[dict(cfg=SE, position='after_conv4')])
    with pytest.raises(ValueError, match=r'plugins\[0\].stages must hold num_stages=4 bools'):
        ResNet(depth=50, plugins=[dict(cfg=SE, position='after_conv1', stages=(True,))])
    with pytest.raises(ValueError, match=r'plugins\[0\] must be dict\(cfg=...'):
        ResNet(depth=50, plugins=[dict(cfg=SE, where='after_conv1')])
    with pytest.raises(KeyError, match='NoSuchPlugin'):
        ResNet(depth=18, plugins=[dict(cfg=dict(type='NoSuchPlugin'), position='after_conv1')])
    with pytest.raises(ValueError, match='SEBlock: in_channels=8 // ratio=16'):
        SEBlock(8, ratio=16)
    with pytest.raises(ValueError, match='fusion_types'):
        ContextBlock(8, fusion_types=('channel_sub',))
    assert plugin_base_name('GeneralizedAttention', 'after_conv2') == (
        'generalized_attention_after_conv2')


def test_argument_errors_name_the_argument():
    with pytest.raises(ValueError, match=r'depth=42.*\[18, 34, 50, 101, 152\]'):
        ResNet(depth=42)
    with pytest.raises(ValueError, match='out_indices.*0..3'):
        ResNet(depth=18, out_indices=(0, 4))
    with pytest.raises(ValueError, match='strides must hold num_stages=4'):
        ResNet(depth=18, strides=(1, 2, 2))
    with pytest.raises(ValueError, match='dilations must hold num_stages=3'):
        ResNet(depth=18, num_stages=3, strides=(1, 2, 2), out_indices=(0, 1, 2))
    with pytest.raises(ValueError, match="style must be 'pytorch' or 'caffe'"):
        ResNet(depth=50, style='tf')
    with pytest.raises(ValueError, match='frozen_stages must be an int in -1..4'):
        ResNet(depth=18, frozen_stages=5)
    with pytest.raises(ValueError, match=r'expects input of shape \(N, 3, H, W\)'):
        ResNet(depth=18)(torch.zeros(1, 1, 32, 32))


def test_registry_build_and_pretrained_init_cfg(tmp_path):
    tv, state = _torchvision_state_dict(18)
    path = tmp_path / 'resnet18.pth'
    torch.save(state, path)
    model = MODELS.build(dict(type='ResNet', depth=18,
                              init_cfg=dict(type='Pretrained', checkpoint=str(path))))
    assert isinstance(model, ResNet)
    assert not torch.equal(model.conv1.weight, state['conv1.weight'])
    model.init_weights()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
