"""CocoMetric against pycocotools run directly on the same detections."""
from __future__ import annotations

import contextlib
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkit.evaluation import CocoMetric, results_to_coco_json
from detkit.registry import METRICS
from detkit.structures import Detections, DetSample

# Non-contiguous category ids; 'horse' has no ground truth at all.
CATEGORIES = [dict(id=3, name='cat'), dict(id=7, name='dog'), dict(id=12, name='bird'),
              dict(id=20, name='horse')]
CAT_ID = {c['name']: c['id'] for c in CATEGORIES}

# (image id, class name, xywh, iscrowd). Areas: small < 32**2 <= medium < 96**2 <= large.
GT_BOXES = [
    (10, 'cat', (10, 10, 200, 150), 0),      # large
    (10, 'dog', (300, 50, 60, 60), 0),       # medium
    (10, 'bird', (400, 300, 20, 20), 0),     # small
    (20, 'cat', (50, 60, 80, 70), 0),        # medium
    (20, 'dog', (200, 200, 300, 200), 1),    # crowd region
    (20, 'dog', (20, 250, 150, 120), 0),     # large
    (20, 'bird', (500, 100, 25, 30), 0),     # small, never detected
    (30, 'bird', (100, 100, 50, 40), 0),     # medium
    (30, 'cat', (300, 300, 28, 30), 0),      # small
    (30, 'dog', (350, 150, 200, 200), 0),    # large
]

# (image id, class name, xyxy, score): jittered true positives, false positives, a duplicate,
# a detection inside the crowd region. Coordinates are multiples of 0.25 (exact in float32).
DETECTIONS = [
    (10, 'cat', (12.25, 8.5, 205.0, 163.75), 0.95),
    (10, 'cat', (14.0, 12.0, 190.0, 150.0), 0.40),       # duplicate of the cat
    (10, 'dog', (302.5, 47.75, 361.0, 112.0), 0.85),
    (10, 'bird', (398.0, 303.0, 421.5, 318.25), 0.60),
    (10, 'dog', (400.0, 300.0, 420.0, 320.0), 0.70),     # right place, wrong class
    (20, 'cat', (55.0, 64.0, 128.25, 135.5), 0.90),
    (20, 'dog', (250.0, 250.0, 350.0, 350.0), 0.80),     # inside the crowd box: ignored
    (20, 'dog', (25.0, 240.0, 160.0, 380.5), 0.75),
    (20, 'bird', (10.0, 10.0, 40.0, 40.0), 0.65),        # false positive
    (30, 'bird', (104.0, 96.0, 146.0, 142.25), 0.55),
    (30, 'cat', (301.0, 302.0, 326.0, 331.0), 0.50),
    (30, 'dog', (300.0, 120.0, 480.0, 330.0), 0.45),     # poor overlap
    (30, 'horse', (0.0, 0.0, 100.0, 100.0), 0.30),       # a class without ground truth
]
IMG_IDS = (10, 20, 30)


@pytest.fixture(autouse=True, params=['pycocotools', 'faster_coco_eval'])
def backend(request, monkeypatch):
    """Every test of this module runs with both evaluation backends; the references stay
    pycocotools's own COCOeval."""
    if request.param == 'faster_coco_eval':
        pytest.importorskip('faster_coco_eval')
    init = CocoMetric.__init__

    def with_backend(self, *args, **kwargs):
        kwargs.setdefault('backend', request.param)
        init(self, *args, **kwargs)

    monkeypatch.setattr(CocoMetric, '__init__', with_backend)
    return request.param


def test_backend_choice_and_errors(backend, monkeypatch):
    assert CocoMetric().backend == backend
    from detkit.evaluation.coco_metric import resolve_backend
    with pytest.raises(ValueError, match="backend='cocoapi'; expected one of"):
        resolve_backend('cocoapi')
    monkeypatch.setitem(sys.modules, 'faster_coco_eval', None)   # as if not installed
    assert resolve_backend('auto') == 'pycocotools'
    with pytest.raises(ImportError, match=r'pip install -e "\.\[eval\]"'):
        resolve_backend('faster_coco_eval')


@pytest.fixture
def ann_file(tmp_path):
    images = [dict(id=i, file_name=f'{i}.jpg', height=480, width=640) for i in IMG_IDS]
    annotations = [
        dict(id=n + 1, image_id=img, category_id=CAT_ID[name], bbox=list(box),
             area=float(box[2] * box[3]), iscrowd=crowd)
        for n, (img, name, box, crowd) in enumerate(GT_BOXES)]
    path = tmp_path / 'instances.json'
    path.write_text(json.dumps(dict(images=images, annotations=annotations,
                                    categories=CATEGORIES)))
    return str(path)


def make_samples(detections, classes, img_ids=IMG_IDS):
    """DetSamples with detections given by class name, labelled by their index in ``classes``."""
    samples = []
    for img_id in img_ids:
        dets = [d for d in detections if d[0] == img_id and d[1] in classes]
        pred = Detections(
            bboxes=torch.tensor([d[2] for d in dets], dtype=torch.float32).reshape(-1, 4),
            scores=torch.tensor([d[3] for d in dets], dtype=torch.float32),
            labels=torch.tensor([classes.index(d[1]) for d in dets], dtype=torch.int64))
        samples.append(DetSample(img_id=img_id, ori_shape=(480, 640), pred=pred))
    return samples


def run_metric(ann_file, samples, classes=None, **kwargs):
    metric = CocoMetric(ann_file=ann_file, **kwargs)
    if classes is not None:
        metric.dataset_meta = dict(classes=tuple(classes))
    metric.process({}, samples[:2])
    metric.process({}, samples[2:])
    return metric.compute_metrics(metric.results)


def reference_eval(ann_file, tmp_path, detections, img_ids=IMG_IDS, cat_ids=None):
    """pycocotools on a results JSON written by hand: xywh boxes, the file's category ids."""
    entries = [dict(image_id=img, category_id=CAT_ID[name],
                    bbox=[x1, y1, x2 - x1, y2 - y1], score=score)
               for img, name, (x1, y1, x2, y2), score in detections
               if img in img_ids and (cat_ids is None or CAT_ID[name] in cat_ids)]
    res_file = tmp_path / 'reference.bbox.json'
    res_file.write_text(json.dumps(entries))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann_file)
        coco_eval = COCOeval(gt, gt.loadRes(str(res_file)), iouType='bbox')
        coco_eval.params.imgIds = list(img_ids)
        if cat_ids is not None:
            coco_eval.params.catIds = list(cat_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


BBOX_KEYS = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l')


def assert_matches_reference(metrics, coco_eval):
    expected = [round(float(s), 3) for s in coco_eval.stats[:6]]
    assert [metrics[k] for k in BBOX_KEYS] == expected
    assert metrics['bbox_mAP_copypaste'] == ' '.join(f'{v:.3f}' for v in expected)


def test_bbox_metrics_match_pycocotools(ann_file, tmp_path):
    # Class order differs from the file's id order: label 0 is 'bird' (id 12).
    classes = ('bird', 'cat', 'dog', 'horse')
    metrics = run_metric(ann_file, make_samples(DETECTIONS, classes), classes)
    reference = reference_eval(ann_file, tmp_path, DETECTIONS)
    assert_matches_reference(metrics, reference)
    # The fixture is not degenerate: misses, false positives and loose boxes all cost AP.
    assert 0.3 < metrics['bbox_mAP'] < 0.9
    assert metrics['bbox_mAP_50'] > metrics['bbox_mAP_75']


def test_labels_follow_sorted_category_ids_without_dataset_meta(ann_file, tmp_path):
    classes = ('cat', 'dog', 'bird', 'horse')       # ids 3, 7, 12, 20: sorted order
    metrics = run_metric(ann_file, make_samples(DETECTIONS, classes), classes=None)
    assert_matches_reference(metrics, reference_eval(ann_file, tmp_path, DETECTIONS))


def test_perfect_detections_give_map_one(ann_file):
    classes = ('cat', 'dog', 'bird', 'horse')
    perfect = [(img, name, (x, y, x + w, y + h), 1.0)
               for img, name, (x, y, w, h), crowd in GT_BOXES if not crowd]
    metrics = run_metric(ann_file, make_samples(perfect, classes), classes)
    assert [metrics[k] for k in BBOX_KEYS] == [1.0] * 6
    assert metrics['bbox_mAP_copypaste'] == '1.000 1.000 1.000 1.000 1.000 1.000'


def test_empty_predictions_give_zero(ann_file):
    classes = ('cat', 'dog', 'bird', 'horse')
    metrics = run_metric(ann_file, make_samples([], classes), classes, classwise=True)
    assert [metrics[k] for k in BBOX_KEYS] == [0.0] * 6
    assert metrics['bbox_mAP_copypaste'] == '0.000 0.000 0.000 0.000 0.000 0.000'
    assert metrics['cat_precision'] == 0.0
    assert math.isnan(metrics['horse_precision'])     # no ground truth: nan, as COCOeval


def test_classwise_precision_matches_eval_precision(ann_file, tmp_path):
    classes = ('dog', 'horse', 'cat', 'bird')
    metrics = run_metric(ann_file, make_samples(DETECTIONS, classes), classes, classwise=True)
    reference = reference_eval(ann_file, tmp_path, DETECTIONS)
    precision = reference.eval['precision']           # (T, R, K, A, M), K in sorted id order
    for k, cat_id in enumerate(reference.params.catIds):
        name = next(c['name'] for c in CATEGORIES if c['id'] == cat_id)
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        if p.size:
            assert metrics[f'{name}_precision'] == round(float(p.mean()), 3)
        else:
            assert name == 'horse' and math.isnan(metrics['horse_precision'])
    # The class APs average to the reported mAP (horse, without ground truth, is left out).
    aps = [metrics[f'{c}_precision'] for c in ('cat', 'dog', 'bird')]
    assert np.mean(aps) == pytest.approx(metrics['bbox_mAP'], abs=2e-3)
    assert_matches_reference(metrics, reference)


def test_dataset_classes_subset_evaluates_only_those_categories(ann_file, tmp_path):
    classes = ('dog', 'cat')                          # labels 0 -> id 7, 1 -> id 3
    metrics = run_metric(ann_file, make_samples(DETECTIONS, classes), classes, classwise=True)
    reference = reference_eval(ann_file, tmp_path, DETECTIONS, cat_ids=[3, 7])
    assert_matches_reference(metrics, reference)
    assert set(k for k in metrics if k.endswith('_precision')) == {'dog_precision',
                                                                   'cat_precision'}
    # Not the same as evaluating all categories.
    all_cats = reference_eval(ann_file, tmp_path, DETECTIONS)
    assert metrics['bbox_mAP'] != round(float(all_cats.stats[0]), 3)


def test_subset_of_images_is_evaluated_on_those_images_only(ann_file, tmp_path):
    classes = ('cat', 'dog', 'bird', 'horse')
    img_ids = (10, 30)
    metric = CocoMetric(ann_file=ann_file)
    metric.dataset_meta = dict(classes=classes)
    metric.process({}, make_samples(DETECTIONS, classes, img_ids))
    metrics = metric.compute_metrics(metric.results)
    assert_matches_reference(metrics, reference_eval(ann_file, tmp_path, DETECTIONS, img_ids))


def test_unknown_img_id_raises(ann_file):
    classes = ('cat', 'dog', 'bird', 'horse')
    samples = make_samples(DETECTIONS, classes)
    samples[1].img_id = 999
    with pytest.raises(ValueError, match=r'999.*instances\.json'):
        run_metric(ann_file, samples, classes)


def test_unknown_class_name_raises(ann_file):
    with pytest.raises(ValueError, match=r"\['zebra'\].*instances\.json"):
        run_metric(ann_file, make_samples(DETECTIONS, ('cat',)), ('cat', 'zebra'))


def test_missing_ann_file_and_bad_arguments_raise(tmp_path):
    missing = str(tmp_path / 'nowhere.json')
    with pytest.raises(FileNotFoundError, match='nowhere.json'):
        CocoMetric(ann_file=missing)
    (tmp_path / 'a.json').write_text('{}')
    with pytest.raises(ValueError, match="'segm'"):
        CocoMetric(ann_file=str(tmp_path / 'a.json'), metric=['bbox', 'segm'])
    with pytest.raises(ValueError, match='outfile_prefix'):
        CocoMetric(ann_file=str(tmp_path / 'a.json'), format_only=True)


def test_format_only_writes_coco_json(ann_file, tmp_path):
    classes = ('bird', 'cat', 'dog', 'horse')
    prefix = tmp_path / 'out' / 'dets'
    metrics = run_metric(ann_file, make_samples(DETECTIONS, classes), classes,
                         format_only=True, outfile_prefix=str(prefix))
    assert metrics == {}
    written = json.loads((tmp_path / 'out' / 'dets.bbox.json').read_text())
    assert len(written) == len(DETECTIONS)
    first = written[0]
    assert first == dict(image_id=10, category_id=3, bbox=[12.25, 8.5, 192.75, 155.25],
                         score=0.95)


def test_results_to_coco_json_converts_boxes_and_labels():
    results = [dict(img_id=5, bboxes=np.array([[1.0, 2.0, 11.5, 22.25]], np.float32),
                    scores=np.array([0.5], np.float32), labels=np.array([1])),
               dict(img_id=6, bboxes=np.zeros((0, 4), np.float32),
                    scores=np.zeros(0, np.float32), labels=np.zeros(0, np.int64))]
    assert results_to_coco_json(results, cat_ids=[4, 9]) == [
        dict(image_id=5, category_id=9, bbox=[1.0, 2.0, 10.5, 20.25], score=0.5)]
    with pytest.raises(ValueError, match='image 5: label 1'):
        results_to_coco_json(results, cat_ids=[4])


def test_proposal_recall_matches_pycocotools(ann_file, tmp_path):
    classes = ('cat', 'dog', 'bird', 'horse')
    metrics = run_metric(ann_file, make_samples(DETECTIONS, classes), classes,
                         metric='proposal', proposal_nums=(1, 2, 100))
    reference = reference_eval(ann_file, tmp_path, DETECTIONS)
    with contextlib.redirect_stdout(io.StringIO()):
        reference.params.useCats = 0
        reference.params.maxDets = [1, 2, 100]
        reference.evaluate()
        reference.accumulate()
    recall = reference.eval['recall']
    for m, num in enumerate((1, 2, 100)):
        r = recall[:, :, 0, m]
        assert metrics[f'AR@{num}'] == round(float(r[r > -1].mean()), 3)
    assert metrics['AR@1'] < metrics['AR@100']


def test_built_from_registry_and_run_by_mmengine_evaluator(ann_file, tmp_path):
    from mmengine.evaluator import Evaluator
    classes = ('bird', 'cat', 'dog', 'horse')
    metric = METRICS.build(dict(type='CocoMetric', ann_file=ann_file))
    evaluator = Evaluator(metric)
    evaluator.dataset_meta = dict(classes=classes)
    evaluator.process(make_samples(DETECTIONS, classes))
    metrics = evaluator.evaluate(len(IMG_IDS))
    reference = reference_eval(ann_file, tmp_path, DETECTIONS)
    assert metrics['coco/bbox_mAP'] == round(float(reference.stats[0]), 3)


def test_joint_model_labels_with_offset_and_skipped_other_classes(ann_file, tmp_path):
    # A model trained on a union label space: 3 classes of another data set first (0-2), then
    # this file's classes (3-6). Its own 3 classes are skipped, the others shifted by 3.
    classes = ('bird', 'cat', 'dog', 'horse')
    samples = make_samples(DETECTIONS, classes)
    for sample in samples:
        sample.pred.labels = sample.pred.labels + 3
        extra = torch.tensor([[1.0, 1.0, 30.0, 30.0]])
        sample.pred = Detections(torch.cat([sample.pred.bboxes, extra]),
                                 torch.cat([sample.pred.scores, torch.tensor([0.99])]),
                                 torch.cat([sample.pred.labels, torch.tensor([1])]))
    metric = CocoMetric(ann_file=ann_file, label_offset=3, skip_other_labels=True)
    metric.dataset_meta = dict(classes=classes)
    metric.process({}, samples)
    assert sum(r['skipped'] for r in metric.results) == len(IMG_IDS)
    metrics = metric.compute_metrics(metric.results)
    assert_matches_reference(metrics, reference_eval(ann_file, tmp_path, DETECTIONS))

    strict = CocoMetric(ann_file=ann_file, label_offset=3)
    strict.dataset_meta = dict(classes=classes)
    strict.process({}, samples)
    with pytest.raises(ValueError, match='label -2 has no category id'):
        strict.compute_metrics(strict.results)


def test_benchmark_eval_backends_give_identical_stats(backend, capsys):
    if backend != 'faster_coco_eval':
        pytest.skip('compares both backends itself')
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tools' / 'analysis'))
    import benchmark_eval
    result = benchmark_eval.main(['--images', '12', '--per-object', '4', '--repeats', '1'])
    assert result['identical'] == 1.0 and result['pycocotools'] > 0
    assert '| faster_coco_eval |' in capsys.readouterr().out
