# One Faster R-CNN R50-FPN trained on COCO (80 classes) and CCTSDB (3 traffic-sign classes)
# together, although each labels only its own classes. GroupSoftmax: for an image from data
# set d, the classes d does not annotate are merged with background, so unlabelled signs in
# COCO images and unlabelled cars in CCTSDB images are not trained as background.
# Labels: COCO 0..79, CCTSDB 80..82, background 83; COCO 1x schedule (SGD lr 0.02).
_base_ = [
    '_base_/models/faster_rcnn_r50_fpn.py',
    '_base_/datasets/coco_cctsdb_joint.py',
    '_base_/schedules/schedule_1x.py',
    '_base_/default_runtime.py',
]

model = dict(
    # RPN: a softmax over {object of COCO, object of CCTSDB, background}; an image's own data
    # set's objects are foreground, the other data set's "objects" are merged with background.
    # use_sigmoid=False replaces the base's sigmoid objectness (GroupSoftmaxLoss is a softmax).
    rpn_head=dict(num_datasets=2, loss_cls=dict(type='GroupSoftmaxLoss', use_sigmoid=False)),
    roi_head=dict(bbox_head=dict(num_classes=83, loss_cls=dict(type='GroupSoftmaxLoss'))))
