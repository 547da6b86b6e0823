"""Convert a folder of LabelMe JSON files to one COCO JSON file.

    python tools/dataset_converters/labelme2coco.py LABELME_DIR --out ann.json
        [--classes classes.txt] [--skip-bad]

Rectangles and polygons become boxes (their points' minimum and maximum, clipped to the image);
categories follow ``--classes`` (one name per line) or else the labels sorted by name, ids from
1; ``file_name`` is relative to LABELME_DIR. A JSON whose image file is missing, a shape that is
not a rectangle or polygon, or a label that ``--classes`` does not list stops with the file and
shape, and nothing is written; ``--skip-bad`` warns and skips such images and shapes instead (a
label outside ``--classes`` always stops).
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from detkit.datasets.converters import (  # noqa: E402
    ConversionLog,
    labelme_to_coco,
    read_class_file,
)
from detkit.engine.checkpoint_hook import atomic_write, check_output_file  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('folder', help='the folder of LabelMe .json files')
    parser.add_argument('--out', required=True, help='the COCO JSON file to write')
    parser.add_argument('--classes', help='a text file with one class name per line')
    parser.add_argument('--skip-bad', action='store_true',
                        help='skip bad images and shapes with a warning each')
    args = parser.parse_args(argv)
    log = ConversionLog()
    try:
        check_output_file(args.out)
        classes = read_class_file(args.classes) if args.classes else None
        coco = labelme_to_coco(args.folder, classes, skip_bad=args.skip_bad, log=log,
                               warn=lambda m: print(f'warning: {m}', file=sys.stderr))
    except (FileNotFoundError, ValueError) as error:   # LabelMeFormatError is a ValueError
        sys.exit(f'labelme2coco: {error}')
    atomic_write(json.dumps(coco), args.out)
    print(f"wrote {args.out}: {len(coco['images'])} images, {len(coco['annotations'])} boxes, "
          f"classes {', '.join(c['name'] for c in coco['categories'])}")
    for line in log.summary():
        print(line)
    return coco


if __name__ == '__main__':
    main()
