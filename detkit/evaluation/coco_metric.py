"""COCO-style box evaluation: detections -> COCO results JSON -> pycocotools ``COCOeval``.

The model hands the metric a :class:`~detkit.structures.DetSample` per image whose ``pred`` holds
boxes ``(x1, y1, x2, y2)`` in pixels of the original image and contiguous labels
``0 .. K - 1``. :class:`CocoMetric` stores them as CPU numpy arrays (so mmengine can gather them
across ranks), maps each label back to the annotation file's ``category_id`` and runs
pycocotools on exactly the images that were evaluated.

Ground truth comes from ``ann_file`` (a COCO JSON file) or, with ``ann_file=None``, from the
evaluated samples themselves, for data sets without a COCO file (e.g. the Pascal VOC XML of
:class:`~detkit.datasets.VOCDataset`): each sample's ``gt_bboxes`` and ``gt_labels`` become COCO
annotations (category id = label + 1, names from ``dataset_meta['classes']``, ``area`` = box
area), each of its ``gt_ignore_bboxes`` (VOC ``difficult``, COCO crowd) becomes one
``iscrowd=1`` annotation *per category* (a ground-truth ignore box has no label, so a detection
of any class on it is neither a true nor a false positive), and ``ori_shape`` gives the image
size. Those boxes must be in original-image pixels, as detections are: the test pipeline must
load the annotations after ``Resize`` (detkit's test pipelines do; see
:class:`~detkit.structures.DetSample`). A box reaching beyond ``ori_shape`` raises
``ValueError``, which catches boxes that a resize enlarged; a shrinking resize cannot be told
apart.

Example:
    >>> metric = CocoMetric(ann_file='data/coco/annotations/instances_val2017.json')
    >>> metric.dataset_meta = dict(classes=('person', 'bicycle'))  # the Runner does this
    >>> metric.process({}, samples)              # doctest: +SKIP
    >>> metric.compute_metrics(metric.results)   # doctest: +SKIP
    {'bbox_mAP': 0.363, 'bbox_mAP_50': 0.553, ...}
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import os.path as osp
import tempfile
from typing import Any, Callable, Mapping, Sequence, TypedDict

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..registry import METRICS
from ..structures import DetSample

SUPPORTED_METRICS = ('bbox', 'proposal')

# The keys reported for metric='bbox', in the order of COCOeval.stats[0:6].
BBOX_STAT_NAMES = ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')

# Box coordinates are written with 3 decimals (a thousandth of a pixel moves an IoU by ~1e-5) and
# scores with 6 (about float32's precision in [0, 1]), which keeps a COCO val results file small.
BOX_DECIMALS = 3
SCORE_DECIMALS = 6


class CocoDetEntry(TypedDict):
    """One detection in the COCO results format (``COCO.loadRes``, the test-dev server).

    Attributes:
        image_id: the annotation file's image id.
        category_id: the annotation file's category id.
        bbox: ``[x, y, w, h]`` in pixels of the original image.
        score: the detection's confidence.
    """

    image_id: int
    category_id: int
    bbox: list[float]
    score: float


class _ImageDetections(TypedDict):
    img_id: int
    ori_shape: tuple[int, ...]
    bboxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    skipped: int


class ImageResult(_ImageDetections, total=False):
    """What :meth:`CocoMetric.process` stores per image (CPU numpy, so ranks can gather it).

    Attributes:
        img_id: the sample's ``img_id``.
        ori_shape: ``(h, w)`` of the original image.
        bboxes: ``(N, 4)`` float32 xyxy detections in original-image pixels.
        scores: ``(N,)`` float32 confidences.
        labels: ``(N,)`` int64 labels minus ``label_offset``.
        skipped: how many detections ``skip_other_labels`` dropped.
        gt_bboxes: ``(G, 4)`` float64 ground truth, only with ``ann_file=None``.
        gt_labels: ``(G,)`` int64 labels of ``gt_bboxes``, only with ``ann_file=None``.
        gt_ignore_bboxes: ``(M, 4)`` float64 ignore regions, only with ``ann_file=None``.
    """

    gt_bboxes: np.ndarray
    gt_labels: np.ndarray
    gt_ignore_bboxes: np.ndarray


def results_to_coco_json(results: Sequence[Mapping[str, Any]],
                         cat_ids: Sequence[int]) -> list[CocoDetEntry]:
    """Convert per-image detections to COCO results entries (one dict per box).

    Args:
        results: one dict per image with ``img_id`` (int), ``bboxes`` ``(N, 4)`` xyxy in pixels of
            the original image, ``scores`` ``(N,)`` and ``labels`` ``(N,)`` contiguous indices
            into ``cat_ids`` (numpy arrays or anything ``np.asarray`` accepts), as stored by
            :meth:`CocoMetric.process`.
        cat_ids: the annotation file's ``category_id`` of each contiguous label.

    Returns:
        A list of ``{'image_id', 'category_id', 'bbox': [x, y, w, h], 'score'}`` dicts with
        Python ints/floats, ready for ``json.dump`` or ``COCO.loadRes``.

    Raises:
        ValueError: when an image's arrays have the wrong shape or a label has no category id.
    """
    cat_id_array = np.asarray(cat_ids, dtype=np.int64)
    entries: list[CocoDetEntry] = []
    for result in results:
        img_id = int(result['img_id'])
        bboxes = np.asarray(result['bboxes'], dtype=np.float64)
        if bboxes.size == 0:
            bboxes = bboxes.reshape(0, 4)
        scores = np.asarray(result['scores'], dtype=np.float64).reshape(-1)
        labels = np.asarray(result['labels'], dtype=np.int64).reshape(-1)
        if bboxes.ndim != 2 or bboxes.shape[1] != 4 or not (
                len(bboxes) == len(scores) == len(labels)):
            raise ValueError(
                f'image {img_id}: expected bboxes (N, 4), scores (N,) and labels (N,), got '
                f'shapes {bboxes.shape}, {scores.shape} and {labels.shape}')
        bad = (labels < 0) | (labels >= len(cat_id_array))
        if bad.any():
            raise ValueError(
                f'image {img_id}: label {int(labels[bad][0])} has no category id; labels must lie '
                f'in 0..{len(cat_id_array) - 1} (the {len(cat_id_array)} classes of the metric)')
        xywh = bboxes.copy()
        xywh[:, 2:] -= xywh[:, :2]
        boxes: list[list[float]] = np.round(xywh, BOX_DECIMALS).tolist()
        rounded_scores: list[float] = np.round(scores, SCORE_DECIMALS).tolist()
        categories: list[int] = cat_id_array[labels].tolist()
        entries.extend(
            CocoDetEntry(image_id=img_id, category_id=cat, bbox=box, score=score)
            for box, score, cat in zip(boxes, rounded_scores, categories))
    return entries


BACKENDS = ('auto', 'pycocotools', 'faster_coco_eval')


def pycocotools_summarizer(evaluated: Any) -> COCOeval:
    """A pycocotools ``COCOeval`` that summarises the accumulated arrays of ``evaluated``.

    faster-coco-eval accumulates the same precision and recall arrays as pycocotools but its
    ``summarize`` reads the first AP at the largest ``maxDets``, where pycocotools reads it at
    100 (with mmdetection's maxDets (100, 300, 1000) the two differ once an image holds more
    than 100 detections of a class). Summarising with pycocotools' own code keeps the 12 numbers
    pycocotools' (and mmdetection's); for a pycocotools ``COCOeval`` it is that object.
    """
    if isinstance(evaluated, COCOeval):
        return evaluated
    summarizer = COCOeval(iouType='bbox')
    summarizer.params = evaluated.params
    summarizer.eval = evaluated.eval
    return summarizer


def resolve_backend(backend: str) -> str:
    """``'pycocotools'`` or ``'faster_coco_eval'`` for a :class:`CocoMetric` ``backend``.

    Raises:
        ValueError: an unknown name.
        ImportError: ``'faster_coco_eval'`` asked for and not installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f'CocoMetric: backend={backend!r}; expected one of {BACKENDS}')
    if backend == 'pycocotools':
        return backend
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        if backend == 'faster_coco_eval':
            raise ImportError("CocoMetric(backend='faster_coco_eval') needs the "
                              'faster-coco-eval package: pip install -e ".[eval]" -c '
                              'requirements/lock.txt') from None
        return 'pycocotools'
    return 'faster_coco_eval'


@METRICS.register_module()
class CocoMetric(BaseMetric):
    """COCO box AP (and optionally proposal AR) computed with pycocotools.

    Args:
        ann_file: the COCO-format annotation JSON of the evaluated split; ``None``: build the
            ground truth from the evaluated samples (see the module docstring), which needs
            ``dataset_meta['classes']`` (the Runner sets it from the data set).
        metric: ``'bbox'`` (AP of class-aware detections) and/or ``'proposal'`` (class-agnostic
            average recall at ``proposal_nums`` boxes per image), a string or a list of them.
        classwise: also report the AP at IoU .50:.95 of every class, as
            ``'{class_name}_precision'`` keys and a logged table.
        outfile_prefix: where to keep the results JSON (``{outfile_prefix}.bbox.json``); None
            writes it to a temporary directory that is removed afterwards.
        format_only: only write the results JSON (e.g. for the test-dev server) and return {}.
        iou_thrs: IoU thresholds of COCOeval; None keeps COCO's ``0.50:0.05:0.95``.
        proposal_nums: COCOeval's ``maxDets`` for both metrics, mmdetection's convention:
            ``'bbox'`` AP counts up to the largest (1000) detections per image, and
            ``'proposal'`` reports AR at each. pycocotools' own default is ``(1, 10, 100)``,
            whose AP counts only 100 detections per image; the two agree whenever a model keeps
            at most 100 detections per image (every detkit config's ``max_per_img``).
        collect_device: ``'cpu'`` or ``'gpu'``, how mmengine gathers results across ranks.
        prefix: the prefix of the reported keys; None uses ``'coco'`` (``'coco/bbox_mAP'``).
        label_offset: the model's label of this split's first class. A model trained on a
            union of data sets (``JointDataset``: e.g. COCO labels 0-79, CCTSDB 80-82) is
            evaluated on CCTSDB's split with ``label_offset=80``.
        skip_other_labels: drop (and count, in one log line per evaluation) detections whose
            label is not one of this split's classes after ``label_offset``, e.g. a joint
            model's traffic signs on COCO val. False: such a label raises ``ValueError``.
        backend: what runs the evaluation: ``'pycocotools'``, ``'faster_coco_eval'`` (the
            faster-coco-eval package, the ``eval`` extra: the same 12 numbers, ~10x faster on
            tens of thousands of detections, ``tools/analysis/benchmark_eval.py``) or
            ``'auto'`` (the default): faster-coco-eval where it is installed.

    Raises:
        FileNotFoundError: when ``ann_file`` does not exist.
        ValueError: for an unknown ``metric`` or ``backend``, or ``format_only`` without a
            place to write to.
        ImportError: ``backend='faster_coco_eval'`` without the package (names the extra).
    """

    default_prefix: str | None = 'coco'

    def __init__(self,
                 ann_file: str | None = None,
                 metric: str | Sequence[str] = 'bbox',
                 classwise: bool = False,
                 outfile_prefix: str | None = None,
                 format_only: bool = False,
                 iou_thrs: Sequence[float] | None = None,
                 proposal_nums: Sequence[int] = (100, 300, 1000),
                 collect_device: str = 'cpu',
                 prefix: str | None = None,
                 label_offset: int = 0,
                 skip_other_labels: bool = False,
                 backend: str = 'auto') -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.backend = resolve_backend(backend)
        if label_offset < 0:
            raise ValueError(f'CocoMetric: label_offset must be >= 0, got {label_offset}')
        self.label_offset = int(label_offset)
        self.skip_other_labels = skip_other_labels
        if ann_file is not None and not osp.isfile(ann_file):
            raise FileNotFoundError(f'CocoMetric: ann_file {ann_file!r} does not exist (None '
                                    'builds the ground truth from the evaluated samples)')
        self.ann_file = ann_file
        self.metrics = [metric] if isinstance(metric, str) else list(metric)
        for name in self.metrics:
            if name not in SUPPORTED_METRICS:
                raise ValueError(f'CocoMetric: metric={name!r} is not supported; choose from '
                                 f'{SUPPORTED_METRICS}')
        if format_only and outfile_prefix is None:
            raise ValueError('CocoMetric: format_only=True needs outfile_prefix, the place to '
                             'write {outfile_prefix}.bbox.json')
        self.classwise = classwise
        self.outfile_prefix = outfile_prefix
        self.format_only = format_only
        self.iou_thrs = None if iou_thrs is None else np.asarray(iou_thrs, dtype=np.float64)
        self.proposal_nums = [int(n) for n in proposal_nums]
        if len(self.proposal_nums) != 3 or min(self.proposal_nums) < 1:
            raise ValueError(f'CocoMetric: proposal_nums must be three positive numbers of '
                             f'detections per image (COCOeval.summarize reads three maxDets), '
                             f'got {list(proposal_nums)}')
        self._coco_gt: COCO | None = None

    # ------------------------------------------------------------------ collecting detections
    def process(self, data_batch: Any, data_samples: Sequence[DetSample]) -> None:
        """Store the detections of one batch as CPU numpy arrays in ``self.results``.

        With ``ann_file=None`` each result also keeps the sample's ground truth:
        ``gt_bboxes`` ``(N, 4)``, ``gt_labels`` ``(N,)`` and ``gt_ignore_bboxes`` ``(M, 4)``.

        Args:
            data_batch: the batch fed to the model (unused).
            data_samples: the model's :class:`~detkit.structures.DetSample` outputs, each with
                ``img_id``, ``ori_shape`` and ``pred`` (boxes xyxy in original-image pixels).

        Raises:
            ValueError: when a sample has no ``pred``.
        """
        for sample in data_samples:
            pred = sample.pred
            if pred is None:
                raise ValueError(f'CocoMetric.process: image {sample.img_id} has no pred; the '
                                 "model's predict must fill DetSample.pred")
            labels = pred.labels.detach().cpu().numpy().astype(np.int64).reshape(-1)
            keep = np.ones(len(labels), dtype=bool)
            if self.label_offset or self.skip_other_labels:
                labels = labels - self.label_offset
                if self.skip_other_labels:
                    num_classes = len((self.dataset_meta or {}).get('classes', ())) or None
                    keep = (labels >= 0) & (labels < num_classes if num_classes else True)
            result = ImageResult(
                img_id=int(sample.img_id),
                ori_shape=tuple(int(s) for s in sample.ori_shape),
                bboxes=pred.bboxes.detach().cpu().numpy().astype(np.float32).reshape(-1, 4)[keep],
                scores=pred.scores.detach().cpu().numpy().astype(np.float32).reshape(-1)[keep],
                labels=labels[keep],
                skipped=int((~keep).sum()))
            if self.ann_file is None:
                result['gt_bboxes'] = _numpy(sample.gt_bboxes, np.float64).reshape(-1, 4)
                result['gt_labels'] = _numpy(sample.gt_labels, np.int64).reshape(-1)
                result['gt_ignore_bboxes'] = _numpy(sample.gt_ignore_bboxes,
                                                    np.float64).reshape(-1, 4)
            self.results.append(result)

    # ------------------------------------------------------------------ computing metrics
    def compute_metrics(self, results: list[ImageResult]) -> dict[str, Any]:
        """Run COCOeval on the gathered detections of the whole split.

        Args:
            results: the dicts stored by :meth:`process` (gathered from all ranks).

        Returns:
            ``{'bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m',
            'bbox_mAP_l'}`` floats rounded to 3 decimals and ``'bbox_mAP_copypaste'``; with
            ``classwise`` also ``'{class_name}_precision'``; with ``'proposal'`` ``'AR@{n}'``.
            ``{}`` when ``format_only``.

        Raises:
            ValueError: when an image id is not in ``ann_file`` or a class name of
                ``dataset_meta['classes']`` has no category there; with ``ann_file=None``,
                when ``dataset_meta['classes']`` is missing or a sample's ground truth is
                malformed (see :func:`coco_gt_from_results`).
        """
        skipped = sum(r.get('skipped', 0) for r in results)
        results = _drop_duplicate_images(results)
        if self.ann_file is None:
            coco_gt = self._gt_from_results(results)
        else:
            coco_gt = self._load_gt(self.ann_file)
        cat_ids, class_names = self._category_ids(coco_gt)
        if skipped:
            print_log(f'CocoMetric: skipped {skipped} detections whose label (minus label_offset '
                      f'{self.label_offset}) is not one of the {len(cat_ids)} classes of '
                      f'{self._gt_source}', logger='current', level=logging.INFO)
        img_ids = [r['img_id'] for r in results]
        missing = sorted(set(img_ids) - set(coco_gt.getImgIds()))
        if missing:
            raise ValueError(f'CocoMetric: image id(s) {missing[:10]} are not in the annotation '
                             f'file {self.ann_file!r}')
        entries = results_to_coco_json(results, cat_ids)

        with contextlib.ExitStack() as stack:
            prefix = self.outfile_prefix
            if prefix is None:
                prefix = osp.join(stack.enter_context(tempfile.TemporaryDirectory()), 'results')
            json_file = _dump_json(entries, prefix)
            if self.format_only:
                print_log(f'CocoMetric: wrote {len(entries)} detections to {json_file}; '
                          'format_only=True, so nothing is evaluated', logger='current')
                return {}

            metrics: dict[str, Any] = {}
            for name in self.metrics:
                if not entries:
                    print_log(f'CocoMetric: there are no detections in {len(img_ids)} images; '
                              f'every {name} metric is 0.0', logger='current',
                              level=logging.WARNING)
                    metrics.update(self._zero_metrics(name, coco_gt, img_ids, cat_ids,
                                                      class_names))
                elif name == 'bbox':
                    metrics.update(self._eval_bbox(coco_gt, entries, img_ids, cat_ids,
                                                   class_names))
                else:
                    metrics.update(self._eval_proposals(coco_gt, entries, img_ids))
        return metrics

    def _eval_bbox(self, coco_gt: COCO, entries: list[CocoDetEntry], img_ids: list[int],
                   cat_ids: list[int], class_names: list[str]) -> dict[str, Any]:
        coco_eval = self._run_cocoeval(coco_gt, entries, img_ids)
        coco_eval.params.catIds = list(cat_ids)
        # summarize() reads AP at maxDets[-1] and AR at each: mmdetection's (100, 300, 1000)
        coco_eval.params.maxDets = sorted(self.proposal_nums)
        _quiet(coco_eval.evaluate)
        _quiet(coco_eval.accumulate)
        summarizer = pycocotools_summarizer(coco_eval)
        _, summary = _quiet(summarizer.summarize)
        print_log('\n' + summary.rstrip(), logger='current')

        stats = [round(float(s), 3) for s in summarizer.stats[:len(BBOX_STAT_NAMES)]]
        metrics: dict[str, Any] = {f'bbox_{k}': v for k, v in zip(BBOX_STAT_NAMES, stats)}
        metrics['bbox_mAP_copypaste'] = ' '.join(f'{s:.3f}' for s in stats)
        if self.classwise:
            per_class = classwise_ap(coco_eval.eval['precision'], coco_eval.params.catIds,
                                     cat_ids)
            print_log('\n' + _format_ap_table(class_names, per_class), logger='current')
            for name, ap in zip(class_names, per_class):
                metrics[f'{name}_precision'] = round(ap, 3)
        return metrics

    def _eval_proposals(self, coco_gt: COCO, entries: list[CocoDetEntry],
                        img_ids: list[int]) -> dict[str, float]:
        coco_eval = self._run_cocoeval(coco_gt, entries, img_ids)
        coco_eval.params.useCats = 0
        coco_eval.params.maxDets = sorted(self.proposal_nums)
        _quiet(coco_eval.evaluate)
        _quiet(coco_eval.accumulate)
        # recall: (iou_thrs, 1 class, area ranges, max dets); area range 0 is 'all'.
        recall = coco_eval.eval['recall']
        metrics: dict[str, float] = {}
        for m, num in enumerate(coco_eval.params.maxDets):
            r = recall[:, :, 0, m]
            r = r[r > -1]
            metrics[f'AR@{num}'] = round(float(r.mean()), 3) if r.size else -1.0
        print_log('CocoMetric proposal recall: ' +
                  ', '.join(f'{k}={v:.3f}' for k, v in metrics.items()), logger='current')
        return metrics

    def _run_cocoeval(self, coco_gt: COCO, entries: list[CocoDetEntry],
                      img_ids: list[int]) -> COCOeval:
        # loadRes adds keys to the dicts it is given: hand it copies.
        if self.backend == 'faster_coco_eval':
            import faster_coco_eval
            fast_gt = faster_coco_eval.COCO(coco_gt.dataset)
            fast_dt, _ = _quiet(fast_gt.loadRes, [dict(e) for e in entries])
            coco_eval = faster_coco_eval.COCOeval_faster(fast_gt, fast_dt, iouType='bbox',
                                                         print_function=print)
        else:
            coco_dt, _ = _quiet(coco_gt.loadRes, [dict(e) for e in entries])
            coco_eval = COCOeval(coco_gt, coco_dt, iouType='bbox')
        coco_eval.params.imgIds = sorted(set(img_ids))
        if self.iou_thrs is not None:
            coco_eval.params.iouThrs = self.iou_thrs
        return coco_eval

    def _zero_metrics(self, name: str, coco_gt: COCO, img_ids: list[int], cat_ids: list[int],
                      class_names: list[str]) -> dict[str, Any]:
        # What COCOeval would report without detections; pycocotools cannot load empty results.
        if name == 'proposal':
            return {f'AR@{num}': 0.0 for num in sorted(self.proposal_nums)}
        metrics: dict[str, Any] = {f'bbox_{k}': 0.0 for k in BBOX_STAT_NAMES}
        metrics['bbox_mAP_copypaste'] = ' '.join('0.000' for _ in BBOX_STAT_NAMES)
        if self.classwise:
            for cat_id, class_name in zip(cat_ids, class_names):
                has_gt = bool(coco_gt.getAnnIds(imgIds=img_ids, catIds=[cat_id], iscrowd=0))
                metrics[f'{class_name}_precision'] = 0.0 if has_gt else float('nan')
        return metrics

    # ------------------------------------------------------------------ annotations
    @property
    def _gt_source(self) -> str:
        """What the ground truth comes from, for messages."""
        return (repr(self.ann_file) if self.ann_file is not None else
                'the ground truth of the evaluated samples (ann_file=None)')

    def _gt_from_results(self, results: list[ImageResult]) -> COCO:
        """A ``COCO`` object built from the ground truth stored by :meth:`process`."""
        classes = (self.dataset_meta or {}).get('classes')
        if not classes:
            raise ValueError("CocoMetric: ann_file=None builds the ground truth from the "
                             "samples and needs dataset_meta['classes'] (the class names, "
                             'which the Runner copies from the data set); it is not set')
        coco_gt = COCO()
        coco_gt.dataset = coco_gt_from_results(results, classes)
        _quiet(coco_gt.createIndex)
        return coco_gt

    def _load_gt(self, ann_file: str) -> COCO:
        """The ``COCO`` object of ``ann_file`` (``self.ann_file``), loaded once."""
        if self._coco_gt is None:
            if not osp.isfile(ann_file):
                raise FileNotFoundError(f'CocoMetric: ann_file {ann_file!r} does not exist')
            self._coco_gt, _ = _quiet(COCO, ann_file)
        return self._coco_gt

    def _category_ids(self, coco_gt: COCO) -> tuple[list[int], list[str]]:
        """The category id and the name of every contiguous label.

        With ``dataset_meta['classes']`` each name is looked up in the annotation file; without,
        the labels follow the file's sorted category ids.
        """
        classes = (self.dataset_meta or {}).get('classes')
        if classes is None:
            cat_ids = sorted(coco_gt.getCatIds())
            return cat_ids, [coco_gt.cats[c]['name'] for c in cat_ids]
        ids_by_name: dict[str, list[int]] = {}
        for cat in coco_gt.dataset.get('categories', []):
            ids_by_name.setdefault(cat['name'], []).append(cat['id'])
        unknown = [name for name in classes if name not in ids_by_name]
        if unknown:
            raise ValueError(f"CocoMetric: dataset_meta['classes'] names {unknown} that are not "
                             f'categories of {self._gt_source}; its categories are '
                             f'{sorted(ids_by_name)}')
        ambiguous = [name for name in classes if len(ids_by_name[name]) > 1]
        if ambiguous:
            raise ValueError(f'CocoMetric: categories {ambiguous} appear more than once in '
                             f'{self._gt_source}; cannot map class names to ids')
        return [ids_by_name[name][0] for name in classes], list(classes)


def coco_gt_from_results(results: Sequence[Mapping[str, Any]],
                         classes: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """COCO ground truth (``images``, ``annotations``, ``categories``) from per-image arrays.

    Category ``k + 1`` is ``classes[k]`` (label ``k``). Boxes become ``iscrowd=0`` annotations
    with ``area`` = box area; every ignore box becomes one ``iscrowd=1`` annotation of each
    category, so that a detection of any class on it is ignored (COCOeval matches a crowd region
    by intersection over the detection's area) and it never counts as a miss.

    Args:
        results: one dict per image with ``img_id``, ``ori_shape`` ``(h, w)``, ``gt_bboxes``
            ``(N, 4)`` and ``gt_ignore_bboxes`` ``(M, 4)`` xyxy in original-image pixels and
            ``gt_labels`` ``(N,)`` in ``0 .. len(classes) - 1``, as stored by
            :meth:`CocoMetric.process` with ``ann_file=None``.
        classes: the class names, in label order.

    Returns:
        A COCO detection dict, ready for ``COCO().dataset``; images in the order of ``results``,
        annotation ids from 1.

    Raises:
        ValueError: a result without ground truth (``process`` ran with an ``ann_file``), a
            label outside the classes, a box that is empty, not finite or reaches beyond
            ``ori_shape`` (boxes of the resized image: load annotations after ``Resize``).
    """
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    num_classes = len(classes)

    def add(img_id: int, box: np.ndarray, category_id: int, iscrowd: int) -> None:
        x1, y1, x2, y2 = (float(v) for v in box)
        annotations.append(dict(id=len(annotations) + 1, image_id=img_id,
                                category_id=category_id, bbox=[x1, y1, x2 - x1, y2 - y1],
                                area=(x2 - x1) * (y2 - y1), iscrowd=iscrowd))

    for result in results:
        img_id = int(result['img_id'])
        if 'gt_bboxes' not in result:
            raise ValueError(f'CocoMetric: image {img_id} carries no ground truth; the metric '
                             'keeps it only when built with ann_file=None')
        height, width = (int(v) for v in result['ori_shape'])
        boxes = np.asarray(result['gt_bboxes'], dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(result['gt_labels'], dtype=np.int64).reshape(-1)
        ignored = np.asarray(result['gt_ignore_bboxes'], dtype=np.float64).reshape(-1, 4)
        if len(boxes) != len(labels):
            raise ValueError(f'CocoMetric: image {img_id} has {len(boxes)} gt_bboxes but '
                             f'{len(labels)} gt_labels')
        bad = (labels < 0) | (labels >= num_classes)
        if bad.any():
            raise ValueError(f'CocoMetric: image {img_id} has gt label {int(labels[bad][0])}; '
                             f'labels must lie in 0..{num_classes - 1} '
                             f"(dataset_meta['classes'] = {list(classes)})")
        for name, array in (('gt_bboxes', boxes), ('gt_ignore_bboxes', ignored)):
            if not np.isfinite(array).all() or (array[:, 2:] <= array[:, :2]).any():
                raise ValueError(f'CocoMetric: image {img_id}: {name} holds an empty or '
                                 f'non-finite box (need x2 > x1, y2 > y1): {array.tolist()}')
            # Half a pixel of slack for the float32 round trip of the boxes.
            if len(array) and ((array[:, [0, 2]] > width + 0.5).any()
                               or (array[:, [1, 3]] > height + 0.5).any()):
                raise ValueError(
                    f'CocoMetric: image {img_id}: {name} reach beyond the original image of '
                    f'height x width = {height} x {width}: {array.tolist()}. With ann_file=None '
                    'the ground truth must be in original-image pixels: put LoadAnnotations '
                    'after Resize in the test pipeline')
        images.append(dict(id=img_id, height=height, width=width))
        for box, label in zip(boxes, labels):
            add(img_id, box, int(label) + 1, 0)
        for box in ignored:
            for category_id in range(1, num_classes + 1):
                add(img_id, box, category_id, 1)
    categories = [dict(id=k + 1, name=str(name)) for k, name in enumerate(classes)]
    return dict(images=images, annotations=annotations, categories=categories)


def classwise_ap(precision: np.ndarray, eval_cat_ids: Sequence[int],
                 cat_ids: Sequence[int]) -> list[float]:
    """The AP at IoU .50:.95 (all areas, the largest maxDets) of each category.

    Args:
        precision: ``COCOeval.eval['precision']``, shape ``(T, R, K, A, M)`` (IoU thresholds,
            recall thresholds, categories, area ranges, max detections).
        eval_cat_ids: ``COCOeval.params.catIds`` after ``evaluate`` (the order of axis K).
        cat_ids: the categories to report, in the order wanted.

    Returns:
        One AP per entry of ``cat_ids``, the mean of its precision entries that are not -1;
        ``nan`` when a category has no ground truth in the evaluated images.
    """
    position = {int(c): k for k, c in enumerate(eval_cat_ids)}
    aps = []
    for cat_id in cat_ids:
        p = precision[:, :, position[int(cat_id)], 0, -1]
        p = p[p > -1]
        aps.append(float(p.mean()) if p.size else float('nan'))
    return aps


def _format_ap_table(names: Sequence[str], aps: Sequence[float], pairs_per_row: int = 3) -> str:
    cells = [(str(n), f'{ap:.3f}') for n, ap in zip(names, aps)]
    name_w = max([len('category')] + [len(n) for n, _ in cells])
    ap_w = max([len('AP')] + [len(a) for _, a in cells])
    header = ' | '.join([f"{'category':<{name_w}} {'AP':>{ap_w}}"] * min(pairs_per_row,
                                                                         max(len(cells), 1)))
    lines = [header, '-' * len(header)]
    for start in range(0, len(cells), pairs_per_row):
        row = cells[start:start + pairs_per_row]
        lines.append(' | '.join(f'{n:<{name_w}} {a:>{ap_w}}' for n, a in row))
    return 'Per-class bbox AP (IoU .50:.95, all areas):\n' + '\n'.join(lines)


def _drop_duplicate_images(results: list[ImageResult]) -> list[ImageResult]:
    seen: set[int] = set()
    unique: list[ImageResult] = []
    for result in results:
        if result['img_id'] in seen:
            continue
        seen.add(result['img_id'])
        unique.append(result)
    if len(unique) < len(results):
        print_log(f'CocoMetric: {len(results) - len(unique)} results repeat an image id; each '
                  'image is evaluated once', logger='current', level=logging.WARNING)
    return unique


def _dump_json(entries: list[CocoDetEntry], outfile_prefix: str) -> str:
    json_file = f'{outfile_prefix}.bbox.json'
    directory = osp.dirname(json_file)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(json_file, 'w') as f:
        json.dump(entries, f)
    return json_file


def _numpy(tensor: Any, dtype: type) -> np.ndarray:
    """A tensor (or array-like) as a CPU numpy array of ``dtype``."""
    if hasattr(tensor, 'detach'):
        tensor = tensor.detach().cpu().numpy()
    return np.asarray(tensor, dtype=dtype)


def _quiet(fn: Callable[..., Any], *args: Any) -> tuple[Any, str]:
    # pycocotools prints its progress and its summary table: capture them for the logger.
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        value = fn(*args)
    return value, buffer.getvalue()
