"""Generate a synthetic detection data set (COCO format, or Pascal VOC for the face masks).

Usage::

    python tools/misc/make_synthetic.py shapes --out data/shapes [--num-train 300]
        [--num-val 60] [--min-size 256] [--max-size 512] [--seed 0] [--scene simple]
    python tools/misc/make_synthetic.py partial --out data/shapes_partial [--num-train 600]
        [--num-val 100] [--min-size 256] [--max-size 512] [--seed 0] [--scene plain]
    python tools/misc/make_synthetic.py facemask --out data/facemask [--num-train 240]
        [--num-val 60] [--min-size 256] [--max-size 448] [--seed 0]

Each data set is a subcommand; its generator lives in ``detkit/datasets/synthetic.py``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

from detkit.datasets.synthetic import (  # noqa: E402
    PARTIAL_CLASSES,
    SCENES,
    make_facemask,
    make_shapes,
    make_shapes_partial,
    summarize_coco,
    summarize_voc,
)


def run_shapes(args: argparse.Namespace) -> None:
    """Generate the shapes set and print its summary."""
    start = time.perf_counter()
    ann_files = make_shapes(args.out, num_train=args.num_train, num_val=args.num_val,
                            min_size=args.min_size, max_size=args.max_size, seed=args.seed,
                            scene=args.scene)
    seconds = time.perf_counter() - start
    num_images = args.num_train + args.num_val
    print(f'wrote {num_images} images to {args.out} in {seconds:.1f} s '
          f'({1000 * seconds / max(num_images, 1):.0f} ms/image)')
    for ann_file in ann_files.values():
        print(summarize_coco(ann_file))


def add_shapes_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``shapes`` subcommand: five shape classes on textured backgrounds."""
    parser = subparsers.add_parser('shapes', help='circles, squares, triangles, stars, crosses')
    parser.add_argument('--out', required=True, help='output folder, e.g. data/shapes')
    parser.add_argument('--num-train', type=int, default=300, help='training images')
    parser.add_argument('--num-val', type=int, default=60, help='validation images')
    parser.add_argument('--min-size', type=int, default=256, help='smallest image side (px)')
    parser.add_argument('--max-size', type=int, default=512, help='largest image side (px)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (same seed, same bytes)')
    parser.add_argument('--scene', choices=SCENES, default='cluttered',
                        help="'simple': 1-4 filled shapes, none overlapping, on a gradient (the "
                             "quick start's set); 'plain': no clutter or crowd regions")
    parser.set_defaults(func=run_shapes)


def run_partial(args: argparse.Namespace) -> None:
    """Generate the partial-label shapes set and print its summary."""
    start = time.perf_counter()
    ann_files = make_shapes_partial(args.out, num_train=args.num_train, num_val=args.num_val,
                                    min_size=args.min_size, max_size=args.max_size,
                                    seed=args.seed, scene=args.scene)
    seconds = time.perf_counter() - start
    num_images = args.num_train + args.num_val
    print(f'wrote {num_images} images to {args.out} in {seconds:.1f} s '
          f'({1000 * seconds / max(num_images, 1):.0f} ms/image)')
    print(f"subset A annotates {', '.join(PARTIAL_CLASSES['a'])}; "
          f"subset B annotates {', '.join(PARTIAL_CLASSES['b'])}")
    for ann_file in ann_files.values():
        print(summarize_coco(ann_file))


def add_partial_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``partial`` subcommand: the shapes images as two partially labelled subsets."""
    parser = subparsers.add_parser(
        'partial', help='shapes with two training subsets that each label only some classes')
    parser.add_argument('--out', required=True, help='output folder, e.g. data/shapes_partial')
    parser.add_argument('--num-train', type=int, default=600,
                        help='training images of both subsets together (A gets the first half)')
    parser.add_argument('--num-val', type=int, default=100, help='validation images')
    parser.add_argument('--min-size', type=int, default=256, help='smallest image side (px)')
    parser.add_argument('--max-size', type=int, default=512, help='largest image side (px)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (same seed, same bytes)')
    parser.add_argument('--scene', choices=SCENES, default='cluttered',
                        help="'plain': the objects alone (no clutter, no crowd regions, none "
                             "under 24 px), which a detector learns from scratch much faster")
    parser.set_defaults(func=run_partial)


def run_facemask(args: argparse.Namespace) -> None:
    """Generate the face-mask set (VOC layout) and print its summary."""
    start = time.perf_counter()
    split_files = make_facemask(args.out, num_train=args.num_train, num_val=args.num_val,
                                min_size=args.min_size, max_size=args.max_size, seed=args.seed)
    seconds = time.perf_counter() - start
    num_images = args.num_train + args.num_val
    print(f'wrote {num_images} images to {args.out} in {seconds:.1f} s '
          f'({1000 * seconds / max(num_images, 1):.0f} ms/image): images/*.png, '
          'annotations/*.xml (Pascal VOC), train.txt, val.txt')
    for split, split_file in split_files.items():
        if (args.num_train if split == 'train' else args.num_val) > 0:
            print(summarize_voc(args.out, os.path.basename(split_file)))


def add_facemask_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``facemask`` subcommand: cartoon faces with, without and with badly worn masks."""
    parser = subparsers.add_parser(
        'facemask', help='faces with_mask / without_mask / mask_weared_incorrect, in the VOC '
                         'layout of the Kaggle face-mask set')
    parser.add_argument('--out', required=True, help='output folder, e.g. data/facemask')
    parser.add_argument('--num-train', type=int, default=240, help='training images')
    parser.add_argument('--num-val', type=int, default=60, help='validation images')
    parser.add_argument('--min-size', type=int, default=256, help='smallest image side (px)')
    parser.add_argument('--max-size', type=int, default=448, help='largest image side (px)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (same seed, same bytes)')
    parser.set_defaults(func=run_facemask)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the chosen generator."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    subparsers = parser.add_subparsers(dest='dataset', required=True, metavar='DATASET')
    add_shapes_parser(subparsers)
    add_partial_parser(subparsers)
    add_facemask_parser(subparsers)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ValueError as error:   # the generators check their arguments: say it in flags
        message = str(error)
        for name in ('num_train', 'num_val', 'min_size', 'max_size'):
            message = message.replace(name, '--' + name.replace('_', '-'))
        parser.error(message)


if __name__ == '__main__':
    main()
