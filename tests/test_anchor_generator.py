"""AnchorGenerator: base anchors, grid ordering and anchor counts against hand-computed values."""
import math

import pytest
import torch

from detkit.models.task_utils import AnchorGenerator
from detkit.registry import TASK_UTILS

SQRT2 = math.sqrt(2.0)


def retina_generator(**overrides):
    cfg = dict(strides=[8, 16, 32, 64, 128], ratios=[0.5, 1.0, 2.0], octave_base_scale=4,
               scales_per_octave=3)
    cfg.update(overrides)
    return AnchorGenerator(**cfg)


def test_retinanet_base_anchors_of_stride_8():
    gen = retina_generator()
    base = gen.base_anchors[0]
    assert base.shape == (9, 4) and base.dtype == torch.float32
    # scales 4, 4 * 2^(1/3) = 5.03968, 4 * 2^(2/3) = 6.34960; base 8 -> sides 32, 40.3175, 50.7968
    half_sides = [16.0, 20.158737, 25.398417]
    expected = []
    for ratio in (0.5, 1.0, 2.0):  # ratio outer, scale inner
        for half in half_sides:
            half_w, half_h = half / math.sqrt(ratio), half * math.sqrt(ratio)
            expected.append([-half_w, -half_h, half_w, half_h])
    torch.testing.assert_close(base, torch.tensor(expected), atol=1e-4, rtol=0)
    # a few rows written out: ratio 0.5 scale 4 (w = 32 * sqrt 2), ratio 1 scale 4, ratio 2
    torch.testing.assert_close(base[0], torch.tensor([-16 * SQRT2, -8 * SQRT2, 16 * SQRT2,
                                                      8 * SQRT2]))
    torch.testing.assert_close(base[3], torch.tensor([-16.0, -16.0, 16.0, 16.0]))
    torch.testing.assert_close(base[5], torch.tensor([-25.398417, -25.398417, 25.398417,
                                                      25.398417]))
    torch.testing.assert_close(base[6], torch.tensor([-8 * SQRT2, -16 * SQRT2, 8 * SQRT2,
                                                      16 * SQRT2]))
    # every level is the stride-8 level scaled by stride / 8
    for level, stride in enumerate(gen.strides):
        torch.testing.assert_close(gen.base_anchors[level], base * (stride / 8))


def test_center_offset_and_base_sizes():
    gen = AnchorGenerator(strides=[8], ratios=[1.0], scales=[1.0], center_offset=0.5)
    torch.testing.assert_close(gen.base_anchors[0], torch.tensor([[0.0, 0.0, 8.0, 8.0]]))
    gen = AnchorGenerator(strides=[8], ratios=[1.0], scales=[2.0], base_sizes=[5])
    torch.testing.assert_close(gen.base_anchors[0], torch.tensor([[-5.0, -5.0, 5.0, 5.0]]))


def test_grid_of_2x3_feature_map_rows_and_order():
    gen = AnchorGenerator(strides=[4], ratios=[1.0], scales=[1.0, 2.0])
    (anchors,) = gen.grid_anchors([(2, 3)])
    # row = (y * W + x) * A + a; location (y, x) is shifted by (4x, 4y)
    expected = torch.tensor([
        [-2, -2, 2, 2], [-4, -4, 4, 4],      # y=0 x=0
        [2, -2, 6, 2], [0, -4, 8, 4],        # y=0 x=1
        [6, -2, 10, 2], [4, -4, 12, 4],      # y=0 x=2
        [-2, 2, 2, 6], [-4, 0, 4, 8],        # y=1 x=0
        [2, 2, 6, 6], [0, 0, 8, 8],          # y=1 x=1
        [6, 2, 10, 6], [4, 0, 12, 8],        # y=1 x=2
    ], dtype=torch.float32)
    torch.testing.assert_close(anchors, expected)


def test_grid_order_matches_permuted_conv_head_output():
    gen = retina_generator()
    height, width, num_anchors, num_classes = 2, 3, 9, 2
    (anchors,) = gen.grid_anchors([(height, width)] + [(1, 1)] * 4)[:1]
    # channel a * K + k at (y, x) encodes (a, y, x) so that we can read back which anchor it is
    code = torch.zeros(1, num_anchors * num_classes, height, width)
    for a in range(num_anchors):
        for y in range(height):
            for x in range(width):
                code[0, a * num_classes:(a + 1) * num_classes, y, x] = a * 100 + y * 10 + x
    rows = code.permute(0, 2, 3, 1).reshape(1, -1, num_classes)[0, :, 0]
    for row, value in enumerate(rows.tolist()):
        a, y, x = int(value) // 100, int(value) // 10 % 10, int(value) % 10
        shifted = gen.base_anchors[0][a] + torch.tensor([8.0 * x, 8.0 * y, 8.0 * x, 8.0 * y])
        torch.testing.assert_close(anchors[row], shifted)


def test_anchor_counts_per_level():
    gen = retina_generator()
    assert gen.num_levels == 5
    assert gen.num_base_anchors == [9, 9, 9, 9, 9]
    sizes = [(100, 152), (50, 76), (25, 38), (13, 19), (7, 10)]
    anchors = gen.grid_anchors(sizes)
    assert [a.shape[0] for a in anchors] == [136800, 34200, 8550, 2223, 630]
    assert all(a.shape[1] == 4 and a.dtype == torch.float32 for a in anchors)
    # last row of level 4: location (6, 9) shifted by stride 128, last base anchor
    torch.testing.assert_close(anchors[4][-1], gen.base_anchors[4][-1] + torch.tensor(
        [9 * 128.0, 6 * 128.0, 9 * 128.0, 6 * 128.0]))
    assert gen.grid_anchors([(0, 4)] * 5)[0].shape == (0, 4)


def test_registry_and_bad_arguments():
    gen = TASK_UTILS.build(dict(type='AnchorGenerator', strides=[8], ratios=[1.0], scales=[1.0]))
    assert isinstance(gen, AnchorGenerator)
    with pytest.raises(ValueError, match='exactly one'):
        AnchorGenerator(strides=[8], ratios=[1.0], scales=[1.0], octave_base_scale=4,
                        scales_per_octave=3)
    with pytest.raises(ValueError, match='exactly one'):
        AnchorGenerator(strides=[8], ratios=[1.0])
    with pytest.raises(ValueError, match='go together'):
        AnchorGenerator(strides=[8], ratios=[1.0], octave_base_scale=4)
    with pytest.raises(ValueError, match='ratios'):
        AnchorGenerator(strides=[8], ratios=[0.0], scales=[1.0])
    with pytest.raises(ValueError, match='base_sizes has 1 entries'):
        AnchorGenerator(strides=[8, 16], ratios=[1.0], scales=[1.0], base_sizes=[8])
    with pytest.raises(ValueError, match='2 levels'):
        AnchorGenerator(strides=[8, 16], ratios=[1.0], scales=[1.0]).grid_anchors([(2, 2)])
