"""mmdetection's train_cfg / test_cfg become the heads' own arguments in one place; a built head
beside a config for it, an unknown section or key, and a removed argument are errors that say
what to write."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
from mmengine.config import Config

from detkit.engine.config_checks import check_config_arguments
from detkit.models.detectors import head_arguments
from detkit.models.task_utils import (
    DenseTestConfig,
    MaxIoUAssigner,
    ProposalConfig,
    RandomSampler,
    RoITestConfig,
)
from detkit.registry import MODELS

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'
RETINANET = Config.fromfile(str(CONFIGS / '_base_/models/retinanet_r50_fpn.py')).model.to_dict()
FASTER_RCNN = Config.fromfile(
    str(CONFIGS / '_base_/models/faster_rcnn_r50_fpn.py')).model.to_dict()


def small(model: dict) -> dict:
    """The model config without ImageNet weights and with a ResNet-18 (fast to build)."""
    model = copy.deepcopy(model)
    model['backbone'].update(depth=18, init_cfg=None)
    model['neck']['in_channels'] = [64, 128, 256, 512]
    return model


def test_single_stage_layout():
    args = head_arguments(RETINANET['train_cfg'], RETINANET['test_cfg'], ('bbox_head',),
                          'RetinaNet')
    assert args == {'bbox_head': {'assigner': RETINANET['train_cfg']['assigner'],
                                  'allowed_border': -1, 'test_cfg': RETINANET['test_cfg']}}
    assert head_arguments(None, {}, ('bbox_head',), 'RetinaNet') == {'bbox_head': {}}


def test_two_stage_layout():
    train, test = FASTER_RCNN['train_cfg'], FASTER_RCNN['test_cfg']
    args = head_arguments(train, test, ('rpn_head', 'roi_head'), 'FasterRCNN')
    assert args == {
        'rpn_head': {'assigner': train['rpn']['assigner'], 'sampler': train['rpn']['sampler'],
                     'allowed_border': -1, 'train_proposal_cfg': train['rpn_proposal'],
                     'test_cfg': test['rpn']},
        'roi_head': {'assigner': train['rcnn']['assigner'], 'sampler': train['rcnn']['sampler'],
                     'test_cfg': test['rcnn']}}


def test_the_built_heads_get_what_the_config_says():
    retinanet = MODELS.build(small(RETINANET))
    head = retinanet.bbox_head
    assert isinstance(head.assigner, MaxIoUAssigner) and head.assigner.ignore_iof_thr == 0.5
    assert head.test_cfg == DenseTestConfig(nms_pre=1000, score_thr=0.05, nms_iou_thr=0.5,
                                            max_per_img=100, min_bbox_size=0)
    faster = MODELS.build(small(FASTER_RCNN))
    rpn, roi = faster.rpn_head, faster.roi_head
    assert isinstance(rpn.sampler, RandomSampler) and rpn.sampler.num == 256
    assert rpn.assigner.pos_iou_thr == 0.7 and roi.assigner.pos_iou_thr == 0.5
    assert isinstance(roi.sampler, RandomSampler) and roi.sampler.num == 512
    assert rpn.train_proposal_cfg == ProposalConfig(nms_pre=2000, max_per_img=1000,
                                                    nms_iou_thr=0.7, min_bbox_size=0)
    assert rpn.test_cfg == ProposalConfig(nms_pre=1000, max_per_img=1000, nms_iou_thr=0.7,
                                          min_bbox_size=0)
    assert roi.test_cfg == RoITestConfig(score_thr=0.05, nms_iou_thr=0.5, max_per_img=100)


def test_unknown_sections_and_keys_are_named():
    with pytest.raises(KeyError, match=r"FasterRCNN: model.train_cfg has unknown sections "
                                       r"\['rcnn_proposal'\]; expected a subset of "
                                       r"\['rpn', 'rpn_proposal', 'rcnn'\]"):
        head_arguments({'rcnn_proposal': {}}, None, ('rpn_head', 'roi_head'), 'FasterRCNN')
    with pytest.raises(KeyError, match=r"RetinaNet: model.train_cfg has unknown keys "
                                       r"\['smoothl1_beta'\]; expected assigner, "
                                       r"allowed_border \(and mmdetection's pos_weight=-1, "
                                       r"debug=False, sampler=dict\(type='PseudoSampler'\)\)"):
        head_arguments({'assigner': {}, 'smoothl1_beta': 0.1}, None, ('bbox_head',),
                       'RetinaNet')
    with pytest.raises(KeyError, match=r"model.train_cfg.rcnn has unknown keys \['mask_size'\]; "
                                       r"expected assigner, sampler \(and"):
        head_arguments({'rcnn': {'mask_size': 28}}, None, ('rpn_head', 'roi_head'),
                       'FasterRCNN')


def test_a_built_head_beside_a_train_cfg_is_an_error_naming_both():
    model = small(RETINANET)
    head = MODELS.build(dict(model['bbox_head'], assigner=model['train_cfg']['assigner']))
    with pytest.raises(ValueError, match=r"RetinaNet: bbox_head is an already built RetinaHead, "
                                         r"and model.test_cfg and model.train_cfg would give it "
                                         r"allowed_border, assigner, test_cfg"):
        MODELS.build(dict(model, bbox_head=head))
    built = MODELS.build(dict(model, bbox_head=head, train_cfg=None, test_cfg=None))
    assert built.bbox_head is head  # nothing to hand over: fine
    faster = small(FASTER_RCNN)
    rpn = MODELS.build(dict(faster['rpn_head']))
    with pytest.raises(ValueError, match=r"FasterRCNN: rpn_head is an already built RPNHead, and "
                                         r"model.test_cfg and model.train_cfg would give it "
                                         r"allowed_border, assigner, sampler, test_cfg, "
                                         r"train_proposal_cfg"):
        MODELS.build(dict(faster, rpn_head=rpn))


def test_old_use_group_softmax_configs_say_what_to_write():
    cfg = dict(model=dict(type='FasterRCNN', rpn_head=dict(type='RPNHead', num_datasets=2,
                                                           use_group_softmax=True)))
    with pytest.raises(KeyError, match=r"model.rpn_head.use_group_softmax: RPNHead no longer "
                                       r"takes use_group_softmax: GroupSoftmax is chosen by "
                                       r"naming its loss: remove use_group_softmax and write "
                                       r"loss_cls=dict\(type='GroupSoftmaxLoss'\)"):
        check_config_arguments(cfg)
