# Partial-label benchmark, GroupSoftmax: the same model, data and schedule as the softmax
# baseline, but for an image of subset A (B) the classes of B (A) are merged with background in
# both the RPN and the box classifier, so unlabelled objects are not trained as background.
_base_ = './faster_rcnn_mobilenetv2_shapes_partial_softmax.py'

model = dict(
    rpn_head=dict(num_datasets=2, use_group_softmax=True, loss_cls=None),
    roi_head=dict(bbox_head=dict(use_group_softmax=True, loss_cls=None)))
