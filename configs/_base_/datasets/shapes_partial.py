# The partial-label shapes set, plain scenes: subset A annotates only circle/square/triangle,
# subset B only star/cross, both drawn from the same images with all five classes; val is fully
# labelled. tools/train.py and tools/test.py draw it into data_root when it is missing
# (generated_data; the same as python tools/misc/make_synthetic.py partial
# --out data/shapes_partial_plain --scene plain).
# Training joins A and B in a JointDataset: the union labels are classes_a + classes_b, in that
# order (0..2 = A's, 3..4 = B's, background = 5), and every image carries its subset's
# label_groups ([1, 2, 3, 0, 0, 0] for A, [0, 0, 0, 1, 2, 0] for B) for a GroupSoftmax loss;
# with a plain softmax the same data trains the other subset's objects as background.
# Another data_root: --cfg-options train_dataloader.dataset.datasets.0.data_root=... (and .1.)
data_root = 'data/shapes_partial_plain/'
classes_a = ('circle', 'square', 'triangle')
classes_b = ('star', 'cross')
classes = classes_a + classes_b  # the union label order; the model has num_classes=5
generated_data = dict(kind='partial', root=data_root, scene='plain', num_train=600, num_val=100,
                      seed=0)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=(320, 320), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(320, 320), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackDetInputs'),
]

# Images whose objects all belong to the other subset's classes have no box here; they are kept
# (no filter_empty_gt) so that A and B stay samples of the same image distribution.
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type='JointDataset',
        datasets=[
            dict(type='CocoDataset',
                 data_root=data_root,
                 ann_file='annotations/instances_train_a.json',
                 data_prefix=dict(img='train/'),
                 metainfo=dict(classes=classes_a)),
            dict(type='CocoDataset',
                 data_root=data_root,
                 ann_file='annotations/instances_train_b.json',
                 data_prefix=dict(img='train/'),
                 metainfo=dict(classes=classes_b)),
        ],
        pipeline=train_pipeline))
# Validation: the fully labelled set, read in the union label order; CocoMetric maps each label
# to the file's category id by name (dataset_meta['classes']), so the orders need not agree.
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CocoDataset',
        data_root=data_root,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        metainfo=dict(classes=classes),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val.json',
    metric='bbox',
    classwise=True)
test_evaluator = val_evaluator
