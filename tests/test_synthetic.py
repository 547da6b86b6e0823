"""The synthetic shapes generator: determinism, COCO validity, size ranges, the CLI."""
import importlib.util
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from detkit.datasets import CocoDataset
from detkit.datasets.synthetic import (
    SHAPES_CATEGORIES,
    SHAPES_CLASSES,
    _Scene,
    draw_shapes_image,
    make_shapes,
)

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(num_train=24, num_val=4, min_size=192, max_size=320)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def shapes_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp('shapes')
    make_shapes(str(root), seed=0, **SMALL)
    return root


def test_same_seed_same_bytes_different_seed_differs(shapes_dir, tmp_path):
    again = tmp_path / 'again'
    ann_files = make_shapes(str(again), seed=0, **SMALL)
    assert ann_files == dict(train=str(again / 'annotations' / 'instances_train.json'),
                             val=str(again / 'annotations' / 'instances_val.json'))
    first, second = _files(shapes_dir), _files(again)
    assert len(first) == 24 + 4 + 2
    assert first == second
    other = _files(Path(make_shapes(str(tmp_path / 'other'), seed=1, **SMALL)['train'])
                   .parent.parent)
    assert other.keys() == first.keys()
    assert other['annotations/instances_train.json'] != first['annotations/instances_train.json']
    assert all(other[k] != first[k] for k in first if k.endswith('.jpg'))


def test_an_image_does_not_depend_on_how_many_are_made(shapes_dir, tmp_path):
    fewer = tmp_path / 'fewer'
    make_shapes(str(fewer), num_train=3, num_val=0, min_size=192, max_size=320, seed=0)
    for name in ('000000.jpg', '000002.jpg'):
        assert (fewer / 'train' / name).read_bytes() == (shapes_dir / 'train' / name).read_bytes()


def test_coco_json_fields_and_non_contiguous_ids(shapes_dir):
    coco = json.loads((shapes_dir / 'annotations' / 'instances_train.json').read_text())
    assert [c['id'] for c in coco['categories']] == [1, 2, 4, 7, 9]
    assert [c['name'] for c in coco['categories']] == list(SHAPES_CLASSES)
    assert [img['id'] for img in coco['images']] == list(range(1, 25))
    sizes = [(img['width'], img['height']) for img in coco['images']]
    assert all(192 <= s <= 320 for size in sizes for s in size)
    assert any(w < h for w, h in sizes) and any(w > h for w, h in sizes)
    per_image = Counter(a['image_id'] for a in coco['annotations'] if not a['iscrowd'])
    assert set(per_image) == set(range(1, 25)) and max(per_image.values()) <= 8
    by_id = {img['id']: img for img in coco['images']}
    for ann in coco['annotations']:
        assert set(ann) == {'id', 'image_id', 'category_id', 'bbox', 'area', 'iscrowd',
                            'segmentation'}
        x, y, w, h = ann['bbox']
        img = by_id[ann['image_id']]
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= img['width'] and y + h <= img['height']
        assert ann['area'] == w * h and ann['category_id'] in {1, 2, 4, 7, 9}
    assert len({a['id'] for a in coco['annotations']}) == len(coco['annotations'])


def test_loads_via_coco_dataset_with_all_size_ranges(shapes_dir):
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no annotation may be dropped
        dataset = CocoDataset(ann_file='annotations/instances_train.json',
                              data_root=str(shapes_dir), data_prefix=dict(img='train/'),
                              metainfo=dict(classes=SHAPES_CLASSES),
                              filter_cfg=dict(filter_empty_gt=True),
                              pipeline=[dict(type='LoadImageFromFile'),
                                        dict(type='LoadAnnotations'), dict(type='PackDetInputs')])
    assert dataset.cat_ids == [1, 2, 4, 7, 9]
    assert dataset.cat2label == {1: 0, 2: 1, 4: 2, 7: 3, 9: 4}
    assert len(dataset) == 24
    areas, labels = [], Counter()
    for i in range(len(dataset)):
        sample = dataset[i]['data_samples']  # decodes: sizes match the JSON
        boxes = sample.gt_bboxes.numpy()
        areas += list((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        labels.update(sample.gt_labels.tolist())
    areas = np.array(areas)
    assert (areas < 32 ** 2).sum() > 0
    assert ((areas >= 32 ** 2) & (areas < 96 ** 2)).sum() > 0
    assert (areas >= 96 ** 2).sum() > 0
    assert set(labels) == {0, 1, 2, 3, 4}


def test_crowd_regions_are_drawn_and_boxes_lie_inside():
    # 60 images of seed 3 at 8 % crowd probability: some crowds, every box inside its image.
    num_crowd, num_objects = 0, 0
    for index in range(60):
        img, objects = draw_shapes_image(np.random.default_rng((3, 0, index)), 96, 128)
        for category_id, (x, y, w, h), iscrowd in objects:
            num_crowd += iscrowd
            num_objects += 1 - iscrowd
            assert 0 <= x and x + w <= img.shape[1] and 0 <= y and y + h <= img.shape[0]
    assert num_crowd >= 1 and num_objects >= 60


def test_plain_scenes_have_no_crowds_and_no_small_objects():
    # 200 images of 256-512 px: the cluttered scenes have crowd regions and objects under 13 px
    # (the smallest drawn: 12 px); plain ones neither (at least 60% of a 24-px object shows).
    extents = {}
    for scene in ('plain', 'cluttered'):
        crowds, sides = 0, []
        for index in range(200):
            img, objects = draw_shapes_image(np.random.default_rng((0, 0, index)), 256, 512,
                                             scene)
            crowds += sum(iscrowd for _, _, iscrowd in objects)
            sides += [max(w, h) for _, (x, y, w, h), iscrowd in objects if not iscrowd]
        extents[scene] = (crowds, min(sides), len(sides))
    assert extents['plain'][0] == 0 and extents['plain'][1] >= 14
    assert extents['cluttered'][0] >= 5 and extents['cluttered'][1] < 13
    assert extents['plain'][2] >= 800  # 1-8 objects an image in both styles
    with pytest.raises(ValueError, match="scene must be one of .*got 'busy'"):
        draw_shapes_image(np.random.default_rng(0), 96, 128, 'busy')


def test_box_is_the_tight_extent_of_the_visible_pixels():
    img = np.full((100, 120, 3), 128, dtype=np.uint8)
    scene = _Scene(img)
    square = np.zeros((21, 31), dtype=np.uint8)
    square[3:18, 5:25] = 255  # 20 x 15 pixels
    rng = np.random.default_rng(0)
    while not scene.place(rng, square, category_index=1, iscrowd=0):
        pass
    changed = np.nonzero((img != 128).any(axis=2))
    (category_id, (x, y, w, h), iscrowd), = scene.annotations()
    assert (category_id, iscrowd) == (2, 0)
    assert (x, y, x + w - 1, y + h - 1) == (changed[1].min(), changed[0].min(),
                                            changed[1].max(), changed[0].max())
    assert len(changed[0]) == w * h  # fully visible: all 20 x 15 pixels drawn
    # Blocks placed later never hide more than 40 % of any object placed before them.
    cover = np.full((40, 40), 255, dtype=np.uint8)
    placed = [scene.place(rng, cover, category_index=0, iscrowd=0) for _ in range(200)]
    assert 2 <= sum(placed) < 200
    for _, (x2, y2, w2, h2), _ in scene.annotations()[1:]:
        overlap_w = max(0, min(x + w, x2 + w2) - max(x, x2))
        overlap_h = max(0, min(y + h, y2 + h2) - max(y, y2))
        assert overlap_w * overlap_h <= 0.4 * w * h
    shown = np.bincount(scene.owner[scene.owner >= 0], minlength=len(scene.total))
    assert shown.tolist() == scene.visible
    assert all(v >= 0.6 * t for v, t in zip(scene.visible, scene.total))


def test_cli_shapes_subcommand_prints_summary(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location('make_synthetic',
                                                  REPO / 'tools' / 'misc' / 'make_synthetic.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(['shapes', '--out', str(tmp_path / 'cli'), '--num-train', '4', '--num-val', '2',
               '--min-size', '128', '--max-size', '160', '--seed', '5'])
    printed = capsys.readouterr().out
    assert 'wrote 6 images' in printed
    assert 'images: 4 (' in printed and 'images: 2 (' in printed
    assert 'objects per class: circle=' in printed and 'small/medium/large: ' in printed
    assert (tmp_path / 'cli' / 'val' / '000001.jpg').is_file()
    with pytest.raises(SystemExit):
        tool.main(['nonsense'])
    with pytest.raises(ValueError, match='need 64 <= min_size <= max_size'):
        make_shapes(str(tmp_path / 'bad'), min_size=300, max_size=200)
    # --scene simple draws the quick start's scenes: the same bytes as make_shapes(scene=...)
    tool.main(['shapes', '--out', str(tmp_path / 'simple'), '--num-train', '2', '--num-val', '1',
               '--min-size', '128', '--max-size', '176', '--seed', '0', '--scene', 'simple'])
    make_shapes(str(tmp_path / 'direct'), num_train=2, num_val=1, min_size=128, max_size=176,
                seed=0, scene='simple')
    for name in ('train/000000.jpg', 'val/000000.jpg', 'annotations/instances_train.json'):
        assert (tmp_path / 'simple' / name).read_bytes() == \
            (tmp_path / 'direct' / name).read_bytes()
    cluttered = tmp_path / 'cli' / 'train' / '000000.jpg'
    assert cluttered.read_bytes() != (tmp_path / 'simple' / 'train' / '000000.jpg').read_bytes()


def test_categories_constant_matches_classes():
    assert tuple(c['name'] for c in SHAPES_CATEGORIES) == SHAPES_CLASSES
    assert len(SHAPES_CLASSES) == 5


@pytest.mark.parametrize('arguments, words', [
    (['shapes', '--num-train', '-5'],
     'make_shapes: --num-train and --num-val must be >= 0, got -5, 60'),
    (['facemask', '--num-val', '-1'],
     'make_facemask: --num-train and --num-val must be >= 0, got 240, -1'),
    (['partial', '--min-size', '200', '--max-size', '100'],
     'need 64 <= --min-size <= --max-size, got --min-size=200, --max-size=100'),
])
def test_cli_bad_arguments_are_usage_errors_in_flags(tmp_path, capsys, arguments, words):
    spec = importlib.util.spec_from_file_location('make_synthetic',
                                                  REPO / 'tools' / 'misc' / 'make_synthetic.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(SystemExit) as info:
        tool.main([arguments[0], '--out', str(tmp_path / 'set'), *arguments[1:]])
    assert info.value.code == 2 and words in capsys.readouterr().err
    assert not (tmp_path / 'set').exists()
