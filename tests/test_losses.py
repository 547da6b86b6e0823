"""FocalLoss and the focal-loss op against a per-element float64 formula; L1Loss on hand values."""
import functools
import math

import pytest
import torch
import torch.nn.functional as F

from detkit import ops
from detkit.models.losses import FocalLoss, L1Loss
from detkit.registry import MODELS

# The elementwise loss, computed by the op FocalLoss calls (the compiled kernel where it is
# built), checked here against the definition.
sigmoid_focal_loss = functools.partial(ops.sigmoid_focal_loss, reduction='none')


def focal_by_hand(logits, labels, gamma, alpha):
    """The focal loss of every element, from its definition, with math on Python floats."""
    num_rows, num_classes = logits.shape
    out = torch.zeros(num_rows, num_classes, dtype=torch.float64)
    for i in range(num_rows):
        label = int(labels[i])
        if label < 0:
            continue
        for c in range(num_classes):
            x = float(logits[i, c])
            p = 1.0 / (1.0 + math.exp(-x))
            if c == label:
                out[i, c] = -alpha * (1 - p) ** gamma * math.log(p)
            else:
                out[i, c] = -(1 - alpha) * p ** gamma * math.log(1 - p)
    return out


def random_case(num_rows=8, num_classes=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_rows, num_classes, generator=generator, dtype=torch.float64) * 3
    # every kind of label: classes, background (= num_classes) and ignored (-1)
    labels = torch.tensor([0, 3, num_classes, -1, 1, num_classes, 2, -1])[:num_rows]
    return logits, labels


def test_focal_matches_the_definition_per_element():
    logits, labels = random_case()
    for gamma, alpha in ((2.0, 0.25), (1.5, 0.6)):
        loss = sigmoid_focal_loss(logits, labels, gamma=gamma, alpha=alpha)
        assert loss.shape == (8, 4) and loss.dtype == torch.float64
        torch.testing.assert_close(loss, focal_by_hand(logits, labels, gamma, alpha))
    loss = sigmoid_focal_loss(logits, labels)
    assert loss[3].tolist() == [0.0] * 4 and loss[7].tolist() == [0.0] * 4  # ignored rows
    weight = torch.arange(8, dtype=torch.float64)
    torch.testing.assert_close(sigmoid_focal_loss(logits, labels, weight=weight),
                               focal_by_hand(logits, labels, 2.0, 0.25) * weight[:, None])


def test_gamma_0_alpha_half_is_half_bce():
    logits, labels = random_case()
    targets = torch.zeros(8, 4, dtype=torch.float64)
    for i, label in enumerate(labels.tolist()):
        if 0 <= label < 4:
            targets[i, label] = 1.0
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction='none')
    bce[labels < 0] = 0.0
    torch.testing.assert_close(sigmoid_focal_loss(logits, labels, gamma=0.0, alpha=0.5), 0.5 * bce)


def test_focal_loss_module_sum_over_avg_factor():
    logits, labels = random_case()
    loss = FocalLoss(gamma=2.0, alpha=0.25, loss_weight=2.0)
    expected = 2.0 * focal_by_hand(logits, labels, 2.0, 0.25).sum() / 4.0
    torch.testing.assert_close(loss(logits, labels, avg_factor=4.0), expected)
    torch.testing.assert_close(loss(logits, labels, avg_factor=torch.tensor(4.0,
                                                                            dtype=torch.float64)),
                               expected)
    # zero logits: p = 0.5; one positive 0.25 * 0.25 * log 2 and five negatives 0.75 * 0.25 * log 2
    value = FocalLoss()(torch.zeros(2, 3), torch.tensor([0, 3]))
    assert value.shape == () and math.isclose(float(value), math.log(2.0), rel_tol=1e-6)


def test_focal_gradient():
    logits, labels = random_case()
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: sigmoid_focal_loss(x, labels), (logits,))
    # gamma = 0, alpha = 0.5: d loss / dx = 0.5 * (sigmoid(x) - t) on kept rows, 0 on ignored ones
    sigmoid_focal_loss(logits, labels, gamma=0.0, alpha=0.5).sum().backward()
    targets = F.one_hot(labels.clamp(min=0), 5)[:, :4].double()
    expected = 0.5 * (torch.sigmoid(logits.detach()) - targets)
    expected[labels < 0] = 0.0
    torch.testing.assert_close(logits.grad, expected)


def test_focal_is_finite_for_huge_logits_and_empty_input():
    logits = torch.tensor([[100.0, -100.0], [-100.0, 100.0]], requires_grad=True)
    loss = sigmoid_focal_loss(logits, torch.tensor([1, 2]))
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logits.grad).all()
    # a confident mistake costs alpha_t * 1 * 100: row 0 (label 1) 0.75 * 100 for class 0,
    # 0.25 * 100 for class 1; row 1 (background) 0.75 * 100 for class 1; the rest is ~0
    torch.testing.assert_close(loss.detach(), torch.tensor([[75.0, 25.0], [0.0, 75.0]]))
    empty = torch.zeros(0, 5, requires_grad=True)
    out = FocalLoss()(empty, torch.zeros(0, dtype=torch.int64))
    out.backward()
    assert out.item() == 0.0 and empty.grad.shape == (0, 5)


def test_focal_rejects_bad_labels():
    logits = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r'\[-1, 4\].*row 1 has 5'):
        sigmoid_focal_loss(logits, torch.tensor([0, 5, 1]))
    with pytest.raises(ValueError, match=r'row 0 has -2'):
        sigmoid_focal_loss(logits, torch.tensor([-2, 0, 1]))
    with pytest.raises(ValueError, match='int64 tensor of shape'):
        sigmoid_focal_loss(logits, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match='weight'):
        sigmoid_focal_loss(logits, torch.tensor([0, 1, 2]), weight=torch.ones(2))
    with pytest.raises(ValueError, match='avg_factor'):
        FocalLoss()(logits, torch.tensor([0, 1, 2]), avg_factor=0)


def test_l1_hand_values():
    leaf = torch.tensor([[1.0, -2.0, 3.0, 4.0], [0.5, 0.0, 0.0, 1.0]], requires_grad=True)
    pred = leaf.detach()
    target = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    # |pred - target| = [[1, 2, 3, 4], [0.5, 0, 1, 1]]: sums 10 and 2.5
    assert math.isclose(float(L1Loss()(pred, target)), 12.5 / 8)
    assert math.isclose(float(L1Loss(loss_weight=2.0)(pred, target, avg_factor=5.0)), 5.0)
    row_weight = torch.tensor([1.0, 0.0])
    assert math.isclose(float(L1Loss()(pred, target, row_weight, avg_factor=2.0)), 5.0)
    element_weight = torch.tensor([[0.0, 1.0, 0.0, 0.5], [2.0, 2.0, 2.0, 2.0]])
    # 2 + 0.5 * 4 + 2 * 2.5 = 9
    loss = L1Loss()(leaf, target, element_weight, avg_factor=torch.tensor(3.0))
    assert math.isclose(loss.item(), 3.0, rel_tol=1e-6)
    loss.backward()
    torch.testing.assert_close(leaf.grad, element_weight * torch.sign(pred - target) / 3)


def test_l1_empty_input_and_bad_shapes():
    pred = torch.zeros(0, 4, requires_grad=True)
    loss = L1Loss()(pred, torch.zeros(0, 4), torch.zeros(0, 4), avg_factor=1.0)
    loss.backward()
    assert loss.item() == 0.0 and loss.requires_grad and pred.grad.shape == (0, 4)
    assert float(L1Loss()(torch.zeros(0, 4), torch.zeros(0, 4))) == 0.0
    with pytest.raises(ValueError, match='same shape'):
        L1Loss()(torch.zeros(2, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match='weight'):
        L1Loss()(torch.zeros(2, 4), torch.zeros(2, 4), torch.ones(3))


def test_registry_builds_the_losses():
    focal = MODELS.build(dict(type='FocalLoss', gamma=2.0, alpha=0.25, loss_weight=1.0))
    l1 = MODELS.build(dict(type='L1Loss', loss_weight=1.0))
    assert isinstance(focal, FocalLoss) and isinstance(l1, L1Loss)
    assert (focal.gamma, focal.alpha) == (2.0, 0.25)
