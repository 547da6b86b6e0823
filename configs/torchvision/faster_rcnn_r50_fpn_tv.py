# torchvision's fasterrcnn_resnet50_fpn (v1) as a detkit model, for inference with its weights
# converted by tools/model_converters/torchvision_to_detkit.py. On an image that needs no resize
# (short side 800, long side <= 1333) it gives torchvision's detections (same count and order,
# label = torchvision label - 1; boxes within 1e-3 px, scores within 1e-4:
# tests/test_torchvision_parity.py). Each comment names the torchvision behaviour an option
# reproduces.
#
# Classes: torchvision's 91 COCO categories without '__background__' (the checkpoint's
# meta.dataset_meta.classes: label == COCO category id - 1; 'N/A' at the unused ids), background
# last (index 90) as everywhere in detkit. Inference only: tools/test.py's CocoMetric expects
# CocoDataset's 80 contiguous classes.
default_scope = 'detkit'

model = dict(
    type='FasterRCNN',
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
        out_indices=(0, 1, 2, 3),  # C2-C5
        frozen_stages=1,
        norm_cfg=dict(type='FrozenBN', eps=0.0),
        norm_eval=True,
        style='pytorch',
        init_cfg=None),
    # FeaturePyramidNetwork + LastLevelMaxPool: P6 = max_pool2d(P5, kernel_size=1, stride=2).
    neck=dict(
        type='FPN',
        in_channels=[256, 512, 1024, 2048],
        out_channels=256,
        num_outs=5),
    rpn_head=dict(
        type='RPNHead',
        in_channels=256,
        feat_channels=256,
        anchor_generator=dict(
            type='AnchorGenerator',
            strides=[4, 8, 16, 32, 64],
            ratios=[0.5, 1.0, 2.0],
            sizes=[[32], [64], [128], [256], [512]],
            round_base_anchors=True,   # AnchorGenerator.generate_anchors: .round()
            strides_from_image=True),  # stride = padded image size // feature size, per axis
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[0.0, 0.0, 0.0, 0.0],
            target_stds=[1.0, 1.0, 1.0, 1.0],  # BoxCoder weights (1, 1, 1, 1)
            clamp_shrink=False),  # BoxCoder clamps dw, dh at log(1000 / 16) from above only
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    roi_head=dict(
        type='StandardRoIHead',
        # MultiScaleRoIAlign(['0', '1', '2', '3'], 7, sampling_ratio=2): RoIAlign with
        # aligned=False on P2-P5, level floor(4 + log2(sqrt(area) / 224) + 1e-6) in [2, 5].
        bbox_roi_extractor=dict(
            type='MultiLevelRoIAlign',
            output_size=7,
            sampling_ratio=2,
            aligned=False,
            featmap_strides=[4, 8, 16, 32],
            canonical_scale=224,
            canonical_level=4),
        # TwoMLPHead (fc6, fc7) + FastRCNNPredictor, 90 classes + background.
        bbox_head=dict(
            type='Shared2FCBBoxHead',
            in_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes=90,
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder',
                target_means=[0.0, 0.0, 0.0, 0.0],
                target_stds=[0.1, 0.1, 0.2, 0.2],  # BoxCoder weights (10, 10, 5, 5)
                clamp_shrink=False),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0))),
    test_cfg=dict(
        # RegionProposalNetwork.filter_proposals: per level the top 1000 by objectness, decode,
        # clip, remove boxes smaller than 1e-3, NMS 0.7 within each level, best 1000 overall.
        rpn=dict(
            nms_pre=1000,
            max_per_img=1000,
            nms=dict(type='nms', iou_threshold=0.7),
            min_bbox_size=1e-3),
        # RoIHeads.postprocess_detections: softmax, class-specific decode, clip, score > 0.05,
        # remove boxes smaller than 1e-2, NMS 0.5 per class, 100 detections.
        rcnn=dict(
            score_thr=0.05,
            nms=dict(type='nms', iou_threshold=0.5),
            max_per_img=100,
            min_bbox_size=1e-2)))

# min_size=800, max_size=1333. torchvision resizes the normalised float image (bilinear, size
# floor(side * scale)); detkit resizes the uint8 image with cv2 (size int(side * scale + 0.5)), so
# an image that needs resizing may come out 1 px different and its pixels differ by the uint8
# rounding. An image whose short side is 800 and long side at most 1333 is not resized by either.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='PackDetInputs'),
]
# What detkit.apis.inference_detector reads; there is no data set to evaluate on.
test_dataloader = dict(batch_size=1, num_workers=0, dataset=dict(pipeline=test_pipeline))
