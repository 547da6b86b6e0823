"""detkit's registries: scoped children of mmengine's, with close-name errors."""
import pytest
from mmengine.registry import MODELS as MMENGINE_MODELS

from detkit.registry import MODELS, TASK_UTILS, check_config_types, registered_names


def test_children_of_mmengine_roots_under_the_detkit_scope():
    assert MODELS.scope == 'detkit' and MODELS.parent is MMENGINE_MODELS
    # the location is imported on the first search: no custom_imports needed
    assert MODELS.get('RetinaNet').__name__ == 'RetinaNet'
    assert TASK_UTILS.get('MaxIoUAssigner').__name__ == 'MaxIoUAssigner'
    # mmengine's own types resolve through the parent
    assert 'SGD' in registered_names()


def test_unknown_type_lists_the_closest_registered_names():
    with pytest.raises(KeyError) as error:
        MODELS.build(dict(type='ResNt', depth=50))
    message = error.value.args[0]
    assert "type='ResNt'" in message and "'ResNet'" in message


def test_config_check_names_the_nested_key():
    cfg = dict(model=dict(type='RetinaNet', backbone=dict(type='ResNet'),
                          bbox_head=dict(type='RetinaHead', loss_cls=dict(type='FocalLos'))),
               param_scheduler=[dict(type='LinearLR'), dict(type='MultiStepLRR')])
    with pytest.raises(KeyError,
                       match=r"model\.bbox_head\.loss_cls\.type='FocalLos'.*'FocalLoss'"):
        check_config_types(cfg)
    cfg['model']['bbox_head']['loss_cls']['type'] = 'FocalLoss'
    with pytest.raises(KeyError,
                       match=r"param_scheduler\[1\]\.type='MultiStepLRR'.*'MultiStepLR'"):
        check_config_types(cfg)
    cfg['param_scheduler'][1]['type'] = 'MultiStepLR'
    check_config_types(cfg)  # now every type is registered
    # test_cfg.nms selects an option of the head, not a registered class
    check_config_types(dict(test_cfg=dict(nms=dict(type='nms', iou_threshold=0.5))))
