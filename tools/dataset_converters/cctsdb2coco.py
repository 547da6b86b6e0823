"""Convert CCTSDB annotations (2017 GroundTruth.txt or a 2021 VOC XML folder) to a COCO JSON.

Usage::

    python tools/dataset_converters/cctsdb2coco.py IN OUT.json --img-dir DIR
        [--skip-missing-images] [--on-error raise|warn]

``IN`` is the 2017 ``GroundTruth.txt`` or the folder of 2021 XML files; ``DIR`` the image folder
(sizes are read from the images). Categories are ``1 warning``, ``2 prohibitory``,
``3 mandatory``; ``file_name`` is relative to ``DIR``; ``bbox`` is COCO ``[x, y, w, h]`` of the
``(x1, y1, x2, y2)`` boxes, ``area = w * h``, ``iscrowd = 1`` for VOC ``difficult`` boxes (an
ignore region for :class:`CocoDataset`). Read the result with::

    CocoDataset(ann_file=OUT.json, data_prefix=dict(img=DIR),
                metainfo=dict(classes=('warning', 'prohibitory', 'mandatory')))

Examples (data/README.md shows the layouts)::

    python tools/dataset_converters/cctsdb2coco.py data/cctsdb/xml \\
        data/cctsdb/annotations/instances_train.json --img-dir data/cctsdb/train_img \\
        --skip-missing-images
    python tools/dataset_converters/cctsdb2coco.py data/cctsdb/xml \\
        data/cctsdb/annotations/instances_test.json --img-dir data/cctsdb/test_img \\
        --skip-missing-images
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

from detkit.datasets.cctsdb import CCTSDB_CLASSES, load_cctsdb  # noqa: E402

CATEGORIES = tuple(dict(id=k + 1, name=name, supercategory='traffic sign')
                   for k, name in enumerate(CCTSDB_CLASSES))


def cctsdb_to_coco(ann_file: str, img_dir: str, skip_missing_images: bool = False,
                   on_error: str = 'raise') -> dict:
    """Read CCTSDB annotations and return them as a COCO detection dict.

    Args:
        ann_file: ``GroundTruth.txt`` (2017) or the folder of XML files (2021).
        img_dir: the image folder.
        skip_missing_images: skip annotations whose image is not in ``img_dir``.
        on_error: ``'raise'`` or ``'warn'`` for malformed entries (see
            :mod:`detkit.datasets.cctsdb`).

    Returns:
        ``dict(info, licenses, images, annotations, categories)``; image ids are those of
        :func:`~detkit.datasets.cctsdb.load_cctsdb`, annotation ids count from 1.
    """
    data_list = load_cctsdb(ann_file, img_dir, on_error=on_error,
                            skip_missing_images=skip_missing_images)
    images, annotations = [], []
    for info in data_list:
        file_name = os.path.relpath(info['img_path'], img_dir).replace(os.sep, '/')
        images.append(dict(id=info['img_id'], file_name=file_name, height=info['height'],
                           width=info['width']))
        for instance in info['instances']:
            x1, y1, x2, y2 = instance['bbox']
            w, h = x2 - x1, y2 - y1
            annotations.append(dict(id=len(annotations) + 1, image_id=info['img_id'],
                                    category_id=instance['bbox_label'] + 1,
                                    bbox=[x1, y1, w, h], area=w * h,
                                    iscrowd=int(instance['ignore_flag']), segmentation=[]))
    return dict(info=dict(description=f'CCTSDB converted from {ann_file} by detkit'),
                licenses=[], images=images, annotations=annotations,
                categories=[dict(c) for c in CATEGORIES])


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, convert, write ``OUT.json`` and print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('ann', help='GroundTruth.txt (2017) or the folder of XML files (2021)')
    parser.add_argument('out', help='the COCO JSON file to write')
    parser.add_argument('--img-dir', required=True, help='the folder holding the images')
    parser.add_argument('--skip-missing-images', action='store_true',
                        help='skip annotations whose image is not in --img-dir (one XML folder '
                             'holding several splits)')
    parser.add_argument('--on-error', choices=('raise', 'warn'), default='raise',
                        help='stop at the first malformed entry, or skip them with one warning')
    args = parser.parse_args(argv)
    coco = cctsdb_to_coco(args.ann, args.img_dir, skip_missing_images=args.skip_missing_images,
                          on_error=args.on_error)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    with open(args.out, 'w', encoding='utf-8') as f:
        json.dump(coco, f, separators=(',', ':'))
    counts = {c['name']: 0 for c in CATEGORIES}
    for ann in coco['annotations']:
        counts[CCTSDB_CLASSES[ann['category_id'] - 1]] += 1
    print(f"wrote {args.out}: {len(coco['images'])} images, {len(coco['annotations'])} boxes "
          f"({', '.join(f'{k}={v}' for k, v in counts.items())})")


if __name__ == '__main__':
    main()
