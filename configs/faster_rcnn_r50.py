# Faster R-CNN R50-FPN, COCO 1x: SGD lr 0.02 (8 GPUs x 2 images), warm-up 500 iterations,
# lr x0.1 after epochs 8 and 11, 12 epochs. Data under data/coco/ (see data/README.md).
_base_ = [
    '_base_/models/faster_rcnn_r50_fpn.py',
    '_base_/datasets/coco_detection.py',
    '_base_/schedules/schedule_1x.py',  # SGD lr 0.02, momentum 0.9, weight decay 1e-4
    '_base_/default_runtime.py',
]
