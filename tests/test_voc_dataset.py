"""VOCDataset / FaceMaskDataset: parsing, the 1-based box convention, difficult objects, dropped
and malformed objects, split files; CocoMetric with ``ann_file=None`` against pycocotools."""
from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkit.datasets import FACEMASK_CLASSES, FaceMaskDataset, VOCDataset
from detkit.datasets.voc import VOCAnnotationError
from detkit.datasets.voc_xml import read_voc_xml
from detkit.evaluation import CocoMetric
from detkit.evaluation.coco_metric import coco_gt_from_results
from detkit.registry import DATASETS
from detkit.structures import Detections, DetSample

# stem -> (height, width) of the tiny images.
IMAGES = {'maksssksksss0': (60, 80), 'maksssksksss1': (50, 40), 'maksssksksss7': (30, 90)}


def _voc_xml(filename: str | None, size: tuple[int, int] | None, objects: list[dict]) -> str:
    """A VOC XML document; ``size`` is ``(width, height)``; an object dict has ``name``,
    ``box`` ``(xmin, ymin, xmax, ymax)`` (any values, written as given) and optionally
    ``difficult``."""
    parts = ['<annotation>\n  <folder>images</folder>\n']
    if filename is not None:
        parts.append(f'  <filename>{filename}</filename>\n')
    if size is not None:
        parts.append(f'  <size><width>{size[0]}</width><height>{size[1]}</height>'
                     '<depth>3</depth></size>\n')
    for obj in objects:
        parts.append(f"  <object>\n    <name>{obj['name']}</name>\n"
                     '    <pose>Unspecified</pose><truncated>0</truncated>\n')
        if 'difficult' in obj:
            parts.append(f"    <difficult>{obj['difficult']}</difficult>\n")
        fields = ''.join(f'<{k}>{v}</{k}>' for k, v in zip(('xmin', 'ymin', 'xmax', 'ymax'),
                                                            obj['box']))
        parts.append(f'    <bndbox>{fields}</bndbox>\n  </object>\n')
    return ''.join(parts) + '</annotation>\n'


@pytest.fixture
def root(tmp_path) -> Path:
    """A face-mask layout: images/*.png and annotations/*.xml for the three IMAGES."""
    (tmp_path / 'images').mkdir()
    (tmp_path / 'annotations').mkdir()
    for stem, (height, width) in IMAGES.items():
        rng = np.random.default_rng(height)
        img = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        assert cv2.imwrite(str(tmp_path / 'images' / f'{stem}.png'), img)
    write(tmp_path, 'maksssksksss0', _voc_xml('maksssksksss0.png', (80, 60), [
        dict(name='with_mask', box=(1, 2, 10, 20), difficult=0),
        dict(name='without_mask', box=(30.5, 11, 45.25, 30), difficult=0),
        dict(name='mask_weared_incorrect', box=(0, 50, 85, 60), difficult=1),
    ]))
    # No <size>: the size comes from the image; no <difficult>: 0.
    write(tmp_path, 'maksssksksss1', _voc_xml('maksssksksss1.png', None, [
        dict(name='without_mask', box=(5, 5, 40, 50))]))
    # A zero size, and only a difficult object.
    write(tmp_path, 'maksssksksss7', _voc_xml('maksssksksss7.png', (0, 0), [
        dict(name='with_mask', box=(3, 4, 13, 24), difficult=1)]))
    return tmp_path


def write(root: Path, stem: str, text: str) -> Path:
    path = root / 'annotations' / f'{stem}.xml'
    path.write_text(text)
    return path


def load(root: Path, **kwargs) -> FaceMaskDataset:
    kwargs.setdefault('test_mode', True)
    return FaceMaskDataset(data_root=str(root), **kwargs)


def infos(dataset) -> list[dict]:
    return [dataset.get_data_info(i) for i in range(len(dataset))]


# ------------------------------------------------------------------------------------ parsing
def test_boxes_follow_the_1_based_inclusive_convention_and_sizes(root):
    data = infos(load(root))
    assert [d['img_path'] for d in data] == [str(root / 'images' / f'{s}.png') for s in IMAGES]
    assert [d['img_id'] for d in data] == [0, 1, 7]
    # From <size>, from the image (no <size>), from the image (size 0).
    assert [(d['height'], d['width']) for d in data] == [(60, 80), (50, 40), (30, 90)]
    # xmin=1..xmax=10 covers pixel columns 0..9: x1 = xmin - 1 = 0, x2 = xmax = 10. Floats are
    # kept; (0, 50, 85, 60) starts at x1 = -1 and ends beyond the 80-px width: clipped.
    assert data[0]['instances'] == [
        dict(bbox=[0.0, 1.0, 10.0, 20.0], bbox_label=0, ignore_flag=0),
        dict(bbox=[29.5, 10.0, 45.25, 30.0], bbox_label=1, ignore_flag=0),
        dict(bbox=[0.0, 49.0, 80.0, 60.0], bbox_label=2, ignore_flag=1)]
    assert data[1]['instances'] == [dict(bbox=[4.0, 4.0, 40.0, 50.0], bbox_label=1,
                                         ignore_flag=0)]
    assert data[2]['instances'] == [dict(bbox=[2.0, 3.0, 13.0, 24.0], bbox_label=0,
                                         ignore_flag=1)]


def test_difficult_objects_are_ignore_regions_unless_use_difficult(root):
    # Through LoadAnnotations: the difficult box is in gt_ignore_bboxes, not in gt_bboxes.
    piped = load(root, pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                                 dict(type='PackDetInputs')])
    sample = piped[0]['data_samples']
    assert sample.gt_bboxes.tolist() == [[0.0, 1.0, 10.0, 20.0], [29.5, 10.0, 45.25, 30.0]]
    assert sample.gt_labels.tolist() == [0, 1]
    assert sample.gt_ignore_bboxes.tolist() == [[0.0, 49.0, 80.0, 60.0]]
    assert piped.get_cat_ids(0) == [0, 1]

    used = infos(load(root, use_difficult=True))
    assert [i['ignore_flag'] for d in used for i in d['instances']] == [0, 0, 0, 0, 0]
    # In training, filter_empty_gt drops the image whose only object is difficult.
    train = load(root, test_mode=False, filter_cfg=dict(filter_empty_gt=True))
    assert [d['img_id'] for d in infos(train)] == [0, 1]
    train_all = load(root, test_mode=False, use_difficult=True,
                     filter_cfg=dict(filter_empty_gt=True))
    assert len(train_all) == 3
    assert len(load(root, filter_cfg=dict(filter_empty_gt=True))) == 3  # test_mode keeps all
    assert len(load(root, test_mode=False, filter_cfg=dict(min_size=40))) == 2


def test_registered_and_generic_voc_classes(root):
    dataset = DATASETS.build(dict(type='FaceMaskDataset', data_root=str(root), test_mode=True))
    assert dataset.metainfo['classes'] == FACEMASK_CLASSES
    generic = DATASETS.build(dict(type='VOCDataset', data_root=str(root), test_mode=True,
                                  metainfo=dict(classes=FACEMASK_CLASSES)))
    assert infos(generic) == infos(dataset)
    # VOCDataset's default classes are Pascal VOC's: every face is an unknown class.
    with pytest.warns(UserWarning, match=r'dropped 5 of 5 objects.*5 with class not in'):
        pascal = VOCDataset(data_root=str(root), test_mode=True)
    assert len(pascal.metainfo['classes']) == 20
    assert all(d['instances'] == [] for d in infos(pascal))


def test_image_ids_fall_back_to_positions(root):
    (root / 'images' / 'maksssksksss0.png').rename(root / 'images' / 'face_a.png')
    (root / 'annotations' / 'maksssksksss0.xml').rename(root / 'annotations' / 'face_a.xml')
    data = infos(load(root))
    # 'face_a' ends in no number: every image gets its position + 1 (sorted stems).
    assert [Path(d['img_path']).stem for d in data] == ['face_a', 'maksssksksss1',
                                                        'maksssksksss7']
    assert [d['img_id'] for d in data] == [1, 2, 3]


# ------------------------------------------------------------------------------------ splits
def test_split_files_and_stems_select_and_order_images(root):
    (root / 'train.txt').write_text('# faces for training\nmaksssksksss7\n\nmaksssksksss0.xml\n')
    (root / 'val.txt').write_text('maksssksksss1\n')
    train = load(root, ann_file='train.txt')
    assert [d['img_id'] for d in infos(train)] == [7, 0]
    assert [d['img_id'] for d in infos(load(root, ann_file='val.txt'))] == [1]
    assert [d['img_id'] for d in infos(load(root, stems=['maksssksksss1', 'maksssksksss7']))] \
        == [1, 7]
    # Without a split: every XML, sorted.
    assert [d['img_id'] for d in infos(load(root, ann_file=None))] == [0, 1, 7]
    assert [d['img_id'] for d in infos(load(root, ann_file=''))] == [0, 1, 7]


def test_split_file_errors_name_the_file_and_the_stem(root):
    with pytest.raises(FileNotFoundError, match=r'split file .*nowhere\.txt'):
        load(root, ann_file='nowhere.txt')
    (root / 'bad.txt').write_text('maksssksksss0\nmaksssksksss9\n')
    with pytest.raises(FileNotFoundError, match=r'1 stems of .*bad\.txt.*maksssksksss9\.xml'):
        load(root, ann_file='bad.txt')
    (root / 'twice.txt').write_text('maksssksksss0\nmaksssksksss0\n')
    with pytest.raises(ValueError, match=r"twice\.txt lists \['maksssksksss0'\] more than"):
        load(root, ann_file='twice.txt')
    (root / 'empty.txt').write_text('\n# nothing\n')
    with pytest.raises(ValueError, match='lists no image stem'):
        load(root, ann_file='empty.txt')
    with pytest.raises(ValueError, match='not both'):
        load(root, ann_file='twice.txt', stems=['maksssksksss0'])
    with pytest.raises(FileNotFoundError, match=r'annotation folder .*nothing.*make_synthetic'):
        FaceMaskDataset(data_root=str(root / 'nothing'))


# ------------------------------------------------------------------ dropped and malformed
def test_unknown_classes_are_dropped_counted_and_named(root):
    write(root, 'maksssksksss1', _voc_xml('maksssksksss1.png', (40, 50), [
        dict(name='without_mask', box=(5, 5, 40, 50)), dict(name='helmet', box=(1, 1, 5, 5)),
        dict(name='helmet', box=(2, 2, 6, 6)), dict(name='with_mask', box=(50, 60, 70, 80))]))
    with pytest.warns(UserWarning) as record:
        data = infos(load(root))
    assert len(record) == 1
    message = str(record[0].message)
    # 4 + 1 + 1 objects in 3 files; 2 unknown classes, 1 box outside its 40 x 50 image.
    assert 'dropped 3 of 8 objects in 3 XML files' in message
    assert "2 with class not in metainfo['classes']" in message
    assert "maksssksksss1.xml:10: object 1: class 'helmet'" in message
    assert '1 with box entirely outside the image' in message
    assert data[1]['instances'] == [dict(bbox=[4.0, 4.0, 40.0, 50.0], bbox_label=1,
                                         ignore_flag=0)]
    with pytest.raises(VOCAnnotationError,
                       match=r"maksssksksss1\.xml:10: object 1: class 'helmet' is not one of"):
        load(root, strict_classes=True)


@pytest.mark.parametrize('text, expected', [
    ('<annotation><object><name>with_mask</name></annotation>',
     r'maksssksksss1\.xml:1: not a well-formed XML file: mismatched tag \(column \d+\)'),
    ('<annotations></annotations>', r'maksssksksss1\.xml:1: the root element must be '
                                    r'<annotation>.*<annotations>'),
    (_voc_xml('maksssksksss1.png', (40, 50), [dict(name='with_mask', box=(1, 1, 5, 5)),
                                               dict(name='with_mask', box=(1, 1, 5, ''))]),
     r"maksssksksss1\.xml:10: object 1 \('with_mask'\): <bndbox> has no <ymax>"),
    (_voc_xml('maksssksksss1.png', (40, 50), [dict(name='with_mask', box=(1, 'one', 5, 5))]),
     r"maksssksksss1\.xml:5: object 0 \('with_mask'\): <ymin> is 'one', not a number"),
    (_voc_xml('maksssksksss1.png', (40, 50), [dict(name='with_mask', box=(9, 1, 5, 5))]),
     r"object 0 \('with_mask'\): empty box \(xmin, ymin, xmax, ymax\) = \(9.0, 1.0, 5.0, 5.0\)"),
    (_voc_xml('maksssksksss1.png', (40, 50), [dict(name='with_mask', box=(1, 1, 'nan', 5))]),
     r"<xmax> is 'nan', not a finite number"),
    (_voc_xml('maksssksksss1.png', (40, 50), [dict(name='', box=(1, 1, 5, 5))]),
     r'maksssksksss1\.xml:5: object 0: <object> has no <name>'),
    (_voc_xml('maksssksksss1.png', ('wide', 50), []),
     r"maksssksksss1\.xml:4: <size><width> is 'wide'"),
])
def test_malformed_xml_raises_naming_file_object_and_field(root, text, expected):
    write(root, 'maksssksksss1', text)
    with pytest.raises(VOCAnnotationError, match=expected):
        load(root)


def _line_of(text: str, needle: str, occurrence: int = 0) -> int:
    """The 1-based line of the ``occurrence``-th line of ``text`` that contains ``needle``."""
    return [n for n, line in enumerate(text.splitlines(), 1) if needle in line][occurrence]


def test_errors_deep_in_a_file_name_file_and_line(root):
    # A bad box value in the third object: the message names the line that object starts on.
    objects = [dict(name='with_mask', box=(1, 1, 5, 5), difficult=0),
               dict(name='without_mask', box=(2, 2, 6, 6)),
               dict(name='with_mask', box=(3, 3, 'abc', 7), difficult=1)]
    text = _voc_xml('maksssksksss1.png', (40, 50), objects)
    path = write(root, 'maksssksksss1', text)
    line = _line_of(text, '<object>', 2)
    assert line == 16
    with pytest.raises(VOCAnnotationError) as info:
        load(root)
    assert str(info.value) == (f"FaceMaskDataset: {path}:{line}: object 2 ('with_mask'): "
                               "<xmax> is 'abc', not a number")
    # A file that is not well-formed on line 14 (object 1's <bndbox>): expat's line and the
    # 1-based column of the name in the wrong end tag.
    broken = text.replace('<ymin>2</ymin>', '<ymin>2</ymax>')
    assert _line_of(broken, '</ymax><xmax>6') == 14
    assert broken.splitlines()[13].index('ymax>') + 1 == 36
    write(root, 'maksssksksss1', broken)
    with pytest.raises(VOCAnnotationError) as info:
        load(root)
    assert str(info.value) == (f'FaceMaskDataset: {path}:14: not a well-formed XML file: '
                               'mismatched tag (column 36)')


def test_read_voc_xml_tree_text_and_lines(tmp_path):
    path = tmp_path / 'a.xml'
    path.write_text('<?xml version="1.0"?>\n<annotation>\n  <filename>a.png</filename>\n'
                    '  <segmented/>\n  <object><name>with_mask</name>\n'
                    '    <bndbox><xmin>1</xmin></bndbox></object>\n'
                    '  <object>\n    <name> without_mask </name>\n  </object>\n</annotation>\n')
    root = read_voc_xml(str(path))
    assert (root.tag, root.line) == ('annotation', 2)
    assert [(c.tag, c.line) for c in root.children] == [
        ('filename', 3), ('segmented', 4), ('object', 5), ('object', 7)]
    assert root.child_text('filename') == 'a.png'
    assert root.child_text('segmented') == ''  # present but empty
    assert root.child_text('size') is None and root.child('size') is None  # absent
    first, second = root.children_named('object')
    assert first.child_text('name') == 'with_mask' and second.child_text('name') == \
        ' without_mask '
    bndbox = first.child('bndbox')
    assert bndbox is not None and (bndbox.line, bndbox.child_text('xmin')) == (6, '1')

    path.write_text('<annotation>\n  <object>\n    <name>a</nam>\n')
    with pytest.raises(VOCAnnotationError, match=rf'^{re.escape(str(path))}:3: not a well-formed '
                                                 r'XML file: mismatched tag \(column 14\)$'):
        read_voc_xml(str(path))
    path.write_text('\n\n<dataset/>\n')
    with pytest.raises(VOCAnnotationError, match=r':3: the root element must be <annotation> '
                                                 r'\(Pascal VOC\), got <dataset>$'):
        read_voc_xml(str(path))


def test_on_error_warn_drops_malformed_objects_and_files(root):
    write(root, 'maksssksksss1', _voc_xml('maksssksksss1.png', (40, 50), [
        dict(name='with_mask', box=(1, 1, 5, 'x')), dict(name='without_mask', box=(2, 3, 6, 9))]))
    write(root, 'maksssksksss7', '<annotation><object>')
    with pytest.warns(UserWarning) as record:
        data = infos(load(root, on_error='warn'))
    message = str(record[0].message)
    assert 'dropped 1 of 5 objects and skipped 1 of 3 XML files' in message
    assert "1 with a malformed object (on_error='warn') (e.g. " in message
    assert "maksssksksss1.xml:5: object 0 ('with_mask'): <ymax> is 'x'" in message
    assert '1 with an XML file that is not well-formed or has a bad <size>' in message
    assert 'maksssksksss7.xml:1:' in message
    assert [d['img_id'] for d in data] == [0, 1]
    assert data[1]['instances'] == [dict(bbox=[1.0, 2.0, 6.0, 9.0], bbox_label=1,
                                         ignore_flag=0)]


def test_on_error_warn_skips_a_file_with_a_bad_size(root):
    write(root, 'maksssksksss1', _voc_xml('maksssksksss1.png', (40.5, 50), []))
    with pytest.warns(UserWarning, match=r"skipped 1 of 3 XML files.*<size><width> is '40\.5'"):
        data = infos(load(root, on_error='warn'))
    assert [d['img_id'] for d in data] == [0, 7]


def test_missing_image_raises_naming_the_xml_and_the_image(root):
    (root / 'images' / 'maksssksksss1.png').unlink()
    with pytest.raises(FileNotFoundError,
                       match=r"maksssksksss1\.xml:3: image 'maksssksksss1\.png' is not in "
                             r'the image folder'):
        load(root)


def test_image_found_by_stem_when_filename_is_stale(root):
    write(root, 'maksssksksss1', _voc_xml('renamed.jpg', (40, 50), [
        dict(name='with_mask', box=(1, 1, 5, 5))]))
    assert infos(load(root))[1]['img_path'] == str(root / 'images' / 'maksssksksss1.png')


def test_unreadable_image_is_skipped_in_training_or_named(root):
    (root / 'images' / 'maksssksksss0.png').write_bytes(b'not a png')  # the XML has its size
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                dict(type='PackDetInputs')]
    skipping = load(root, test_mode=False, pipeline=pipeline, bad_sample='skip')
    np.random.seed(0)
    with pytest.warns(UserWarning, match='maksssksksss0.png'):
        names = {Path(skipping[i % 3]['data_samples'].img_path).name for i in range(9)}
    assert names == {'maksssksksss1.png', 'maksssksksss7.png'}
    assert [Path(p).name for p in skipping.skipped_files] == ['maksssksksss0.png']
    failing = load(root, test_mode=False, pipeline=pipeline)
    with pytest.raises(ValueError, match=r"maksssksksss0.png.*bad_sample='skip'"):
        failing[0]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="on_error='ignore'"):
        FaceMaskDataset(on_error='ignore', lazy_init=True)
    with pytest.raises(KeyError, match=r"\['imgs'\]"):
        FaceMaskDataset(data_prefix=dict(imgs='x/'), lazy_init=True)
    with pytest.raises(ValueError, match=r"unknown filter_cfg keys \['min_area'\]"):
        FaceMaskDataset(filter_cfg=dict(min_area=3), lazy_init=True)
    with pytest.raises(TypeError, match='list of file stems'):
        FaceMaskDataset(stems='maksssksksss0', lazy_init=True)


# ---------------------------------------------------- CocoMetric without a COCO JSON file
CLASSES = ('with_mask', 'without_mask', 'mask_weared_incorrect')
# Per image: (height, width), gt boxes xyxy with labels, ignore boxes (VOC difficult).
GT = {
    4: ((300, 400), [((10, 10, 60, 70), 0), ((100, 40, 130, 80), 1), ((200, 150, 300, 290), 2)],
        [(350, 10, 372, 36)]),
    9: ((240, 320), [((20, 30, 44, 58), 1), ((150, 100, 240, 200), 0)], []),
    12: ((200, 200), [((50, 50, 110, 120), 2), ((5, 150, 25, 175), 0)], [(120, 10, 140, 40)]),
}
# (image, label, xyxy, score): hits, loose boxes, wrong classes, a duplicate, a miss (image 9's
# small face), detections on the two ignore regions (one of the right size and class, one of
# another class), a false positive.
DETS = [
    (4, 0, (12, 8, 61, 72), 0.9), (4, 1, (98, 42, 133, 79), 0.8),
    (4, 2, (190, 140, 290, 280), 0.7),
    (4, 0, (11, 12, 58, 66), 0.3), (4, 1, (349, 11, 371, 37), 0.6),
    (9, 0, (148, 104, 236, 198), 0.85), (9, 2, (20, 30, 44, 58), 0.5),
    (12, 2, (52, 47, 108, 122), 0.75), (12, 0, (6, 148, 27, 177), 0.4),
    (12, 1, (121, 12, 139, 41), 0.95), (12, 0, (160, 160, 190, 190), 0.55),
]


def _samples(dets=DETS, gt=GT, drop_ignored=False) -> list[DetSample]:
    samples = []
    for img_id, (shape, boxes, ignored) in gt.items():
        mine = [d for d in dets if d[0] == img_id]
        samples.append(DetSample(
            img_id=img_id, ori_shape=shape, img_shape=shape,
            gt_bboxes=torch.tensor([b for b, _ in boxes], dtype=torch.float32).reshape(-1, 4),
            gt_labels=torch.tensor([label for _, label in boxes], dtype=torch.int64),
            gt_ignore_bboxes=torch.tensor([] if drop_ignored else ignored,
                                          dtype=torch.float32).reshape(-1, 4),
            pred=Detections(bboxes=torch.tensor([d[2] for d in mine],
                                                dtype=torch.float32).reshape(-1, 4),
                            scores=torch.tensor([d[3] for d in mine], dtype=torch.float32),
                            labels=torch.tensor([d[1] for d in mine], dtype=torch.int64))))
    return samples


def _metric(samples, **kwargs) -> dict:
    metric = CocoMetric(ann_file=None, **kwargs)
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, samples[:1])
    metric.process({}, samples[1:])
    return metric.compute_metrics(metric.results)


def _hand_written_gt(tmp_path) -> str:
    """The COCO file a person would write for GT: ids 1..3, each ignore box a crowd region of
    every category."""
    images, annotations = [], []
    for img_id, ((h, w), boxes, ignored) in GT.items():
        images.append(dict(id=img_id, file_name=f'{img_id}.png', height=h, width=w))
        for (x1, y1, x2, y2), label in boxes:
            annotations.append(dict(image_id=img_id, category_id=label + 1,
                                    bbox=[x1, y1, x2 - x1, y2 - y1],
                                    area=(x2 - x1) * (y2 - y1), iscrowd=0))
        for x1, y1, x2, y2 in ignored:
            for category_id in (1, 2, 3):
                annotations.append(dict(image_id=img_id, category_id=category_id,
                                        bbox=[x1, y1, x2 - x1, y2 - y1],
                                        area=(x2 - x1) * (y2 - y1), iscrowd=1))
    for k, ann in enumerate(annotations):
        ann['id'] = 100 + k
    path = tmp_path / 'gt.json'
    path.write_text(json.dumps(dict(images=images, annotations=annotations, categories=[
        dict(id=k + 1, name=n) for k, n in enumerate(CLASSES)])))
    return str(path)


def _pycocotools(gt_file: str, dets=DETS) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_file)
        dt = gt.loadRes([dict(image_id=i, category_id=label + 1, bbox=[x1, y1, x2 - x1, y2 - y1],
                              score=s) for i, label, (x1, y1, x2, y2), s in dets])
        coco_eval = COCOeval(gt, dt, iouType='bbox')
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


BBOX_KEYS = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l')


def test_metric_without_ann_file_equals_pycocotools_on_hand_written_gt(tmp_path):
    metrics = _metric(_samples())
    stats = _pycocotools(_hand_written_gt(tmp_path))
    assert [metrics[k] for k in BBOX_KEYS] == [round(float(s), 3) for s in stats[:6]]
    assert 0.4 < metrics['bbox_mAP'] < 0.9  # misses, loose boxes and errors all cost AP
    assert metrics['bbox_mAP_50'] > metrics['bbox_mAP_75']


def test_detections_on_difficult_objects_neither_help_nor_hurt():
    with_ignored = _metric(_samples(), classwise=True)
    # The same without the ignore regions and without the two detections on them.
    on_ignored = [(4, 1, (349, 11, 371, 37), 0.6), (12, 1, (121, 12, 139, 41), 0.95)]
    rest = [d for d in DETS if d not in on_ignored]
    assert len(rest) == len(DETS) - 2
    without = _metric(_samples(dets=rest, drop_ignored=True), classwise=True)
    assert with_ignored == without
    # Kept as ordinary boxes with no ignore region, the two detections are false positives.
    assert _metric(_samples(drop_ignored=True))['bbox_mAP'] < with_ignored['bbox_mAP']


def test_gt_from_results_layout_and_errors():
    metric = CocoMetric(ann_file=None)
    metric.process({}, _samples()[2:])
    gt = coco_gt_from_results(metric.results, CLASSES)
    assert gt['images'] == [dict(id=12, height=200, width=200)]
    assert [(a['category_id'], a['bbox'], a['area'], a['iscrowd']) for a in gt['annotations']] \
        == [(3, [50.0, 50.0, 60.0, 70.0], 4200.0, 0), (1, [5.0, 150.0, 20.0, 25.0], 500.0, 0),
            (1, [120.0, 10.0, 20.0, 30.0], 600.0, 1), (2, [120.0, 10.0, 20.0, 30.0], 600.0, 1),
            (3, [120.0, 10.0, 20.0, 30.0], 600.0, 1)]
    assert gt['categories'] == [dict(id=1, name='with_mask'), dict(id=2, name='without_mask'),
                                dict(id=3, name='mask_weared_incorrect')]
    with pytest.raises(ValueError, match=r"needs dataset_meta\['classes'\]"):
        metric.compute_metrics(metric.results)
    # Ground truth of the resized image (LoadAnnotations before an enlarging Resize).
    grown = _samples()[2:]
    grown[0].gt_bboxes = grown[0].gt_bboxes * 2
    with pytest.raises(ValueError, match=r'image 12: gt_bboxes reach beyond .* 200 x 200.*'
                                         r'LoadAnnotations after Resize'):
        _metric(grown)
    bad = _samples()[2:]
    bad[0].gt_labels = torch.tensor([2, 3])
    with pytest.raises(ValueError, match=r'image 12 has gt label 3; labels must lie in 0\.\.2'):
        _metric(bad)
    with_file = [dict(img_id=1, ori_shape=(5, 5), bboxes=np.zeros((0, 4)))]
    with pytest.raises(ValueError, match='carries no ground truth'):
        coco_gt_from_results(with_file, CLASSES)


def test_dataset_pipeline_to_metric_with_resize_gives_map_one(root):
    # The test pipeline of the face-mask config: annotations loaded after Resize, so the
    # ground truth stays in original-image pixels while the image is doubled.
    dataset = load(root, pipeline=[dict(type='LoadImageFromFile'),
                                   dict(type='Resize', scale=(160, 160), keep_ratio=True),
                                   dict(type='LoadAnnotations'), dict(type='PackDetInputs')])
    samples = [dataset[i]['data_samples'] for i in range(len(dataset))]
    assert samples[0].img_shape == (120, 160) and samples[0].ori_shape == (60, 80)
    for sample in samples:  # perfect detections
        sample.pred = Detections(sample.gt_bboxes.clone(), torch.ones(len(sample.gt_labels)),
                                 sample.gt_labels.clone())
    metric = CocoMetric(ann_file=None)
    metric.dataset_meta = dataset.metainfo
    metric.process({}, samples)
    metrics = metric.compute_metrics(metric.results)
    # Image 7 has only a difficult face, which is not a miss.
    assert metrics['bbox_mAP'] == 1.0 and metrics['bbox_mAP_50'] == 1.0
