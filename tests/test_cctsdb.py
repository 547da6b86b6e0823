"""CCTSDB: the 2017 text and 2021 VOC XML formats, malformed input, image sizes, the converter."""
from __future__ import annotations

import importlib.util
import json
import struct
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detkit.datasets import CCTSDB_CLASSES, CCTSDBDataset, CocoDataset, load_cctsdb
from detkit.datasets.base_det_dataset import image_size
from detkit.datasets.transforms import ImageDecodeError, decode_image

REPO = Path(__file__).resolve().parents[1]

# (name, height, width) of the tiny images; sizes differ so that each must be read from its file.
IMAGES = (('00000.png', 40, 60), ('00001.png', 50, 30), ('00007.png', 24, 80))


def _write_image(path: Path, height: int, width: int) -> None:
    rng = np.random.default_rng(height * 1000 + width)
    ok = cv2.imwrite(str(path), rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))
    assert ok


@pytest.fixture
def images(tmp_path) -> Path:
    img_dir = tmp_path / 'images'
    img_dir.mkdir()
    for name, height, width in IMAGES:
        _write_image(img_dir / name, height, width)
    return img_dir


def _voc(filename: str, objects: list[tuple[str, tuple, int]]) -> str:
    parts = [f'<annotation>\n  <folder>CCTSDB</folder>\n  <filename>{filename}</filename>\n'
             '  <size><width>1</width><height>1</height><depth>3</depth></size>\n']
    for name, (x1, y1, x2, y2), difficult in objects:
        parts.append(f'  <object>\n    <name>{name}</name>\n'
                     f'    <difficult>{difficult}</difficult>\n    <bndbox>\n'
                     f'      <xmin>{x1}</xmin>\n      <ymin>{y1}</ymin>\n'
                     f'      <xmax>{x2}</xmax>\n      <ymax>{y2}</ymax>\n    </bndbox>\n'
                     '  </object>\n')
    return ''.join(parts) + '</annotation>\n'


# -------------------------------------------------------------------------------- 2017 text
def test_ground_truth_txt_boxes_labels_and_sizes_from_the_images(images, tmp_path):
    gt = tmp_path / 'GroundTruth.txt'
    # A BOM, CRLF line ends, a blank line and an image mentioned on two separate lines.
    gt.write_bytes('\ufeff00001.png;2;3;20;30;prohibitory\r\n00000.png;5;6;15;16;warning\r\n\r\n'
                   '00001.png;1.5;2;9;12.25;mandatory\r\n00007.png;70;4;90;20;Warning\r\n'
                   .encode('utf-8'))
    data = load_cctsdb(str(gt), str(images))
    assert [d['img_path'] for d in data] == [str(images / n) for n in
                                            ('00001.png', '00000.png', '00007.png')]
    assert [d['img_id'] for d in data] == [1, 0, 7]
    assert [(d['height'], d['width']) for d in data] == [(50, 30), (40, 60), (24, 80)]
    assert data[0]['instances'] == [
        dict(bbox=[2.0, 3.0, 20.0, 30.0], bbox_label=1, ignore_flag=0),
        dict(bbox=[1.5, 2.0, 9.0, 12.25], bbox_label=2, ignore_flag=0)]
    assert data[1]['instances'] == [dict(bbox=[5.0, 6.0, 15.0, 16.0], bbox_label=0,
                                         ignore_flag=0)]
    # x2 = 90 lies beyond the 80-pixel-wide image: clipped to it.
    assert data[2]['instances'] == [dict(bbox=[70.0, 4.0, 80.0, 20.0], bbox_label=0,
                                         ignore_flag=0)]


def test_non_numeric_stems_get_sequential_ids(tmp_path):
    img_dir = tmp_path / 'img'
    img_dir.mkdir()
    for name in ('b.png', 'a.png'):
        _write_image(img_dir / name, 16, 16)
    gt = tmp_path / 'gt.txt'
    gt.write_text('b.png;1;1;5;5;warning\na.png;1;1;5;5;warning\n')
    assert [d['img_id'] for d in load_cctsdb(str(gt), str(img_dir))] == [1, 2]


@pytest.mark.parametrize('line, message', [
    ('00000.png;5;6;15;16', 'expected 6 fields'),
    ('00000.png;5;6;15;16;warning;extra', 'got 7'),
    ('00000.png;5;six;15;16;warning', "y1='six' is not a number"),
    ('00000.png;5;6;15;nan;warning', "y2='nan' is not a finite number"),
    ('00000.png;15;6;5;16;warning', 'empty box'),
    ('00000.png;5;6;5;16;warning', 'empty box (x1, y1, x2, y2) = (5.0, 6.0, 5.0, 16.0)'),
    ('00000.png;5;6;inf;16;warning', "x2='inf' is not a finite number"),
    ('00000.png;500;600;700;800;warning', 'lies outside its image'),
    ('00000.png;-30;-20;-10;-5;warning', 'box (-30.0, -20.0, -10.0, -5.0) lies outside its image '
                                         '00000.png of width x height = 60 x 40'),
    (';5;6;15;16;warning', 'empty image name'),
    ('00000.png;5;6;15;16;stop', "unknown class 'stop'; the CCTSDB classes are ['warning', "
                                 "'prohibitory', 'mandatory']"),
])
def test_malformed_txt_line_names_file_and_line(images, tmp_path, line, message):
    gt = tmp_path / 'GroundTruth.txt'
    gt.write_text(f'00000.png;5;6;15;16;warning\n\n{line}\n00001.png;2;3;20;30;warning\n')
    with pytest.raises(ValueError) as info:
        load_cctsdb(str(gt), str(images))
    assert f'{gt}:3: ' in str(info.value)
    assert message in str(info.value)


def test_partly_outside_boxes_are_clipped_and_repeated_boxes_dropped(images, tmp_path):
    gt = tmp_path / 'GroundTruth.txt'
    gt.write_text('00000.png;-5;-6;15;16;warning\n00000.png;5;6;15;16;warning\n'
                  '00000.png;5;6;15;16;warning\n00000.png;5;6;15;16;mandatory\n'
                  '00000.png;5;6;15;16;warning\n')
    with pytest.warns(UserWarning) as record:
        data = load_cctsdb(str(gt), str(images))
    assert len(record) == 1
    assert str(record[0].message) == (
        f'CCTSDBDataset: dropped 2 repeated boxes of {gt} (the same box, class and difficulty '
        "listed twice for one image), e.g. 00000.png: box [5.0, 6.0, 15.0, 16.0] of class "
        "'warning'")
    assert data[0]['instances'] == [
        dict(bbox=[0.0, 0.0, 15.0, 16.0], bbox_label=0, ignore_flag=0),
        dict(bbox=[5.0, 6.0, 15.0, 16.0], bbox_label=0, ignore_flag=0),
        dict(bbox=[5.0, 6.0, 15.0, 16.0], bbox_label=2, ignore_flag=0)]


@pytest.mark.parametrize('content', ['', '\n \n'])
def test_empty_ground_truth_file_raises(images, tmp_path, content):
    gt = tmp_path / 'GroundTruth.txt'
    gt.write_text(content)
    with pytest.raises(ValueError, match=rf'CCTSDBDataset: {gt} is empty \(no '):
        load_cctsdb(str(gt), str(images))


def test_on_error_warn_skips_malformed_entries_with_one_warning(images, tmp_path):
    gt = tmp_path / 'GroundTruth.txt'
    gt.write_text('00000.png;5;6;15;16;warning\n00000.png;5;6;15\n00001.png;2;3;20;30;stop\n'
                  '00001.png;2;3;20;30;mandatory\n')
    with pytest.warns(UserWarning) as record:
        data = load_cctsdb(str(gt), str(images), on_error='warn')
    assert len(record) == 1
    assert 'skipped 2 malformed annotation entries' in str(record[0].message)
    assert f'{gt}:2: expected 6 fields' in str(record[0].message)
    assert [[i['bbox_label'] for i in d['instances']] for d in data] == [[0], [2]]


def test_missing_image_names_the_line_or_is_skipped_on_request(images, tmp_path):
    gt = tmp_path / 'GroundTruth.txt'
    gt.write_text('00000.png;5;6;15;16;warning\n00404.png;5;6;15;16;warning\n')
    with pytest.raises(FileNotFoundError, match=rf"{gt}:2: image '00404.png' is not in"):
        load_cctsdb(str(gt), str(images))
    data = load_cctsdb(str(gt), str(images), skip_missing_images=True)
    assert [d['img_id'] for d in data] == [0]
    with pytest.raises(ValueError, match='no image of'):
        load_cctsdb(str(gt), str(tmp_path / 'nowhere'), skip_missing_images=True)


# -------------------------------------------------------------------------------- 2021 XML
def test_voc_folder_with_the_mandatoty_typo_difficult_and_extension_fallback(images, tmp_path):
    xml_dir = tmp_path / 'xml'
    xml_dir.mkdir()
    _write_image(images / '00003.jpg', 32, 48)
    (xml_dir / '00000.xml').write_text(_voc('00000.png', [
        ('mandatoty', (5, 6, 15, 16), 0), (' Prohibitory ', (20.5, 1, 30, 11.5), 0),
        ('warning', (40, 10, 50, 20), 1)]))
    # <filename> says .png, the file is 00003.jpg: found by the XML's stem.
    (xml_dir / '00003.xml').write_text(_voc('00003.png', [('mandatory', (1, 2, 3, 4), 0)]))
    (xml_dir / '00001.xml').write_text(_voc('00001.png', []))  # an image without signs
    (xml_dir / 'notes.txt').write_text('not an annotation')
    data = load_cctsdb(str(xml_dir), str(images))
    assert [Path(d['img_path']).name for d in data] == ['00000.png', '00001.png', '00003.jpg']
    assert [d['img_id'] for d in data] == [0, 1, 3]
    assert [(d['height'], d['width']) for d in data] == [(40, 60), (50, 30), (32, 48)]
    assert data[0]['instances'] == [
        dict(bbox=[5.0, 6.0, 15.0, 16.0], bbox_label=2, ignore_flag=0),
        dict(bbox=[20.5, 1.0, 30.0, 11.5], bbox_label=1, ignore_flag=0),
        dict(bbox=[40.0, 10.0, 50.0, 20.0], bbox_label=0, ignore_flag=1)]
    assert data[1]['instances'] == []
    assert data[2]['instances'] == [dict(bbox=[1.0, 2.0, 3.0, 4.0], bbox_label=2,
                                         ignore_flag=0)]


@pytest.mark.parametrize('text, line, message', [
    (_voc('00000.png', [('warning', (5, 6, 15, 16), 0), ('mandatry', (1, 1, 9, 9), 0)]), 15,
     "unknown class 'mandatry'"),
    (_voc('00000.png', [('warning', (5, 6, 'x', 16), 0)]), 5, "x2='x' is not a number"),
    ('<annotation>\n  <filename>00000.png</filename>\n  <object>\n    <name>warning\n'
     '  </object>\n</annotation>\n', 5, 'not a well-formed XML file'),
    ('<annotation>\n  <filename>00000.png</filename>\n  <object>\n    <name>warning</name>\n'
     '  </object>\n</annotation>\n', 3, 'has no <bndbox>'),
    ('<annotation>\n  <filename>00000.png</filename>\n  <object>\n    <bndbox><xmin>1</xmin>'
     '<ymin>1</ymin><xmax>5</xmax></bndbox>\n    <name>warning</name>\n  </object>\n'
     '</annotation>\n', 3, 'has no <ymax>'),
    ('', 1, 'not a well-formed XML file: no element found'),
    ('<root/>\n', 1, 'the root element must be <annotation>'),
])
def test_malformed_xml_names_file_and_line(images, tmp_path, text, line, message):
    xml_dir = tmp_path / 'xml'
    xml_dir.mkdir()
    (xml_dir / '00000.xml').write_text(text)
    with pytest.raises(ValueError) as info:
        load_cctsdb(str(xml_dir), str(images))
    assert f"{xml_dir / '00000.xml'}:{line}: " in str(info.value)
    assert message in str(info.value)


def test_two_xml_files_for_one_image(images, tmp_path):
    xml_dir = tmp_path / 'xml'
    xml_dir.mkdir()
    (xml_dir / '00000.xml').write_text(_voc('00000.png', [('warning', (5, 6, 15, 16), 0)]))
    (xml_dir / 'copy.xml').write_text(_voc('00000.png', [('mandatory', (1, 2, 9, 9), 0)]))
    with pytest.raises(ValueError, match=rf"{xml_dir / 'copy.xml'}:1: image '00000.png' is "
                                         rf"already annotated by {xml_dir / '00000.xml'}:1"):
        load_cctsdb(str(xml_dir), str(images))
    with pytest.warns(UserWarning, match='skipped 1 malformed annotation entries'):
        data = load_cctsdb(str(xml_dir), str(images), on_error='warn')
    assert len(data) == 1 and data[0]['instances'][0]['bbox_label'] == 0


def test_unknown_class_error_lists_valid_names_and_aliases_extend(images, tmp_path):
    xml_dir = tmp_path / 'xml'
    xml_dir.mkdir()
    (xml_dir / '00000.xml').write_text(_voc('00000.png', [('warnning', (5, 6, 15, 16), 0)]))
    with pytest.raises(ValueError, match=r"the CCTSDB classes are \['warning', 'prohibitory', "
                                         r"'mandatory'\] \(accepted misspellings: "
                                         r"\['mandatoty'\]\)"):
        load_cctsdb(str(xml_dir), str(images))
    data = load_cctsdb(str(xml_dir), str(images), class_aliases={'Warnning': 'warning'})
    assert data[0]['instances'][0]['bbox_label'] == 0


# -------------------------------------------------------------------------------- image sizes
def _jpeg_with_orientation(img: np.ndarray, orientation: int, byte_order: str) -> bytes:
    ok, encoded = cv2.imencode('.jpg', img)
    assert ok
    fmt = '<' if byte_order == 'II' else '>'
    tiff = (byte_order.encode() + struct.pack(fmt + 'HI', 42, 8) + struct.pack(fmt + 'H', 1)
            + struct.pack(fmt + 'HHIHH', 0x0112, 3, 1, orientation, 0) + struct.pack(fmt + 'I', 0))
    payload = b'Exif\x00\x00' + tiff
    app1 = b'\xff\xe1' + struct.pack('>H', len(payload) + 2) + payload
    data = encoded.tobytes()
    return data[:2] + app1 + data[2:]


@pytest.mark.parametrize('suffix', ['.png', '.jpg', '.bmp'])
def test_image_size_equals_the_decoded_size(tmp_path, suffix):
    path = tmp_path / f'a{suffix}'
    _write_image(path, 37, 53)
    assert image_size(str(path)) == decode_image(str(path)).shape[:2] == (37, 53)


@pytest.mark.parametrize('orientation, expected', [(1, (37, 53)), (3, (37, 53)), (6, (53, 37)),
                                                   (8, (53, 37))])
@pytest.mark.parametrize('byte_order', ['II', 'MM'])
def test_jpeg_header_size_follows_exif_orientation(tmp_path, orientation, expected, byte_order):
    path = tmp_path / 'rotated.jpg'
    path.write_bytes(_jpeg_with_orientation(np.full((37, 53, 3), 90, np.uint8), orientation,
                                            byte_order))
    assert image_size(str(path)) == expected
    assert decode_image(str(path)).shape[:2] == expected


@pytest.mark.parametrize('orientation, expected', [(3, (20, 40)), (6, (40, 20)), (8, (40, 20))])
def test_png_with_exif_orientation_size_equals_the_decoded_size(tmp_path, orientation, expected):
    from PIL import Image
    image = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(tmp_path / 'rotated.png', exif=exif.tobytes())
    assert image_size(str(tmp_path / 'rotated.png')) == \
        decode_image(str(tmp_path / 'rotated.png')).shape[:2] == expected


@pytest.mark.parametrize('suffix', ['.webp', '.tiff'])
@pytest.mark.parametrize('orientation, expected', [(1, (20, 40)), (6, (40, 20)), (8, (40, 20))])
def test_other_formats_with_exif_orientation_size_equals_the_decoded_size(tmp_path, suffix,
                                                                           orientation,
                                                                           expected):
    from PIL import Image
    image = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f'rotated{suffix}'
    image.save(path, exif=exif.tobytes())
    assert image_size(str(path)) == decode_image(str(path)).shape[:2] == expected


def test_image_size_reads_the_header_only_and_names_a_file_that_is_no_image(tmp_path):
    ok, encoded = cv2.imencode('.png', np.zeros((30, 40, 3), np.uint8))
    assert ok
    cut = tmp_path / 'cut.png'
    cut.write_bytes(encoded.tobytes()[:60])  # the header and nothing of the pixels
    assert image_size(str(cut)) == (30, 40)
    with pytest.raises(ImageDecodeError, match='is a truncated PNG'):
        decode_image(str(cut))  # the pipeline, not the size, finds the file cut short
    text = tmp_path / 'notes.jpg'
    text.write_text('not an image')
    with pytest.raises(ImageDecodeError, match=r"notes\.jpg' \(12 bytes\) cannot be decoded"):
        image_size(str(text))
    (tmp_path / 'empty.png').write_bytes(b'')
    with pytest.raises(ImageDecodeError, match=r"empty\.png' is empty \(0 bytes\)"):
        image_size(str(tmp_path / 'empty.png'))
    with pytest.raises(FileNotFoundError):
        image_size(str(tmp_path / 'missing.png'))


# -------------------------------------------------------------------------------- data set
def test_dataset_runs_the_pipeline_with_sizes_matching_the_decoded_images(images, tmp_path):
    (tmp_path / 'GroundTruth.txt').write_text('00000.png;5;6;15;16;warning\n'
                                              '00001.png;2;3;20;30;mandatory\n')
    dataset = CCTSDBDataset(ann_file='GroundTruth.txt', data_root=str(tmp_path),
                            data_prefix=dict(img='images/'),
                            pipeline=[dict(type='LoadImageFromFile'),
                                      dict(type='LoadAnnotations'), dict(type='PackDetInputs')])
    assert dataset.metainfo['classes'] == CCTSDB_CLASSES
    assert len(dataset) == 2 and dataset.get_cat_ids(1) == [2]
    out = dataset[1]
    assert tuple(out['inputs'].shape) == (3, 50, 30)
    assert torch.equal(out['data_samples'].gt_bboxes, torch.tensor([[2.0, 3.0, 20.0, 30.0]]))
    assert out['data_samples'].gt_labels.tolist() == [2]
    assert out['data_samples'].img_id == 1


def test_dataset_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="on_error='ignore'"):
        CCTSDBDataset(ann_file='x.txt', on_error='ignore', lazy_init=True)
    with pytest.raises(ValueError, match=r"metainfo\['classes'\] must be"):
        CCTSDBDataset(ann_file='x.txt', metainfo=dict(classes=('warning',)), lazy_init=True)
    with pytest.raises(FileNotFoundError, match='GroundTruth.txt or the folder of 2021 VOC XML'):
        CCTSDBDataset(ann_file='missing.txt', data_root=str(tmp_path))


# -------------------------------------------------------------------------------- converter
def _load_tool():
    spec = importlib.util.spec_from_file_location(
        'cctsdb2coco', REPO / 'tools' / 'dataset_converters' / 'cctsdb2coco.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('layout', ['txt', 'xml'])
def test_converter_output_reads_back_with_coco_dataset(images, tmp_path, layout, capsys):
    if layout == 'txt':
        ann = tmp_path / 'GroundTruth.txt'
        ann.write_text('00001.png;2;3;20;30;prohibitory\n00000.png;5;6;15;16;warning\n'
                       '00001.png;1.5;2;9;12.25;mandatory\n')
    else:
        ann = tmp_path / 'xml'
        ann.mkdir()
        (ann / '00000.xml').write_text(_voc('00000.png', [('warning', (5, 6, 15, 16), 0),
                                                          ('mandatoty', (40, 10, 50, 20), 1)]))
        (ann / '00001.xml').write_text(_voc('00001.png', [('prohibitory', (2, 3, 20, 30), 0)]))
    out = tmp_path / 'annotations' / 'instances.json'
    _load_tool().main([str(ann), str(out), '--img-dir', str(images)])
    assert f'wrote {out}' in capsys.readouterr().out

    coco = json.loads(out.read_text())
    assert coco['categories'] == [
        dict(id=1, name='warning', supercategory='traffic sign'),
        dict(id=2, name='prohibitory', supercategory='traffic sign'),
        dict(id=3, name='mandatory', supercategory='traffic sign')]
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no annotation may be dropped
        from_coco = CocoDataset(ann_file=str(out), data_prefix=dict(img=str(images)),
                                metainfo=dict(classes=CCTSDB_CLASSES), test_mode=True)
    direct = CCTSDBDataset(ann_file=str(ann), data_prefix=dict(img=str(images)))
    assert len(from_coco) == len(direct) == 2
    for k in range(2):
        a, b = from_coco.get_data_info(k), direct.get_data_info(k)
        for key in ('img_path', 'img_id', 'height', 'width'):
            assert a[key] == b[key], key
        assert [(i['bbox_label'], i['ignore_flag']) for i in a['instances']] == \
            [(i['bbox_label'], i['ignore_flag']) for i in b['instances']]
        np.testing.assert_allclose([i['bbox'] for i in a['instances']],
                                   [i['bbox'] for i in b['instances']], atol=1e-6)
