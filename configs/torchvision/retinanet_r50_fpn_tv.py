# torchvision's retinanet_resnet50_fpn (v1) as a detkit model, for inference with its weights
# converted by tools/model_converters/torchvision_to_detkit.py. On an image that needs no resize
# (short side 800, long side <= 1333) it gives torchvision's detections (same count, labels and
# order; boxes within 1e-3 px, scores within 1e-4: tests/test_torchvision_parity.py). Each comment
# names the torchvision behaviour an option reproduces.
#
# Labels index torchvision's 91 COCO categories (the checkpoint's meta.dataset_meta.classes:
# label == COCO category id, with '__background__' and 'N/A' at the unused ids). Inference only:
# tools/test.py's CocoMetric expects CocoDataset's 80 contiguous classes. To train from these
# weights on your own classes: retinanet_r50_fpn_tv_finetune.py.
_base_ = '../_base_/models/retinanet_r50_fpn_tv.py'

default_scope = 'detkit'

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
