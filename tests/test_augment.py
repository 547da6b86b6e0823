"""Augmentation transforms: boxes follow the pixels exactly and stay inside their image."""
from __future__ import annotations

import numpy as np
import pytest

from detkit.datasets.transforms import (
    Expand,
    MinIoURandomCrop,
    PhotoMetricDistortion,
    RandomFlip,
    RandomResize,
)
from detkit.registry import TRANSFORMS


def coordinate_image(height, width):
    """Pixel (y, x) holds (x, y, 7) in its B, G, R: where a crop or a canvas put the image is
    read back from its pixels."""
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0] = np.arange(width)[None, :]
    img[..., 1] = np.arange(height)[:, None]
    img[..., 2] = 7
    return img


def sample(height=120, width=160):
    return dict(img=coordinate_image(height, width), img_shape=(height, width),
                gt_bboxes=np.array([[10.5, 20.25, 60, 80], [100, 30, 150, 110],
                                    [70, 5, 90, 25]], np.float32),
                gt_labels=np.array([0, 1, 2]),
                gt_ignore_bboxes=np.array([[30, 60, 50, 100]], np.float32))


def test_expand_moves_boxes_with_the_image():
    for seed in range(10):
        np.random.seed(seed)
        before = sample()
        out = Expand(ratio_range=(1.5, 3.0), prob=1.0)(sample())
        img = out['img']
        height, width = img.shape[:2]
        assert 1.5 * 120 - 1 <= height <= 3 * 120 and out['img_shape'] == (height, width)
        tops, lefts = np.nonzero((img[..., 2] == 7) & (img[..., 0] == 0) & (img[..., 1] == 0))
        top, left = int(tops.min()), int(lefts.min())
        assert np.array_equal(img[top:top + 120, left:left + 160], before['img'])
        assert img[0, 0].tolist() == [104, 116, 124] or (top, left) == (0, 0)   # mean colour
        shift = np.array([left, top, left, top], np.float32)
        np.testing.assert_array_equal(out['gt_bboxes'], before['gt_bboxes'] + shift)
        np.testing.assert_array_equal(out['gt_ignore_bboxes'], before['gt_ignore_bboxes'] + shift)
    np.random.seed(0)
    assert Expand(prob=0.0)(sample())['img'].shape == (120, 160, 3)


def test_min_iou_random_crop_keeps_centred_boxes_clipped_and_shifted():
    crops = 0
    transform = MinIoURandomCrop(min_ious=(0.1, 0.3), min_crop_size=0.3)

    def large_boxes():
        # every box must overlap the patch by the drawn IoU: with small boxes few patches pass
        results = sample()
        results['gt_bboxes'] = np.array([[10, 20, 100, 100], [60.5, 40.25, 150, 110]],
                                        np.float32)
        results['gt_labels'] = np.array([3, 4])
        return results

    for seed in range(40):
        np.random.seed(seed)
        before = large_boxes()
        out = transform(large_boxes())
        img = out['img']
        if img.shape == before['img'].shape:
            assert np.array_equal(out['gt_bboxes'], before['gt_bboxes'])   # mode 1: unchanged
            continue
        crops += 1
        x1, y1 = int(img[0, 0, 0]), int(img[0, 0, 1])   # the patch's top-left, from its pixels
        x2, y2 = x1 + img.shape[1], y1 + img.shape[0]
        patch = np.array([x1, y1, x2, y2], np.float32)
        boxes = before['gt_bboxes']
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = ((centres > patch[:2]) & (centres < patch[2:])).all(axis=1)
        expected = boxes[inside].copy()
        expected[:, 0::2] = expected[:, 0::2].clip(x1, x2) - x1
        expected[:, 1::2] = expected[:, 1::2].clip(y1, y2) - y1
        np.testing.assert_array_equal(out['gt_bboxes'], expected)
        np.testing.assert_array_equal(out['gt_labels'], before['gt_labels'][inside])
        assert inside.any() and out['img_shape'] == img.shape[:2]
        from detkit.datasets.transforms.augment import box_iou
        assert box_iou(patch, boxes).min() >= 0.1   # the smallest threshold of the modes
        assert 0.5 <= img.shape[0] / img.shape[1] <= 2
    assert crops >= 10


def test_random_resize_draws_between_the_scales():
    seen = set()
    for seed in range(20):
        np.random.seed(seed)
        out = RandomResize(scale=[(200, 100), (300, 150)])(sample())
        long_edge, short_edge = out['scale']
        assert 200 <= long_edge <= 300 and 100 <= short_edge <= 150
        height, width = out['img'].shape[:2]
        factor = min(long_edge / 160, short_edge / 120)
        assert (width, height) == (int(160 * factor + 0.5), int(120 * factor + 0.5))
        w_scale, h_scale = width / 160, height / 120
        np.testing.assert_allclose(out['gt_bboxes'], sample()['gt_bboxes'] *
                                   np.array([w_scale, h_scale, w_scale, h_scale]), rtol=1e-6)
        seen.add((long_edge, short_edge))
    assert len(seen) > 10
    with pytest.raises(ValueError, match='two .long, short. pairs'):
        RandomResize(scale=[(200, 100)])


def test_photometric_distortion_changes_pixels_not_boxes():
    np.random.seed(3)
    brightness = PhotoMetricDistortion(contrast_range=(1, 1), saturation_range=(1, 1),
                                       hue_delta=0)
    changed = 0
    for seed in range(10):
        np.random.seed(seed)
        before = sample()
        before['img'][..., 2] = 100
        source = before['img'].copy()
        out = brightness(dict(before))
        assert out['img'].dtype == np.uint8 and out['img'].shape == source.shape
        np.testing.assert_array_equal(out['gt_bboxes'], sample()['gt_bboxes'])
        diff = out['img'].astype(int) - source.astype(int)
        unclipped = (source > 40) & (source < 215)
        # one brightness offset for every pixel (an HSV round trip moves a value by 3 at most)
        offsets = diff[unclipped]
        assert offsets.max() - offsets.min() <= 6 and abs(np.median(offsets)) <= 32
        changed += abs(np.median(offsets)) > 0
    assert changed >= 3


def test_a_full_augmentation_pipeline_keeps_boxes_inside_the_image():
    pipeline = [TRANSFORMS.build(cfg) for cfg in (
        dict(type='PhotoMetricDistortion'), dict(type='Expand', prob=0.5),
        dict(type='MinIoURandomCrop'), dict(type='RandomAffine'),
        dict(type='RandomResize', scale=[(320, 160), (400, 240)]),
        dict(type='RandomFlip', prob=0.5))]
    assert isinstance(pipeline[-1], RandomFlip)
    total = 0
    for seed in range(30):
        np.random.seed(seed)
        results = sample()
        for transform in pipeline:
            results = transform(results)
        height, width = results['img'].shape[:2]
        for key in ('gt_bboxes', 'gt_ignore_bboxes'):
            boxes = results[key]
            assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= width).all()
            assert (boxes[:, [1, 3]] <= height).all() and (boxes[:, 2:] >= boxes[:, :2]).all()
        assert len(results['gt_labels']) == len(results['gt_bboxes'])
        total += len(results['gt_bboxes'])
    assert total >= 30


def test_random_affine_moves_pixels_and_boxes_with_one_matrix():
    from detkit.datasets.transforms import RandomAffine
    from detkit.datasets.transforms.augment import warp_boxes
    transform = RandomAffine(max_rotate_degree=15, max_translate_ratio=0.1,
                             scaling_ratio_range=(0.8, 1.2), max_shear_degree=3)
    kept = 0
    for seed in range(15):
        np.random.seed(seed)
        before = sample()
        out = transform(sample())
        matrix = out['homography_matrix'].astype(np.float64)
        height, width = out['img'].shape[:2]
        assert (height, width) == (120, 160)
        # a pixel of the source lands where the matrix says: its coordinate code is there
        for x, y in ((40, 50), (80, 60), (120, 70)):
            u, v, _ = matrix @ np.array([x, y, 1.0])
            if 1 <= u < width - 2 and 1 <= v < height - 2:
                code = out['img'][int(round(v)), int(round(u))]
                assert abs(int(code[0]) - x) <= 2 and abs(int(code[1]) - y) <= 2
        expected = warp_boxes(before['gt_bboxes'].astype(np.float64), matrix, height, width)
        # each kept box is one of the warped boxes, in order, with its label
        rows = [int(np.argmin(np.abs(expected - box).sum(1))) for box in out['gt_bboxes']]
        np.testing.assert_allclose(out['gt_bboxes'], expected[rows], atol=1e-3)
        assert rows == sorted(rows) and out['gt_labels'].tolist() == rows
        kept += len(rows)
    assert kept >= 20
    boxes = np.array([[0, 0, 10, 20]], np.float64)
    # (x, y) -> (100 - y, x): a quarter turn
    quarter_turn = np.array([[0, -1, 100], [1, 0, 0], [0, 0, 1]], np.float64)
    np.testing.assert_allclose(warp_boxes(boxes, quarter_turn, 200, 200), [[80, 0, 100, 10]])
