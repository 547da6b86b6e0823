# Fine-tune torchvision's COCO RetinaNet R50-FPN (v1) on your own classes (docs/own_data.md):
#   python tools/model_converters/torchvision_to_detkit.py \
#       ~/.cache/torch/hub/checkpoints/retinanet_resnet50_fpn_coco-eeacb38b.pth \
#       checkpoints/retinanet_r50_fpn_tv.pth
# then a config with `_base_` this file and `own_data = dict(root=..., classes=...)`. Every
# converted tensor loads except the classifier's last conv (bbox_head.retina_cls: 9 x 91 outputs
# in the checkpoint, 9 x len(classes) here), which starts from the head's own initialisation
# (bias at the 0.01 prior); the log names it as a size mismatch.
_base_ = [
    '../_base_/models/retinanet_r50_fpn_tv.py',
    '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime.py',
]

model = dict(
    # COCO's 80 classes (CocoDataset's contiguous labels) when used as it is; own_data sets its
    # own count. Either way the 91-class classifier of the checkpoint does not load.
    bbox_head=dict(num_classes=80),
    # torchvision's RetinaNet trains with Matcher(0.5, 0.4, allow_low_quality_matches=True):
    # IoU >= 0.5 foreground, < 0.4 background, and each box's best anchors foreground however
    # low their IoU (min_pos_iou=0.0; IoU 0 is still no match). One difference: an anchor that
    # is the best of several boxes goes to the last of them (mmdetection's rule), where
    # torchvision gives it to the box it overlaps most.
    train_cfg=dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4,
                      min_pos_iou=0.0, ignore_iof_thr=-1),
        allowed_border=-1),
    # 100 detections per image, as COCO evaluation counts
    test_cfg=dict(max_per_img=100))

# Read by mmengine's Runner after the model's own initialisation, non-strictly: tensors whose
# shape differs (the classifier) keep their initial values. Write the converted weights here, or
# point load_from (or tools/train.py --cfg-options load_from=...) at them.
load_from = 'checkpoints/retinanet_r50_fpn_tv.pth'

# A fine-tune, not COCO from ImageNet: the 1x schedule (12 epochs, lr x0.1 after 8 and 11) with
# a short warm-up and the learning rate of torchvision's reference recipe (0.01 for 16 images)
# scaled to this batch of 2.
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.00125, momentum=0.9, weight_decay=0.0001))
auto_scale_lr = dict(enable=False, base_batch_size=2)

# --amp's fast path: bfloat16 autocast + channels-last on a CPU with AVX512-BF16 or AMX (float32,
# with one warning, elsewhere; fp16 on CUDA). --cfg-options amp=False: float32.
amp = True
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=1))
