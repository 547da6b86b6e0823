"""The synthetic face-mask generator: determinism, the VOC layout read back by FaceMaskDataset,
class counts, box and difficult rules, what distinguishes the classes, the CLI."""
from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from detkit.datasets import FACEMASK_CLASSES, FaceMaskDataset, make_facemask
from detkit.datasets.synthetic import (
    MAX_FACE_OVERLAP,
    _Face,
    _overlap_of_smaller,
    draw_facemask_image,
)

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(num_train=30, num_val=6, min_size=160, max_size=320)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob('*')) if p.is_file()}


def _objects(root: Path) -> list[tuple[str, dict]]:
    """``(stem, object dict)`` of every XML object, with the image size."""
    out = []
    for xml in sorted((root / 'annotations').glob('*.xml')):
        tree = ET.parse(xml).getroot()
        width, height = int(tree.findtext('size/width')), int(tree.findtext('size/height'))
        for obj in tree.iter('object'):
            box = [int(obj.findtext(f'bndbox/{k}')) for k in ('xmin', 'ymin', 'xmax', 'ymax')]
            out.append((xml.stem, dict(name=obj.findtext('name'), box=box, width=width,
                                       height=height, difficult=int(obj.findtext('difficult')),
                                       truncated=int(obj.findtext('truncated')))))
    return out


@pytest.fixture(scope='module')
def facemask_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('facemask')
    make_facemask(str(root), seed=0, **SMALL)
    return root


def test_same_seed_same_bytes_different_seed_differs(facemask_dir, tmp_path):
    again = tmp_path / 'again'
    split_files = make_facemask(str(again), seed=0, **SMALL)
    assert split_files == dict(train=str(again / 'train.txt'), val=str(again / 'val.txt'))
    first, second = _files(facemask_dir), _files(again)
    assert len(first) == 2 * (30 + 6) + 2
    assert first == second
    other_root = tmp_path / 'other'
    make_facemask(str(other_root), seed=1, **SMALL)
    other = _files(other_root)
    assert other.keys() == first.keys()
    assert all(other[k] != first[k] for k in first if k.endswith(('.png', '.xml')))
    # An image does not depend on how many others are made.
    fewer = tmp_path / 'fewer'
    make_facemask(str(fewer), num_train=3, num_val=1, min_size=160, max_size=320, seed=0)
    for name in ('images/train00002.png', 'annotations/train00002.xml', 'images/val00000.png'):
        assert (fewer / name).read_bytes() == first[name]


def test_layout_and_split_files(facemask_dir):
    assert (facemask_dir / 'train.txt').read_text().split() == [f'train{i:05d}'
                                                                for i in range(30)]
    assert (facemask_dir / 'val.txt').read_text().split() == [f'val{i:05d}' for i in range(6)]
    root = ET.parse(facemask_dir / 'annotations' / 'train00000.xml').getroot()
    assert root.tag == 'annotation'
    assert root.findtext('filename') == 'train00000.png'
    assert root.findtext('size/depth') == '3'
    assert [c.tag for c in root.find('object')] == ['name', 'pose', 'truncated', 'occluded',
                                                    'difficult', 'bndbox']


def test_class_counts_sizes_and_difficult_flags(facemask_dir):
    objects = [obj for _, obj in _objects(facemask_dir)]
    counts = Counter(obj['name'] for obj in objects)
    # Seed 0 (numpy's PCG64 streams are stable across releases).
    assert dict(counts) == {'with_mask': 45, 'without_mask': 46, 'mask_weared_incorrect': 30}
    assert set(counts) == set(FACEMASK_CLASSES)
    per_image = Counter(stem for stem, _ in _objects(facemask_dir))
    assert len(per_image) == 36 and max(per_image.values()) <= 6
    heights = [obj['box'][3] - obj['box'][1] + 1 for obj in objects if not obj['truncated']]
    assert 24 <= min(heights) and max(heights) <= 161
    assert sum(h < 48 for h in heights) > 10 and sum(h > 96 for h in heights) > 3
    difficult = [obj for obj in objects if obj['difficult']]
    assert 0 < len(difficult) <= 0.1 * len(objects)
    assert all(obj['box'][3] - obj['box'][1] + 1 <= 31 for obj in difficult)


def test_boxes_inside_images_and_overlap_limited(facemask_dir):
    by_image: dict[str, list] = {}
    for stem, obj in _objects(facemask_dir):
        xmin, ymin, xmax, ymax = obj['box']
        assert 1 <= xmin <= xmax <= obj['width'] and 1 <= ymin <= ymax <= obj['height']
        by_image.setdefault(stem, []).append(obj)
    for faces in by_image.values():
        for i, a in enumerate(faces):
            for b in faces[i + 1:]:
                box_a = (a['box'][0] - 1, a['box'][1] - 1, a['box'][2], a['box'][3])
                box_b = (b['box'][0] - 1, b['box'][1] - 1, b['box'][2], b['box'][3])
                # Pixel rounding and border clipping add a little to the drawn overlap.
                assert _overlap_of_smaller(box_a, box_b) <= MAX_FACE_OVERLAP + 0.1


def test_xml_reads_back_through_face_mask_dataset(facemask_dir):
    objects = _objects(facemask_dir)
    dataset = FaceMaskDataset(ann_file='train.txt', data_root=str(facemask_dir),
                              pipeline=[dict(type='LoadImageFromFile'),
                                        dict(type='LoadAnnotations'), dict(type='PackDetInputs')],
                              test_mode=True)
    assert len(dataset) == 30
    assert [dataset.get_data_info(i)['img_id'] for i in range(30)] == list(range(30))
    first = dataset.get_data_info(0)
    expected = [obj for stem, obj in objects if stem == 'train00000']
    # VOC (xmin, ymin, xmax, ymax) 1-based inclusive -> (xmin - 1, ymin - 1, xmax, ymax).
    assert [i['bbox'] for i in first['instances']] == [
        [o['box'][0] - 1.0, o['box'][1] - 1.0, float(o['box'][2]), float(o['box'][3])]
        for o in expected]
    assert [FACEMASK_CLASSES[i['bbox_label']] for i in first['instances']] == \
        [o['name'] for o in expected]
    assert [i['ignore_flag'] for i in first['instances']] == [o['difficult'] for o in expected]
    # LoadImageFromFile checks that <size> is the decoded size.
    sample = dataset[0]['data_samples']
    assert sample.ori_shape == (first['height'], first['width'])
    assert len(sample.gt_bboxes) + len(sample.gt_ignore_bboxes) == len(expected)


def test_mask_position_tells_the_classes_apart():
    """with_mask covers the nose (its top edge is above the nose tip at 0.2 b below the face
    centre); mask_weared_incorrect starts below the nose tip; without_mask has none."""
    spans = {0: [], 1: [], 2: []}
    for index in range(300):
        face = _Face.sample(np.random.default_rng((3, index)), 400, 400, 160.0)
        if face is not None:
            spans[face.class_index].append(face.mask_span)
    assert all(len(s) > 30 for s in spans.values())
    assert all(top <= -0.06 and bottom >= 0.85 for top, bottom in spans[0])
    assert all(top >= 0.28 and bottom >= 0.95 for top, bottom in spans[2])
    assert all(span is None for span in spans[1])
    # Drawn: the nose's pixel (darker skin) shows on faces without a mask, never under one.
    shown = Counter()
    for index in range(40):
        rng = np.random.default_rng((4, index))
        face = _Face(rng, 100.0, 100.0, 40.0, 50.0, class_index=index % 3, difficult=0)
        img = np.zeros((220, 200, 3), np.uint8)
        face.draw_head(img)
        x, y = face._point(0, 0.12)
        nose = np.array([face.skin[2], face.skin[1], face.skin[0]]) * 0.65
        shown[index % 3] += int(np.abs(img[y, x].astype(float) - nose).sum() < 12)
    assert shown[1] == 13 and shown[2] == 13 and shown[0] == 0


def test_draw_returns_consistent_boxes_and_image():
    img, faces = draw_facemask_image(np.random.default_rng((0, 7, 0, 0)), 200, 200)
    assert img.shape == (200, 200, 3) and img.dtype == np.uint8
    assert 1 <= len(faces) <= 6
    assert all(name in FACEMASK_CLASSES and difficult in (0, 1) and truncated in (0, 1)
               for name, _, difficult, truncated in faces)
    for _, (xmin, ymin, xmax, ymax), _, _ in faces:
        assert 1 <= xmin <= xmax <= 200 and 1 <= ymin <= ymax <= 200
    assert img.std() > 10  # textured, not blank


def test_cli_facemask_subcommand_prints_summary(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location('make_synthetic',
                                                  REPO / 'tools' / 'misc' / 'make_synthetic.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / 'cli'
    tool.main(['facemask', '--out', str(out), '--num-train', '4', '--num-val', '2',
               '--min-size', '128', '--max-size', '160', '--seed', '5'])
    printed = capsys.readouterr().out
    assert 'wrote 6 images' in printed and 'train.txt, val.txt' in printed
    assert 'images: 4' in printed and 'images: 2' in printed
    assert 'faces per class: with_mask=' in printed and 'face height min/median/max: ' in printed
    assert (out / 'images' / 'val00001.png').is_file()
    assert (out / 'annotations' / 'train00003.xml').is_file()
    with pytest.raises(ValueError, match='make_facemask: need 64 <= min_size <= max_size'):
        make_facemask(str(tmp_path / 'bad'), min_size=300, max_size=200)
