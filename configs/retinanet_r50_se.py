# RetinaNet R50-FPN with squeeze-and-excitation, COCO 1x: configs/retinanet_r50.py plus an
# SEBlock (Hu et al., 2018) after conv3 (before the residual addition) of every Bottleneck of
# stages 2-4. The ImageNet ResNet-50 weights load into the convs; the SE blocks (keys
# layer{2,3,4}.*.se_block_after_conv3.*, reported as missing at load time) start untrained,
# with gates near 0.5: each residual branch of stages 2-4 starts at about half its ImageNet
# strength (the ContextBlock of configs/retinanet_r50_gcb.py starts as the identity instead).
_base_ = [
    '_base_/models/retinanet_r50_fpn.py',
    '_base_/datasets/coco_detection.py',
    '_base_/schedules/schedule_1x.py',
    '_base_/default_runtime.py',
]

model = dict(
    backbone=dict(
        plugins=[dict(cfg=dict(type='SEBlock', ratio=16),
                      stages=(False, True, True, True),
                      position='after_conv3')]))

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
