"""GroupSoftmax: the float64 reference against finite differences and its closed-form gradient,
the singleton-group identity with softmax cross entropy, vanishing groups, ignored rows, and the
registered module with LabelGroups (one vector per row, or a table), weights and avg_factor."""
import math

import pytest
import torch
import torch.nn.functional as F

import detkit.models.losses.group_softmax_loss as gs_module
from detkit.models.losses import GroupSoftmaxLoss, group_softmax_loss_reference
from detkit.registry import MODELS
from detkit.structures import LabelGroups

K = 5  # foreground classes; background is column K


def random_case(num_rows=7, seed=0):
    """Logits, labels of every kind and per-row group vectors of two 'datasets'."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_rows, K + 1, generator=generator, dtype=torch.float64) * 2
    # dataset A labels classes 0, 1 (classes 2-4 merged with background);
    # dataset B labels 2, 3, 4 with 3 and 4 sharing one group (a coarse label)
    group_a = torch.tensor([1, 2, 0, 0, 0, 0])
    group_b = torch.tensor([0, 0, 1, 2, 2, 0])
    label_groups = torch.stack([group_a, group_b, group_a, group_b, group_a, group_b, group_b])
    labels = torch.tensor([0, 3, K, K, -1, 2, 4])
    return logits[:num_rows], labels[:num_rows], label_groups[:num_rows]


def rows(label_groups):
    """LabelGroups with one table row per logit row."""
    return LabelGroups(table=label_groups, row_index=torch.arange(len(label_groups)))


def loss_by_hand(logits, labels, label_groups):
    """-log(sum of the group's softmax probabilities), with Python floats."""
    out = []
    for z, t, gid in zip(logits.tolist(), labels.tolist(), label_groups.tolist()):
        if t < 0:
            out.append(0.0)
            continue
        exps = [math.exp(v) for v in z]
        group = sum(e for e, g in zip(exps, gid) if g == gid[t])
        out.append(-math.log(group / sum(exps)))
    return torch.tensor(out, dtype=torch.float64)


def test_reference_matches_the_definition():
    logits, labels, groups = random_case()
    loss = group_softmax_loss_reference(logits, labels, groups)
    assert loss.shape == (7,) and loss.dtype == torch.float64
    torch.testing.assert_close(loss, loss_by_hand(logits, labels, groups), rtol=1e-12, atol=0)
    # a hand example: z = (2, 1, 0), dataset annotates class 0 only, target background
    value = group_softmax_loss_reference(torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.float64),
                               torch.tensor([2]), torch.tensor([[1, 0, 0]]))
    assert float(value) == pytest.approx(math.log(math.e ** 2 + math.e + 1) -
                                         math.log(math.e + 1), rel=1e-14)


def test_reference_gradient_passes_gradcheck():
    logits, labels, groups = random_case()
    logits.requires_grad_(True)

    def loss(z):
        return group_softmax_loss_reference(z, labels, groups)

    assert torch.autograd.gradcheck(loss, (logits,), eps=1e-6, atol=1e-8)
    assert torch.autograd.gradgradcheck(lambda z: loss(z).sum(), (logits,))


def test_gradient_is_p_minus_p_over_group_probability_inside_the_group():
    logits, labels, groups = random_case()
    logits.requires_grad_(True)
    group_softmax_loss_reference(logits, labels, groups).sum().backward()
    p = logits.detach().softmax(dim=1)
    for row in range(logits.shape[0]):
        t = int(labels[row])
        if t < 0:
            assert logits.grad[row].abs().max() == 0  # ignored rows get no gradient
            continue
        in_group = groups[row] == groups[row, t]
        p_group = p[row][in_group].sum()
        expected = p[row] - in_group.double() * p[row] / p_group
        torch.testing.assert_close(logits.grad[row], expected, rtol=1e-12, atol=1e-15)
        # the gradient of a softmax-based loss sums to zero over the classes
        assert abs(float(logits.grad[row].sum())) < 1e-14


def test_every_group_a_singleton_is_softmax_cross_entropy():
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, K + 1, (64,), generator=generator)
    # fg class j -> group j + 1, background alone in group 0
    singletons = torch.cat([torch.arange(1, K + 1), torch.zeros(1, dtype=torch.long)])
    groups = singletons.expand(64, K + 1)
    for dtype, tol in ((torch.float64, 1e-13), (torch.float32, 1e-5)):
        logits = (torch.randn(64, K + 1, generator=generator) * 4).to(dtype)
        ours = group_softmax_loss_reference(logits, labels, groups)
        theirs = F.cross_entropy(logits, labels, reduction='none')
        torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol)
    # and the gradients agree too
    logits = torch.randn(64, K + 1, generator=generator, dtype=torch.float64, requires_grad=True)
    ours = group_softmax_loss_reference(logits, labels, groups).sum()
    (g_ours,) = torch.autograd.grad(ours, logits)
    (g_ce,) = torch.autograd.grad(F.cross_entropy(logits, labels, reduction='sum'), logits)
    torch.testing.assert_close(g_ours, g_ce, rtol=1e-12, atol=1e-15)


def test_a_group_with_vanishing_probability_stays_finite():
    # G = {1, 2} at logit -1000: P_G ~ exp(-1000) underflows in any float type, but the
    # log-sum-exp form gives L = log(4) + 1000 - log(2) exactly enough.
    # (float32 holds -1000 + log 2 to ~6e-5: that bounds its accuracy here)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-4)):
        logits = torch.zeros(1, K + 1, dtype=dtype)
        logits[0, 1:3] = -1000.0
        logits.requires_grad_(True)
        groups = torch.tensor([[0, 1, 1, 0, 0, 0]])
        loss = group_softmax_loss_reference(logits, torch.tensor([2]), groups)
        assert torch.isfinite(loss).all()
        assert float(loss.detach()) == pytest.approx(1000 + math.log(4) - math.log(2), rel=tol)
        loss.sum().backward()
        grad = logits.grad[0]
        assert torch.isfinite(grad).all()
        # inside G: p_m - p_m / P_G = ~0 - 1/2; outside: p_m = 1/4
        torch.testing.assert_close(grad, torch.tensor([0.25, -0.5, -0.5, 0.25, 0.25, 0.25],
                                                      dtype=dtype), rtol=0, atol=tol)
    # through the module as well, with the fused op or without it
    logits = torch.full((3, K + 1), -1000.0)
    logits[:, 0] = 0.0
    logits.requires_grad_(True)
    loss = GroupSoftmaxLoss()(logits, torch.tensor([1, 2, 3]),
                              groups=rows(torch.arange(K + 1).expand(3, -1).contiguous()))
    loss.backward()
    assert float(loss.detach()) == pytest.approx(1000.0, rel=1e-6)
    assert torch.isfinite(logits.grad).all()


def test_ignored_rows_contribute_nothing_and_the_mean_counts_only_trained_rows():
    logits, labels, groups = random_case()
    loss = GroupSoftmaxLoss()(logits, labels, groups=rows(groups))
    per_row = loss_by_hand(logits, labels, groups)
    assert float(loss) == pytest.approx(float(per_row.sum()) / 6, rel=1e-12)  # 6 of 7 trained
    # changing the ignored row's logits changes nothing
    other = logits.clone()
    other[4] = 1e4
    assert float(GroupSoftmaxLoss()(other, labels, groups=rows(groups))) == pytest.approx(
        float(loss), rel=1e-12)


def test_all_rows_ignored_gives_zero_without_nan():
    logits = torch.randn(4, K + 1, requires_grad=True)
    labels = torch.full((4,), -1)
    groups = torch.zeros(4, K + 1, dtype=torch.long)
    for use_fused in (True, False):
        loss = _module_loss(use_fused)(logits, labels, groups=rows(groups))
        assert float(loss.detach()) == 0.0
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.equal(grad, torch.zeros_like(grad))
    empty = torch.zeros(0, K + 1, requires_grad=True)
    loss = GroupSoftmaxLoss()(empty, torch.zeros(0, dtype=torch.long),
                              groups=rows(torch.zeros(0, K + 1, dtype=torch.long)))
    assert float(loss.detach()) == 0.0 and loss.requires_grad


def _module_loss(use_fused, **kwargs):
    """A GroupSoftmaxLoss, or a call of it with the fused op switched off (the reference)."""
    loss = GroupSoftmaxLoss(**kwargs)
    if use_fused or gs_module._fused_group_softmax is None:
        return loss

    def without_fused(*args, **kw):
        saved = gs_module._fused_group_softmax
        gs_module._fused_group_softmax = None
        try:
            return loss(*args, **kw)
        finally:
            gs_module._fused_group_softmax = saved
    return without_fused


@pytest.mark.parametrize('use_fused', [True, False], ids=['fused-op', 'reference'])
def test_module_forms_weights_and_avg_factor(use_fused):
    logits, labels, groups = random_case()
    logits = logits.float()
    per_row = loss_by_hand(logits.double(), labels, groups).float()
    loss = _module_loss(use_fused, loss_weight=2.0)
    # one vector per row
    assert float(loss(logits, labels, groups=rows(groups))) == pytest.approx(
        2 * float(per_row.sum()) / 6, rel=1e-5)
    # the same as a table of two datasets and an index per row
    table = LabelGroups(table=torch.tensor([[1, 2, 0, 0, 0, 0], [0, 0, 1, 2, 2, 0]]),
                        row_index=torch.tensor([0, 1, 0, 1, 0, 1, 1]))
    assert torch.equal(table.per_row(), groups)
    assert float(loss(logits, labels, groups=table)) == \
        pytest.approx(2 * float(per_row.sum()) / 6, rel=1e-5)
    # weights and avg_factor
    weight = torch.arange(7, dtype=torch.float32)
    value = loss(logits, labels, weight=weight, avg_factor=3.0, groups=rows(groups))
    assert float(value) == pytest.approx(2 * float((per_row * weight).sum()) / 3, rel=1e-5)
    # gradient equals the reference's
    z = logits.clone().requires_grad_(True)
    loss(z, labels, groups=rows(groups)).backward()
    z_ref = logits.double().clone().requires_grad_(True)
    (2 * group_softmax_loss_reference(z_ref, labels, groups).sum() / 6).backward()
    torch.testing.assert_close(z.grad.double(), z_ref.grad, rtol=1e-4, atol=1e-6)


def test_module_is_registered_and_checks_its_arguments():
    loss = MODELS.build(dict(type='GroupSoftmaxLoss', loss_weight=0.5))
    assert isinstance(loss, GroupSoftmaxLoss) and loss.loss_weight == 0.5
    logits, labels, groups = random_case()
    with pytest.raises(ValueError, match=r'GroupSoftmaxLoss needs groups=LabelGroups'):
        loss(logits, labels)
    with pytest.raises(ValueError, match=r'groups cover 6 rows x 6 columns, logits are \(7, 6\)'):
        loss(logits, labels, groups=rows(groups[:6]))
    with pytest.raises(ValueError, match=r'LabelGroups.row_index must be an int64 \(N,\) tensor'):
        LabelGroups(table=groups, row_index=torch.zeros(7, dtype=torch.int32))
    with pytest.raises(ValueError, match=r'LabelGroups.table must be an int64 \(D, C\) tensor'):
        LabelGroups(table=groups.float(), row_index=torch.zeros(7, dtype=torch.long))
    with pytest.raises(ValueError, match='GroupSoftmaxLoss is a softmax over groups'):
        GroupSoftmaxLoss(use_sigmoid=True)
    with pytest.raises(ValueError, match='labels must lie in'):
        group_softmax_loss_reference(logits, torch.full((7,), K + 1), groups)
    with pytest.raises(ValueError, match='label_groups must be an integer tensor of shape'):
        group_softmax_loss_reference(logits, labels, groups[:, :K])
