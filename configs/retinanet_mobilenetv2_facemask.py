# Face-mask detection on a CPU: RetinaNet with a MobileNetV2 backbone, GroupNorm, trained from
# scratch (no ImageNet weights needed) on the synthetic face-mask set at 320 px.
#   python tools/misc/make_synthetic.py facemask --out data/facemask
#   python tools/train.py configs/retinanet_mobilenetv2_facemask.py
# configs/_base_/datasets/facemask_voc.py says how to train on the real Kaggle set instead.
_base_ = [
    '_base_/models/retinanet_r50_fpn.py',
    '_base_/datasets/facemask_voc.py',
    '_base_/default_runtime.py',
]

# From scratch, GroupNorm everywhere (4 images a batch are too few for BatchNorm statistics;
# see configs/retinanet_r50_shapes.py). Every MobileNetV2 channel count is a multiple of 8.
norm_cfg = dict(type='GN', num_groups=8, requires_grad=True)
model = dict(
    backbone=dict(
        _delete_=True,  # replaces the ResNet-50 of the base, none of whose keys apply
        type='MobileNetV2',
        # Half width: a forward + backward of the width-1.0 backbone took 2.6x as long on
        # this CPU at 320 px (batch 4: 5.0 s against 1.9 s, both on the shared machine).
        widen_factor=0.5,
        out_indices=(2, 4, 7),  # 16, 48, 1280 channels at strides 8, 16, 32
        frozen_stages=-1,
        norm_cfg=norm_cfg,
        norm_eval=False,
        init_cfg=None),
    # A 128-channel FPN and 2 convs per head tower: 3.6 GFLOPs for neck + head at 320x320
    # against 23.5 with COCO's 256 channels and 4 convs (the backbone: 0.4 GFLOPs).
    neck=dict(in_channels=[16, 48, 1280], start_level=0, out_channels=128, norm_cfg=norm_cfg),
    bbox_head=dict(
        num_classes=3,
        in_channels=128,
        feat_channels=128,
        stacked_convs=2,
        norm_cfg=norm_cfg,
        # Smaller anchors than COCO's (octave base 3 instead of 4: 24-38 px at stride 8):
        # the smallest faces measure about 17 px after the resize.
        anchor_generator=dict(octave_base_scale=3)))

# 12 epochs of 240 images = 720 iterations of 4 images. Measured 2026-11-23 on the 2-core CPU:
# 9.5 min with 2 threads on the idle machine, val bbox mAP 0.428 (AP50 0.562); a run with one
# thread next to two other trainings: 21.5 min, mAP 0.515 (AP50 0.654). After 6 epochs the
# model found the faces (mAP ~0.25) but hardly told the classes apart.
max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=6)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# AdamW from random weights: warm-up over 100 iterations, lr x0.1 for the last 2 epochs.
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[10],
         gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.001, weight_decay=0.05),
    clip_grad=dict(max_norm=35, norm_type=2))

default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=6, max_keep_ckpts=2))
log_processor = dict(window_size=20)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
