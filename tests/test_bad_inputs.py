"""Bad image files: each is read as a viewer shows it or rejected naming the file; bad_sample."""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from detkit.datasets import CCTSDBDataset, CocoDataset
from detkit.datasets.bad_samples import BadSampleHandler, BadSampleWarning
from detkit.datasets.transforms import (
    ImageDecodeError,
    Resize,
    decode_image,
    loading,
    rescale_size,
)

RED, GREEN, BLUE = (0, 0, 255), (0, 255, 0), (255, 0, 0)  # BGR


def _encoded(ext: str, pixels: np.ndarray) -> bytes:
    ok, data = cv2.imencode(ext, pixels)
    assert ok
    return data.tobytes()


def _noise(height: int = 64, width: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _left_right_rgb(left: tuple, right: tuple, height: int = 8, width: int = 16) -> np.ndarray:
    """An RGB array whose left half is ``left`` and right half ``right``."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:, :width // 2], rgb[:, width // 2:] = left, right
    return rgb


# ------------------------------------------------------------------------------ read correctly
def test_cmyk_jpeg_channels(tmp_path):
    Image.new('RGB', (16, 8), (255, 0, 0)).convert('CMYK').save(tmp_path / 'red.jpg', quality=95)
    with Image.open(tmp_path / 'red.jpg') as image:
        assert image.mode == 'CMYK'
    img = decode_image(str(tmp_path / 'red.jpg'))
    assert img.shape == (8, 16, 3) and img.dtype == np.uint8
    np.testing.assert_allclose(img.reshape(-1, 3).mean(0), RED, atol=3)
    two = Image.fromarray(_left_right_rgb((0, 255, 0), (0, 0, 255))).convert('CMYK')
    two.save(tmp_path / 'green_blue.jpg', quality=95)
    img = decode_image(str(tmp_path / 'green_blue.jpg')).astype(int)
    np.testing.assert_allclose(img[4, 2], GREEN, atol=3)
    np.testing.assert_allclose(img[4, 13], BLUE, atol=3)


def test_alpha_is_dropped_and_grey_and_bit_images_are_replicated(tmp_path):
    bgra = np.zeros((4, 5, 4), np.uint8)
    bgra[..., :3] = (10, 20, 30)
    bgra[..., 3] = [[0], [64], [128], [255]]      # every transparency keeps the stored colour
    cv2.imwrite(str(tmp_path / 'rgba.png'), bgra)
    np.testing.assert_array_equal(decode_image(str(tmp_path / 'rgba.png')), bgra[..., :3])
    Image.new('LA', (3, 2), (100, 50)).save(tmp_path / 'grey_alpha.png')
    np.testing.assert_array_equal(decode_image(str(tmp_path / 'grey_alpha.png')),
                                  np.full((2, 3, 3), 100))
    Image.new('1', (5, 5), 1).save(tmp_path / 'bit.png')
    np.testing.assert_array_equal(decode_image(str(tmp_path / 'bit.png')), np.full((5, 5, 3),
                                                                                   255))
    palette = Image.fromarray(_left_right_rgb((0, 255, 0), (0, 0, 255))).convert('P')
    palette.save(tmp_path / 'palette_trns.png', transparency=0)
    img = decode_image(str(tmp_path / 'palette_trns.png'))
    np.testing.assert_array_equal(img[4, 2], GREEN)
    np.testing.assert_array_equal(img[4, 13], BLUE)


def test_16bit_colour_and_rgba(tmp_path):
    bgr16 = np.zeros((2, 2, 3), np.uint16)
    bgr16[..., 0], bgr16[..., 1], bgr16[..., 2] = 0, 32768, 65535
    cv2.imwrite(str(tmp_path / 'c16.png'), bgr16)
    np.testing.assert_array_equal(decode_image(str(tmp_path / 'c16.png'))[1, 1], [0, 128, 255])
    bgra16 = np.concatenate([bgr16, np.zeros((2, 2, 1), np.uint16)], axis=2)
    cv2.imwrite(str(tmp_path / 'rgba16.png'), bgra16)
    out = decode_image(str(tmp_path / 'rgba16.png'))
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[0, 0], [0, 128, 255])


@pytest.mark.parametrize('ext', ['.bmp', '.webp', '.tiff', '.png'])
def test_other_formats_and_a_png_with_bytes_after_iend(tmp_path, ext):
    pixels = _noise(9, 7)
    data = _encoded(ext, pixels)
    if ext == '.png':
        data += b'trailing bytes after IEND are ignored'
    (tmp_path / f'a{ext}').write_bytes(data)
    out = decode_image(str(tmp_path / f'a{ext}'))
    tolerance = 40 if ext == '.webp' else 0  # lossy by default
    assert out.shape == (9, 7, 3)
    assert np.abs(out.astype(int) - pixels).mean() <= tolerance / 4


def test_gif_is_read(tmp_path):
    Image.fromarray(_left_right_rgb((255, 0, 0), (0, 0, 255))).save(tmp_path / 'a.gif')
    img = decode_image(str(tmp_path / 'a.gif'))
    np.testing.assert_array_equal(img[4, 2], RED)
    np.testing.assert_array_equal(img[4, 13], BLUE)


# EXIF orientation -> where the stored top-left red 6x6 corner of a 40 x 20 (w x h) picture shows.
@pytest.mark.parametrize('orientation, shape, corner', [
    (2, (20, 40), (2, 37)),    # mirrored left-right: top-right
    (3, (20, 40), (17, 37)),   # rotated 180 degrees: bottom-right
    (4, (20, 40), (17, 2)),    # mirrored top-bottom: bottom-left
    (5, (40, 20), (2, 2)),     # transposed: top-left of the tall picture
    (6, (40, 20), (2, 17)),    # rotated 90 degrees clockwise: top-right
    (7, (40, 20), (37, 17)),   # transversed: bottom-right
    (8, (40, 20), (37, 2)),    # rotated 90 degrees counter-clockwise: bottom-left
])
@pytest.mark.parametrize('ext', ['.jpg', '.png'])
def test_exif_orientation_is_applied(tmp_path, orientation, shape, corner, ext):
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:6, :6] = (255, 0, 0)
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f'o{orientation}{ext}'
    image.save(path, exif=exif.tobytes(), **({'quality': 95} if ext == '.jpg' else {}))
    img = decode_image(str(path))
    assert img.shape[:2] == shape
    red = np.argwhere((img[..., 2] > 200) & (img[..., :2].max(axis=2) < 60))
    assert len(red) >= 25
    np.testing.assert_allclose(red.mean(axis=0), corner, atol=1.0)


def test_one_pixel_images(tmp_path):
    for ext in ('.png', '.jpg'):
        (tmp_path / f'one{ext}').write_bytes(_encoded(ext, np.array([[[10, 20, 30]]], np.uint8)))
        img = decode_image(str(tmp_path / f'one{ext}'))
        assert img.shape == (1, 1, 3)
        np.testing.assert_allclose(img[0, 0], [10, 20, 30], atol=3)
    out = Resize(scale=(1333, 800))(dict(img=img, gt_bboxes=np.array([[0, 0, 1, 1]],
                                                                      np.float32)))
    assert out['img_shape'] == (800, 800) and out['scale_factor'] == (800.0, 800.0)
    np.testing.assert_array_equal(out['gt_bboxes'], [[0, 0, 800, 800]])


@pytest.mark.parametrize('width, height, new_shape', [
    (4000, 20, (7, 1333)),     # factor 1333 / 4000: the long side limits
    (20, 4000, (1333, 7)),
])
def test_extreme_aspect_ratio_through_resize(tmp_path, width, height, new_shape):
    path = tmp_path / 'strip.png'
    path.write_bytes(_encoded('.png', np.full((height, width, 3), 90, np.uint8)))
    img = decode_image(str(path))
    assert img.shape == (height, width, 3)
    box = [width * 0.25, height * 0.25, width * 0.75, height * 0.75]
    out = Resize(scale=(1333, 800), keep_ratio=True)(dict(
        img=img, gt_bboxes=np.array([box], np.float32)))
    assert out['img'].shape == (*new_shape, 3) and out['img_shape'] == new_shape
    w_scale, h_scale = new_shape[1] / width, new_shape[0] / height
    assert out['scale_factor'] == pytest.approx((w_scale, h_scale))
    np.testing.assert_allclose(out['gt_bboxes'][0], [box[0] * w_scale, box[1] * h_scale,
                                                     box[2] * w_scale, box[3] * h_scale],
                               rtol=1e-5)
    assert int(out['img'][new_shape[0] // 2, new_shape[1] // 2, 0]) == 90


def test_rescale_size_never_reaches_zero_pixels():
    assert rescale_size(100000, 1, (1333, 800)) == (1333, 1)
    assert rescale_size(1, 100000, (1333, 800)) == (1, 1333)


# ------------------------------------------------------------------------------ rejected
def _broken_files() -> dict[str, tuple[bytes, str]]:
    """name -> (content, what the error says)."""
    jpeg, png = _encoded('.jpg', _noise()), _encoded('.png', _noise())
    buffer = io.BytesIO()
    Image.fromarray(_noise()).save(buffer, format='JPEG', progressive=True)
    progressive_jpeg = buffer.getvalue()
    return {
        'empty.jpg': (b'', r'is empty \(0 bytes\)'),
        'text.jpg': (b'this is a text file, not an image\n', 'cannot be decoded'),
        'half.jpg': (jpeg[:len(jpeg) // 2], 'is a truncated JPEG'),
        'half_progressive.jpg': (progressive_jpeg[:len(progressive_jpeg) // 2],
                                 'is a truncated JPEG'),
        'half.png': (png[:len(png) // 2], 'is a truncated PNG'),
        'no_iend.png': (png[:-12], 'is a truncated PNG'),  # IEND is the last 12 bytes
        'half.bmp': (_encoded('.bmp', _noise())[:6000], 'cannot be decoded'),
        'half.webp': (_encoded('.webp', _noise())[:3000], 'cannot be decoded'),
        'half.tiff': (_encoded('.tiff', _noise())[:6000], 'cannot be decoded'),
        'float.tiff': (_encoded('.tiff', np.full((4, 4, 3), 0.5, np.float32)),
                       'has float32 pixels'),
    }


def test_broken_files_are_rejected_naming_the_file(tmp_path):
    for name, (content, message) in _broken_files().items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ImageDecodeError, match=message) as info:
            decode_image(str(tmp_path / name))
        assert str(tmp_path / name) in str(info.value), name
    with pytest.raises(FileNotFoundError, match='missing.jpg'):
        decode_image(str(tmp_path / 'missing.jpg'))


# ------------------------------------------------------------------------------ bad_sample
GOOD = ('a.png', 'b.png', 'd.png', 'f.png')
BAD = {'c.png': 'is a truncated PNG', 'e.jpg': r'is empty \(0 bytes\)'}


@pytest.fixture
def coco_root(tmp_path) -> Path:
    """Six 24x32 images, two of them corrupt (c.png truncated, e.jpg empty), one box each."""
    names = sorted(GOOD + tuple(BAD))
    png = _encoded('.png', np.full((24, 32, 3), 70, np.uint8))
    for name in names:
        (tmp_path / name).write_bytes(png if name in GOOD else
                                      png[:len(png) // 2] if name == 'c.png' else b'')
    coco = dict(images=[dict(id=k + 1, file_name=n, height=24, width=32)
                        for k, n in enumerate(names)],
                annotations=[dict(id=k + 1, image_id=k + 1, category_id=1, bbox=[2, 3, 10, 8])
                             for k in range(len(names))],
                categories=[dict(id=1, name='thing')])
    (tmp_path / 'ann.json').write_text(json.dumps(coco))
    return tmp_path


PIPELINE = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            dict(type='PackDetInputs')]


def _coco(root: Path, **kwargs) -> CocoDataset:
    return CocoDataset(ann_file='ann.json', data_root=str(root), metainfo=dict(classes=('thing',)),
                       pipeline=PIPELINE, **kwargs)


def test_skip_yields_only_good_samples_and_warns_once_per_file(coco_root, monkeypatch):
    decoded = []
    real_decode = loading.decode_image
    monkeypatch.setattr(loading, 'decode_image', lambda p: decoded.append(p) or real_decode(p))
    dataset = _coco(coco_root, bad_sample='skip')
    np.random.seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        samples = [dataset[k % 6] for k in range(60)]
    paths = [Path(s['data_samples'].img_path).name for s in samples]
    assert len(paths) == 60 and set(paths) <= set(GOOD)
    assert sorted(Path(p).name for p in dataset.skipped_files) == sorted(BAD)
    messages = [str(w.message) for w in caught if issubclass(w.category, BadSampleWarning)]
    assert len(messages) == 2
    for name in BAD:
        matching = [m for m in messages if str(coco_root / name) in m]
        assert len(matching) == 1 and 'skipping' in matching[0]
    # each bad file is decoded exactly once; later visits return None at once
    assert sorted(Path(p).name for p in decoded if Path(p).name in BAD) == sorted(BAD)
    assert dataset.bad_samples.num_skips >= 20   # 10 direct visits to each of the 2 bad indices


def test_error_mode_names_the_file_and_how_to_skip(coco_root):
    dataset = _coco(coco_root)
    assert dataset.bad_samples.policy == 'error' and dataset.skipped_files == []
    assert Path(dataset[0]['data_samples'].img_path).name == 'a.png'
    for index, name in ((2, 'c.png'), (4, 'e.jpg')):
        with pytest.raises(ImageDecodeError, match=BAD[name]) as info:
            dataset[index]
        message = str(info.value)
        assert message.startswith('CocoDataset: ') and str(coco_root / name) in message
        assert f'(sample {index})' in message and "bad_sample='skip'" in message
    (coco_root / 'a.png').unlink()
    with pytest.raises(FileNotFoundError, match=r"a.png' does not exist \(sample 0\)"):
        dataset[0]


def test_missing_file_is_skipped_too(coco_root):
    (coco_root / 'a.png').unlink()
    dataset = _coco(coco_root, bad_sample='skip')
    np.random.seed(1)
    with pytest.warns(BadSampleWarning):
        names = {Path(dataset[k % 6]['data_samples'].img_path).name for k in range(30)}
    assert names <= {'b.png', 'd.png', 'f.png'}
    assert sorted(Path(p).name for p in dataset.skipped_files) == ['a.png', 'c.png', 'e.jpg']


def test_skip_does_not_apply_in_test_mode(coco_root):
    dataset = _coco(coco_root, bad_sample='skip', test_mode=True)
    with pytest.raises(ImageDecodeError, match=r"c.png.*applies in training only"):
        dataset[2]
    assert dataset.skipped_files == []


def test_all_images_bad_and_wrong_option(coco_root):
    dataset = _coco(coco_root, bad_sample='skip', indices=[2, 4])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', BadSampleWarning)
        with pytest.raises(ImageDecodeError, match='none of the 2 images can be read'):
            dataset[0]
    with pytest.raises(ValueError, match=r"CocoDataset: bad_sample='ignore'; expected one of "
                                         r"\['error', 'skip'\]"):
        _coco(coco_root, bad_sample='ignore')
    assert BadSampleHandler('skip').skipped_files == []


def test_size_mismatch_is_not_skipped(coco_root):
    """A size that differs from the annotation points at the annotation: always an error."""
    (coco_root / 'a.png').write_bytes(_encoded('.png', np.zeros((10, 10, 3), np.uint8)))
    dataset = _coco(coco_root, bad_sample='skip')
    with pytest.raises(ValueError, match=r"a.png' decodes to height x width = 10 x 10"):
        dataset[0]


@pytest.fixture
def cctsdb_root(tmp_path) -> Path:
    """GroundTruth.txt over 4 images: 00002.png is empty (0 bytes), 00003.png truncated."""
    img_dir = tmp_path / 'images'
    img_dir.mkdir()
    png = _encoded('.png', np.full((30, 40, 3), 50, np.uint8))
    for name, content in (('00000.png', png), ('00001.png', png), ('00002.png', b''),
                          ('00003.png', png[:len(png) // 2])):
        (img_dir / name).write_bytes(content)
    (tmp_path / 'GroundTruth.txt').write_text(''.join(
        f'0000{k}.png;5;6;15;16;warning\n' for k in range(4)))
    return tmp_path


def _cctsdb(root: Path, **kwargs) -> CCTSDBDataset:
    return CCTSDBDataset(ann_file='GroundTruth.txt', data_root=str(root),
                         data_prefix=dict(img='images/'), pipeline=PIPELINE, **kwargs)


def test_cctsdb_unreadable_image_while_loading(cctsdb_root):
    empty = str(cctsdb_root / 'images' / '00002.png')
    with pytest.raises(ImageDecodeError) as info:
        _cctsdb(cctsdb_root)
    message = str(info.value)
    assert empty in message and 'GroundTruth.txt:3' in message and 'is empty (0 bytes)' in message
    assert "bad_sample='skip'" in message
    with pytest.raises(ImageDecodeError, match='applies in training only'):
        _cctsdb(cctsdb_root, bad_sample='skip', test_mode=True)

    with pytest.warns(BadSampleWarning, match='00002.png') as record:
        dataset = _cctsdb(cctsdb_root, bad_sample='skip')
    assert len(record) == 1
    assert len(dataset) == 3 and dataset.skipped_files == [empty]  # left out of the data list
    np.random.seed(0)
    with pytest.warns(BadSampleWarning, match='00003.png'):
        names = [Path(dataset[k % 3]['data_samples'].img_path).name for k in range(12)]
    assert set(names) == {'00000.png', '00001.png'}
    assert [Path(p).name for p in dataset.skipped_files] == ['00002.png', '00003.png']
