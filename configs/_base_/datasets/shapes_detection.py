# The synthetic shapes set of the quick start: COCO layout, five classes, 'simple' scenes (1-4
# filled shapes of 32 px and more, none overlapping another, on a smooth gradient), images of
# 128-176 px resized so that the longer side is 160. tools/train.py and tools/test.py draw it
# into data_root when it is missing (generated_data: 1000 train + 60 val images, seed 0, about
# 3 s); by hand: python tools/misc/make_synthetic.py shapes --out data/shapes_simple
#   --scene simple --num-train 1000 --min-size 128 --max-size 176
dataset_type = 'CocoDataset'
data_root = 'data/shapes_simple/'
classes = ('circle', 'square', 'triangle', 'star', 'cross')
generated_data = dict(kind='shapes', root=data_root, num_train=1000, num_val=60, seed=0,
                      scene='simple', min_size=128, max_size=176)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=(160, 160), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(160, 160), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackDetInputs'),
]

train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        metainfo=dict(classes=classes),
        filter_cfg=dict(filter_empty_gt=True),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
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
