# Partial-label benchmark, baseline: a Faster R-CNN (half-width MobileNetV2 + FPN, GroupNorm, from
# scratch) trained on the two subsets of data/shapes_partial_plain joined (A labels
# circle/square/triangle, B star/cross) with a plain softmax: every object of the other subset's
# classes is trained as background.
#   python tools/misc/make_synthetic.py partial --out data/shapes_partial_plain --scene plain
#   python tools/analysis/benchmark_partial_labels.py --parallel  (this and the GroupSoftmax one)
_base_ = [
    '_base_/models/faster_rcnn_r50_fpn.py',
    '_base_/datasets/shapes_partial.py',
    '_base_/default_runtime.py',
]

# From scratch with GroupNorm (4 images a batch are too few for BatchNorm statistics; see
# configs/retinanet_r50_shapes.py). The backbone and head sizes follow
# configs/retinanet_mobilenetv2_facemask.py, which learns from scratch in a few hundred
# iterations on this CPU; a ResNet-18 Faster R-CNN on the cluttered shapes reached only val mAP
# 0.04 after 450 iterations (3.5 s each), too weak to compare the losses.
norm_cfg = dict(type='GN', num_groups=8, requires_grad=True)
model = dict(
    backbone=dict(
        _delete_=True,  # replaces the ResNet-50 of the base, none of whose keys apply
        type='MobileNetV2',
        widen_factor=0.5,
        out_indices=(1, 2, 4, 7),  # 16, 16, 48, 1280 channels at strides 4, 8, 16, 32
        frozen_stages=-1,
        norm_cfg=norm_cfg,
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[16, 16, 48, 1280], out_channels=128, norm_cfg=norm_cfg),
    # Anchors of 16 px at P2 up to 256 px at P6 (scale 4, COCO's 8 starts at 32 px): the objects
    # measure about 15-270 px after the resize to 320.
    rpn_head=dict(in_channels=128, feat_channels=128, anchor_generator=dict(scales=[4])),
    # Two samples per bin side as torchvision's Faster R-CNN does: the adaptive default (0)
    # samples up to 9x9 points per bin for the largest RoIs, and RoIAlign's backward with it cost
    # 42% of a training step here (before detkit's own CPU kernel).
    roi_head=dict(bbox_roi_extractor=dict(sampling_ratio=2),
                  bbox_head=dict(num_classes=5, in_channels=128, fc_out_channels=256)),
    # 256 RoIs per image instead of 512: about 5 objects an image need no more, and the 2-fc
    # head's cost on the CPU halves.
    train_cfg=dict(rcnn=dict(sampler=dict(num=256))))

# 600 training images, batch 4: 150 iterations an epoch; 8 epochs take about 31 minutes with one
# thread (README: Partial labels).
max_epochs = 8
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[7],
         gamma=0.1),
]
# AdamW from random weights, as configs/retinanet_mobilenetv2_facemask.py.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.001, weight_decay=0.05),
    clip_grad=dict(max_norm=35, norm_type=2))

default_hooks = dict(logger=dict(interval=25), checkpoint=dict(interval=max_epochs))
log_processor = dict(window_size=25)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
