# COCO 2017 (80 classes, data/coco/) and CCTSDB 2021 traffic signs (3 classes, data/cctsdb/) as
# one training set; data/README.md shows both layouts. JointDataset puts the labels in one union
# space: COCO's classes 0..79, then CCTSDB's warning/prohibitory/mandatory 80..82, background
# 83 (the model has num_classes=83). Each image carries its data set's label_groups (COCO
# images: COCO classes 1..80, the signs and background 0; CCTSDB images: signs 1..3, the rest
# 0), computed from the sub-data sets' classes, for a GroupSoftmax loss.
coco_root = 'data/coco/'
cctsdb_root = 'data/cctsdb/'

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackDetInputs'),
]

train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type='JointDataset',
        datasets=[
            dict(type='CocoDataset',
                 data_root=coco_root,
                 ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=32)),
            # The CCTSDB 2021 XML package annotates the training and the test images together:
            # the image folder picks the training split, the other XMLs are skipped.
            dict(type='CCTSDBDataset',
                 data_root=cctsdb_root,
                 ann_file='xml/',
                 data_prefix=dict(img='train_img/'),
                 skip_missing_images=True,
                 filter_cfg=dict(filter_empty_gt=True)),
        ],
        pipeline=train_pipeline))

# Validation on COCO val2017 (its 80 classes are union labels 0..79). The joint model also
# predicts labels 80..82 (signs), which COCO's annotation file has no category for:
# skip_other_labels=True leaves them out (and logs how many).
# CCTSDB's test split: convert it once with
#   python tools/dataset_converters/cctsdb2coco.py data/cctsdb/xml \
#       data/cctsdb/annotations/instances_test.json --img-dir data/cctsdb/test_img \
#       --skip-missing-images
# and test with CocoDataset(data_root=cctsdb_root, ann_file='annotations/instances_test.json',
# data_prefix=dict(img='test_img/'), metainfo=dict(classes=('warning', 'prohibitory',
# 'mandatory'))) and CocoMetric(ann_file=..., label_offset=80, skip_other_labels=True), which
# maps the model's labels 80..82 to the file's 3 classes and leaves COCO's classes out.
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CocoDataset',
        data_root=coco_root,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='CocoMetric',
    ann_file=coco_root + 'annotations/instances_val2017.json',
    metric='bbox',
    skip_other_labels=True)
test_evaluator = val_evaluator
