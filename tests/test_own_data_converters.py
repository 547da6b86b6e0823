"""tools/dataset_converters/yolo2coco.py and labelme2coco.py: exact boxes, strict errors."""
from __future__ import annotations

import json
import os.path as osp
import re
import sys

import cv2
import numpy as np
import pytest

from detkit.datasets.converters import (
    LabelMeFormatError,
    YoloFormatError,
    label_file,
    labelme_to_coco,
    parse_label_line,
    read_data_yaml,
    split_to_coco,
)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools', 'dataset_converters'))
import labelme2coco  # noqa: E402
import yolo2coco  # noqa: E402


def write_image(path, height, width):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), 127, np.uint8))


@pytest.fixture
def yolo_set(tmp_path):
    """root/images/{train,val}, root/labels/{train,val}, data.yaml beside root."""
    root = tmp_path / 'set'
    write_image(root / 'images' / 'train' / 'a.jpg', 100, 200)
    write_image(root / 'images' / 'train' / 'sub' / 'b.png', 50, 40)
    write_image(root / 'images' / 'train' / 'c.jpg', 30, 30)   # no label file
    write_image(root / 'images' / 'val' / 'd.jpg', 80, 60)
    labels = root / 'labels'
    (labels / 'train' / 'sub').mkdir(parents=True)
    (labels / 'val').mkdir(parents=True)
    (labels / 'train' / 'a.txt').write_text('0 0.5 0.5 0.2 0.4\n\n1 0.1 0.2 0.3 0.2 0.2 0.6\n')
    (labels / 'train' / 'sub' / 'b.txt').write_text('1 0.05 0.5 0.2 0.2\n')   # past x = 0
    (labels / 'val' / 'd.txt').write_text('')
    (tmp_path / 'data.yaml').write_text(
        'path: set\ntrain: images/train\nval: images/val\nnames:\n  0: cat\n  1: dog\n')
    return tmp_path


def test_yolo_boxes_are_exact_float_pixels(yolo_set, capsys):
    converted = yolo2coco.main([str(yolo_set / 'data.yaml'), '--out-dir',
                                str(yolo_set / 'out')])
    train = json.loads((yolo_set / 'out' / 'instances_train.json').read_text())
    assert train == converted['train']
    assert train['categories'] == [dict(id=1, name='cat'), dict(id=2, name='dog')]
    assert [(i['file_name'], i['height'], i['width']) for i in train['images']] == [
        ('images/train/a.jpg', 100, 200), ('images/train/c.jpg', 30, 30),
        ('images/train/sub/b.png', 50, 40)]
    boxes = [(a['image_id'], a['category_id'], a['bbox'], a['area']) for a in train['annotations']]
    # a.jpg 200x100: cx .5 cy .5 w .2 h .4 -> x 80 y 30 w 40 h 40; the polygon's bounding box
    # x .1-.3, y .2-.6 -> 20..60 x 20..60; b.png 40x50: cx .05 w .2 -> x -2..6, clipped to 0..6
    assert boxes[0] == (1, 1, pytest.approx([80.0, 30.0, 40.0, 40.0]), pytest.approx(1600.0))
    assert boxes[1] == (1, 2, pytest.approx([20.0, 20.0, 40.0, 40.0]), pytest.approx(1600.0))
    assert boxes[2] == (3, 2, pytest.approx([0.0, 20.0, 6.0, 10.0]), pytest.approx(60.0))
    assert all(a['iscrowd'] == 0 for a in train['annotations'])
    val = json.loads((yolo_set / 'out' / 'instances_val.json').read_text())
    assert len(val['images']) == 1 and val['annotations'] == []   # empty label file: kept
    assert not (yolo_set / 'out' / 'instances_test.json').exists()
    assert '1 boxes reached past their image' in capsys.readouterr().out
    # detkit reads the result as it is
    from detkit.datasets import CocoDataset
    dataset = CocoDataset(ann_file=str(yolo_set / 'out' / 'instances_train.json'),
                          data_root=str(yolo_set / 'set'), data_prefix=dict(img=''),
                          metainfo=dict(classes=('cat', 'dog')), test_mode=True)
    info = dataset.get_data_info(0)
    assert info['img_path'] == str(yolo_set / 'set' / 'images' / 'train' / 'a.jpg')
    assert [i['bbox'] for i in info['instances']] == [pytest.approx([80, 30, 120, 70]),
                                                      pytest.approx([20, 20, 60, 60])]
    assert [i['bbox_label'] for i in info['instances']] == [0, 1]


@pytest.mark.parametrize('line,message', [
    ('0 0.5 0.5 0.2', 'got 3 numbers after the class'),
    ('x 0.5 0.5 0.2 0.2', "the class 'x' is not an integer"),
    ('2 0.5 0.5 0.2 0.2', r'class 2 is outside names \(0..1\)'),
    ('0 0.5 1.2 0.2 0.2', 'coordinate 1.2 is outside'),
    ('0 0.5 0.5 0.2 nan', "coordinate nan is outside"),
    ('1 0.1 0.2 0.3 0.2 0.2', 'got 5 numbers'),
])
def test_a_bad_yolo_line_names_file_line_and_text(yolo_set, line, message):
    label = yolo_set / 'set' / 'labels' / 'val' / 'd.txt'
    label.write_text('0 0.5 0.5 0.1 0.1\n' + line + '\n')
    with pytest.raises(SystemExit, match=rf'd\.txt:2: .*{message}.*: {re.escape(repr(line))}'):
        yolo2coco.main([str(yolo_set / 'data.yaml'), '--out-dir', str(yolo_set / 'out')])
    assert not (yolo_set / 'out').exists()   # nothing half-written
    # --skip-bad: a warning for the line, the good line kept
    converted = yolo2coco.main([str(yolo_set / 'data.yaml'), '--out-dir',
                                str(yolo_set / 'out'), '--skip-bad'])
    assert len(converted['val']['annotations']) == 1


def test_a_label_file_without_its_image_is_not_dropped_silently(yolo_set, capsys):
    labels = yolo_set / 'set' / 'labels'
    (labels / 'val' / 'gone.txt').write_text('0 0.5 0.5 0.2 0.2\n')
    (labels / 'val' / 'empty.txt').write_text('\n')       # no boxes, nothing to lose
    (labels / 'train' / 'classes.txt').write_text('cat\ndog\n')   # labelImg's names list
    with pytest.raises(SystemExit, match=r'gone\.txt: boxes without an image \(no .*gone\.\* '):
        yolo2coco.main([str(yolo_set / 'data.yaml'), '--out-dir', str(yolo_set / 'out')])
    assert not (yolo_set / 'out').exists()
    converted = yolo2coco.main([str(yolo_set / 'data.yaml'), '--out-dir',
                                str(yolo_set / 'out'), '--skip-bad'])
    assert 'gone.txt: boxes without an image' in capsys.readouterr().err
    assert len(converted['val']['images']) == 1 and len(converted['train']['annotations']) == 3


def test_outputs_that_cannot_be_written_stop_before_anything_is_written(yolo_set, labelme_set,
                                                                          tmp_path):
    out = yolo_set / 'out'
    (out / 'instances_val.json').mkdir(parents=True)     # val's file cannot be written
    with pytest.raises(SystemExit, match=r"instances_val\.json' is a folder; expected a file"):
        yolo2coco.main([str(yolo_set / 'data.yaml'), '--out-dir', str(out)])
    assert sorted(p.name for p in out.iterdir()) == ['instances_val.json']  # train's not written
    (tmp_path / 'afile').write_text('')
    with pytest.raises(SystemExit, match=r"afile/ann\.json': cannot create the folder"):
        labelme2coco.main([str(labelme_set), '--out', str(tmp_path / 'afile' / 'ann.json')])


def test_text_that_is_not_utf8_or_names_of_mixed_keys_are_named(yolo_set, labelme_set,
                                                                  tmp_path):
    data = yolo_set / 'data.yaml'
    label = yolo_set / 'set' / 'labels' / 'val' / 'd.txt'
    label.write_bytes(b'0 0.5 0.5 0.2 0.2 \xff\n')
    with pytest.raises(SystemExit, match=r'd\.txt: not UTF-8 text'):
        yolo2coco.main([str(data), '--out-dir', str(yolo_set / 'out')])
    label.write_text('')
    data.write_text('path: set\ntrain: images/train\nnames: {0: cat, x: dog}\n')
    with pytest.raises(SystemExit, match=r"names must map the indices 0\.\.1 to class names, "
                                         r"got the keys \[0, 'x'\]"):
        yolo2coco.main([str(data), '--out-dir', str(yolo_set / 'out')])
    data.write_bytes(b'path: set\ntrain: images/train\nnames: [caf\xe9]\n')
    with pytest.raises(SystemExit, match=r'data\.yaml: not valid YAML in UTF-8'):
        yolo2coco.main([str(data), '--out-dir', str(yolo_set / 'out')])
    classes = tmp_path / 'classes.txt'
    classes.write_bytes(b'cat\n\xff\n')
    with pytest.raises(SystemExit, match=r"--classes '.*classes\.txt' is not UTF-8 text"):
        labelme2coco.main([str(labelme_set), '--out', str(tmp_path / 'a.json'),
                           '--classes', str(classes)])
    assert not (yolo_set / 'out').exists() and not (tmp_path / 'a.json').exists()


def test_yolo_tolerance_and_names_forms(yolo_set):
    assert parse_label_line('0 1.0000005 0.5 0.1 0.1', 1)[0] == 0   # within 1e-6
    with pytest.raises(ValueError, match='outside'):
        parse_label_line('0 1.00001 0.5 0.1 0.1', 1)
    (yolo_set / 'list.yaml').write_text('path: set\ntrain: images/train\nnames: [cat, dog]\n')
    assert read_data_yaml(str(yolo_set / 'list.yaml')).names == ['cat', 'dog']
    (yolo_set / 'gap.yaml').write_text('path: set\ntrain: images/train\nnames: {0: a, 2: b}\n')
    with pytest.raises(YoloFormatError, match=r'indices 0..1 .* keys \[0, 2\]'):
        read_data_yaml(str(yolo_set / 'gap.yaml'))
    (yolo_set / 'missing.yaml').write_text('path: set\nval: images/nope\nnames: [a]\n')
    with pytest.raises(FileNotFoundError, match="val folder 'images/nope' does not exist"):
        read_data_yaml(str(yolo_set / 'missing.yaml'))
    assert label_file(osp.join('r', 'images', 'x', 'images', 'a.b.jpg')) == \
        osp.join('r', 'images', 'x', 'labels', 'a.b.txt')
    dataset = read_data_yaml(str(yolo_set / 'data.yaml'))
    assert split_to_coco(dataset, 'val')['images'][0]['file_name'] == 'images/val/d.jpg'


def labelme_file(folder, name, image, shapes, height=60, width=80, **extra):
    content = dict(version='5.4.1', imagePath=image, imageHeight=height, imageWidth=width,
                   shapes=shapes, imageData=None, **extra)
    (folder / name).write_text(json.dumps(content))


@pytest.fixture
def labelme_set(tmp_path):
    folder = tmp_path / 'lm'
    write_image(folder / 'one.jpg', 60, 80)
    write_image(folder / 'img' / 'two.png', 40, 30)
    labelme_file(folder, 'one.json', 'one.jpg', [
        dict(label='dog', points=[[50.5, 40.25], [10.0, 5.0]], shape_type='rectangle'),
        dict(label='cat', points=[[5, 5], [90, 20], [30, 70]], shape_type='polygon')])
    labelme_file(folder, 'two.json', 'img/two.png',
                 [dict(label='cat', points=[[1, 2], [3, 4], [2, 9]])], height=40, width=30)
    return folder


def test_labelme_rectangles_and_polygons_become_clipped_boxes(labelme_set, tmp_path):
    coco = labelme2coco.main([str(labelme_set), '--out', str(tmp_path / 'ann.json')])
    assert json.loads((tmp_path / 'ann.json').read_text()) == coco
    assert coco['categories'] == [dict(id=1, name='cat'), dict(id=2, name='dog')]
    assert [i['file_name'] for i in coco['images']] == ['one.jpg', 'img/two.png']
    boxes = [(a['image_id'], a['category_id'], a['bbox']) for a in coco['annotations']]
    assert boxes == [(1, 2, [10.0, 5.0, 40.5, 35.25]),    # corners in any order
                     (1, 1, [5.0, 5.0, 75.0, 55.0]),      # 90 -> 80 and 70 -> 60: clipped
                     (2, 1, [1.0, 2.0, 2.0, 7.0])]        # no shape_type: a polygon
    (tmp_path / 'classes.txt').write_text('dog\n\ncat\n')
    coco = labelme2coco.main([str(labelme_set), '--out', str(tmp_path / 'ann2.json'),
                              '--classes', str(tmp_path / 'classes.txt')])
    assert coco['categories'] == [dict(id=1, name='dog'), dict(id=2, name='cat')]
    assert [a['category_id'] for a in coco['annotations']] == [1, 2, 2]


def test_labelme_bad_input_is_named(labelme_set, tmp_path):
    labelme_file(labelme_set, 'three.json', 'gone.jpg', [])
    with pytest.raises(LabelMeFormatError, match=r"three.json: imagePath 'gone.jpg' names a "
                                                 'missing image'):
        labelme_to_coco(str(labelme_set))
    coco = labelme_to_coco(str(labelme_set), skip_bad=True)
    assert len(coco['images']) == 2
    (labelme_set / 'three.json').unlink()
    labelme_file(labelme_set, 'four.json', 'one.jpg',
                 [dict(label='dog', points=[[1, 1], [5, 5]], shape_type='circle')])
    with pytest.raises(SystemExit, match=r"four.json: shapes\[0\] \('dog'\): shape_type "
                                         r"'circle' is not one of"):
        labelme2coco.main([str(labelme_set), '--out', str(tmp_path / 'x.json')])
    assert not (tmp_path / 'x.json').exists()
    coco = labelme_to_coco(str(labelme_set), skip_bad=True)
    assert len(coco['images']) == 3 and len(coco['annotations']) == 3   # the circle skipped
    (labelme_set / 'four.json').unlink()
    (tmp_path / 'only_dog.txt').write_text('dog\n')
    with pytest.raises(SystemExit, match=r"one.json: label 'cat' is not in --classes \(dog\)"):
        labelme2coco.main([str(labelme_set), '--out', str(tmp_path / 'x.json'), '--classes',
                           str(tmp_path / 'only_dog.txt')])
    labelme_file(labelme_set, 'five.json', 'one.jpg', [], height=61)
    with pytest.raises(LabelMeFormatError, match='five.json: imageHeight x imageWidth 61x80 '
                                                 r'differ from the image .* \(60x80\)'):
        labelme_to_coco(str(labelme_set))
