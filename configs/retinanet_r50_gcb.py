# RetinaNet R50-FPN with global context blocks, COCO 1x: configs/retinanet_r50.py plus a
# ContextBlock (GCNet, Cao et al., 2019; attention pooling, channel-add fusion, bottleneck ratio
# 1/4) after conv3 of every Bottleneck of stages 2-4. Its last conv starts at zero, so each
# block starts as the identity and the ImageNet ResNet-50 features are unchanged at step 0.
_base_ = [
    '_base_/models/retinanet_r50_fpn.py',
    '_base_/datasets/coco_detection.py',
    '_base_/schedules/schedule_1x.py',
    '_base_/default_runtime.py',
]

model = dict(
    backbone=dict(
        plugins=[dict(cfg=dict(type='ContextBlock', ratio=1 / 4),
                      stages=(False, True, True, True),
                      position='after_conv3')]))

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
