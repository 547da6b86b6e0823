"""Confusion matrix of a detector's test results: which classes it mistakes for which, what it
misses and what it finds that is not there.

    python tools/analysis/confusion_matrix.py CONFIG RESULTS.json [--score-thr 0.3]
        [--iou-thr 0.5] [--out confusion.png]

RESULTS.json is what ``tools/test.py CONFIG CKPT --out RESULTS.json`` writes (COCO results:
``image_id``, ``category_id``, ``bbox`` xywh, ``score``); the ground truth is the config's test
set. Rows are the true classes and a last row "background" (detections that match no object),
columns the predicted classes and a last column "background" (objects no detection matched).

Matching, per image: the detections scoring at least ``--score-thr``, best first, each take the
still unmatched object (of any class) they overlap most, if that IoU reaches ``--iou-thr``: one
count in (true class, predicted class). A detection that matches nothing counts in the
background row, unless it lies on an ignore region (crowd): at least ``--iou-thr`` of its area
inside one. Objects left unmatched count in the background column. The table is printed
(counts) and drawn (each row as fractions of its objects, with the counts) into ``--out``.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
from typing import Any

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from detkit.engine.checkpoint_hook import check_output_file  # noqa: E402
from detkit.evaluation.test_results import load_images  # noqa: E402
from detkit.models.task_utils import bbox_overlaps  # noqa: E402


def overlaps(boxes: np.ndarray, others: np.ndarray, mode: str = 'iou') -> np.ndarray:
    """:func:`~detkit.models.task_utils.bbox_overlaps` of two numpy box sets (``'iof'``: the
    share of each of ``boxes`` inside each of ``others``)."""
    result: np.ndarray = bbox_overlaps(torch.from_numpy(boxes), torch.from_numpy(others),
                                       mode=mode).numpy()
    return result


def confusion_matrix(images: list[dict[str, Any]], num_classes: int, score_thr: float = 0.3,
                     iou_thr: float = 0.5) -> np.ndarray:
    """The ``(K + 1, K + 1)`` count matrix (last row and column: background).

    Args:
        images: per image ``gt_boxes (N, 4)``, ``gt_labels (N,)``, ``ignore_boxes (M, 4)``,
            ``det_boxes (D, 4)``, ``det_labels (D,)``, ``det_scores (D,)``; boxes xyxy in the
            same pixels.
        num_classes: ``K``.
        score_thr: detections below it are not counted.
        iou_thr: the IoU that makes a match (and the share of a detection on an ignore region
            that excuses it).
    """
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for image in images:
        gt_boxes = np.asarray(image['gt_boxes'], np.float64).reshape(-1, 4)
        gt_labels = np.asarray(image['gt_labels'], np.int64).reshape(-1)
        keep = np.asarray(image['det_scores'], np.float64) >= score_thr
        det_boxes = np.asarray(image['det_boxes'], np.float64).reshape(-1, 4)[keep]
        det_labels = np.asarray(image['det_labels'], np.int64).reshape(-1)[keep]
        order = np.argsort(-np.asarray(image['det_scores'], np.float64)[keep], kind='stable')
        ignore = np.asarray(image.get('ignore_boxes', np.zeros((0, 4))), np.float64)
        ignore = ignore.reshape(-1, 4)
        iou = overlaps(det_boxes, gt_boxes) if len(gt_boxes) else np.zeros((len(det_boxes), 0))
        matched = np.zeros(len(gt_boxes), dtype=bool)
        for d in order:
            candidates = np.where(matched, -1.0, iou[d]) if len(gt_boxes) else iou[d]
            best = int(np.argmax(candidates)) if len(gt_boxes) else -1
            if best >= 0 and candidates[best] >= iou_thr:
                matched[best] = True
                matrix[gt_labels[best], det_labels[d]] += 1
            elif len(ignore) and overlaps(det_boxes[d:d + 1], ignore, 'iof').max() >= iou_thr:
                continue
            else:
                matrix[num_classes, det_labels[d]] += 1
        for label in gt_labels[~matched]:
            matrix[label, num_classes] += 1
    return matrix


def format_table(matrix: np.ndarray, classes: list[str]) -> str:
    names = [*classes, 'background']
    width = max(10, *(len(n) for n in names))
    lines = ['true \\ predicted'.ljust(width) + ''.join(n[:width].rjust(width + 1)
                                                          for n in names)]
    for name, row in zip(names, matrix):
        lines.append(name[:width].ljust(width) + ''.join(str(v).rjust(width + 1) for v in row))
    return '\n'.join(lines)


def plot(matrix: np.ndarray, classes: list[str], out: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    names = [*classes, 'background']
    rows = matrix.sum(axis=1, keepdims=True)
    share = matrix / np.maximum(rows, 1)
    size = 1.2 + 0.7 * len(names)
    fig, axis = plt.subplots(figsize=(size + 1.5, size))
    image = axis.imshow(share, cmap='Blues', vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            axis.text(j, i, f'{share[i, j]:.2f}\n({matrix[i, j]})', ha='center', va='center',
                      fontsize=7, color='white' if share[i, j] > 0.5 else 'black')
    axis.set_xticks(range(len(names)), names, rotation=45, ha='right')
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel('predicted')
    axis.set_ylabel('true')
    axis.set_title(title)
    fig.colorbar(image, ax=axis, fraction=0.046)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> np.ndarray:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('results', help='COCO results JSON of tools/test.py --out')
    parser.add_argument('--score-thr', type=float, default=0.3)
    parser.add_argument('--iou-thr', type=float, default=0.5)
    parser.add_argument('--out', default='confusion_matrix.png', help='the PNG to write')
    args = parser.parse_args(argv)
    try:
        check_output_file(args.out)   # before the work, not after it
        images, classes = load_images(args.config, args.results)
    except (FileNotFoundError, ValueError, KeyError) as error:
        sys.exit(f'confusion_matrix: {error}')
    matrix = confusion_matrix(images, len(classes), args.score_thr, args.iou_thr)
    print(format_table(matrix, classes))
    plot(matrix, classes, args.out,
         f'score >= {args.score_thr}, IoU >= {args.iou_thr}, {len(images)} images')
    print(f'wrote {args.out}')
    return matrix


if __name__ == '__main__':
    main()
