# Quick start: RetinaNet R50-FPN trained from scratch (no ImageNet weights are needed) on the
# synthetic shapes set at 160 px, on a CPU, in about 10 minutes with --amp's fast path (on here):
#   python tools/train.py configs/retinanet_r50_shapes.py
# Measured on a fresh clone of the project's 2-core EPYC (README, "Quick start"): val bbox mAP
# 0.554 after these 7 epochs in 512 s, data generation and the one-off compilation of detkit.ops
# included (float32: 0.598 in 865 s). 7 epochs leave a margin under 10 minutes for a slower
# machine.
_base_ = [
    '_base_/models/retinanet_r50_fpn.py',
    '_base_/datasets/shapes_detection.py',
    '_base_/default_runtime.py',
]

# From scratch, GroupNorm everywhere (8 groups): batch statistics of 8 small images are a noisy
# start. The FPN and head are those of configs/retinanet_mobilenetv2_facemask.py: 128 channels,
# 2 convs per tower. With COCO's 256 channels and 4 convs the same 10 minutes reached val mAP
# 0.13 (a heavier iteration, 1.2 s against 0.56 s, and a slower start); anchors from 24 px
# (octave base 3) for the smallest shapes.
norm_cfg = dict(type='GN', num_groups=8, requires_grad=True)
model = dict(
    backbone=dict(frozen_stages=-1, norm_cfg=norm_cfg, norm_eval=False, init_cfg=None),
    neck=dict(out_channels=128, norm_cfg=norm_cfg),
    bbox_head=dict(num_classes=5, in_channels=128, feat_channels=128, stacked_convs=2,
                   norm_cfg=norm_cfg, anchor_generator=dict(octave_base_scale=3)))

# --amp's fast path by default: bfloat16 autocast + channels-last on a CPU with AVX512-BF16 or
# AMX (float32, with one warning, elsewhere; fp16 on CUDA). --cfg-options amp=False: float32.
amp = True

max_epochs = 7
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', begin=0, end=max_epochs, by_epoch=True, T_max=max_epochs,
         eta_min=0),
]
optim_wrapper = dict(
    type='OptimWrapper',
    # fused: one kernel for the whole update on the CPU too (10 ms a step here, against 40-60 ms
    # for the default multi-tensor loop: 28M parameters, 7% of an iteration).
    optimizer=dict(type='AdamW', lr=0.002, weight_decay=0.05, fused=True),
    clip_grad=dict(max_norm=35, norm_type=2))

default_hooks = dict(logger=dict(interval=25),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
log_processor = dict(window_size=25)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
