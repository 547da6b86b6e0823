# Face masks in the Pascal VOC layout of the Kaggle face-mask detection set: data_root holds
# annotations/*.xml, images/* and the split files train.txt / val.txt (one image stem a line).
# Three classes, labels 0-2: with_mask, without_mask, mask_weared_incorrect. Images are resized
# so that the longer side is 320 px. Boxes and the metric: see detkit/datasets/voc.py.
#
# Synthetic set (240 train + 60 val images, about 7 s): tools/train.py and tools/test.py draw it
# into data_root when it is missing (generated_data below), as does
#   python tools/misc/make_synthetic.py facemask --out data/facemask
# The real set (https://www.kaggle.com/datasets/andrewmvd/face-mask-detection, 853 images)
# unpacks into the same annotations/ + images/ layout; point data_root at it, e.g.
#   --cfg-options train_dataloader.dataset.data_root=data/kaggle_facemask/ \
#       val_dataloader.dataset.data_root=data/kaggle_facemask/ \
#       test_dataloader.dataset.data_root=data/kaggle_facemask/
# It ships without split files. Make a seeded 80/20 split once (683 train, 170 val stems):
#   python -c "import pathlib, random; r = pathlib.Path('data/kaggle_facemask'); \
#     s = sorted(p.stem for p in (r / 'annotations').glob('*.xml')); \
#     random.Random(0).shuffle(s); n = len(s) // 5; \
#     (r / 'val.txt').write_text(''.join(x + '\n' for x in sorted(s[:n]))); \
#     (r / 'train.txt').write_text(''.join(x + '\n' for x in sorted(s[n:])))"
# or set ann_file=None to read every XML file of annotations/ (sorted by name).
dataset_type = 'FaceMaskDataset'
data_root = 'data/facemask/'
classes = ('with_mask', 'without_mask', 'mask_weared_incorrect')
generated_data = dict(kind='facemask', root=data_root, num_train=240, num_val=60, seed=0)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=(320, 320), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
# Annotations are loaded after Resize: the metric below takes its ground truth from the
# samples, which must be in original-image pixels, as the detections are.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(320, 320), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackDetInputs'),
]

train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='train.txt',
        data_prefix=dict(img='images/', ann='annotations/'),
        metainfo=dict(classes=classes),
        filter_cfg=dict(filter_empty_gt=True),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='val.txt',
        data_prefix=dict(img='images/', ann='annotations/'),
        metainfo=dict(classes=classes),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader

# No COCO JSON: ann_file=None builds the COCO ground truth from the val samples (difficult
# faces become ignore regions).
val_evaluator = dict(type='CocoMetric', ann_file=None, metric='bbox', classwise=True)
test_evaluator = val_evaluator
