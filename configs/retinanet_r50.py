# RetinaNet R50-FPN, COCO 1x: SGD lr 0.01 (8 GPUs x 2 images), warm-up 500 iterations,
# steps at epochs 8 and 11, 12 epochs. Data under data/coco/ (see data/README.md).
_base_ = [
    '_base_/models/retinanet_r50_fpn.py',
    '_base_/datasets/coco_detection.py',
    '_base_/schedules/schedule_1x.py',
    '_base_/default_runtime.py',
]

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001))
