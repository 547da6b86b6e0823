"""detkit.ops.multi_level_roi_align: the CPU kernel against torchvision's RoIAlign per level.

Inputs are random on every run (seed printed; DETKIT_TEST_SEED=<seed> replays). Every output
buffer handed to a kernel starts as NaN (``_extension.POISON_OUTPUTS``), so an element the kernel
does not write fails the comparison. The reference is :func:`multi_level_roi_align_reference`:
one ``torchvision.ops.roi_align`` call per level, differentiated by autograd.

Bounds: float32 forward and gradient within 1e-5 (absolute and relative) of the reference,
float64 within 1e-10; the kernel performs torchvision's operations in its order, so the values
are in fact equal, which ``test_float32_bits_equal_torchvision`` asserts. The bfloat16 forward
(inference) equals the float32 result rounded to bfloat16 bit for bit.
"""
from __future__ import annotations

import math

import pytest
import torch

from detkit.models.task_utils import MultiLevelRoIAlign
from detkit.ops import multi_level_roi_align, multi_level_roi_align_reference
from detkit.ops import roi_align as roi_align_module

from ops_checks import assert_close, num_threads

pytestmark = pytest.mark.usefixtures('poisoned_outputs')  # conftest.py

STRIDES = (4, 8, 16, 32)
SCALES = [1.0 / s for s in STRIDES]
IMAGE_HW = (120, 152)
MAP_SIZES = ((30, 38), (15, 19), (8, 10), (4, 5))
BOUNDS = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-10, 1e-10)}


def random_feats(gen, batch=3, channels=5, dtype=torch.float32, sizes=MAP_SIZES):
    return [torch.randn(batch, channels, h, w, generator=gen).to(dtype) for h, w in sizes]


def random_rois(gen, num_rois, batch, dtype=torch.float32):
    """RoIs of mixed sizes, many reaching past the image, then the awkward ones, in image px."""
    height, width = IMAGE_HW
    centre = torch.rand(num_rois, 2, generator=gen) * torch.tensor([width + 80.0, height + 80.0])
    centre -= 40.0
    side = torch.exp(torch.empty(num_rois, 2).uniform_(math.log(0.5), math.log(400.0),
                                                       generator=gen))
    boxes = torch.cat([centre - side / 2, centre + side / 2], dim=1)
    special = torch.tensor([
        [10.0, 10.0, 10.3, 10.2],                          # tiny
        [20.0, 30.0, 20.0, 30.0],                          # zero width and height
        [50.0, 40.0, 45.0, 35.0],                          # x2 < x1, y2 < y1
        [width + 50.0, height + 60.0, width + 90.0, height + 100.0],  # wholly outside
        [-90.0, -80.0, -60.0, -50.0],                      # wholly outside, negative
        [-20.0, -10.0, 40.0, 30.0],                        # partly outside
        [width - 30.0, height - 20.0, width + 30.0, height + 25.0],  # partly outside
        [0.0, 0.0, width, height],                         # the whole image
        [width - 4.0, height - 4.0, width, height],        # the last pixels (edge clamp)
        [-1.0, -1.0, 3.0, 2.0],                            # the -1 boundary
    ])
    boxes = torch.cat([boxes, special])
    batch_index = torch.randint(0, batch, (boxes.shape[0], 1), generator=gen).float()
    return torch.cat([batch_index, boxes], dim=1).to(dtype)


def random_levels(gen, num_rois, skip_level=2):
    """Random levels, none of them ``skip_level`` (a level that gets no RoI)."""
    choices = torch.tensor([level for level in range(len(STRIDES)) if level != skip_level])
    return choices[torch.randint(0, len(choices), (num_rois,), generator=gen)]


def spy_forward(monkeypatch):
    """The maps handed to each call of the compiled forward, recorded from now on."""
    calls = []
    real = roi_align_module._run_forward

    def spy(kernels, feats, *args):
        calls.append(list(feats))
        return real(kernels, feats, *args)

    monkeypatch.setattr(roi_align_module, '_run_forward', spy)
    return calls


def run(op, feats, rois, levels, grad_output=None, **options):
    """Output and d(sum(out * grad_output))/d(feats) of ``op`` (None gradients become zeros)."""
    leaves = [f.detach().clone().requires_grad_() for f in feats]
    out = op(leaves, rois, levels, SCALES[:len(feats)], **options)
    if grad_output is None:
        grad_output = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    out.backward(grad_output)
    grads = [leaf.grad if leaf.grad is not None else torch.zeros_like(leaf) for leaf in leaves]
    return out.detach(), grads


def assert_matches_reference(feats, rois, levels, dtype, what, **options):
    out, grads = run(multi_level_roi_align, feats, rois, levels, **options)
    ref_out, ref_grads = run(multi_level_roi_align_reference, feats, rois, levels, **options)
    rtol, atol = BOUNDS[dtype]
    assert out.dtype == dtype and out.shape == ref_out.shape
    assert_close(out, ref_out, rtol, atol, what=f'{what} forward')
    for level, (grad, ref_grad) in enumerate(zip(grads, ref_grads)):
        assert_close(grad, ref_grad, rtol, atol, what=f'{what} grad of level {level}')
    return out, grads


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('sampling_ratio', [0, 2])
@pytest.mark.parametrize('output_size', [7, 3])
def test_matches_torchvision_per_level(gen, cpu_kernels, dtype, aligned, sampling_ratio,
                                       output_size):
    feats = random_feats(gen, dtype=dtype)
    rois = random_rois(gen, 60, batch=3, dtype=dtype)
    levels = random_levels(gen, rois.shape[0])
    out, grads = assert_matches_reference(
        feats, rois, levels, dtype, f'{dtype} aligned={aligned} sr={sampling_ratio}',
        output_size=output_size, sampling_ratio=sampling_ratio, aligned=aligned)
    assert out.shape == (rois.shape[0], 5, output_size, output_size)
    assert float(out.abs().sum()) > 0 and float(grads[0].abs().sum()) > 0
    assert torch.count_nonzero(grads[2]) == 0  # level 2 got no RoI
    # the wholly outside RoIs (rows -7 and -6 of the special ones) pool to exactly zero
    assert torch.count_nonzero(out[-7:-5]) == 0


def test_float32_matches_per_isa(gen, isa):
    feats = random_feats(gen, channels=21)  # 21: vector blocks plus a ragged tail
    rois = random_rois(gen, 40, batch=3)
    levels = random_levels(gen, rois.shape[0], skip_level=-1)
    assert_matches_reference(feats, rois, levels, torch.float32, isa)


@pytest.mark.parametrize('aligned, sampling_ratio', [(True, 0), (False, 2)])
def test_float32_bits_equal_torchvision(gen, cpu_kernels, aligned, sampling_ratio):
    feats = random_feats(gen, channels=16)
    rois = random_rois(gen, 80, batch=3)
    levels = random_levels(gen, rois.shape[0], skip_level=-1)
    options = dict(sampling_ratio=sampling_ratio, aligned=aligned)
    out, grads = run(multi_level_roi_align, feats, rois, levels, **options)
    ref_out, ref_grads = run(multi_level_roi_align_reference, feats, rois, levels, **options)
    assert torch.equal(out, ref_out)
    for grad, ref_grad in zip(grads, ref_grads):
        assert torch.equal(grad, ref_grad)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_channels_last_maps_are_read_and_written_in_place_with_the_same_bits(gen, cpu_kernels,
                                                                             dtype):
    """The --amp layout: channels-last maps give the NCHW maps' output and gradients bit for
    bit, and the gradients come back channels-last (no layout conversion on the way)."""
    feats = [f.to(dtype) for f in random_feats(gen, channels=24)]
    rois = random_rois(gen, 90, batch=3)
    levels = random_levels(gen, rois.shape[0], skip_level=-1)
    out, grads = run(multi_level_roi_align, feats, rois, levels)
    last = [f.contiguous(memory_format=torch.channels_last) for f in feats]
    assert not any(f.is_contiguous() for f in last)
    out_last, grads_last = run(multi_level_roi_align, last, rois, levels)
    assert out_last.dtype == dtype and torch.equal(out_last, out)
    for grad, grad_last in zip(grads, grads_last):
        assert grad_last.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(grad_last, grad)
    # the kernel itself, without the Python wrapper: a channels-last out of bounds is refused
    bad = torch.empty(2, 3, 4, 5).permute(0, 2, 1, 3)
    with pytest.raises(RuntimeError, match=r'feats\[0\] must be contiguous, NCHW or '
                                           r'channels-last'):
        cpu_kernels.multi_level_roi_align_forward([bad], torch.zeros(0, 5), torch.zeros(
            0, dtype=torch.long), [1.0], 7, 0, True, torch.empty(0, 4, 7, 7))


def test_one_and_two_threads_give_the_same_bits(gen, cpu_kernels):
    assert cpu_kernels.parallel_backend() == 'openmp'
    # 40 channels: three backward channel blocks; 30 x 38 maps: several transpose tiles
    feats = random_feats(gen, channels=40)
    rois = random_rois(gen, 150, batch=3)
    levels = random_levels(gen, rois.shape[0], skip_level=-1)
    results = []
    for threads in (1, 2):
        with num_threads(threads):
            results.append(run(multi_level_roi_align, feats, rois, levels))
    (out1, grads1), (out2, grads2) = results
    assert torch.equal(out1, out2)
    for grad1, grad2 in zip(grads1, grads2):
        assert torch.equal(grad1, grad2)
    assert_close(out1, run(multi_level_roi_align_reference, feats, rois, levels)[0], 1e-5, 1e-5)


@pytest.mark.parametrize('aligned', [True, False])
def test_gradcheck_float64(gen, cpu_kernels, aligned):
    feats = [f.requires_grad_() for f in random_feats(gen, batch=2, channels=2,
                                                      dtype=torch.float64,
                                                      sizes=((6, 7), (3, 4)))]
    rois = torch.tensor([[0, 1.0, 2.0, 17.0, 20.0], [1, -3.0, 0.5, 9.0, 7.0],
                         [1, 2.0, 2.0, 26.0, 22.0], [0, 20.0, 18.0, 29.0, 27.0],
                         [0, 5.0, 5.0, 5.5, 6.0]], dtype=torch.float64)
    levels = torch.tensor([0, 0, 1, 1, 0])

    def pooled(*maps):
        return multi_level_roi_align(maps, rois, levels, [0.25, 0.125], 3, 2, aligned)

    assert torch.autograd.gradcheck(pooled, tuple(feats))


def test_kernel_writes_every_element_of_preallocated_outputs(gen, cpu_kernels):
    feats = random_feats(gen, batch=3)
    rois = random_rois(gen, 30, batch=2)  # image 2 is read by no RoI: its gradient is zero
    levels = random_levels(gen, rois.shape[0])
    out = torch.full((rois.shape[0], 5, 7, 7), float('nan'))
    cpu_kernels.multi_level_roi_align_forward(feats, rois, levels, SCALES, 7, 0, True, out)
    grad_output = torch.randn(out.shape, generator=gen)
    grads = [torch.full_like(f, float('nan')) for f in feats]
    cpu_kernels.multi_level_roi_align_backward(grad_output, rois, levels, SCALES, 0, True, grads)
    ref_out, ref_grads = run(multi_level_roi_align_reference, feats, rois, levels, grad_output)
    assert_close(out, ref_out, 1e-5, 1e-5, what='out')
    for level, (grad, ref_grad) in enumerate(zip(grads, ref_grads)):
        assert_close(grad, ref_grad, 1e-5, 1e-5, what=f'grad_feats[{level}]')
    assert torch.count_nonzero(grads[2]) == 0 and torch.count_nonzero(grads[0][2]) == 0


def test_zero_rois(cpu_kernels):
    feats = [torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4, 4)]
    out, grads = run(multi_level_roi_align, feats, torch.zeros(0, 5),
                     torch.zeros(0, dtype=torch.long))
    assert out.shape == (0, 4, 7, 7)
    assert [tuple(g.shape) for g in grads] == [(2, 4, 8, 8), (2, 4, 4, 4)]
    assert all(torch.count_nonzero(g) == 0 for g in grads)  # poisoned, then zero-filled


def test_constant_maps_show_the_image_and_level_read(cpu_kernels):
    feats = [torch.stack([torch.full((3, h, w), 10.0 * image + level) for image in range(2)])
             for level, (h, w) in enumerate(MAP_SIZES)]
    rois = torch.tensor([[0, 8, 8, 40, 40], [1, 4, 4, 100, 100], [1, 20, 30, 60, 50],
                         [0, 0, 0, 100, 100]], dtype=torch.float32)
    out = multi_level_roi_align(feats, rois, torch.tensor([3, 1, 0, 2]), SCALES)
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), torch.tensor([3.0, 11.0, 10.0, 2.0]))


def test_samples_exactly_on_the_boundaries(gen, cpu_kernels):
    # One sample per RoI (output 1, sampling_ratio 1, not aligned, scale 1) at the centre of the
    # box: on -1 (read as 0), 0, H - 1, H (read as H - 1, weight 1) and just past -1 and H.
    feat = torch.randn(1, 2, 5, 6, generator=gen)
    centres = [(-1.0, 2.0), (0.0, 0.0), (4.0, 5.0), (5.0, 6.0), (2.5, 6.0), (5.0, 1.5),
               (-1.001, 2.0), (5.001, 3.0), (2.0, 6.001)]
    rois = torch.tensor([[0, x - 1, y - 1, x + 1, y + 1] for y, x in centres])
    out = multi_level_roi_align([feat], rois, torch.zeros(len(centres), dtype=torch.long), [1.0],
                                output_size=1, sampling_ratio=1, aligned=False)
    ref = multi_level_roi_align_reference([feat], rois, torch.zeros(len(centres),
                                                                    dtype=torch.long),
                                          [1.0], output_size=1, sampling_ratio=1, aligned=False)
    assert torch.equal(out, ref)
    out = out[:, :, 0, 0]
    assert torch.equal(out[0], feat[0, :, 0, 2])   # y = -1 reads row 0
    assert torch.equal(out[1], feat[0, :, 0, 0])
    assert torch.equal(out[2], feat[0, :, 4, 5])   # the last pixel
    assert torch.equal(out[3], feat[0, :, 4, 5])   # y = H, x = W read the last row and column
    torch.testing.assert_close(out[4], (feat[0, :, 2, 5] + feat[0, :, 3, 5]) / 2)
    torch.testing.assert_close(out[5], (feat[0, :, 4, 1] + feat[0, :, 4, 2]) / 2)
    assert torch.count_nonzero(out[6:]) == 0       # past -1, H or W: nothing


def test_non_finite_roi_pools_to_nan_and_passes_no_gradient(gen, cpu_kernels):
    feats = random_feats(gen)
    rois = random_rois(gen, 20, batch=3)
    levels = random_levels(gen, rois.shape[0])
    bad = rois.clone()
    bad[3, 2] = float('nan')
    bad[7, 4] = float('inf')
    bad[9, 0] = float('nan')  # the batch index too
    grad_output = torch.randn(rois.shape[0], 5, 7, 7, generator=gen)
    out, grads = run(multi_level_roi_align, feats, bad, levels, grad_output)
    assert torch.isnan(out[[3, 7, 9]]).all()
    keep = torch.tensor([i not in (3, 7, 9) for i in range(rois.shape[0])])
    ref_out, ref_grads = run(multi_level_roi_align_reference, feats, rois[keep], levels[keep],
                             grad_output[keep])
    assert_close(out[keep], ref_out, 1e-5, 1e-5, what='finite RoIs')
    for grad, ref_grad in zip(grads, ref_grads):
        assert_close(grad, ref_grad, 1e-5, 1e-5, what='gradient without the non-finite RoIs')


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_types_are_computed_in_float32(gen, cpu_kernels, monkeypatch, dtype):
    """With a gradient (and float16 always) the maps are cast to float32 for the float32 kernel;
    the output and gradients are its results cast back."""
    feats = random_feats(gen, dtype=dtype)
    rois = random_rois(gen, 40, batch=3)
    levels = random_levels(gen, rois.shape[0])
    grad_output = torch.randn(rois.shape[0], 5, 7, 7, generator=gen).to(dtype)
    calls = spy_forward(monkeypatch)
    out, grads = run(multi_level_roi_align, feats, rois, levels, grad_output)
    assert [f.dtype for f in calls[0]] == [torch.float32] * len(feats)
    wide_out, wide_grads = run(multi_level_roi_align, [f.float() for f in feats], rois, levels,
                               grad_output.float())
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    assert torch.equal(out, wide_out.to(dtype))
    for grad, wide_grad in zip(grads, wide_grads):
        assert torch.equal(grad, wide_grad.to(dtype))
    ref = multi_level_roi_align_reference([f.float() for f in feats], rois, levels, SCALES)
    assert_close(wide_out, ref, 1e-5, 1e-5, what='float32 result')
    # the same maps without grad mode: bfloat16 takes the kernel's bfloat16 forward, same bits
    with torch.no_grad():
        inference = multi_level_roi_align([f.requires_grad_() for f in feats], rois, levels,
                                          SCALES)
    assert calls[-1][0].dtype == (dtype if dtype == torch.bfloat16 else torch.float32)
    assert torch.equal(inference, out)


@pytest.mark.parametrize('sampling_ratio', [0, 2])
@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('channels', [256, 37])
@pytest.mark.parametrize('channels_last', [True, False])
def test_bfloat16_inference_is_the_float32_result_rounded(gen, cpu_kernels, monkeypatch,
                                                          channels_last, channels, aligned,
                                                          sampling_ratio):
    """Without a gradient, bfloat16 maps go to the kernel as they are (channels-last ones read in
    place) and the output is written in bfloat16: each element the float32 kernel's result
    rounded to bfloat16, bit for bit."""
    feats = random_feats(gen, batch=2, channels=channels, dtype=torch.bfloat16)
    if channels_last:
        feats = [f.contiguous(memory_format=torch.channels_last) for f in feats]
    rois = random_rois(gen, 60, batch=2)  # many partly or wholly outside the image
    levels = random_levels(gen, rois.shape[0], skip_level=-1)
    options = dict(output_size=7, sampling_ratio=sampling_ratio, aligned=aligned)
    calls = spy_forward(monkeypatch)
    out = multi_level_roi_align(feats, rois, levels, SCALES, **options)
    assert [f.dtype for f in calls[0]] == [torch.bfloat16] * len(feats)
    if channels_last:  # no copies
        assert [f.data_ptr() for f in calls[0]] == [f.data_ptr() for f in feats]
    wide = multi_level_roi_align([f.float() for f in feats], rois, levels, SCALES, **options)
    assert out.dtype == torch.bfloat16 and out.shape == (rois.shape[0], channels, 7, 7)
    assert torch.equal(out, wide.to(torch.bfloat16))
    assert not torch.equal(out.float(), wide)  # the float32 results were rounded
    assert float(out.float().abs().sum()) > 0
    assert torch.count_nonzero(out[-7:-5]) == 0  # the wholly outside RoIs


def test_bfloat16_inference_per_isa(gen, isa):
    # 37 channels: 8 x 8 blocks of the NCHW transposition and ragged edges, vector tails
    feats = random_feats(gen, batch=2, channels=37, dtype=torch.bfloat16)
    rois = random_rois(gen, 40, batch=2)
    levels = random_levels(gen, rois.shape[0], skip_level=-1)
    wide = multi_level_roi_align([f.float() for f in feats], rois, levels, SCALES)
    for maps in (feats, [f.contiguous(memory_format=torch.channels_last) for f in feats]):
        with torch.no_grad():
            out = multi_level_roi_align(maps, rois, levels, SCALES)
        assert out.dtype == torch.bfloat16
        assert torch.equal(out, wide.to(torch.bfloat16)), isa


def test_bfloat16_inference_non_finite_roi_pools_to_nan(gen, cpu_kernels):
    feats = random_feats(gen, dtype=torch.bfloat16)
    rois = random_rois(gen, 20, batch=3)
    levels = random_levels(gen, rois.shape[0])
    rois[3, 2] = float('nan')
    rois[7, 4] = float('inf')
    rois[9, 0] = float('nan')  # the batch index too
    with torch.no_grad():
        out = multi_level_roi_align(feats, rois, levels, SCALES)
    assert out.dtype == torch.bfloat16
    assert torch.isnan(out[[3, 7, 9]]).all()
    keep = torch.tensor([i not in (3, 7, 9) for i in range(rois.shape[0])])
    wide = multi_level_roi_align([f.float() for f in feats], rois, levels, SCALES)
    assert torch.equal(out[keep], wide[keep].to(torch.bfloat16))


def test_fallback_without_kernel_runs_the_reference(gen, cpu_kernels, monkeypatch):
    feats = random_feats(gen)
    rois = random_rois(gen, 30, batch=3)
    levels = random_levels(gen, rois.shape[0])
    out, grads = run(multi_level_roi_align, feats, rois, levels)
    monkeypatch.setattr(roi_align_module._extension, 'kernels_for', lambda device: None)
    fallback_out, fallback_grads = run(multi_level_roi_align, feats, rois, levels)
    assert_close(fallback_out, out, 1e-5, 1e-5, what='fallback forward')
    for grad, fallback_grad in zip(grads, fallback_grads):
        assert_close(fallback_grad, grad, 1e-5, 1e-5, what='fallback grad')


@pytest.mark.parametrize('canonical_scale', [None, 224.0])
def test_multi_level_roi_align_module_uses_the_kernel_with_reference_values(
        gen, cpu_kernels, monkeypatch, canonical_scale):
    extractor = MultiLevelRoIAlign(featmap_strides=STRIDES, output_size=7, sampling_ratio=0,
                                   aligned=True, canonical_scale=canonical_scale)
    # a fifth, coarser level (P6) is passed and must not be read
    feats = random_feats(gen, batch=2, channels=6, sizes=MAP_SIZES + ((2, 3),))
    rois = random_rois(gen, 80, batch=2)
    calls = []
    real = roi_align_module._run_forward
    monkeypatch.setattr(roi_align_module, '_run_forward',
                        lambda *args: calls.append(1) or real(*args))
    leaves = [f.clone().requires_grad_() for f in feats]
    out = extractor(leaves, rois)
    assert calls, 'MultiLevelRoIAlign did not run the CPU kernel'
    grad_output = torch.randn(out.shape, generator=gen)
    out.backward(grad_output)
    levels = extractor.map_rois_to_levels(rois)
    ref_out, ref_grads = run(multi_level_roi_align_reference, feats[:4], rois, levels,
                             grad_output)
    assert torch.equal(out, ref_out)
    for leaf, ref_grad in zip(leaves, ref_grads):
        assert_close(leaf.grad, ref_grad, 1e-5, 1e-5, what='extractor grad')
    assert leaves[4].grad is None
    assert extractor(feats, torch.zeros(0, 5)).shape == (0, 6, 7, 7)
    with pytest.raises(ValueError, match='got 3 feature levels'):
        extractor(feats[:3], rois)


def test_argument_errors_name_the_argument(cpu_kernels):
    feats = [torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 4, 4)]
    rois = torch.tensor([[0, 0.0, 0.0, 10.0, 10.0], [1, 2.0, 2.0, 30.0, 30.0]])
    levels = torch.tensor([0, 1])
    scales = [0.25, 0.125]

    def call(feats=feats, rois=rois, levels=levels, scales=scales, output_size=7,
             sampling_ratio=0, aligned=True, op=multi_level_roi_align):
        return op(feats, rois, levels, scales, output_size, sampling_ratio, aligned)

    with pytest.raises(ValueError, match='feats must be a non-empty list'):
        call(feats=[])
    with pytest.raises(ValueError, match='feats must be a non-empty list'):
        call(feats=feats[0])
    with pytest.raises(ValueError, match=r'feats\[1\] must be a \(B, C, H, W\) tensor'):
        call(feats=[feats[0], torch.zeros(3, 4, 4)])
    with pytest.raises(TypeError, match=r'feats\[1\] is torch.float64; every level must have '
                                        r'the dtype of feats\[0\]'):
        call(feats=[feats[0], feats[1].double()])
    with pytest.raises(TypeError, match=r'feats\[0\] is torch.int64'):
        call(feats=[f.long() for f in feats])
    with pytest.raises(ValueError, match=r'feats\[1\] has shape \(2, 4, 4, 4\)'):
        call(feats=[feats[0], torch.zeros(2, 4, 4, 4)])
    with pytest.raises(ValueError, match=r'rois must have shape \(R, 5\)'):
        call(rois=rois[:, 1:])
    with pytest.raises(TypeError, match='rois must be a floating-point tensor'):
        call(rois=rois.long())
    with pytest.raises(ValueError, match=r'levels must be an integer tensor of shape \(2,\)'):
        call(levels=levels.float())
    with pytest.raises(ValueError, match=r'levels must be an integer tensor of shape \(2,\)'):
        call(levels=levels[:1])
    with pytest.raises(ValueError, match=r'spatial_scales must hold one scale per level \(2\)'):
        call(scales=[0.25])
    with pytest.raises(ValueError, match='spatial_scales must be finite numbers > 0'):
        call(scales=[0.25, 0.0])
    with pytest.raises(ValueError, match='output_size must be an integer >= 1'):
        call(output_size=0)
    with pytest.raises(ValueError, match='sampling_ratio must be an integer <= 65536'):
        call(sampling_ratio=1 << 17)
    with pytest.raises(ValueError, match='aligned must be True or False'):
        call(aligned=1)
    # value ranges, checked by the kernel (ValueError) and by the reference
    with pytest.raises(ValueError, match=r'levels\[1\] is 2; level ids must lie in \[0, 1\]'):
        call(levels=torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r'levels must lie in \[0, 1\]'):
        call(levels=torch.tensor([-1, 0]), op=multi_level_roi_align_reference)
    bad_batch = rois.clone()
    bad_batch[1, 0] = 2
    with pytest.raises(ValueError, match=r'rois\[1, 0\] \(the batch index\) is 2; it must lie in '
                                         r'\[0, 1\]'):
        call(rois=bad_batch)
    with pytest.raises(ValueError, match=r'rois\[:, 0\] \(the batch index\) must lie in \[0, 1\]'):
        call(rois=bad_batch, op=multi_level_roi_align_reference)
    huge = rois.clone()
    huge[0, 3] = 1e9
    with pytest.raises(ValueError, match=r'rois\[0\] = .* sampling points per bin on level 0'):
        call(rois=huge)


def test_kernel_checks_its_arguments(cpu_kernels):
    feats = [torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 4, 4)]
    rois = torch.tensor([[0, 0.0, 0.0, 10.0, 10.0], [1, 2.0, 2.0, 30.0, 30.0]])
    levels = torch.tensor([0, 1])
    out = torch.zeros(2, 3, 7, 7)
    forward = cpu_kernels.multi_level_roi_align_forward
    backward = cpu_kernels.multi_level_roi_align_backward
    with pytest.raises(RuntimeError, match='spatial_scales has 1 entries for 2 feature levels'):
        forward(feats, rois, levels, [0.25], 7, 0, True, out)
    with pytest.raises(RuntimeError, match=r'feats\[1\] must have 4 dimensions'):
        forward([feats[0], torch.zeros(3, 4, 4)], rois, levels, [0.25, 0.125], 7, 0, True, out)
    with pytest.raises(RuntimeError, match=r'feats\[1\] must be Float, got Double'):
        forward([feats[0], feats[1].double()], rois, levels, [0.25, 0.125], 7, 0, True, out)
    with pytest.raises(RuntimeError, match=r'feats\[0\] must be contiguous'):
        forward([feats[0].transpose(2, 3), feats[1]], rois, levels, [0.25, 0.125], 7, 0, True,
                out)
    with pytest.raises(RuntimeError, match='rois must be Float, got Double'):
        forward(feats, rois.double(), levels, [0.25, 0.125], 7, 0, True, out)
    with pytest.raises(RuntimeError, match=r'levels must have shape \(2,\)'):
        forward(feats, rois, levels[:1], [0.25, 0.125], 7, 0, True, out)
    with pytest.raises(RuntimeError, match=r'out must have shape \(2, 3, 7, 7\)'):
        forward(feats, rois, levels, [0.25, 0.125], 7, 0, True, torch.zeros(2, 3, 5, 5))
    with pytest.raises(RuntimeError, match=r'spatial_scales\[1\] must be a finite number > 0'):
        forward(feats, rois, levels, [0.25, -1.0], 7, 0, True, out)
    with pytest.raises(RuntimeError, match='feats must be float32, float64 or bfloat16, got Half'):
        forward([f.half() for f in feats], rois, levels, [0.25, 0.125], 7, 0, True, out.half())
    bf16_feats = [f.bfloat16() for f in feats]
    with pytest.raises(RuntimeError, match='rois must be Float, got BFloat16'):  # float32 RoIs
        forward(bf16_feats, rois.bfloat16(), levels, [0.25, 0.125], 7, 0, True, out.bfloat16())
    with pytest.raises(RuntimeError, match='out must be BFloat16, got Float'):
        forward(bf16_feats, rois, levels, [0.25, 0.125], 7, 0, True, out)
    grads = [torch.zeros_like(f) for f in feats]
    with pytest.raises(RuntimeError, match='grad_output must be float32 or float64, got BFloat16'):
        backward(out.bfloat16(), rois, levels, [0.25, 0.125], 0, True, bf16_feats)
    with pytest.raises(RuntimeError, match=r'grad_feats\[0\] must be Float, got Double'):
        backward(out, rois, levels, [0.25, 0.125], 0, True, [grads[0].double(), grads[1]])
    with pytest.raises(RuntimeError, match=r'grad_output must have shape \(2, 3, S, S\)'):
        backward(torch.zeros(2, 4, 7, 7), rois, levels, [0.25, 0.125], 0, True, grads)
    with pytest.raises(ValueError, match=r'levels\[0\] is 5'):
        backward(out, rois, torch.tensor([5, 0]), [0.25, 0.125], 0, True, grads)


def test_docstring_example(cpu_kernels):
    feats = [torch.arange(16.).reshape(1, 1, 4, 4), torch.zeros(1, 1, 2, 2)]
    rois = torch.tensor([[0., 0., 0., 4., 4.], [0., 0., 0., 4., 4.]])
    out = multi_level_roi_align(feats, rois, torch.tensor([0, 1]), [1.0, 0.5], output_size=1,
                                sampling_ratio=1)
    assert out.flatten().tolist() == [7.5, 0.0]


# ---- CUDA: skipped without a GPU ----------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_runs_the_reference(gen):
    feats = random_feats(gen)
    rois = random_rois(gen, 30, batch=3)
    levels = random_levels(gen, rois.shape[0])
    out = multi_level_roi_align([f.cuda() for f in feats], rois.cuda(), levels.cuda(), SCALES)
    expected = multi_level_roi_align_reference(feats, rois, levels, SCALES)
    assert out.device.type == 'cuda'
    assert_close(out, expected, 1e-5, 1e-5, what='CUDA forward')
