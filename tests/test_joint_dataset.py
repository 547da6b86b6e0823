"""JointDataset: the union label space, label groups, dataset_index, packing, sampler support."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import DefaultSampler

from detkit.datasets import (
    AspectRatioBatchSampler,
    CCTSDBDataset,
    CocoDataset,
    JointDataset,
    label_groups_for,
    union_classes,
)
from detkit.registry import DATASETS, check_config_types
from detkit.structures import DetSample

REPO = Path(__file__).resolve().parents[1]
PIPELINE = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            dict(type='PackDetInputs')]
COCO_LIKE_CLASSES = ('person', 'car')


def _image(path: Path, height: int, width: int) -> None:
    assert cv2.imwrite(str(path), np.full((height, width, 3), 127, np.uint8))


@pytest.fixture(scope='module')
def roots(tmp_path_factory) -> dict[str, Path]:
    """A COCO-format set with 2 classes (3 images) and a CCTSDB 2017 set (2 images)."""
    root = tmp_path_factory.mktemp('joint')
    coco_dir = root / 'coco'
    (coco_dir / 'img').mkdir(parents=True)
    sizes = {1: (30, 40), 2: (50, 20), 3: (24, 36)}  # image id -> (height, width)
    for img_id, (h, w) in sizes.items():
        _image(coco_dir / 'img' / f'{img_id}.jpg', h, w)
    coco = dict(
        images=[dict(id=i, file_name=f'{i}.jpg', height=h, width=w) for i, (h, w) in
                sizes.items()],
        annotations=[dict(id=1, image_id=1, category_id=3, bbox=[1, 2, 10, 10], iscrowd=0),
                     dict(id=2, image_id=1, category_id=1, bbox=[5, 5, 4, 8], iscrowd=0),
                     dict(id=3, image_id=2, category_id=1, bbox=[0, 0, 6, 6], iscrowd=1),
                     dict(id=4, image_id=3, category_id=3, bbox=[2, 2, 5, 5], iscrowd=0)],
        categories=[dict(id=1, name='person'), dict(id=3, name='car')])
    (coco_dir / 'instances.json').write_text(json.dumps(coco))
    cctsdb_dir = root / 'cctsdb'
    (cctsdb_dir / 'images').mkdir(parents=True)
    _image(cctsdb_dir / 'images' / '00000.png', 40, 60)
    _image(cctsdb_dir / 'images' / '00001.png', 60, 30)
    (cctsdb_dir / 'GroundTruth.txt').write_text(
        '00000.png;5;6;15;16;warning\n00000.png;20;6;30;16;mandatory\n'
        '00001.png;2;3;20;30;prohibitory\n')
    return dict(coco=coco_dir, cctsdb=cctsdb_dir)


def _sub_configs(roots) -> list[dict]:
    return [dict(type='CocoDataset', data_root=str(roots['coco']), ann_file='instances.json',
                 data_prefix=dict(img='img/'), metainfo=dict(classes=COCO_LIKE_CLASSES)),
            dict(type='CCTSDBDataset', data_root=str(roots['cctsdb']),
                 ann_file='GroundTruth.txt', data_prefix=dict(img='images/'))]


@pytest.fixture(scope='module')
def joint(roots) -> JointDataset:
    return DATASETS.build(dict(type='JointDataset', datasets=_sub_configs(roots),
                               pipeline=PIPELINE))


def test_union_classes_offsets_and_length(joint):
    assert joint.metainfo['classes'] == ('person', 'car', 'warning', 'prohibitory', 'mandatory')
    assert joint.metainfo['dataset_classes'] == (COCO_LIKE_CLASSES,
                                                 ('warning', 'prohibitory', 'mandatory'))
    assert joint.label_offsets == (0, 2)
    assert len(joint) == 5
    assert [type(d) for d in joint.datasets] == [CocoDataset, CCTSDBDataset]
    assert [joint.locate(i) for i in range(5)] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert joint.locate(-1) == (1, 1)
    with pytest.raises(IndexError):
        joint.locate(5)


def test_labels_are_shifted_into_the_union_space(joint):
    coco_info = joint.get_data_info(0)
    assert [(i['bbox'], i['bbox_label']) for i in coco_info['instances']] == [
        ([1.0, 2.0, 11.0, 12.0], 1), ([5.0, 5.0, 9.0, 13.0], 0)]
    assert [i['ignore_flag'] for i in joint.get_data_info(1)['instances']] == [1]
    # CCTSDB's warning/prohibitory/mandatory (0, 1, 2) become 2, 3, 4.
    assert [i['bbox_label'] for i in joint.get_data_info(3)['instances']] == [2, 4]
    assert [i['bbox_label'] for i in joint.get_data_info(4)['instances']] == [3]
    assert [joint.get_cat_ids(i) for i in range(5)] == [[1, 0], [], [1], [2, 4], [3]]
    # The sub-data sets are untouched.
    assert [i['bbox_label'] for i in joint.datasets[1].get_data_info(0)['instances']] == [0, 2]


def test_label_groups_and_dataset_index_per_image(joint):
    expected = torch.tensor([[1, 2, 0, 0, 0, 0], [0, 0, 1, 2, 3, 0]])
    assert torch.equal(joint.label_groups, expected)
    for idx, d in enumerate([0, 0, 0, 1, 1]):
        info = joint.get_data_info(idx)
        assert info['dataset_index'] == d
        assert info['label_groups'].dtype == np.int64
        assert info['label_groups'].tolist() == expected[d].tolist()


def test_pack_det_inputs_carries_dataset_index_and_label_groups(joint):
    out = joint[4]
    sample = out['data_samples']
    assert isinstance(sample, DetSample)
    assert tuple(out['inputs'].shape) == (3, 60, 30)
    assert sample.dataset_index == 1
    assert sample.label_groups.dtype == torch.int64
    assert sample.label_groups.tolist() == [0, 0, 1, 2, 3, 0]
    assert sample.gt_labels.tolist() == [3]
    assert torch.equal(sample.gt_bboxes, torch.tensor([[2.0, 3.0, 20.0, 30.0]]))
    first = joint[0]['data_samples']
    assert first.dataset_index == 0 and first.label_groups.tolist() == [1, 2, 0, 0, 0, 0]
    assert first.gt_labels.tolist() == [1, 0]


def test_plain_samples_keep_the_defaults(roots):
    dataset = CocoDataset(ann_file='instances.json', data_root=str(roots['coco']),
                          data_prefix=dict(img='img/'), metainfo=dict(classes=COCO_LIKE_CLASSES),
                          pipeline=PIPELINE)
    sample = dataset[0]['data_samples']
    assert sample.dataset_index == 0 and sample.label_groups is None


def test_label_groups_for_three_data_sets():
    groups = label_groups_for([('a',), ('b', 'c', 'd'), ('e', 'f')])
    assert groups.dtype == torch.int64 and groups.shape == (3, 7)
    assert groups.tolist() == [[1, 0, 0, 0, 0, 0, 0],
                               [0, 1, 2, 3, 0, 0, 0],
                               [0, 0, 0, 0, 1, 2, 0]]
    assert label_groups_for([('a', 'b')]).tolist() == [[1, 2, 0]]


def test_duplicate_class_names_are_an_error(roots):
    with pytest.raises(ValueError, match=r"duplicated: 'car' in datasets \[0, 2\]"):
        union_classes([('person', 'car'), ('warning',), ('car', 'bus')])
    configs = _sub_configs(roots)
    with pytest.raises(ValueError, match=r"'person' in datasets \[0, 1\]; 'car' in datasets "
                                         r"\[0, 1\]"):
        JointDataset(datasets=[configs[0], configs[0]])


def test_sub_data_sets_must_not_have_their_own_pipeline(roots):
    configs = _sub_configs(roots)
    configs[1]['pipeline'] = PIPELINE
    with pytest.raises(ValueError, match=r'datasets\[1\] \(CCTSDBDataset\) has its own pipeline'):
        JointDataset(datasets=configs)
    built = CocoDataset(ann_file='instances.json', data_root=str(roots['coco']),
                        data_prefix=dict(img='img/'), metainfo=dict(classes=COCO_LIKE_CLASSES),
                        pipeline=PIPELINE)
    with pytest.raises(ValueError, match=r'datasets\[0\] \(CocoDataset\) was built with a '
                                         r'pipeline'):
        JointDataset(datasets=[built])


def test_aspect_ratio_batch_sampler_groups_by_orientation(joint):
    # Orientations: images 0, 2, 3 landscape (w >= h); 1 and 4 portrait.
    sampler = DefaultSampler(joint, shuffle=False)
    batches = list(AspectRatioBatchSampler(sampler, batch_size=2))
    assert batches == [[0, 2], [1, 4], [3]]


def test_lazy_init_defers_reading(roots):
    joint = JointDataset(datasets=_sub_configs(roots), lazy_init=True)
    assert not joint._fully_initialized
    assert len(joint) == 5 and joint._fully_initialized


def test_joint_config_structure_and_registered_types():
    cfg = Config.fromfile(str(REPO / 'configs' / '_base_' / 'datasets' / 'coco_cctsdb_joint.py'))
    check_config_types(cfg.to_dict())
    train = cfg.train_dataloader['dataset']
    assert train['type'] == 'JointDataset'
    assert [d['type'] for d in train['datasets']] == ['CocoDataset', 'CCTSDBDataset']
    assert all('pipeline' not in d for d in train['datasets'])
    assert train['datasets'][1]['ann_file'] == 'xml/'
    assert cfg.val_dataloader['dataset']['type'] == 'CocoDataset'
