"""Per-class precision-recall curves of a detector's test results, as one PNG.

    python tools/analysis/pr_curves.py CONFIG RESULTS.json [--out pr_curves.png]

RESULTS.json is what ``tools/test.py CONFIG CKPT --out RESULTS.json`` writes; the ground truth is
the config's test set (crowd / difficult boxes are ignore regions, as in evaluation). COCOeval
(maxDets 100, 300, 1000) accumulates the curves; each class gets a panel with its interpolated
precision over COCO's 101 recall points at IoU 0.50 and 0.75, its AP at each in the legend. The
per-class AP50, AP75 and AP (IoU .50:.95) are printed as a table.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os.path as osp
import sys
from typing import Any

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import numpy as np  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from detkit.engine.checkpoint_hook import check_output_file  # noqa: E402
from detkit.evaluation.test_results import load_images  # noqa: E402


def precision_curves(images: list[dict[str, Any]], num_classes: int) -> np.ndarray:
    """COCOeval's interpolated precision ``(T=10 IoUs, R=101 recall points, K)`` (all areas,
    1000 detections per image); -1 where a class has no object."""
    annotations: list[dict[str, Any]] = []
    detections: list[dict[str, Any]] = []

    def xywh(box: Any) -> list[float]:
        x1, y1, x2, y2 = (float(v) for v in box)
        return [x1, y1, x2 - x1, y2 - y1]

    for image in images:
        for box, label in zip(image['gt_boxes'], image['gt_labels']):
            bbox = xywh(box)
            annotations.append(dict(id=len(annotations) + 1, image_id=image['img_id'],
                                    category_id=int(label) + 1, bbox=bbox,
                                    area=bbox[2] * bbox[3], iscrowd=0))
        for box in image['ignore_boxes']:   # an ignore region excuses a detection of any class
            bbox = xywh(box)
            for label in range(num_classes):
                annotations.append(dict(id=len(annotations) + 1, image_id=image['img_id'],
                                        category_id=label + 1, bbox=bbox,
                                        area=bbox[2] * bbox[3], iscrowd=1))
        for box, label, score in zip(image['det_boxes'], image['det_labels'],
                                     image['det_scores']):
            detections.append(dict(image_id=image['img_id'], category_id=int(label) + 1,
                                   bbox=xywh(box), score=float(score)))
    gt = dict(images=[dict(id=i['img_id']) for i in images], annotations=annotations,
              categories=[dict(id=k + 1, name=str(k)) for k in range(num_classes)])
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(detections) if detections else COCO(),
                             iouType='bbox')
        evaluator.params.maxDets = [100, 300, 1000]
        evaluator.evaluate()
        evaluator.accumulate()
    curves: np.ndarray = evaluator.eval['precision'][:, :, :, 0, -1]
    return curves


def average_precision(curves: np.ndarray) -> np.ndarray:
    """``(3, K)``: AP50, AP75 and AP (IoU .50:.95) of each class (nan without objects)."""
    def mean(values: np.ndarray) -> float:
        valid = values[values > -1]
        return float(valid.mean()) if valid.size else math.nan

    return np.array([[mean(curves[0, :, k]), mean(curves[5, :, k]), mean(curves[:, :, k])]
                     for k in range(curves.shape[2])]).T


def plot(curves: np.ndarray, classes: list[str], out: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    recall = np.linspace(0, 1, curves.shape[1])
    aps = average_precision(curves)
    columns = min(3, len(classes))
    rows = math.ceil(len(classes) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.4 * rows), squeeze=False)
    for k, name in enumerate(classes):
        axis = axes[k // columns, k % columns]
        for index, (iou, ap) in enumerate(((0.5, aps[0, k]), (0.75, aps[1, k]))):
            precision = curves[0 if index == 0 else 5, :, k]
            axis.plot(recall, np.where(precision > -1, precision, np.nan),
                      label=f'IoU {iou}: AP {ap:.3f}')
        axis.set_title(name)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1.02)
        axis.set_xlabel('recall')
        axis.set_ylabel('precision')
        axis.grid(alpha=0.3)
        axis.legend(loc='lower left', fontsize='small')
    for k in range(len(classes), rows * columns):
        axes[k // columns, k % columns].axis('off')
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> np.ndarray:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('results', help='COCO results JSON of tools/test.py --out')
    parser.add_argument('--out', default='pr_curves.png', help='the PNG to write')
    args = parser.parse_args(argv)
    try:
        check_output_file(args.out)   # before the work, not after it
        images, classes = load_images(args.config, args.results)
    except (FileNotFoundError, ValueError, KeyError) as error:
        sys.exit(f'pr_curves: {error}')
    curves = precision_curves(images, len(classes))
    aps = average_precision(curves)
    print('| class | AP50 | AP75 | AP |')
    print('| --- | ---: | ---: | ---: |')
    for k, name in enumerate(classes):
        print(f'| {name} | {aps[0, k]:.3f} | {aps[1, k]:.3f} | {aps[2, k]:.3f} |')
    plot(curves, classes, args.out)
    print(f'wrote {args.out}')
    return aps


if __name__ == '__main__':
    main()
