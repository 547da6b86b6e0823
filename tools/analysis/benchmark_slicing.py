"""Small objects in large images: a model's mAP and recall with and without sliced inference.

    python tools/analysis/benchmark_slicing.py CONFIG CHECKPOINT [--grid 4] [--mosaics 15]
        [--slice 160] [--overlap 0.2] [--amp]

Builds large images from the config's val set: ``--grid`` x ``--grid`` val images side by side
(``grid * 176`` px for the quick start's 128-176 px images), their boxes moved with them, so
the objects keep their size while the image grows. At the model's test scale the whole mosaic
shrinks ``grid`` times and its objects with it; sliced inference (``inference_detector(...,
slice_size=...)``) runs tiles of ``--slice`` pixels at the test scale as well. Prints COCO AP,
AP50, AP of small / medium objects and AR@100 (pycocotools, maxDets 100/300/1000) for both, and
the seconds per mosaic.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from mmengine.config import Config  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from detkit.apis import inference_detector, init_detector  # noqa: E402
from detkit.engine.generated_data import prepare_generated_data  # noqa: E402
from detkit.engine.own_data import apply_own_data  # noqa: E402


def build_mosaics(ann_file: str, img_dir: str, grid: int, count: int,
                  seed: int) -> tuple[list[np.ndarray], dict]:
    """``count`` mosaics of ``grid x grid`` val images and their COCO ground truth."""
    with open(ann_file) as f:
        gt = json.load(f)
    rng = np.random.default_rng(seed)
    cell = max(max(i['height'], i['width']) for i in gt['images'])
    by_image: dict[int, list[dict]] = {}
    for ann in gt['annotations']:
        by_image.setdefault(ann['image_id'], []).append(ann)
    mosaics, images, annotations = [], [], []
    for index in range(count):
        canvas = np.full((grid * cell, grid * cell, 3), 127, np.uint8)
        chosen = rng.choice(len(gt['images']), grid * grid, replace=len(gt['images']) <
                            grid * grid)
        for slot, pick in enumerate(chosen):
            info = gt['images'][int(pick)]
            image = cv2.imread(osp.join(img_dir, info['file_name']), cv2.IMREAD_COLOR)
            y, x = (slot // grid) * cell, (slot % grid) * cell
            canvas[y:y + image.shape[0], x:x + image.shape[1]] = image
            for ann in by_image.get(info['id'], []):
                bx, by, bw, bh = ann['bbox']
                annotations.append(dict(ann, id=len(annotations) + 1, image_id=index + 1,
                                        bbox=[bx + x, by + y, bw, bh]))
        images.append(dict(id=index + 1, file_name=f'mosaic_{index}.png',
                           height=canvas.shape[0], width=canvas.shape[1]))
        mosaics.append(canvas)
    return mosaics, dict(images=images, annotations=annotations,
                         categories=gt['categories'])


def evaluate(gt: dict, detections: list[dict]) -> list[float]:
    """AP, AP50, APs, APm, AR@100 of ``detections`` (pycocotools)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(detections), iouType='bbox')
        evaluator.params.maxDets = [100, 300, 1000]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return [float(stats[0]), float(stats[1]), float(stats[3]), float(stats[4]), float(stats[6])]


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--grid', type=int, default=4)
    parser.add_argument('--mosaics', type=int, default=15)
    parser.add_argument('--slice', type=int, default=160, help='tile side in pixels')
    parser.add_argument('--overlap', type=float, default=0.2)
    parser.add_argument('--amp', action='store_true')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    cfg = Config.fromfile(args.config)
    apply_own_data(cfg)
    prepare_generated_data(cfg, stage='test')
    dataset = cfg.val_dataloader.dataset
    ann_file = osp.join(dataset.data_root, dataset.ann_file)
    img_dir = osp.join(dataset.data_root, dataset.data_prefix.get('img', ''))
    mosaics, gt = build_mosaics(ann_file, img_dir, args.grid, args.mosaics, args.seed)
    model = init_detector(cfg, args.checkpoint, amp=args.amp)
    cat_ids = [c['id'] for c in sorted(gt['categories'], key=lambda c: c['id'])]
    table: dict[str, list[float]] = {}
    for name, options in (('whole image', {}),
                          (f'sliced {args.slice} px, overlap {args.overlap}',
                           dict(slice_size=args.slice, slice_overlap=args.overlap))):
        start = time.perf_counter()
        results = inference_detector(model, mosaics, **options)
        seconds = (time.perf_counter() - start) / len(mosaics)
        assert isinstance(results, list)
        detections = [dict(image_id=index + 1, category_id=cat_ids[int(label)],
                           bbox=[x1, y1, x2 - x1, y2 - y1], score=float(score))
                      for index, result in enumerate(results)
                      for (x1, y1, x2, y2), score, label in zip(result.bboxes.tolist(),
                                                                result.scores.tolist(),
                                                                result.labels.tolist())]
        table[name] = [*evaluate(gt, detections), seconds]
    side = mosaics[0].shape[0]
    print(f'{len(mosaics)} mosaics of {args.grid}x{args.grid} val images ({side}x{side} px, '
          f'{len(gt["annotations"])} objects) of {args.config}')
    print('| inference | AP | AP50 | AP small | AP medium | AR@100 | s/image |')
    print('| --- | ---: | ---: | ---: | ---: | ---: | ---: |')
    for name, row in table.items():
        print(f'| {name} | ' + ' | '.join(f'{v:.3f}' for v in row[:5]) + f' | {row[5]:.2f} |')
    return table


if __name__ == '__main__':
    main()
