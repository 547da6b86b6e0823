# torchvision's retinanet_resnet50_fpn (v1) as a detkit model: the layout of the weights that
# tools/model_converters/torchvision_to_detkit.py converts. Each comment names the torchvision
# behaviour an option reproduces. Used by configs/torchvision/retinanet_r50_fpn_tv.py (inference
# with torchvision's COCO weights) and retinanet_r50_fpn_tv_finetune.py (training from them).
model = dict(
    type='RetinaNet',
    # GeneralizedRCNNTransform: (x / 255 - mean) / std in RGB, the batch zero-padded (after
    # normalisation) at the bottom and right to a multiple of 32.
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    # resnet50 with FrozenBatchNorm2d; the COCO_V1 builder sets its eps to 0.0 (overwrite_eps).
    # For a checkpoint you trained yourself with torchvision, set norm_cfg.eps=1e-5.
    backbone=dict(
        type='ResNet',
        depth=50,
        out_indices=(1, 2, 3),  # C3-C5: returned_layers=[2, 3, 4]
        frozen_stages=1,
        norm_cfg=dict(type='FrozenBN', eps=0.0),
        norm_eval=True,
        style='pytorch',
        init_cfg=None),
    # FeaturePyramidNetwork + LastLevelP6P7(256, 256): P6 from the P5 output, P7 from relu(P6).
    neck=dict(
        type='FPN',
        in_channels=[512, 1024, 2048],
        out_channels=256,
        add_extra_convs='on_output',
        relu_before_extra_convs=True,
        num_outs=5),
    bbox_head=dict(
        type='RetinaHead',
        num_classes=91,
        in_channels=256,
        stacked_convs=4,
        feat_channels=256,
        anchor_generator=dict(
            type='AnchorGenerator',
            strides=[8, 16, 32, 64, 128],
            ratios=[0.5, 1.0, 2.0],
            # (x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))) for x = 32 ... 512
            sizes=[[32, 40, 50], [64, 80, 101], [128, 161, 203], [256, 322, 406],
                   [512, 645, 812]],
            round_base_anchors=True,   # AnchorGenerator.generate_anchors: .round()
            strides_from_image=True),  # stride = padded image size // feature size, per axis
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[0.0, 0.0, 0.0, 0.0],
            target_stds=[1.0, 1.0, 1.0, 1.0],  # BoxCoder weights (1, 1, 1, 1)
            clamp_shrink=False),  # BoxCoder clamps dw, dh at log(1000 / 16) from above only
        loss_cls=dict(type='FocalLoss', gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    # RetinaNet.postprocess_detections: per level sigmoid, score > 0.05, top 1000 (anchor, class)
    # pairs, decode, clip; NMS 0.5 per class over all levels; 300 detections.
    test_cfg=dict(
        nms_pre=1000,
        min_bbox_size=-1,  # torchvision's RetinaNet removes no small boxes
        score_thr=0.05,
        nms=dict(type='nms', iou_threshold=0.5),
        max_per_img=300))
