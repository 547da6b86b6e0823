"""Tests of the FPN neck."""
import math

import pytest
import torch
import torch.nn.functional as F

from detkit.models.necks.fpn import FPN
from detkit.registry import MODELS


def _features(channels, sizes, seed=0):
    torch.manual_seed(seed)
    return [torch.randn(1, c, s, s) for c, s in zip(channels, sizes)]


def _top_down(fpn, inputs):
    """Laterals after the top-down pass, computed by hand with the module's own convs."""
    laterals = [conv(inputs[fpn.start_level + i]) for i, conv in enumerate(fpn.lateral_convs)]
    for i in range(len(laterals) - 1, 0, -1):
        laterals[i - 1] = laterals[i - 1] + F.interpolate(
            laterals[i], size=laterals[i - 1].shape[2:], mode='nearest')
    return laterals


def test_retinanet_setting_shapes_and_state_dict_keys():
    # C2..C5 of a 256x256 image.
    inputs = _features([256, 512, 1024, 2048], [64, 32, 16, 8])
    fpn = FPN([256, 512, 1024, 2048], 256, num_outs=5, start_level=1,
              add_extra_convs='on_input')
    with torch.no_grad():
        outs = fpn(inputs)
    assert isinstance(outs, tuple)
    assert [tuple(o.shape) for o in outs] == [(1, 256, s, s) for s in (32, 16, 8, 4, 2)]
    expected = {f'lateral_convs.{i}.conv.{p}' for i in range(3) for p in ('weight', 'bias')}
    expected |= {f'fpn_convs.{i}.conv.{p}' for i in range(5) for p in ('weight', 'bias')}
    assert set(fpn.state_dict()) == expected
    assert fpn.fpn_convs[3].conv.in_channels == 2048  # on_input: P6 reads C5
    assert fpn.fpn_convs[3].conv.stride == (2, 2)


def test_outputs_equal_hand_computation_on_input():
    in_channels = [8, 16, 32, 64]
    inputs = _features(in_channels, [32, 16, 8, 4])
    fpn = FPN(in_channels, 8, num_outs=5, start_level=1, add_extra_convs='on_input').eval()
    with torch.no_grad():
        outs = fpn(inputs)
        laterals = _top_down(fpn, inputs)
        expected = [fpn.fpn_convs[i].conv(lat) for i, lat in enumerate(laterals)]
        p6 = fpn.fpn_convs[3].conv(inputs[3])
        expected += [p6, fpn.fpn_convs[4].conv(p6)]
    assert len(outs) == 5
    for out, ref in zip(outs, expected):
        torch.testing.assert_close(out, ref)


@pytest.mark.parametrize('source', ['on_lateral', 'on_output'])
def test_extra_conv_sources(source):
    in_channels = [8, 16, 32]
    inputs = _features(in_channels, [16, 8, 4])
    fpn = FPN(in_channels, 8, num_outs=5, add_extra_convs=source).eval()
    assert fpn.fpn_convs[3].conv.in_channels == 8
    seen = []
    fpn.fpn_convs[3].register_forward_hook(lambda module, args, out: seen.append(args[0]))
    with torch.no_grad():
        outs = fpn(inputs)
        laterals = _top_down(fpn, inputs)
    reference = laterals[-1] if source == 'on_lateral' else outs[2]
    assert len(seen) == 1 and torch.equal(seen[0], reference)
    torch.testing.assert_close(outs[3], fpn.fpn_convs[3].conv(reference))
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 2, 1]


def test_true_means_on_input():
    fpn = FPN([8, 16], 8, num_outs=3, add_extra_convs=True)
    assert fpn.add_extra_convs == 'on_input' and fpn.fpn_convs[2].conv.in_channels == 16


def test_max_pool_extra_levels_without_extra_convs():
    inputs = _features([8, 16, 32], [16, 8, 4])
    fpn = FPN([8, 16, 32], 8, num_outs=5)
    assert len(fpn.fpn_convs) == 3
    with torch.no_grad():
        outs = fpn(inputs)
    # max_pool2d with kernel 1 and stride 2 keeps every other pixel.
    assert torch.equal(outs[3], outs[2][:, :, ::2, ::2])
    assert torch.equal(outs[4], outs[3][:, :, ::2, ::2])
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 2, 1]


def test_relu_before_extra_convs():
    inputs = _features([8, 16, 32], [16, 8, 4])
    kwargs = dict(num_outs=5, add_extra_convs='on_output')
    with_relu = FPN([8, 16, 32], 8, relu_before_extra_convs=True, **kwargs)
    without = FPN([8, 16, 32], 8, relu_before_extra_convs=False, **kwargs)
    without.load_state_dict(with_relu.state_dict())
    with torch.no_grad():
        a, b = with_relu(inputs), without(inputs)
        assert (a[3] < 0).any()  # the ReLU has something to remove
        torch.testing.assert_close(a[4], with_relu.fpn_convs[4](F.relu(a[3])))
        torch.testing.assert_close(b[4], without.fpn_convs[4](b[3]))
    for i in range(4):  # only the input of the second extra conv differs
        assert torch.equal(a[i], b[i])
    assert not torch.allclose(a[4], b[4])


def test_odd_sizes_use_size_based_upsampling():
    inputs = _features([8, 16, 32], [25, 13, 7])
    fpn = FPN([8, 16, 32], 8, num_outs=4, add_extra_convs='on_output').eval()
    with torch.no_grad():
        outs = fpn(inputs)
        laterals = _top_down(fpn, inputs)
    assert [tuple(o.shape[2:]) for o in outs] == [(25, 25), (13, 13), (7, 7), (4, 4)]
    # Nearest upsampling of 7 -> 13 repeats source row floor(i * 7 / 13).
    lat = [conv(x) for conv, x in zip(fpn.lateral_convs, inputs)]
    rows = torch.arange(13) * 7 // 13
    manual = lat[1] + lat[2][:, :, rows][:, :, :, rows]
    torch.testing.assert_close(laterals[1], manual)
    torch.testing.assert_close(outs[1], fpn.fpn_convs[1](manual))


def test_scale_factor_upsample_cfg():
    inputs = _features([8, 16], [8, 4])
    fpn = FPN([8, 16], 8, num_outs=2, upsample_cfg=dict(mode='nearest', scale_factor=2))
    with torch.no_grad():
        outs = fpn(inputs)
        lat0 = fpn.lateral_convs[0](inputs[0])
        lat1 = fpn.lateral_convs[1](inputs[1])
        up = lat1.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(outs[0], fpn.fpn_convs[0](lat0 + up))


def test_end_level_uses_a_slice_of_the_inputs():
    inputs = _features([8, 16, 32, 64], [16, 8, 4, 2])
    fpn = FPN([8, 16, 32, 64], 8, num_outs=2, start_level=1, end_level=2)
    assert len(fpn.lateral_convs) == 2 and fpn.lateral_convs[1].conv.in_channels == 32
    with torch.no_grad():
        outs = fpn(inputs)
        laterals = _top_down(fpn, inputs)
    assert [o.shape[-1] for o in outs] == [8, 4]
    torch.testing.assert_close(outs[0], fpn.fpn_convs[0](laterals[0]))


def test_norm_and_activation_configs():
    fpn = FPN([8, 16], 8, num_outs=3, add_extra_convs='on_input',
              norm_cfg=dict(type='GN', num_groups=2), act_cfg=dict(type='ReLU'))
    keys = set(fpn.state_dict())
    assert {'lateral_convs.0.gn.weight', 'fpn_convs.2.gn.weight'} <= keys
    assert 'lateral_convs.0.conv.bias' not in keys
    with torch.no_grad():
        outs = fpn(_features([8, 16], [8, 4]))
    assert all((o >= 0).all() for o in outs)  # ReLU at the end of every conv
    no_lateral_norm = FPN([8, 16], 8, num_outs=2, norm_cfg=dict(type='BN'),
                          no_norm_on_lateral=True)
    keys = set(no_lateral_norm.state_dict())
    assert 'lateral_convs.0.conv.bias' in keys and 'lateral_convs.0.bn.weight' not in keys
    assert 'fpn_convs.0.bn.weight' in keys


def test_init_weights_is_xavier_uniform():
    torch.manual_seed(0)
    fpn = FPN([64, 128], 64, num_outs=2)
    fpn.init_weights()
    weight = fpn.fpn_convs[0].conv.weight  # fan_in = fan_out = 64 * 9
    bound = math.sqrt(6.0 / (2 * 64 * 9))
    assert weight.abs().max() <= bound
    assert abs(weight.std().item() - bound / math.sqrt(3)) < 0.05 * bound
    assert all(torch.count_nonzero(m.conv.bias) == 0 for m in fpn.lateral_convs)


def test_registry_build():
    fpn = MODELS.build(dict(type='FPN', in_channels=[8, 16], out_channels=8, num_outs=3))
    assert isinstance(fpn, FPN) and fpn.num_outs == 3


def test_errors():
    with pytest.raises(ValueError, match='add_extra_convs must be False, True or one of'):
        FPN([8, 16], 8, num_outs=3, add_extra_convs='on_top')
    with pytest.raises(ValueError, match='num_outs must be at least len.*= 2'):
        FPN([8, 16], 8, num_outs=1)
    with pytest.raises(ValueError, match='start_level must be in 0..1'):
        FPN([8, 16], 8, num_outs=2, start_level=2)
    with pytest.raises(ValueError, match='end_level must be -1 or in 0..1'):
        FPN([8, 16], 8, num_outs=2, end_level=5)
    with pytest.raises(ValueError, match='with end_level=0, num_outs must be'):
        FPN([8, 16], 8, num_outs=3, end_level=0)
    with pytest.raises(ValueError, match='upsample_cfg keys'):
        FPN([8, 16], 8, num_outs=2, upsample_cfg=dict(mode='nearest', size=4))
    fpn = FPN([8, 16], 8, num_outs=2)
    with pytest.raises(ValueError, match='expects 2 input levels'):
        fpn(_features([8], [8]))
    with pytest.raises(ValueError, match=r'inputs\[1\] must have shape \(N, 16, H, W\)'):
        fpn(_features([8, 32], [8, 4]))
