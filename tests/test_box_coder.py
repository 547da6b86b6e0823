"""DeltaXYWHBBoxCoder: hand-computed encode/decode, round trip, clamp, clip, normalisation."""
import math

import pytest
import torch

from detkit.models.task_utils import DeltaXYWHBBoxCoder
from detkit.registry import TASK_UTILS

LOG2 = math.log(2.0)


def test_encode_hand_value():
    coder = DeltaXYWHBBoxCoder()
    prior = torch.tensor([[0.0, 0.0, 10.0, 20.0], [10.0, 10.0, 14.0, 12.0]])
    gt = torch.tensor([[5.0, 0.0, 15.0, 40.0], [11.0, 10.0, 13.0, 16.0]])
    # prior 0: centre (5, 10), size (10, 20); gt 0: centre (10, 20), size (10, 40)
    # prior 1: centre (12, 11), size (4, 2);   gt 1: centre (12, 13), size (2, 6)
    expected = torch.tensor([[0.5, 0.5, 0.0, LOG2], [0.0, 1.0, -LOG2, math.log(3.0)]])
    torch.testing.assert_close(coder.encode(prior, gt), expected)


def test_means_and_stds_normalise_the_deltas():
    prior = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    gt = torch.tensor([[5.0, 0.0, 15.0, 40.0]])  # raw deltas (0.5, 0.5, 0, log 2)
    coder = DeltaXYWHBBoxCoder(target_means=(0.1, 0.0, 0.0, 0.2), target_stds=(0.1, 0.1, 0.2, 0.2))
    expected = torch.tensor([[(0.5 - 0.1) / 0.1, 0.5 / 0.1, 0.0, (LOG2 - 0.2) / 0.2]])
    deltas = coder.encode(prior, gt)
    torch.testing.assert_close(deltas, expected)
    torch.testing.assert_close(coder.decode(prior, deltas), gt)


def test_decode_hand_value_and_round_trip():
    coder = DeltaXYWHBBoxCoder(target_stds=(0.1, 0.1, 0.2, 0.2))
    prior = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    raw = torch.tensor([[0.5, 0.5, 0.0, LOG2]])
    normalised = raw / torch.tensor([0.1, 0.1, 0.2, 0.2])
    torch.testing.assert_close(coder.decode(prior, normalised), torch.tensor([[5.0, 0.0, 15.0,
                                                                              40.0]]))
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(2, 7, 2, generator=generator, dtype=torch.float64) * 100
    priors = torch.cat([xy, xy + 1 + torch.rand(2, 7, 2, generator=generator,
                                                  dtype=torch.float64) * 50], dim=-1)
    xy = torch.rand(2, 7, 2, generator=generator, dtype=torch.float64) * 100
    gts = torch.cat([xy, xy + 1 + torch.rand(2, 7, 2, generator=generator,
                                               dtype=torch.float64) * 50], dim=-1)
    deltas = coder.encode(priors, gts)
    assert deltas.shape == (2, 7, 4) and deltas.dtype == torch.float64
    torch.testing.assert_close(coder.decode(priors, deltas), gts)


def test_decode_clamps_dw_dh_at_log_1000_over_16():
    coder = DeltaXYWHBBoxCoder(clip_border=False)
    prior = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    boxes = coder.decode(prior, torch.tensor([[0.0, 0.0, 100.0, -100.0]]))
    # width 10 * 1000 / 16 = 625, height 10 * 16 / 1000 = 0.16, centre (5, 5)
    torch.testing.assert_close(boxes, torch.tensor([[-307.5, 4.92, 317.5, 5.08]]))
    # below the clamp nothing changes: dw = log(62) < log(62.5)
    boxes = coder.decode(prior, torch.tensor([[0.0, 0.0, math.log(62.0), 0.0]]))
    torch.testing.assert_close(boxes, torch.tensor([[-305.0, 0.0, 315.0, 10.0]]))


def test_decode_clips_to_image_only_when_asked():
    prior = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    deltas = torch.tensor([[1.0, -1.0, LOG2, LOG2]])  # centre (15, -5), size (20, 20)
    unclipped = torch.tensor([[5.0, -15.0, 25.0, 5.0]])
    torch.testing.assert_close(DeltaXYWHBBoxCoder().decode(prior, deltas), unclipped)
    torch.testing.assert_close(DeltaXYWHBBoxCoder(clip_border=False).decode(
        prior, deltas, max_shape=(8, 20)), unclipped)
    torch.testing.assert_close(DeltaXYWHBBoxCoder().decode(prior, deltas, max_shape=(8, 20)),
                               torch.tensor([[5.0, 0.0, 20.0, 5.0]]))


def test_class_specific_deltas_decode_each_group_on_the_same_prior():
    coder = DeltaXYWHBBoxCoder()
    priors = torch.tensor([[0.0, 0.0, 10.0, 20.0], [4.0, 4.0, 8.0, 6.0]])
    group0 = torch.tensor([[0.5, 0.5, 0.0, LOG2], [0.0, 0.0, 0.0, 0.0]])
    group1 = torch.tensor([[0.0, 0.0, -LOG2, 0.0], [1.0, 1.0, LOG2, LOG2]])
    boxes = coder.decode(priors, torch.cat([group0, group1], dim=1))
    assert boxes.shape == (2, 8)
    expected = torch.tensor([[5.0, 0.0, 15.0, 40.0, 2.5, 0.0, 7.5, 20.0],
                             [4.0, 4.0, 8.0, 6.0, 6.0, 5.0, 14.0, 9.0]])
    torch.testing.assert_close(boxes, expected)
    torch.testing.assert_close(boxes[:, 4:], coder.decode(priors, group1))


def test_registry_and_bad_arguments():
    coder = TASK_UTILS.build(dict(type='DeltaXYWHBBoxCoder', target_stds=(1.0, 1.0, 2.0, 2.0)))
    assert coder.target_stds == (1.0, 1.0, 2.0, 2.0)
    with pytest.raises(ValueError, match='same shape'):
        coder.encode(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r'4 \* K'):
        coder.decode(torch.zeros(3, 4), torch.zeros(3, 6))
    with pytest.raises(ValueError, match='4 values'):
        DeltaXYWHBBoxCoder(target_means=(0.0, 0.0))
    with pytest.raises(ValueError, match='> 0'):
        DeltaXYWHBBoxCoder(target_stds=(1.0, 0.0, 1.0, 1.0))
    assert coder.decode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
