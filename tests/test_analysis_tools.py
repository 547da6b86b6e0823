"""tools/analysis/analyze_logs.py and tools/analysis/browse_dataset.py."""
from __future__ import annotations

import json
import os
import os.path as osp
import re
import sys

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from detkit.datasets.synthetic import make_shapes

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools', 'analysis'))
import analyze_logs  # noqa: E402
import browse_dataset  # noqa: E402


def write_log(path, lines) -> str:
    with open(path, 'w') as f:
        f.write('\n'.join(json.dumps(line) for line in lines) + '\n')
    return str(path)


@pytest.fixture
def log_file(tmp_path) -> str:
    lines = []
    for epoch in (1, 2):
        for it in (5, 10):
            step = (epoch - 1) * 10 + it
            lines.append(dict(lr=0.01, loss=2.0 / step, time=0.5 + 0.1 * step, epoch=epoch,
                              iter=step, step=step))
        lines.append({'coco/bbox_mAP': 0.1 * epoch, 'coco/bbox_mAP_50': 0.2 * epoch,
                      'time': 0.3, 'step': epoch})
    return write_log(tmp_path / 'scalars.json', lines)


def test_series_puts_validation_at_the_end_of_its_epoch(log_file):
    log = analyze_logs.load_log(log_file)
    xs, ys, name = analyze_logs.series(log, 'loss')
    assert (xs, name) == ([5, 10, 15, 20], 'loss')
    assert ys == pytest.approx([0.4, 0.2, 2 / 15, 0.1])
    xs, ys, name = analyze_logs.series(log, 'bbox_mAP')  # last-part match
    assert (xs, ys, name) == ([10, 20], [0.1, 0.2], 'coco/bbox_mAP')


def test_plot_writes_an_image(log_file, tmp_path):
    out = str(tmp_path / 'curves' / 'curve.png')
    analyze_logs.main(['plot', log_file, log_file, '--keys', 'loss', 'bbox_mAP', '--out', out])
    image = cv2.imread(out)
    assert image is not None and image.shape == (600, 800, 3)  # 2 panels of 8 x 3 in at 100 dpi
    assert (image < 250).any(axis=-1).mean() > 0.02  # lines and axes were drawn


def test_summary_numbers(log_file, capsys):
    analyze_logs.main(['summary', log_file])
    out = capsys.readouterr().out
    assert '20 iterations, 2 epochs' in out
    # 1.5, 2.0, 2.5: the first window (warm-up) is left out
    assert 'mean 2.000, median 2.000' in out
    assert 'coco/bbox_mAP: last 0.2000 (epoch 2), best 0.2000' in out
    assert 'time:' not in out.replace('seconds/iteration', '')


def test_bad_logs_and_keys_are_named(tmp_path, log_file):
    broken = tmp_path / 'broken.json'
    broken.write_text('{"loss": 1.0, "iter": 1}\n{"loss": \n')
    with pytest.raises(SystemExit, match='broken.json:2 is not JSON'):
        analyze_logs.main(['summary', str(broken)])
    with pytest.raises(SystemExit, match="key 'mAP_99' is not in .*has coco/bbox_mAP"):
        analyze_logs.main(['plot', log_file, '--keys', 'mAP_99', '--out',
                           str(tmp_path / 'x.png')])
    with pytest.raises(SystemExit, match='nothing.json'):
        analyze_logs.main(['summary', str(tmp_path / 'nothing.json')])


def test_browse_dataset_draws_every_box(tmp_path):
    root = str(tmp_path / 'shapes') + '/'
    make_shapes(root, num_train=4, num_val=2, min_size=96, max_size=128, seed=5)
    out_dir = str(tmp_path / 'browse')
    config = osp.join(REPO, 'configs', 'retinanet_r50_shapes.py')
    counts = browse_dataset.main([config, '--out-dir', out_dir, '--phase', 'val', '--num', '5',
                                  '--cfg-options', f'val_dataloader.dataset.data_root={root}'])
    coco = COCO(root + 'annotations/instances_val.json')
    expected = {}
    for ann in coco.dataset['annotations']:
        name = coco.cats[ann['category_id']]['name']
        expected[name] = expected.get(name, 0) + 1
    assert {k: v for k, v in counts.items() if v and not k.startswith('(')} == expected
    written = sorted(os.listdir(out_dir))
    assert len(written) == 2  # --num is capped by the 2 val images
    first = coco.imgs[sorted(coco.imgs)[0]]
    source = cv2.imread(osp.join(root, 'val', first['file_name']))
    drawn = cv2.imread(osp.join(out_dir, written[0]))
    # the val pipeline resizes to 160 on the long side; compare at that size
    height, width = drawn.shape[:2]
    assert max(height, width) == 160
    ann = coco.imgToAnns[first['id']][0]
    scale = width / first['width']
    x, y, w, h = (v * scale for v in ann['bbox'])
    columns = slice(max(int(x) - 1, 0), int(x) + 2)
    rows = slice(int(y + h * 0.4), int(y + h * 0.6) + 1)
    resized = cv2.resize(source, (width, height))
    difference = np.abs(drawn[rows, columns].astype(int) - resized[rows, columns].astype(int))
    assert difference.max() > 60  # the box's left edge is drawn in its class colour


def test_browse_dataset_names_a_missing_dataloader(tmp_path):
    config = tmp_path / 'empty.py'
    config.write_text('model = dict()\n')
    with pytest.raises(SystemExit, match='has no train_dataloader.dataset'):
        browse_dataset.main([str(config), '--out-dir', str(tmp_path / 'o')])


def test_benchmark_times_four_variants_with_memory_flops_and_roof(capsys):
    import benchmark
    rows = benchmark.main([osp.join(REPO, 'configs', 'retinanet_r50.py'), '--task', 'inference',
                           '--size', '64', '--batch', '2', '--iters', '2', '--warmup', '0',
                           '--threads', '1', '--roof-repeats', '1', '--profile', '3'])
    assert [row['variant'] for row in rows] == ['detkit fp32', 'detkit --amp',
                                                'torchvision fp32', 'torchvision best']
    for row in rows:
        assert row['seconds'] > 0 and row['images_per_s'] == pytest.approx(2 / row['seconds'])
        assert row['peak_mib'] > 0 and row['gflops'] > 0 and 0 < row['roof_share'] < 2
    by_name = {row['variant']: row for row in rows}
    assert by_name['torchvision fp32']['vs torchvision fp32'] == pytest.approx(1.0)
    assert by_name['detkit fp32']['vs torchvision best'] == pytest.approx(
        by_name['torchvision best']['seconds'] / by_name['detkit fp32']['seconds'])
    # the FLOPs of one iteration are the model's, whatever the precision
    assert by_name['detkit --amp']['gflops'] * by_name['detkit --amp']['seconds'] == \
        pytest.approx(by_name['detkit fp32']['gflops'] * by_name['detkit fp32']['seconds'])
    out = capsys.readouterr().out
    assert 'batch 2x3x64x64' in out and 'roof (best 3x3 convolution' in out
    assert out.count('| retinanet_r50.py | inference |') == 4
    # --profile 3: each variant's three costliest operators, convolutions first among them
    for variant in by_name:
        title = f'where one iteration goes: retinanet_r50.py inference, {variant} ('
        assert out.count(title) == 1
        table = out.split(title)[1].split('\n')[3:6]
        assert len(table) == 3 and all(line.startswith('| aten::') for line in table)
        assert any('conv' in line for line in table)


def test_operator_times_counts_calls_and_ranks_by_self_time():
    import profiling
    big, small = torch.randn(384, 384), torch.randn(8, 8)

    def call():
        for _ in range(3):
            big @ big
        small.add(1)
    rows = profiling.operator_times(call)
    by_name = {name: (ms, calls) for name, ms, calls in rows}
    assert by_name['aten::mm'][1] == 3 and by_name['aten::add'][1] == 1
    assert rows[0][0] == 'aten::mm'                  # 3 x 113 MFLOP, the costliest
    assert [ms for _, ms, _ in rows] == sorted((ms for _, ms, _ in rows), reverse=True)


def test_benchmark_batch_is_reproducible():
    import benchmark
    images, targets = benchmark.make_batch(3, 48, 80, num_classes=5, seed=1)
    again, _ = benchmark.make_batch(3, 48, 80, num_classes=5, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(images, again))
    assert [tuple(img.shape) for img in images] == [(3, 48, 80)] * 3
    for target in targets:
        boxes = target['boxes']
        assert 3 <= len(boxes) <= 6 and int(target['labels'].max()) < 5
        assert torch.all(boxes[:, 2:] > boxes[:, :2])
        assert float(boxes[:, 2].max()) <= 79 and float(boxes[:, 3].max()) <= 47


def test_benchmark_training_needs_a_train_cfg():
    import benchmark
    config = osp.join(REPO, 'configs', 'torchvision', 'faster_rcnn_r50_fpn_tv.py')
    with pytest.raises(SystemExit, match='needs model.train_cfg in .*faster_rcnn_r50_fpn_tv.py'):
        benchmark.main([config, '--task', 'train', '--peer-weights', '--size', '64'])


def test_benchmark_alternates_the_timed_iterations():
    import benchmark
    calls = []
    runs = [lambda: calls.append('detkit'), lambda: calls.append('peer')]
    times = benchmark.time_it(runs, iters=3, warmup=2, device='cpu')
    assert calls == ['detkit'] * 2 + ['peer'] * 2 + ['detkit', 'peer'] * 3
    assert [len(t) for t in times] == [3, 3]


def test_benchmark_peer_gets_the_pixels_detkit_sees_in_rgb():
    import benchmark
    images = [torch.arange(12, dtype=torch.uint8).reshape(3, 2, 2)]
    bgr = torch.nn.Module()
    bgr.data_preprocessor = type('P', (), {'bgr_to_rgb': True})()
    assert torch.equal(benchmark.rgb_images(images, bgr)[0], images[0][[2, 1, 0]])
    bgr.data_preprocessor.bgr_to_rgb = False
    assert benchmark.rgb_images(images, bgr)[0] is images[0]


def test_plot_labels_name_each_log(log_file, tmp_path):
    out = str(tmp_path / 'labelled.png')
    analyze_logs.main(['plot', log_file, log_file, '--keys', 'loss', '--out', out,
                       '--labels', 'bf16', 'fp32'])
    assert cv2.imread(out).shape == (300, 800, 3)
    with pytest.raises(SystemExit, match='1 --labels for 2 logs'):
        analyze_logs.main(['plot', log_file, log_file, '--keys', 'loss', '--out', out,
                           '--labels', 'bf16'])


def test_confusion_matrix_counts_by_hand():
    import confusion_matrix as cm
    image = dict(
        gt_boxes=[[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]],
        gt_labels=[0, 1, 1],
        ignore_boxes=[[80, 80, 100, 100]],
        det_boxes=[[0, 0, 10, 11],      # class 0 on the class-0 object: (0, 0)
                   [21, 20, 40, 40],    # class 0 on a class-1 object: (1, 0)
                   [1, 0, 10, 10],      # a second box on the matched class-0 object: background
                   [70, 0, 90, 10],     # nothing there: background row
                   [82, 82, 98, 98],    # on the ignore region: not counted
                   [50, 50, 60, 60]],   # below the score threshold: not counted
        det_labels=[0, 0, 0, 1, 1, 1],
        det_scores=[0.9, 0.8, 0.7, 0.6, 0.95, 0.1])
    matrix = cm.confusion_matrix([image], num_classes=2, score_thr=0.3, iou_thr=0.5)
    assert matrix.tolist() == [[1, 0, 0],     # true class 0
                               [1, 0, 1],     # true class 1: one taken for 0, one missed
                               [1, 1, 0]]     # background: two detections of nothing
    table = cm.format_table(matrix, ['cat', 'dog'])
    assert table.splitlines()[0].split()[-1] == 'background'


def test_confusion_matrix_tool_on_test_results(tmp_path):
    import confusion_matrix as cm

    from detkit.datasets.synthetic import make_shapes
    root = str(tmp_path / 'shapes') + '/'
    make_shapes(root, num_train=1, num_val=3, min_size=96, max_size=128, seed=1)
    gt = json.loads((tmp_path / 'shapes' / 'annotations' / 'instances_val.json').read_text())
    # results as tools/test.py writes them: every object found with its own category, plus
    # one detection of the first category on an empty corner of image 0
    results = [dict(image_id=a['image_id'], category_id=a['category_id'], bbox=a['bbox'],
                    score=0.9) for a in gt['annotations'] if not a['iscrowd']]
    results.append(dict(image_id=gt['images'][0]['id'], category_id=gt['categories'][0]['id'],
                        bbox=[0, 0, 2, 2], score=0.8))
    (tmp_path / 'results.json').write_text(json.dumps(results))
    config = tmp_path / 'config.py'
    config.write_text(f"_base_ = {osp.join(REPO, 'configs', 'retinanet_r50_shapes.py')!r}\n"
                      f"test_dataloader = dict(dataset=dict(data_root={root!r}))\n")
    out = str(tmp_path / 'cm.png')
    matrix = cm.main([str(config), str(tmp_path / 'results.json'), '--out', out])
    objects = sum(1 for a in gt['annotations'] if not a['iscrowd'])
    assert np.trace(matrix[:5, :5]) == objects and matrix[5, 0] == 1
    assert matrix.sum() == objects + 1
    assert cv2.imread(out) is not None
    with pytest.raises(SystemExit, match='results file .* does not exist'):
        cm.main([str(config), str(tmp_path / 'none.json')])


def test_pr_curves_by_hand():
    import pr_curves
    # class 0: both objects found; class 1: one of two found, plus a false positive ranked last
    image = dict(img_id=1, gt_boxes=np.array([[0, 0, 10, 10], [20, 0, 30, 10],
                                              [0, 20, 10, 30], [20, 20, 30, 30]], float),
                 gt_labels=np.array([0, 0, 1, 1]), ignore_boxes=np.zeros((0, 4)),
                 det_boxes=[[0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30], [50, 50, 60, 60]],
                 det_labels=[0, 0, 1, 1], det_scores=[0.9, 0.8, 0.7, 0.6])
    curves = pr_curves.precision_curves([image], 2)
    assert curves.shape == (10, 101, 2)
    np.testing.assert_allclose(curves[:, :, 0], 1.0)
    # class 1: precision 1 up to recall 0.5 (51 of the 101 recall points), then none
    np.testing.assert_allclose(curves[0, :51, 1], 1.0)
    assert (curves[0, 51:, 1] == 0).all()
    aps = pr_curves.average_precision(curves)
    np.testing.assert_allclose(aps[:, 0], [1.0, 1.0, 1.0])
    assert aps[0, 1] == pytest.approx(51 / 101)


def test_pr_curves_tool_writes_a_png(tmp_path):
    import pr_curves

    from detkit.datasets.synthetic import make_shapes
    root = str(tmp_path / 'shapes') + '/'
    make_shapes(root, num_train=1, num_val=3, min_size=96, max_size=128, seed=2)
    gt = json.loads((tmp_path / 'shapes' / 'annotations' / 'instances_val.json').read_text())
    results = [dict(image_id=a['image_id'], category_id=a['category_id'], bbox=a['bbox'],
                    score=0.9) for a in gt['annotations'] if not a['iscrowd']]
    (tmp_path / 'results.json').write_text(json.dumps(results))
    config = tmp_path / 'config.py'
    config.write_text(f"_base_ = {osp.join(REPO, 'configs', 'retinanet_r50_shapes.py')!r}\n"
                      f"test_dataloader = dict(dataset=dict(data_root={root!r}))\n")
    out = str(tmp_path / 'pr.png')
    aps = pr_curves.main([str(config), str(tmp_path / 'results.json'), '--out', out])
    present = {a['category_id'] for a in gt['annotations'] if not a['iscrowd']}
    cat_ids = sorted(c['id'] for c in gt['categories'])
    for k, cat_id in enumerate(cat_ids):   # every annotated class found exactly: AP 1
        assert aps[2, k] == pytest.approx(1.0) if cat_id in present else np.isnan(aps[2, k])
    assert cv2.imread(out).shape[2] == 3


@pytest.mark.parametrize('content, words', [
    ('{"a": 1', 'not a JSON file'),
    ('{"image_id": 1}', 'expected a list of detections .* got a dict'),
    ('[1, 2]', 'detection 0: expected an object with image_id'),
    ('[{"image_id": 1, "category_id": 1, "score": 0.5}]', "detection 0: no 'bbox'"),
    ('[{"image_id": "a", "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]',
     "detection 0: image_id must be an integer, got 'a'"),
    ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5},'
     ' {"image_id": 1, "category_id": 1, "bbox": [1, 2, 3], "score": 0.5}]',
     r'detection 1: bbox must be 4 numbers \[x, y, w, h\], got \[1, 2, 3\]'),
    ('[{"image_id": 1, "category_id": 1, "bbox": null, "score": 0.5}]',
     'detection 0: bbox must be 4 numbers .* got None'),
    ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": "high"}]',
     "detection 0: score must be a number, got 'high'"),
])
def test_a_bad_results_file_names_the_detection_and_the_field(tmp_path, content, words):
    from detkit.evaluation.test_results import read_results
    path = tmp_path / 'res.json'
    path.write_text(content)
    with pytest.raises(ValueError, match=f'{re.escape(str(path))}: {words}'):
        read_results(str(path))


def test_a_good_results_file_is_read_as_it_is(tmp_path):
    from detkit.evaluation.test_results import read_results
    detections = [dict(image_id=3, category_id=2, bbox=[1.5, 2, 3, 4.25], score=0.75)]
    (tmp_path / 'res.json').write_text(json.dumps(detections))
    assert read_results(str(tmp_path / 'res.json')) == detections
