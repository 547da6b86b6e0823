"""CocoDataset (loading, label mapping, dropped boxes, filtering) and AspectRatioBatchSampler."""
import json
import math
import warnings

import cv2
import numpy as np
import pytest
import torch
from mmengine.dataset import DefaultSampler

from detkit.datasets import COCO_CLASSES, AspectRatioBatchSampler, CocoDataset
from detkit.registry import DATA_SAMPLERS, DATASETS
from detkit.structures import DetSample

CATEGORIES = [dict(id=3, name='cat_b'), dict(id=1, name='cat_a'), dict(id=10, name='cat_c')]


def _ann(ann_id, image_id, category_id, bbox, iscrowd=0):
    return dict(id=ann_id, image_id=image_id, category_id=category_id, bbox=bbox,
                area=0.0, iscrowd=iscrowd)


def _tiny_coco():
    """Four images: 1 has valid/crowd/invalid boxes, 2 none, 3 only a crowd, 4 is small."""
    images = [dict(id=1, file_name='a.png', height=80, width=100),
              dict(id=2, file_name='b.png', height=60, width=40),
              dict(id=3, file_name='c.png', height=50, width=70),
              dict(id=4, file_name='d.png', height=20, width=90)]
    annotations = [
        _ann(1, 1, 1, [10, 20, 30, 40]),                  # cat_a: kept, -> [10, 20, 40, 60]
        _ann(2, 1, 3, [0, 0, 5, 5], iscrowd=1),           # cat_b crowd: ignore region
        _ann(3, 1, 10, [90, 70, 20, 20]),                 # cat_c: clipped to [90, 70, 100, 80]
        _ann(4, 1, 10, [5, 5, 0, 10]),                    # dropped: w <= 0
        _ann(5, 1, 1, [5, 5, float('nan'), 10]),          # dropped: NaN
        _ann(6, 1, 1, [150, 10, 20, 20]),                 # dropped: outside the image
        _ann(7, 1, 99, [1, 1, 5, 5]),                     # dropped: unknown category
        _ann(8, 3, 3, [1, 1, 10, 10], iscrowd=1),         # image 3: only a crowd region
        _ann(9, 4, 1, [1, 1, 10, 10]),                    # image 4: small image (min side 20)
        _ann(10, 1, 3, [50, 10, 'x', 5]),                 # dropped: malformed
    ]
    return dict(images=images, annotations=annotations, categories=CATEGORIES)


@pytest.fixture
def ann_file(tmp_path):
    path = tmp_path / 'annotations' / 'tiny.json'
    path.parent.mkdir()
    path.write_text(json.dumps(_tiny_coco()))
    for img in _tiny_coco()['images']:
        pixels = np.full((img['height'], img['width'], 3), img['id'] * 40, dtype=np.uint8)
        cv2.imwrite(str(tmp_path / img['file_name']), pixels)
    return path


def _dataset(ann_file, **kwargs):
    kwargs.setdefault('metainfo', dict(classes=('cat_a', 'cat_b', 'cat_c')))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        dataset = CocoDataset(ann_file=str(ann_file), data_root=str(ann_file.parent.parent),
                              **kwargs)
    return dataset, [str(w.message) for w in caught if 'CocoDataset' in str(w.message)]


def test_coco_classes_are_the_80_standard_names():
    assert len(COCO_CLASSES) == 80 and len(set(COCO_CLASSES)) == 80
    assert COCO_CLASSES[0] == 'person' and COCO_CLASSES[-1] == 'toothbrush'
    assert CocoDataset.METAINFO['classes'] == COCO_CLASSES
    assert DATASETS.get('CocoDataset') is CocoDataset


def test_load_data_list_converts_boxes_and_maps_labels(ann_file, tmp_path):
    dataset, messages = _dataset(ann_file, test_mode=True)
    assert dataset.cat_ids == [1, 3, 10]
    assert dataset.cat2label == {1: 0, 3: 1, 10: 2}
    assert dataset.metainfo['classes'] == ('cat_a', 'cat_b', 'cat_c')
    assert len(dataset) == 4
    info = dataset.get_data_info(0)
    assert info['img_path'] == str(tmp_path / 'a.png')
    assert (info['img_id'], info['height'], info['width']) == (1, 80, 100)
    assert info['instances'] == [
        dict(bbox=[10.0, 20.0, 40.0, 60.0], bbox_label=0, ignore_flag=0),
        dict(bbox=[0.0, 0.0, 5.0, 5.0], bbox_label=1, ignore_flag=1),
        dict(bbox=[90.0, 70.0, 100.0, 80.0], bbox_label=2, ignore_flag=0)]
    assert dataset.get_data_info(1)['instances'] == []
    assert dataset.get_cat_ids(0) == [0, 2]  # the crowd region is not counted


def test_dropped_annotations_are_counted_in_one_warning(ann_file):
    _, messages = _dataset(ann_file, test_mode=True)
    assert len(messages) == 1
    message = messages[0]
    assert 'dropped 5 of 10 annotations' in message
    assert str(ann_file) in message
    for text in ('1 with bbox width or height <= 0', '1 with bbox has a NaN',
                 '1 with bbox lies entirely outside', "1 with category_id is not among",
                 '1 with bbox is not a list of 4 numbers', 'annotation id 4 of image id 1'):
        assert text in message, text


def test_subset_classes_follow_metainfo_order_without_warning(ann_file):
    dataset, messages = _dataset(ann_file, test_mode=True, metainfo=dict(classes=('cat_c',
                                                                                  'cat_a')))
    assert dataset.cat_ids == [10, 1]
    labels = [(i['bbox'], i['bbox_label']) for i in dataset.get_data_info(0)['instances']]
    assert labels == [([10.0, 20.0, 40.0, 60.0], 1), ([90.0, 70.0, 100.0, 80.0], 0)]
    # cat_b annotations are left out on purpose and not inspected: the malformed cat_b box
    # (id 10) is no longer a drop, the other 4 still are.
    assert len(messages) == 1 and 'dropped 4 of 10' in messages[0]


def test_unknown_class_names_raise_with_file_categories(ann_file):
    with pytest.raises(ValueError, match=r"\['dog'\] are not categories of .*tiny.json.*cat_b"):
        _dataset(ann_file, metainfo=dict(classes=('cat_a', 'dog')))
    with pytest.raises(ValueError, match=r"'person'.*are not categories"):
        CocoDataset(ann_file=str(ann_file))  # default: the 80 COCO classes


def test_filter_empty_gt_and_min_size_only_in_training(ann_file):
    filter_cfg = dict(filter_empty_gt=True, min_size=32)
    train, _ = _dataset(ann_file, filter_cfg=filter_cfg)
    assert [train.get_data_info(i)['img_id'] for i in range(len(train))] == [1]
    train_no_min, _ = _dataset(ann_file, filter_cfg=dict(filter_empty_gt=True))
    assert [train_no_min.get_data_info(i)['img_id'] for i in range(len(train_no_min))] == [1, 4]
    test, _ = _dataset(ann_file, filter_cfg=filter_cfg, test_mode=True)
    assert [test.get_data_info(i)['img_id'] for i in range(len(test))] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"unknown filter_cfg keys \['min_area'\]"):
        _dataset(ann_file, filter_cfg=dict(min_area=3))


def test_serialized_and_plain_data_lists_agree(ann_file):
    serialized, _ = _dataset(ann_file, test_mode=True)
    plain, _ = _dataset(ann_file, test_mode=True, serialize_data=False)
    lazy, _ = _dataset(ann_file, test_mode=True, lazy_init=True)
    with pytest.warns(UserWarning, match='dropped 5 of 10'):
        assert lazy.cat_ids == [1, 3, 10]  # triggers full_init
    for i in range(4):
        assert serialized.get_data_info(i) == plain.get_data_info(i) == lazy.get_data_info(i)


def test_missing_file_names_path_and_coco_layout(tmp_path):
    root = tmp_path / 'data' / 'coco'
    with pytest.raises(FileNotFoundError) as err:
        CocoDataset(ann_file='annotations/instances_train2017.json', data_root=str(root))
    message = str(err.value)
    assert str(root / 'annotations' / 'instances_train2017.json') in message
    assert 'data/coco/train2017' in message and 'data/README.md' in message


def test_malformed_json_names_file_and_key(tmp_path):
    path = tmp_path / 'bad.json'
    path.write_text(json.dumps(dict(images=[], annotations=[])))
    with pytest.raises(ValueError, match=r"bad.json has no 'categories' key"):
        CocoDataset(ann_file=str(path), metainfo=dict(classes=('a',)))
    path.write_text('{"images": [')
    with pytest.raises(ValueError, match=r'bad.json is not a JSON file'):
        CocoDataset(ann_file=str(path), metainfo=dict(classes=('a',)))
    path.write_text(json.dumps(dict(images=[dict(id=1, file_name='x.jpg')], annotations=[],
                                    categories=[dict(id=1, name='a')])))
    with pytest.raises(ValueError, match=r"images\[0\] misses \['height', 'width'\]"):
        CocoDataset(ann_file=str(path), metainfo=dict(classes=('a',)))


def _valid_coco(**changes):
    coco = dict(images=[dict(id=1, file_name='a.png', height=20, width=30),
                        dict(id=2, file_name='b.png', height=20, width=30)],
                annotations=[_ann(7, 1, 1, [1, 2, 3, 4]), _ann(8, 2, 1, [1, 2, 3, 4])],
                categories=[dict(id=1, name='a')])
    coco.update(changes)
    return coco


_IMG = dict(id=1, file_name='a.png', height=20, width=30)


@pytest.mark.parametrize('content, message', [
    ('', r'bad.json is empty \(0 bytes\)'),
    ('[]', 'bad.json must hold a JSON object with images, annotations and categories, got a '
           'list'),
    (dict(annotations=[], categories=[]), "bad.json has no 'images' key"),
    (dict(images=[_IMG], categories=[]), "bad.json has no 'annotations' key"),
    (_valid_coco(images={}), "'images' must be a list, got dict"),
    (_valid_coco(images=[]), r"bad.json lists no images \('images' is empty\)"),
    (_valid_coco(images=[5]), r'images\[0\] must be an object, got 5'),
    (_valid_coco(images=[dict(_IMG, height=0)]),
     r'images\[0\] \(id 1\) has height=0; expected a positive integer'),
    (_valid_coco(images=[dict(_IMG, width='30')]), "has width='30'; expected a positive integer"),
    (_valid_coco(images=[dict(_IMG, width=30.5)]), 'has width=30.5; expected a positive integer'),
    (_valid_coco(images=[dict(_IMG, file_name='')]), "file_name=''; expected a non-empty string"),
    (_valid_coco(images=[dict(_IMG, id=[1])]), r'images\[0\] has id=\[1\]; expected a number'),
    (_valid_coco(images=[_IMG, dict(_IMG, file_name='b.png')]),
     r'image id 1 appears twice in images \(images\[0\] and images\[1\]\)'),
    (_valid_coco(images=[_IMG, dict(_IMG, id=2)]),
     r"file_name 'a.png' appears twice in images \(images\[0\] with id 1 and images\[1\] "
     r'with id 2\)'),
    (_valid_coco(annotations=['x']), r"annotations\[0\] must be an object, got 'x'"),
    (_valid_coco(annotations=[dict(id=1, category_id=1, bbox=[1, 2, 3, 4])]),
     r"annotations\[0\] misses \['image_id'\]"),
    (_valid_coco(annotations=[_ann(1, [1], 1, [1, 2, 3, 4])]),
     r'annotations\[0\] has image_id=\[1\]; expected a number or a string'),
    (_valid_coco(annotations=[_ann(7, 1, 1, [1, 2, 3, 4]), _ann(7, 2, 1, [1, 2, 3, 4])]),
     r'annotation id 7 is used twice \(annotations\[0\] and annotations\[1\]\); '
     'pycocotools, and so COCO evaluation'),
    (_valid_coco(categories=[dict(id=1)]), r"categories\[0\] misses \['name'\]"),
    (_valid_coco(categories=[dict(id=1, name='a'), dict(id=1, name='b')]),
     r'category id 1 is used twice \(categories\[0\] and categories\[1\]\)'),
])
def test_structural_problems_raise_naming_file_and_entry(tmp_path, content, message):
    path = tmp_path / 'bad.json'
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ValueError, match=message):
        CocoDataset(ann_file=str(path), metainfo=dict(classes=('a',)))


def test_valid_coco_helper_loads(tmp_path):
    """The base of the structural cases above is itself valid (each case breaks one thing)."""
    path = tmp_path / 'ok.json'
    path.write_text(json.dumps(_valid_coco()))
    dataset = CocoDataset(ann_file=str(path), metainfo=dict(classes=('a',)))
    assert len(dataset) == 2 and dataset.get_cat_ids(1) == [0]


def test_each_bad_box_is_dropped_and_counted(tmp_path):
    coco = _valid_coco(annotations=[
        _ann(1, 1, 1, [-5, 2, 10, 4]),                 # kept, clipped to [0, 2, 5, 6]
        _ann(2, 1, 1, [1, 2, float('inf'), 4]),        # not finite
        _ann(3, 1, 1, [1, 2, 3, -4]),                  # negative height
        _ann(4, 1, 1, [-50, 2, 20, 4]),                # entirely left of the image
        _ann(5, 1, 1, [1, 25, 3, 4]),                  # entirely below the image
        _ann(6, 99, 1, [1, 2, 3, 4]),                  # image_id not among the images
        dict(id=9, image_id=2, category_id=1),         # no bbox
        _ann(10, 2, 1, [True, 2, 3, 4]),               # a bool is not a coordinate
        _ann(11, 2, 5, [1, 2, 3, 4]),                  # category 5 not among the categories
    ])
    path = tmp_path / 'boxes.json'
    path.write_text(json.dumps(coco))
    with pytest.warns(UserWarning) as record:
        dataset = CocoDataset(ann_file=str(path), metainfo=dict(classes=('a',)))
    messages = [str(w.message) for w in record if 'CocoDataset' in str(w.message)]
    assert len(messages) == 1
    message = messages[0]
    assert f'dropped 8 of 9 annotations of {path}' in message
    for text in ('2 with bbox is not a list of 4 numbers', '1 with bbox has a NaN or infinite',
                 '1 with bbox width or height <= 0', '2 with bbox lies entirely outside',
                 "1 with category_id is not among the file's categories",
                 "1 with image_id is not among the file's images (e.g. annotation id 6: "
                 'image_id=99)'):
        assert text in message, text
    assert dataset.get_data_info(0)['instances'] == [dict(bbox=[0.0, 2.0, 5.0, 6.0],
                                                          bbox_label=0, ignore_flag=0)]
    assert dataset.get_data_info(1)['instances'] == []


def test_pipeline_from_configs_yields_packed_sample(ann_file):
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                dict(type='Resize', scale=(200, 160)), dict(type='PackDetInputs')]
    dataset, _ = _dataset(ann_file, test_mode=True, pipeline=pipeline)
    out = dataset[0]
    sample = out['data_samples']
    assert isinstance(sample, DetSample)
    assert out['inputs'].shape == (3, 160, 200) and out['inputs'].dtype == torch.uint8
    assert int(out['inputs'][0, 5, 5]) == 40
    assert sample.ori_shape == (80, 100) and sample.img_shape == (160, 200)
    assert sample.scale_factor == (2.0, 2.0) and sample.img_id == 1
    assert torch.equal(sample.gt_bboxes, torch.tensor([[20., 40., 80., 120.],
                                                       [180., 140., 200., 160.]]))
    assert torch.equal(sample.gt_labels, torch.tensor([0, 2]))
    assert torch.equal(sample.gt_ignore_bboxes, torch.tensor([[0., 0., 10., 10.]]))


class _SizesDataset:
    """The minimal data set a sampler needs: get_data_info with width and height."""

    def __init__(self, sizes):
        self.sizes = sizes

    def __len__(self):
        return len(self.sizes)

    def get_data_info(self, idx):
        return dict(width=self.sizes[idx][0], height=self.sizes[idx][1])


@pytest.mark.parametrize('drop_last', [False, True])
def test_aspect_ratio_batches_are_single_orientation(drop_last):
    rng = np.random.default_rng(0)
    sizes = [tuple(int(v) for v in rng.integers(100, 500, size=2)) for _ in range(103)]
    sizes[0] = (300, 300)  # square counts as landscape
    dataset = _SizesDataset(sizes)
    sampler = DefaultSampler(dataset, shuffle=True, seed=0)
    batch_sampler = DATA_SAMPLERS.build(dict(type='AspectRatioBatchSampler', drop_last=drop_last),
                                        default_args=dict(sampler=sampler, batch_size=4))
    assert isinstance(batch_sampler, AspectRatioBatchSampler)
    batches = list(batch_sampler)
    assert len(batches) == len(batch_sampler) == (103 // 4 if drop_last else math.ceil(103 / 4))
    portrait = [[sizes[i][0] < sizes[i][1] for i in batch] for batch in batches]
    mixed = [k for k, flags in enumerate(portrait) if len(set(flags)) > 1]
    num_landscape = sum(w >= h for w, h in sizes)
    num_full = num_landscape // 4 + (103 - num_landscape) // 4
    assert all(k >= num_full for k in mixed)  # only the leftovers at the end may mix
    assert all(len(b) == 4 for b in batches[:-1])
    flat = [i for batch in batches for i in batch]
    assert len(flat) == len(set(flat))
    if drop_last:
        assert len(flat) == 100 and set(flat) <= set(range(103))
    else:
        assert sorted(flat) == list(range(103)) and len(batches[-1]) == 3


def test_aspect_ratio_sampler_rejects_bad_arguments():
    sampler = DefaultSampler(_SizesDataset([(10, 10)]), shuffle=False)
    with pytest.raises(ValueError, match='batch_size must be a positive int, got 0'):
        AspectRatioBatchSampler(sampler, batch_size=0)
    with pytest.raises(TypeError, match=r'must have a \.dataset with get_data_info'):
        AspectRatioBatchSampler(range(3), batch_size=2)
