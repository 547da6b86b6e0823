"""Run a detector on an image, a folder of images or a video; write annotated copies and a JSON.

    python tools/demo.py INPUT CONFIG CHECKPOINT [--out-dir DIR] [--score-thr 0.3]
        [--device cpu] [--batch-size 4] [--amp] [--slice SIZE [--slice-overlap 0.2]]

INPUT is an image file, a folder (its images, sorted by name; not recursive) or a video file.
Writes into ``--out-dir`` (default ``demo_out``): an annotated image per input image (same file
name) or ``<video stem>_det.mp4`` for a video, and ``detections.json`` with every detection at or
above ``--score-thr`` (boxes xyxy in pixels of the input). Prints one summary line per image (for
a video: every frame with its count, then the totals) and the throughput. ``--slice SIZE``
finds small objects in large images by also running tiles of SIZE pixels
(:mod:`detkit.apis.slicing`).
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
import time
from collections import Counter
from typing import Iterator

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a source tree

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from detkit.apis import DetResult, inference_detector, init_detector  # noqa: E402
from detkit.datasets.transforms.loading import decode_image  # noqa: E402
from detkit.engine.allocator import tune_cpu_allocator  # noqa: E402
from detkit.engine.progress import ProgressBar  # noqa: E402
from detkit.visualization import draw_detections  # noqa: E402

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg', '.mpeg')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('input', help='an image, a folder of images or a video file')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file (.pth, or an exported .onnx)')
    parser.add_argument('--out-dir', default='demo_out', help='where the outputs go')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detections below this score are neither drawn nor written')
    parser.add_argument('--device', default='cpu', help="e.g. 'cpu' or 'cuda:0'")
    parser.add_argument('--batch-size', type=int, default=4, help='images per forward pass')
    parser.add_argument('--slice', type=int, metavar='SIZE',
                        help='sliced inference for small objects: also run tiles of SIZE px, '
                             'each at the test scale, merged by NMS')
    parser.add_argument('--slice-overlap', type=float, default=0.2,
                        help='share of a tile its neighbours overlap')
    parser.add_argument('--amp', action='store_true',
                        help='the fastest numerics of this machine (bf16 autocast + '
                        'channels-last on a CPU with native bfloat16, fp16 on CUDA)')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile backbone, neck and head (inductor, freezing): a '
                        'few percent faster after seconds of compilation per input size; for '
                        'videos and long runs at one size')
    args = parser.parse_args(argv)
    if not 0.0 <= args.score_thr <= 1.0:
        parser.error(f'--score-thr must be in [0, 1], got {args.score_thr}')
    if args.slice is not None and args.slice < 16:
        parser.error(f'--slice must be a tile side of 16 px or more, got {args.slice}')
    if not 0.0 <= args.slice_overlap < 1.0:
        parser.error(f'--slice-overlap must be in [0, 1), got {args.slice_overlap}')
    if args.batch_size < 1:
        parser.error(f'--batch-size must be >= 1, got {args.batch_size}')
    return args


def summary(name: str, result: DetResult) -> str:
    """``name: 3 detections (with_mask 2, without_mask 1)``."""
    counts = Counter(result.label_names())
    detail = ', '.join(f'{cls} {n}' for cls, n in sorted(counts.items()))
    return f'{name}: {len(result)} detection{"s" if len(result) != 1 else ""}' + (
        f' ({detail})' if detail else '')


def list_images(folder: str) -> list[str]:
    """The image files directly inside ``folder``, sorted by name."""
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    return [osp.join(folder, n) for n in names]


def run_images(paths: list[str], model, args: argparse.Namespace) -> tuple[list[dict], float]:
    """Detect, draw and save every image; return the JSON records and the seconds spent."""
    records, seconds, skipped = [], 0.0, []
    progress = ProgressBar(len(paths), 'images') if len(paths) > 1 else None
    for start in range(0, len(paths), args.batch_size):
        batch_paths = paths[start:start + args.batch_size]
        chunk, images = [], []
        for path in batch_paths:
            try:  # EXIF orientation, gray, alpha and 16-bit handled as in training
                images.append(decode_image(path))
                chunk.append(path)
            except ValueError as error:  # not an image, truncated: name it, go on
                print(f'skipped {path}: {error}', file=sys.stderr)
                skipped.append(path)
        tic = time.perf_counter()
        results = inference_detector(model, images, batch_size=args.batch_size,
                                     slice_size=args.slice,
                                     slice_overlap=args.slice_overlap) if chunk else []
        seconds += time.perf_counter() - tic
        for path, image, result in zip(chunk, images, results):
            result = result.above(args.score_thr)
            result.img_path = path
            drawn = draw_detections(image, result.bboxes.numpy(), result.labels.numpy(),
                                    result.scores.numpy(), result.class_names)
            out_path = osp.join(args.out_dir, osp.basename(path))
            if not cv2.imwrite(out_path, drawn):
                raise OSError(f'tools/demo.py: could not write {out_path!r}')
            records.append(dict(result.to_dict(), output=out_path))
            line = summary(osp.basename(path), result)
            if progress is None:
                print(line)
            else:
                progress.write(line)  # above the bar on a terminal
        if progress is not None:
            progress.update(len(batch_paths))  # skipped files count as done
    if skipped:
        print(f'{len(skipped)} of {len(paths)} files could not be read and were skipped',
              file=sys.stderr)
    if not records:
        raise SystemExit(f'tools/demo.py: none of the {len(paths)} inputs could be read')
    return records, seconds


def read_frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield frame


def run_video(path: str, model, args: argparse.Namespace) -> tuple[list[dict], float, int]:
    """Detect on every frame; write ``<stem>_det.mp4``; return records, seconds and frames."""
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise SystemExit(f'tools/demo.py: cannot open video {path!r} (unsupported codec or not a '
                         'video)')
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    out_path = osp.join(args.out_dir, osp.splitext(osp.basename(path))[0] + '_det.mp4')
    writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*'mp4v'), fps, (width, height))
    if not writer.isOpened():
        raise SystemExit(f'tools/demo.py: cannot write video {out_path!r}')
    records, seconds, index = [], 0.0, 0
    progress = ProgressBar(total, 'frames')
    frames = read_frames(capture)
    try:
        while True:
            batch = [frame for _, frame in zip(range(args.batch_size), frames)]
            if not batch:
                break
            tic = time.perf_counter()
            results = inference_detector(model, batch, batch_size=args.batch_size,
                                         slice_size=args.slice, slice_overlap=args.slice_overlap)
            seconds += time.perf_counter() - tic
            for frame, result in zip(batch, results):
                result = result.above(args.score_thr)
                writer.write(draw_detections(frame, result.bboxes.numpy(),
                                             result.labels.numpy(), result.scores.numpy(),
                                             result.class_names))
                record = result.to_dict()
                record.update(img_path=path, frame=index)
                records.append(record)
                index += 1
            progress.update(len(batch))
    finally:
        capture.release()
        writer.release()
        progress.close()
    if index == 0:
        raise SystemExit(f'tools/demo.py: video {path!r} has no readable frames')
    if total is not None and index < total:   # a truncated file: say what was not seen
        print(f'warning: video {path!r} declares {total} frames; only the first {index} could '
              f'be read (a truncated or damaged file?)', file=sys.stderr)
    counts = Counter(d['class_name'] for r in records for d in r['detections'])
    print(f'{osp.basename(path)}: {index} frames, {sum(counts.values())} detections '
          f"({', '.join(f'{c} {n}' for c, n in sorted(counts.items())) or 'none'}) "
          f'-> {out_path}')
    return records, seconds, index


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    tune_cpu_allocator()   # feature maps reuse freed memory (detkit/engine/allocator.py)
    if not osp.exists(args.input):
        raise SystemExit(f'tools/demo.py: input {args.input!r} does not exist')
    is_video = osp.isfile(args.input) and args.input.lower().endswith(VIDEO_EXTENSIONS)
    if osp.isdir(args.input):
        paths = list_images(args.input)
        if not paths:
            raise SystemExit(f'tools/demo.py: folder {args.input!r} has no images '
                             f'({", ".join(IMAGE_EXTENSIONS)})')
    elif not is_video:
        paths = [args.input]
    try:
        model = init_detector(args.config, args.checkpoint, device=args.device, amp=args.amp,
                              compile=args.compile)
    except (FileNotFoundError, ValueError, KeyError) as error:
        raise SystemExit(f'tools/demo.py: {error}') from error
    os.makedirs(args.out_dir, exist_ok=True)
    if is_video:
        records, seconds, count = run_video(args.input, model, args)
    else:
        records, seconds = run_images(paths, model, args)
        count = len(records)
    json_path = osp.join(args.out_dir, 'detections.json')
    tmp_path = json_path + '.tmp'
    with open(tmp_path, 'w') as f:
        json.dump(dict(config=args.config, checkpoint=args.checkpoint,
                       score_thr=args.score_thr, images=records), f, indent=1)
    os.replace(tmp_path, json_path)
    rate = count / max(seconds, 1e-9)
    print(f'{count} {"frames" if is_video else "images"} in {seconds:.2f} s of inference '
          f'({rate:.2f} images/s on {args.device}); outputs in {args.out_dir}, detections in '
          f'{json_path}')
    return dict(count=count, seconds=seconds, json=json_path)


if __name__ == '__main__':
    main()
