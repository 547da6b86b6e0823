"""Loading (image formats, EXIF, broken files), Resize, RandomFlip, LoadAnnotations, packing."""
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from detkit.datasets.transforms import (
    ImageDecodeError,
    LoadAnnotations,
    LoadImageFromFile,
    PackDetInputs,
    RandomFlip,
    Resize,
    rescale_size,
)
from detkit.registry import TRANSFORMS

RED_BGR = (0, 0, 255)


def _load(path, **extra):
    return LoadImageFromFile()(dict(img_path=str(path), **extra))


def test_transforms_are_registered():
    for name in ('LoadImageFromFile', 'LoadAnnotations', 'Resize', 'RandomFlip',
                 'PackDetInputs'):
        assert TRANSFORMS.get(name) is not None, name
    resize = TRANSFORMS.build(dict(type='Resize', scale=(1333, 800)))
    assert repr(resize) == "Resize(scale=(1333, 800), keep_ratio=True, interpolation='bilinear')"


def test_load_color_png_sets_meta(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / 'c.png'), pixels)
    out = _load(tmp_path / 'c.png', height=30, width=40)
    np.testing.assert_array_equal(out['img'], pixels)
    assert out['ori_shape'] == out['img_shape'] == (30, 40)
    assert out['scale_factor'] == (1.0, 1.0) and out['flip'] is False
    as_float = LoadImageFromFile(to_float32=True)(dict(img_path=str(tmp_path / 'c.png')))
    assert as_float['img'].dtype == np.float32 and as_float['img'][3, 4, 1] == pixels[3, 4, 1]


def test_load_grayscale_rgba_palette_become_bgr_uint8(tmp_path):
    gray = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    cv2.imwrite(str(tmp_path / 'gray.png'), gray)
    out = _load(tmp_path / 'gray.png')['img']
    assert out.shape == (12, 10, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))

    rgba = np.zeros((8, 9, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 20, 30)  # BGR
    rgba[..., 3] = 0              # fully transparent: the colour is kept, alpha dropped
    cv2.imwrite(str(tmp_path / 'rgba.png'), rgba)
    out = _load(tmp_path / 'rgba.png')['img']
    assert out.shape == (8, 9, 3)
    np.testing.assert_array_equal(out[4, 4], [10, 20, 30])

    rgb = np.zeros((6, 7, 3), dtype=np.uint8)
    rgb[:, :3] = (255, 0, 0)  # red on the left in RGB
    Image.fromarray(rgb).convert('P').save(tmp_path / 'palette.png')
    out = _load(tmp_path / 'palette.png')['img']
    assert out.shape == (6, 7, 3)
    np.testing.assert_array_equal(out[0, 0], RED_BGR)
    np.testing.assert_array_equal(out[0, 6], [0, 0, 0])


def test_load_16bit_png_is_scaled_to_8bit(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / 'deep.png'), values)
    out = _load(tmp_path / 'deep.png')['img']
    assert out.dtype == np.uint8 and out.shape == (1, 4, 3)
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255])


def _exif_jpeg(path, orientation):
    """A 40 x 20 (w x h) JPEG whose top-left 6x6 corner is red, with an EXIF orientation."""
    rgb = np.zeros((20, 40, 3), dtype=np.uint8)
    rgb[:6, :6] = (255, 0, 0)
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif.tobytes(), quality=95)


def test_load_exif_rotated_jpeg_as_a_viewer_shows_it(tmp_path):
    # Orientation 6: a viewer rotates the stored pixels 90 degrees clockwise, so the stored
    # top-left corner shows at the top-right of a 20 x 40 (w x h) picture.
    _exif_jpeg(tmp_path / 'rot.jpg', orientation=6)
    out = _load(tmp_path / 'rot.jpg', height=40, width=20)
    img = out['img']
    assert img.shape == (40, 20, 3) and out['ori_shape'] == (40, 20)
    assert img[2, 17, 2] > 200 and img[2, 17, :2].max() < 60   # red, top-right
    assert img[2, 2].max() < 60 and img[37, 2].max() < 60 and img[37, 17].max() < 60


def test_annotated_size_mismatch_raises_with_sizes(tmp_path):
    _exif_jpeg(tmp_path / 'rot.jpg', orientation=6)
    with pytest.raises(ValueError, match=r"rot.jpg' decodes to height x width = 40 x 20 but "
                                         r'its annotation says 20 x 40.*transposed'):
        _load(tmp_path / 'rot.jpg', height=20, width=40)
    with pytest.raises(ValueError, match=r'annotation says 21 x 20'):
        _load(tmp_path / 'rot.jpg', height=21, width=20)


def test_broken_files_raise_with_the_path(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode('.jpg', pixels)
    data = encoded.tobytes()
    cases = {'truncated.jpg': data[:len(data) * 2 // 3], 'no_end.jpg': data[:-2],
             'text.jpg': b'this is not an image\n', 'empty.png': b''}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ImageDecodeError, match=name):
            _load(tmp_path / name)
    assert issubclass(ImageDecodeError, ValueError)
    with pytest.raises(FileNotFoundError, match='missing.jpg'):
        _load(tmp_path / 'missing.jpg')


def test_non_ascii_path_is_read(tmp_path):
    folder = tmp_path / 'bilder_图像'
    folder.mkdir()
    pixels = np.full((5, 6, 3), 77, dtype=np.uint8)
    ok, encoded = cv2.imencode('.png', pixels)
    encoded.tofile(str(folder / 'äöü.png'))
    np.testing.assert_array_equal(_load(folder / 'äöü.png')['img'], pixels)


def test_load_annotations_splits_ignored_and_sets_dtypes():
    results = LoadAnnotations()(dict(instances=[
        dict(bbox=[1, 2, 3, 4], bbox_label=2, ignore_flag=0),
        dict(bbox=[5, 6, 7, 8], bbox_label=0, ignore_flag=1),
        dict(bbox=[9, 10, 11, 12], bbox_label=4, ignore_flag=0)]))
    assert results['gt_bboxes'].dtype == np.float32 and results['gt_bboxes'].shape == (2, 4)
    np.testing.assert_array_equal(results['gt_bboxes'], [[1, 2, 3, 4], [9, 10, 11, 12]])
    assert results['gt_labels'].dtype == np.int64
    np.testing.assert_array_equal(results['gt_labels'], [2, 4])
    np.testing.assert_array_equal(results['gt_ignore_bboxes'], [[5, 6, 7, 8]])
    empty = LoadAnnotations()(dict(instances=[]))
    assert empty['gt_bboxes'].shape == (0, 4) and empty['gt_ignore_bboxes'].shape == (0, 4)
    assert empty['gt_labels'].shape == (0,) and empty['gt_labels'].dtype == np.int64
    with pytest.raises(ValueError, match=r"must be \[x1, y1, x2, y2\].*'x.jpg'"):
        LoadAnnotations()(dict(img_path='x.jpg', instances=[dict(bbox=[1, 2, 3], bbox_label=0,
                                                                 ignore_flag=0)]))


def test_resize_keep_ratio_numbers():
    assert rescale_size(640, 480, (1333, 800)) == (1067, 800)
    assert rescale_size(480, 640, (800, 1333)) == (800, 1067)      # order of scale is free
    assert rescale_size(2000, 500, (1333, 800)) == (1333, 333)    # long side limits
    results = dict(img=np.zeros((480, 640, 3), dtype=np.uint8), ori_shape=(480, 640),
                   scale_factor=(1.0, 1.0),
                   gt_bboxes=np.array([[10, 20, 110, 220], [600, 400, 650, 490]], np.float32),
                   gt_ignore_bboxes=np.zeros((0, 4), np.float32))
    out = Resize(scale=(1333, 800))(results)
    assert out['img'].shape == (800, 1067, 3) and out['img_shape'] == (800, 1067)
    w_scale, h_scale = out['scale_factor']
    assert w_scale == pytest.approx(1067 / 640) and h_scale == pytest.approx(800 / 480)
    assert h_scale == pytest.approx(1.6667, abs=1e-4)
    assert out['gt_bboxes'].dtype == np.float32
    np.testing.assert_allclose(out['gt_bboxes'][0], [10 * w_scale, 20 * h_scale,
                                                     110 * w_scale, 220 * h_scale], rtol=1e-6)
    # the second box reaches past the image (650 > 640, 490 > 480): clipped to 1067 x 800
    np.testing.assert_allclose(out['gt_bboxes'][1], [600 * w_scale, 400 * h_scale, 1067, 800],
                               rtol=1e-6)
    assert out['gt_ignore_bboxes'].shape == (0, 4)


def test_resize_exact_and_compounding_scale_factor():
    results = dict(img=np.zeros((100, 200, 3), dtype=np.uint8), ori_shape=(100, 200),
                   gt_bboxes=np.array([[20, 10, 40, 30]], np.float32))
    out = Resize(scale=(50, 80), keep_ratio=False)(results)
    assert out['img'].shape == (80, 50, 3) and out['scale_factor'] == (0.25, 0.8)
    np.testing.assert_allclose(out['gt_bboxes'], [[5, 8, 10, 24]])
    out = Resize(scale=(100, 160), keep_ratio=False)(out)
    assert out['img_shape'] == (160, 100) and out['scale_factor'] == (0.5, 1.6)
    np.testing.assert_allclose(out['gt_bboxes'], [[10, 16, 20, 48]])
    with pytest.raises(ValueError, match="interpolation='cubic' is not one of"):
        Resize(interpolation='cubic')
    with pytest.raises(ValueError, match=r'scale must be two positive ints, got \(1333,\)'):
        Resize(scale=(1333,))


def test_random_flip_moves_pixels_and_boxes():
    img = np.zeros((10, 100, 3), dtype=np.uint8)
    img[:, :5] = 255  # a white band on the left
    results = dict(img=img, gt_bboxes=np.array([[10, 2, 30, 8]], np.float32),
                   gt_ignore_bboxes=np.array([[0, 0, 100, 5]], np.float32))
    out = RandomFlip(prob=1.0)(results)
    assert out['flip'] is True
    assert out['img'][:, 95:].min() == 255 and out['img'][:, :95].max() == 0
    np.testing.assert_array_equal(out['gt_bboxes'], [[70, 2, 90, 8]])
    np.testing.assert_array_equal(out['gt_ignore_bboxes'], [[0, 0, 100, 5]])
    kept = RandomFlip(prob=0.0)(dict(img=img, gt_bboxes=np.array([[10, 2, 30, 8]], np.float32)))
    assert kept['flip'] is False and kept['img'] is img
    np.random.seed(0)
    flips = [RandomFlip(prob=0.5)(dict(img=img))['flip'] for _ in range(400)]
    assert 160 < sum(flips) < 240
    with pytest.raises(ValueError, match="direction must be 'horizontal'"):
        RandomFlip(direction='vertical')


def test_pack_det_inputs_dtypes_and_shapes():
    img = np.random.default_rng(2).integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    results = dict(img_path='a.jpg', img_id=7, img=img, ori_shape=(3, 4), img_shape=(6, 8),
                   scale_factor=(2.0, 2.0), flip=True,
                   gt_bboxes=np.array([[1, 2, 3, 4]], np.float32),
                   gt_labels=np.array([3], np.int64),
                   gt_ignore_bboxes=np.zeros((0, 4), np.float32))
    out = PackDetInputs()(results)
    inputs, sample = out['inputs'], out['data_samples']
    assert inputs.shape == (3, 6, 8) and inputs.dtype == torch.uint8 and inputs.is_contiguous()
    assert torch.equal(inputs, torch.from_numpy(img).permute(2, 0, 1))  # BGR order kept
    assert (sample.img_path, sample.img_id, sample.flip) == ('a.jpg', 7, True)
    assert sample.ori_shape == (3, 4) and sample.img_shape == (6, 8)
    assert sample.scale_factor == (2.0, 2.0)
    assert sample.gt_bboxes.dtype == torch.float32 and sample.gt_bboxes.shape == (1, 4)
    assert sample.gt_labels.dtype == torch.int64 and sample.gt_labels.tolist() == [3]
    assert sample.gt_ignore_bboxes.shape == (0, 4)
    flipped = PackDetInputs()(dict(img=img[:, ::-1]))  # a negatively strided view is fine
    assert torch.equal(flipped['inputs'][:, :, 0], torch.from_numpy(img[:, -1].T.copy()))
    with pytest.raises(KeyError, match='put LoadImageFromFile first'):
        PackDetInputs()(dict(img_path='a.jpg'))
