"""Convert an Ultralytics-style YOLO data set (DATA.yaml + labels/*.txt) to COCO JSON files.

    python tools/dataset_converters/yolo2coco.py DATA.yaml --out-dir OUT [--skip-bad]

Writes ``OUT/instances_<split>.json`` for each of ``train``, ``val``, ``test`` that DATA.yaml
names: categories ``id = class index + 1`` in the order of ``names``; images with
``file_name`` relative to the yaml's ``path`` and their real width and height; boxes in float
pixels ``[x, y, w, h]`` (not rounded; clipped to the image), ``area = w * h``, ``iscrowd 0``.
An image without a label file, or with an empty one, is kept with no boxes. A malformed line, a
class outside ``names`` or a coordinate outside [0, 1] stops with the file, line number and line,
and nothing is written; ``--skip-bad`` warns per line instead and counts them at the end. Read a
split with ``CocoDataset(data_root=<path>, ann_file=OUT/instances_train.json,
data_prefix=dict(img=''), metainfo=dict(classes=names))`` (docs/own_data.md).
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from detkit.datasets.converters import (  # noqa: E402
    ConversionLog,
    read_data_yaml,
    split_to_coco,
)
from detkit.engine.checkpoint_hook import atomic_write, check_output_file  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('data', help='the data set\'s DATA.yaml')
    parser.add_argument('--out-dir', required=True, help='where instances_<split>.json go')
    parser.add_argument('--skip-bad', action='store_true',
                        help='skip malformed lines and unreadable images with a warning each')
    args = parser.parse_args(argv)
    log = ConversionLog()
    try:
        dataset = read_data_yaml(args.data)
        converted = {split: split_to_coco(dataset, split, skip_bad=args.skip_bad, log=log,
                                          warn=lambda m: print(f'warning: {m}', file=sys.stderr))
                     for split in dataset.splits}
        outputs = {split: osp.join(args.out_dir, f'instances_{split}.json')
                   for split in converted}
        for out in outputs.values():
            check_output_file(out)
    except (FileNotFoundError, ValueError) as error:   # YoloFormatError is a ValueError
        sys.exit(f'yolo2coco: {error}')
    for split, coco in converted.items():   # everything read and checked before any writing
        out = outputs[split]
        atomic_write(json.dumps(coco), out)
        print(f"wrote {out}: {len(coco['images'])} images, {len(coco['annotations'])} boxes, "
              f"{len(coco['categories'])} classes")
    for line in log.summary():
        print(line)
    return converted


if __name__ == '__main__':
    main()
