# Partial-label benchmark, GroupSoftmax: the same model, data and schedule as the softmax
# baseline, but for an image of subset A (B) the classes of B (A) are merged with background in
# both the RPN and the box classifier, so unlabelled objects are not trained as background.
_base_ = './faster_rcnn_mobilenetv2_shapes_partial_softmax.py'

# The RPN: a softmax over {object of subset A, object of B, background}. use_sigmoid=False
# replaces the base's sigmoid objectness (GroupSoftmaxLoss is a softmax).
model = dict(
    rpn_head=dict(num_datasets=2, loss_cls=dict(type='GroupSoftmaxLoss', use_sigmoid=False)),
    roi_head=dict(bbox_head=dict(loss_cls=dict(type='GroupSoftmaxLoss'))))
