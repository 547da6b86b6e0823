# Quick start: the RetinaNet R50-FPN of configs/retinanet_r50.py with GroupNorm, trained from
# scratch (no ImageNet weights are needed) on the synthetic shapes set at 256 px, on a CPU.
#   python tools/misc/make_synthetic.py shapes --out data/shapes
#   python tools/train.py configs/retinanet_r50_shapes.py
_base_ = [
    '_base_/models/retinanet_r50_fpn.py',
    '_base_/datasets/shapes_detection.py',
    '_base_/default_runtime.py',
]

# From scratch, GroupNorm in the backbone, FPN and head towers: with 4 images a batch, BatchNorm
# statistics are too noisy to train from random weights (the same model with BN measured val
# mAP 0.000 after this schedule). Every stage trains.
norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    backbone=dict(frozen_stages=-1, norm_cfg=norm_cfg, norm_eval=False, init_cfg=None),
    neck=dict(norm_cfg=norm_cfg),
    bbox_head=dict(num_classes=5, norm_cfg=norm_cfg))

max_epochs = 5
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[4],
         gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=35, norm_type=2))

default_hooks = dict(logger=dict(interval=25), checkpoint=dict(interval=1, max_keep_ckpts=2))
log_processor = dict(window_size=25)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
