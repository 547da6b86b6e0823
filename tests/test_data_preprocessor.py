"""DetDataPreprocessor: BGR->RGB, normalisation, padding to a multiple, samples, bad input."""
import re

import pytest
import torch

from detkit.models.data_preprocessors import DetDataPreprocessor
from detkit.registry import MODELS
from detkit.structures import Detections, DetSample

MEAN = (10.0, 20.0, 30.0)  # RGB order
STD = (2.0, 4.0, 5.0)


def _shape_regex(shape):
    """A regex matching ``tuple(shape)`` as Python prints it, e.g. ``\\(1, 8, 8\\)``."""
    return re.escape(str(tuple(shape)))


def _image(height, width, bgr):
    """A uint8 (3, H, W) image whose every pixel is the BGR triple ``bgr``."""
    return torch.tensor(bgr, dtype=torch.uint8).view(3, 1, 1).expand(3, height, width).clone()


def test_bgr_to_rgb_then_normalise_on_known_pixels():
    pre = DetDataPreprocessor(mean=MEAN, std=STD, bgr_to_rgb=True, pad_size_divisor=1)
    image = _image(2, 3, bgr=(30, 60, 90))
    image[:, 1, 2] = torch.tensor([0, 100, 255], dtype=torch.uint8)  # one distinct pixel
    out = pre(dict(inputs=[image], data_samples=None))['inputs']
    assert out.shape == (1, 3, 2, 3) and out.dtype == torch.float32
    # BGR (30, 60, 90) -> RGB (90, 60, 30) -> ((90-10)/2, (60-20)/4, (30-30)/5)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([40.0, 10.0, 0.0]))
    # BGR (0, 100, 255) -> RGB (255, 100, 0) -> (122.5, 20, -6)
    assert torch.allclose(out[0, :, 1, 2], torch.tensor([122.5, 20.0, -6.0]))


def test_without_channel_swap_the_mean_applies_to_the_input_order():
    pre = DetDataPreprocessor(mean=MEAN, std=STD, bgr_to_rgb=False, pad_size_divisor=1)
    out = pre(dict(inputs=[_image(1, 1, bgr=(30, 60, 90))]))['inputs']
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([10.0, 10.0, 12.0]))


def test_default_config_uses_imagenet_statistics_in_rgb_order():
    pre = MODELS.build(dict(type='DetDataPreprocessor'))
    out = pre(dict(inputs=[_image(1, 1, bgr=(0, 0, 255))]))['inputs']
    expected = torch.tensor([(255 - 123.675) / 58.395, (0 - 116.28) / 57.12,
                             (0 - 103.53) / 57.375])
    assert torch.allclose(out[0, :, 0, 0], expected, atol=1e-6)


def test_two_sizes_pad_to_a_multiple_of_32_with_pad_value():
    pre = DetDataPreprocessor(mean=MEAN, std=STD, pad_size_divisor=32, pad_value=-7.5)
    small = _image(40, 50, bgr=(30, 60, 90))
    tall = _image(65, 20, bgr=(30, 60, 90))
    samples = [DetSample(img_shape=(40, 50)), DetSample(img_shape=(65, 20))]
    out = pre(dict(inputs=[small, tall], data_samples=samples))
    batch = out['inputs']
    # max height 65 -> 96, max width 50 -> 64
    assert batch.shape == (2, 3, 96, 64)
    normalised = torch.tensor([40.0, 10.0, 0.0]).view(3, 1, 1)
    assert torch.equal(batch[0, :, :40, :50], normalised.expand(3, 40, 50))
    assert torch.equal(batch[1, :, :65, :20], normalised.expand(3, 65, 20))
    # bottom/right padding only: everything outside each image is pad_value
    pad_mask = torch.ones(2, 96, 64, dtype=torch.bool)
    pad_mask[0, :40, :50] = False
    pad_mask[1, :65, :20] = False
    assert int(pad_mask.sum()) == 2 * 96 * 64 - 40 * 50 - 65 * 20
    assert torch.all(batch.permute(1, 0, 2, 3)[:, pad_mask] == -7.5)
    # each image's own padded size, and the batch's
    assert [s.pad_shape for s in out['data_samples']] == [(64, 64), (96, 32)]
    assert [s.batch_input_shape for s in out['data_samples']] == [(96, 64), (96, 64)]
    assert [s.img_shape for s in out['data_samples']] == [(40, 50), (65, 20)]


def test_sizes_already_a_multiple_are_not_padded():
    pre = DetDataPreprocessor(mean=MEAN, std=STD, pad_size_divisor=32)
    out = pre(dict(inputs=[_image(64, 32, bgr=(0, 0, 0))], data_samples=[DetSample()]))
    assert out['inputs'].shape == (1, 3, 64, 32)
    assert out['data_samples'][0].pad_shape == (64, 32)
    assert out['data_samples'][0].batch_input_shape == (64, 32)


def test_sample_tensors_keep_dtype_and_values_on_the_preprocessor_device():
    pre = DetDataPreprocessor(mean=MEAN, std=STD)
    boxes = torch.tensor([[1.5, 2.0, 10.0, 12.25]])
    labels = torch.tensor([4])
    ignore = torch.tensor([[0.0, 0.0, 3.0, 3.0]])
    pred = Detections(bboxes=torch.tensor([[0.0, 1.0, 2.0, 3.0]]), scores=torch.tensor([0.5]),
                      labels=torch.tensor([1]))
    sample = DetSample(gt_bboxes=boxes, gt_labels=labels, gt_ignore_bboxes=ignore, pred=pred,
                       img_id=7, scale_factor=(1.5, 2.0))
    out = pre(dict(inputs=[_image(8, 8, bgr=(0, 0, 0))], data_samples=[sample]))
    moved = out['data_samples'][0]
    assert out['inputs'].device == pre.device
    for got, want in ((moved.gt_bboxes, boxes), (moved.gt_labels, labels),
                      (moved.gt_ignore_bboxes, ignore), (moved.pred.bboxes, pred.bboxes),
                      (moved.pred.labels, pred.labels)):
        assert got.device == pre.device
        assert got.dtype == want.dtype
        assert torch.equal(got, want)
    assert moved.img_id == 7 and moved.scale_factor == (1.5, 2.0)
    assert moved.pad_shape == (32, 32)


def test_stacked_4d_tensor_equals_list_input():
    pre = DetDataPreprocessor(mean=MEAN, std=STD, pad_size_divisor=32)
    generator = torch.Generator().manual_seed(0)
    stacked = torch.randint(0, 256, (2, 3, 20, 30), generator=generator, dtype=torch.uint8)
    from_tensor = pre(dict(inputs=stacked, data_samples=[DetSample(), DetSample()]))
    from_list = pre(dict(inputs=list(stacked), data_samples=[DetSample(), DetSample()]))
    assert from_tensor['inputs'].shape == (2, 3, 32, 32)
    assert torch.equal(from_tensor['inputs'], from_list['inputs'])
    expected = (stacked[1].flip(0).float() - torch.tensor(MEAN).view(3, 1, 1)) \
        / torch.tensor(STD).view(3, 1, 1)
    assert torch.allclose(from_tensor['inputs'][1, :, :20, :30], expected)


@pytest.mark.parametrize('bad_shape', [(1, 8, 8), (8, 8), (4, 8, 8)])
def test_wrong_image_shape_names_index_and_shape(bad_shape):
    pre = DetDataPreprocessor(mean=MEAN, std=STD)
    images = [_image(8, 8, bgr=(0, 0, 0)), torch.zeros(bad_shape, dtype=torch.uint8)]
    with pytest.raises(ValueError, match=r'image 1 .*' + _shape_regex(bad_shape)):
        pre(dict(inputs=images, data_samples=None))


def test_invalid_constructor_arguments_are_reported():
    with pytest.raises(ValueError, match='std must be positive'):
        DetDataPreprocessor(mean=MEAN, std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match='3 values'):
        DetDataPreprocessor(mean=(1.0, 2.0), std=STD)
    with pytest.raises(ValueError, match='pad_size_divisor'):
        DetDataPreprocessor(pad_size_divisor=0)


def test_unset_shapes_are_filled_from_the_image():
    pre = DetDataPreprocessor(mean=[0, 0, 0], std=[1, 1, 1])
    out = pre(dict(inputs=[torch.zeros(3, 40, 70, dtype=torch.uint8)], data_samples=[DetSample()]))
    sample = out['data_samples'][0]
    assert sample.img_shape == (40, 70)
    assert sample.ori_shape == (40, 70)
    assert sample.pad_shape == (64, 96)
