"""bbox_overlaps and MaxIoUAssigner on hand-built boxes whose IoUs are worked out below."""
import pytest
import torch

from detkit.models.task_utils import AssignResult, MaxIoUAssigner, bbox_overlaps
from detkit.registry import TASK_UTILS

GTS = torch.tensor([[0.0, 0.0, 10.0, 10.0],     # g0, area 100
                    [20.0, 0.0, 30.0, 10.0]])   # g1, area 100
GT_LABELS = torch.tensor([3, 7])
PRIORS = torch.tensor([
    [0.0, 0.0, 10.0, 10.0],      # p0: IoU 1 with g0                   -> positive g0
    [5.0, 0.0, 15.0, 10.0],      # p1: 50 / 150 = 1/3 with g0          -> negative
    [0.0, 0.0, 10.0, 22.0],      # p2: 100 / 220 = 0.4545 with g0      -> ignored (0.4..0.5 band)
    [24.0, 0.0, 34.0, 10.0],     # p3: 60 / 140 = 3/7 with g1, g1's best -> low-quality g1
    [16.0, 0.0, 26.0, 10.0],     # p4: 60 / 140 = 3/7 with g1, a tie    -> low-quality g1
    [26.0, 0.0, 36.0, 10.0],     # p5: 40 / 160 = 0.25 with g1         -> negative
    [100.0, 100.0, 110.0, 110.0],  # p6: no overlap; inside the ignore box below
])
IGNORE = torch.tensor([[95.0, 95.0, 120.0, 120.0]])


def assigner(**overrides):
    cfg = dict(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)
    cfg.update(overrides)
    return MaxIoUAssigner(**cfg)


def test_bbox_overlaps_hand_values():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 4.0, 4.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [0.0, 0.0, 5.0, 5.0], [50.0, 50.0, 60.0, 60.0]])
    iou = bbox_overlaps(a, b)
    torch.testing.assert_close(iou, torch.tensor([[50 / 150, 25 / 100, 0.0],
                                                  [0.0, 16 / 25, 0.0]]))
    iof = bbox_overlaps(a, b, mode='iof')  # intersection / area of the box from `a`
    torch.testing.assert_close(iof, torch.tensor([[50 / 100, 25 / 100, 0.0],
                                                  [0.0, 16 / 16, 0.0]]))
    torch.testing.assert_close(bbox_overlaps(b, a), iou.T)
    assert bbox_overlaps(a, torch.zeros(0, 4)).shape == (2, 0)
    assert bbox_overlaps(torch.zeros(0, 4), b).shape == (0, 3)
    # a zero-area box overlaps nothing, without NaN
    assert bbox_overlaps(torch.tensor([[3.0, 3.0, 3.0, 3.0]]), a).tolist() == [[0.0, 0.0]]
    with pytest.raises(ValueError, match='mode'):
        bbox_overlaps(a, b, mode='giou')
    with pytest.raises(ValueError, match='boxes2'):
        bbox_overlaps(a, torch.zeros(3, 5))


def test_every_gt_ind_of_the_hand_built_case():
    result = assigner(ignore_iof_thr=0.5).assign(PRIORS, GTS, GT_LABELS, IGNORE)
    assert isinstance(result, AssignResult) and result.num_gts == 2
    assert result.gt_inds.dtype == torch.int64 and result.labels.dtype == torch.int64
    assert result.gt_inds.tolist() == [1, 0, -1, 2, 2, 0, -1]
    assert result.labels.tolist() == [3, -1, -1, 7, 7, -1, -1]
    torch.testing.assert_close(result.max_overlaps,
                               torch.tensor([1.0, 1 / 3, 100 / 220, 3 / 7, 3 / 7, 0.25, -1.0]))


def test_without_ignore_regions_the_far_prior_is_negative():
    for ignore_boxes, thr in ((None, 0.5), (IGNORE, -1.0)):
        result = assigner(ignore_iof_thr=thr).assign(PRIORS, GTS, GT_LABELS, ignore_boxes)
        assert result.gt_inds.tolist() == [1, 0, -1, 2, 2, 0, 0]


def test_tie_takes_only_the_first_prior_without_gt_max_assign_all():
    result = assigner(gt_max_assign_all=False).assign(PRIORS, GTS, GT_LABELS)
    assert result.gt_inds.tolist() == [1, 0, -1, 2, -1, 0, 0]


def test_low_quality_matching_off_or_below_min_pos_iou():
    assert assigner(match_low_quality=False).assign(PRIORS, GTS, GT_LABELS).gt_inds.tolist() == \
        [1, 0, -1, -1, -1, 0, 0]
    # g1's best IoU 3/7 = 0.4286 < 0.45: no low-quality match; g0's best (1.0) still qualifies
    assert assigner(min_pos_iou=0.45).assign(PRIORS, GTS, GT_LABELS).gt_inds.tolist() == \
        [1, 0, -1, -1, -1, 0, 0]


def test_negative_band_as_a_pair():
    # negatives only for 0.3 <= IoU < 0.4: p1 (1/3) yes; p5 (0.25) and p6 (0) are left ignored
    result = assigner(neg_iou_thr=(0.3, 0.4)).assign(PRIORS, GTS, GT_LABELS)
    assert result.gt_inds.tolist() == [1, 0, -1, 2, 2, -1, -1]


def test_later_gt_overwrites_an_earlier_one_on_a_shared_prior():
    gts = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    priors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    result = assigner().assign(priors, gts, torch.tensor([1, 2]))
    assert result.gt_inds.tolist() == [2, 0]
    assert result.labels.tolist() == [2, -1]
    result = assigner(match_low_quality=False).assign(priors, gts, torch.tensor([1, 2]))
    assert result.gt_inds.tolist() == [1, 0]  # the first gt with the largest IoU


def test_zero_area_gt_claims_no_prior():
    gts = torch.tensor([[0.0, 0.0, 10.0, 10.0], [200.0, 200.0, 200.0, 200.0]])
    result = assigner().assign(PRIORS, gts, torch.tensor([0, 1]))
    assert result.gt_inds.tolist() == [1, 0, -1, 0, 0, 0, 0]


def test_empty_gts_and_empty_priors():
    result = assigner().assign(PRIORS, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert result.num_gts == 0
    assert result.gt_inds.tolist() == [0] * 7
    assert result.labels.tolist() == [-1] * 7
    assert result.max_overlaps.tolist() == [0.0] * 7
    # ignore regions still keep their priors out of the background
    result = assigner(ignore_iof_thr=0.5).assign(PRIORS, torch.zeros(0, 4),
                                                 torch.zeros(0, dtype=torch.int64), IGNORE)
    assert result.gt_inds.tolist() == [0, 0, 0, 0, 0, 0, -1]
    result = assigner().assign(torch.zeros(0, 4), GTS, GT_LABELS)
    assert result.num_gts == 2
    assert result.gt_inds.shape == result.labels.shape == result.max_overlaps.shape == (0,)


def reference_gt_inds(overlaps, pos_thr, neg_thr, min_pos_iou):
    """A direct per-prior / per-gt loop over the (M, N) IoU matrix, written for the test."""
    num_gts, num_priors = overlaps.shape
    gt_inds = []
    for j in range(num_priors):
        column = overlaps[:, j].tolist()
        best = max(column)
        best_gt = column.index(best)
        ind = -1
        if 0 <= best < neg_thr:
            ind = 0
        if best >= pos_thr:
            ind = best_gt + 1
        gt_inds.append(ind)
    for i in range(num_gts):
        row = overlaps[i].tolist()
        best = max(row)
        if best >= min_pos_iou and best > 0:
            for j in range(num_priors):
                if row[j] == best:
                    gt_inds[j] = i + 1
    return gt_inds


def test_random_boxes_match_a_direct_loop():
    generator = torch.Generator().manual_seed(0)

    def random_boxes(n):
        xy = torch.randint(0, 40, (n, 2), generator=generator).float()
        wh = torch.randint(1, 20, (n, 2), generator=generator).float()
        return torch.cat([xy, xy + wh], dim=1)

    for _ in range(5):
        priors, gts = random_boxes(60), random_boxes(5)
        labels = torch.randint(0, 10, (5,), generator=generator)
        result = assigner(min_pos_iou=0.1).assign(priors, gts, labels)
        expected = reference_gt_inds(bbox_overlaps(gts, priors), 0.5, 0.4, 0.1)
        assert result.gt_inds.tolist() == expected
        positive = result.gt_inds > 0
        assert torch.equal(result.labels[positive], labels[result.gt_inds[positive] - 1])
        assert bool((result.labels[~positive] == -1).all())


def test_registry_and_bad_arguments():
    built = TASK_UTILS.build(dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4))
    assert isinstance(built, MaxIoUAssigner)
    with pytest.raises(ValueError, match='neg_iou_thr'):
        MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=(0.4, 0.3))
    with pytest.raises(ValueError, match='pos_iou_thr'):
        MaxIoUAssigner(pos_iou_thr=1.5, neg_iou_thr=0.4)
    with pytest.raises(ValueError, match=r'gt_labels must have shape \(2,\)'):
        built.assign(PRIORS, GTS, torch.tensor([1]))
    with pytest.raises(ValueError, match='priors'):
        built.assign(PRIORS[:, :3], GTS, GT_LABELS)
