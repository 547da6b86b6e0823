# RetinaNet VGG16(-BN)-FPN, COCO 1x (the recipe of configs/retinanet_r50.py with another
# backbone). VGG16 has no stride-32 stage (its conv5_x runs at stride 16; the pool after it is
# not applied), so FPN reads conv4_x and conv5_x (out indices 3, 4: 512 channels each at strides
# 8 and 16) as P3 and P4, and makes P5, P6, P7 (strides 32, 64, 128) with three stride-2 convs,
# the first on conv5_x: the strides 8..128 of the RetinaNet anchors.
_base_ = [
    '_base_/models/retinanet_r50_fpn.py',
    '_base_/datasets/coco_detection.py',
    '_base_/schedules/schedule_1x.py',
    '_base_/default_runtime.py',
]

model = dict(
    backbone=dict(
        _delete_=True,  # replaces the ResNet-50 of the base, none of whose keys apply
        type='VGG',
        depth=16,
        # vgg16_bn rather than vgg16: 73.4 vs 71.6 ImageNet top-1 for the same convs, and its
        # (frozen) BatchNorm keeps every conv's input at the scale it was trained for.
        with_bn=True,
        out_indices=(3, 4),
        # conv1_x and conv2_x (everything up to stride 4, as the frozen stem + stage 1 of the
        # ResNet recipe; 31% of VGG16's multiply-adds, at full and half resolution) stay
        # frozen; BatchNorm statistics stay fixed: 2 images per GPU are too few to estimate them.
        frozen_stages=2,
        norm_eval=True,
        # torchvision's VGG16_BN_Weights.IMAGENET1K_V1 (vgg16_bn-6c64b313.pth), read from the
        # torch hub cache.
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://VGG16_BN_Weights.IMAGENET1K_V1')),
    neck=dict(in_channels=[512, 512], start_level=0))

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
