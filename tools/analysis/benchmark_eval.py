"""Seconds of COCO box evaluation with pycocotools and with faster-coco-eval, on one results file.

    python tools/analysis/benchmark_eval.py [--ann ANN.json --results RESULTS.bbox.json]
        [--images 1000] [--per-object 20] [--repeats 3] [--seed 0]

Without files, it draws a synthetic shapes val set of ``--images`` images (make_shapes, simple
scene) and ``--per-object`` jittered detections per ground-truth box (a fifth with another
class), so the results file holds tens of thousands of detections. Each backend loads the
results, evaluates, accumulates and summarises with mmdetection's maxDets (100, 300, 1000),
the summary by pycocotools' code for both, as CocoMetric does;
the two run alternately ``--repeats`` times; the table gives the median seconds and checks that
the 12 stats agree.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os.path as osp
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import numpy as np  # noqa: E402

from detkit.datasets.synthetic import make_shapes  # noqa: E402
from detkit.engine.amp import cpu_model_name  # noqa: E402
from detkit.evaluation.coco_metric import pycocotools_summarizer  # noqa: E402


def synthetic_results(folder: str, images: int, per_object: int, seed: int) -> tuple[str, list]:
    """A generated val set's annotation file and jittered detections of its boxes."""
    files = make_shapes(folder, num_train=1, num_val=images, min_size=128, max_size=176,
                        seed=seed, scene='simple')
    with open(files['val']) as f:
        gt = json.load(f)
    rng = np.random.default_rng(seed)
    cats = [c['id'] for c in gt['categories']]
    detections = []
    for ann in gt['annotations']:
        x, y, w, h = ann['bbox']
        for k in range(per_object):
            jitter = rng.normal(0, 0.1 * max(w, h), 4)
            category = int(rng.choice(cats)) if k % 5 == 0 else ann['category_id']
            detections.append(dict(image_id=ann['image_id'], category_id=category,
                                   bbox=[x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]),
                                         max(1.0, h + jitter[3])], score=float(rng.random())))
    return files['val'], detections


def evaluate(backend: str, gt: dict, detections: list) -> tuple[float, np.ndarray]:
    """(seconds, the 12 stats) of one evaluation: load the results, evaluate, accumulate,
    summarise."""
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        if backend == 'pycocotools':
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
            coco_gt = COCO()
            coco_gt.dataset = copy.deepcopy(gt)
            coco_gt.createIndex()
            evaluator: Any = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(detections)),
                                      iouType='bbox')
        else:
            import faster_coco_eval
            coco_gt = faster_coco_eval.COCO(copy.deepcopy(gt))
            evaluator = faster_coco_eval.COCOeval_faster(
                coco_gt, coco_gt.loadRes(copy.deepcopy(detections)), iouType='bbox',
                print_function=print)
        evaluator.params.maxDets = [100, 300, 1000]
        evaluator.evaluate()
        evaluator.accumulate()
        summarizer = pycocotools_summarizer(evaluator)   # what CocoMetric reports
        summarizer.summarize()
        seconds = time.perf_counter() - start
    return seconds, np.asarray(summarizer.stats[:12], dtype=np.float64)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--ann', help='COCO annotation file (with --results)')
    parser.add_argument('--results', help='COCO results JSON (a list of detections)')
    parser.add_argument('--images', type=int, default=1000, help='synthetic val images')
    parser.add_argument('--per-object', type=int, default=20, help='detections per gt box')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if (args.ann is None) != (args.results is None):
        sys.exit('benchmark_eval: give both --ann and --results, or neither')
    with tempfile.TemporaryDirectory() as folder:
        if args.ann:
            ann_file = args.ann
            with open(args.results) as f:
                detections = json.load(f)
        else:
            ann_file, detections = synthetic_results(folder, args.images, args.per_object,
                                                     args.seed)
        with open(ann_file) as f:
            gt = json.load(f)
    times: dict[str, list[float]] = {'pycocotools': [], 'faster_coco_eval': []}
    stats: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for backend in times:
            seconds, stats[backend] = evaluate(backend, gt, detections)
            times[backend].append(seconds)
    medians = {backend: statistics.median(t) for backend, t in times.items()}
    same = bool(np.array_equal(stats['pycocotools'], stats['faster_coco_eval']))
    print(f'{cpu_model_name()}; {len(gt["images"])} images, {len(gt["annotations"])} boxes, '
          f'{len(detections)} detections; median of {args.repeats} alternating runs')
    print('| backend | seconds | speed |')
    print('| --- | ---: | ---: |')
    for backend, seconds in medians.items():
        print(f'| {backend} | {seconds:.2f} | {medians["pycocotools"] / seconds:.1f}x |')
    print(f'12 stats identical: {same} (AP {stats["pycocotools"][0]:.4f} / '
          f'{stats["faster_coco_eval"][0]:.4f})')
    return dict(medians, identical=float(same))


if __name__ == '__main__':
    main()
