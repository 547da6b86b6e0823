# RetinaNet MobileNetV2-FPN, COCO 1x (the recipe of configs/retinanet_r50.py with another
# backbone). FPN reads the C3-C5 equivalents of MobileNetV2 (out indices 2, 4, 7: 32, 96 and
# 1280 channels at strides 8, 16, 32) and adds P6, P7 with stride-2 convs on the 1280-channel
# output, so the pyramid has the strides 8..128 of the RetinaNet anchors.
_base_ = [
    '_base_/models/retinanet_r50_fpn.py',
    '_base_/datasets/coco_detection.py',
    '_base_/schedules/schedule_1x.py',
    '_base_/default_runtime.py',
]

model = dict(
    backbone=dict(
        _delete_=True,  # replaces the ResNet-50 of the base, none of whose keys apply
        type='MobileNetV2',
        widen_factor=1.0,
        out_indices=(2, 4, 7),
        # The stem, layer1 and layer2 (everything up to stride 4, as the frozen stem + stage 1
        # of the ResNet recipe) stay frozen; BatchNorm statistics stay fixed, since 2 images
        # per GPU are too few to estimate them.
        frozen_stages=2,
        norm_eval=True,
        # torchvision's MobileNet_V2_Weights.IMAGENET1K_V2 (72.15 top-1), what
        # 'torchvision://mobilenet_v2' means today, named so that a torchvision upgrade cannot
        # change it; read from the torch hub cache (mobilenet_v2-7ebf99e0.pth).
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://MobileNet_V2_Weights.IMAGENET1K_V2')),
    neck=dict(in_channels=[32, 96, 1280], start_level=0))

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
