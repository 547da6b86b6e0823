"""detkit.deploy: predict_in_graph == predict, ONNX export parity with onnxruntime, the graph
contract, tools/deployment/export_onnx.py, tools/test.py and init_detector on an .onnx file."""
from __future__ import annotations

import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from test_faster_rcnn import build_small_faster_rcnn

from detkit.apis import inference_detector, init_detector
from detkit.deploy import (
    ExportableDetector,
    OnnxContractError,
    OnnxDetector,
    OnnxExportError,
    check_input_shape,
    compare_detections,
    default_input_shape,
    export_onnx,
)
from detkit.registry import MODELS
from detkit.structures import DetSample

from detector_checks import build_small_retinanet, one_thread, seed_everything  # noqa: F401

onnx = pytest.importorskip('onnx')
onnxruntime = pytest.importorskip('onnxruntime')

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
EXPORT = osp.join(REPO, 'tools', 'deployment', 'export_onnx.py')
TEST = osp.join(REPO, 'tools', 'test.py')
CLASSES = ('circle', 'square', 'triangle', 'star', 'cross')


def current_umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def spread_scores(model, seed=0):
    """Random classifier weights large enough that scores spread out (a fresh head's prior makes
    near ties), and a test threshold low enough that every head keeps many candidates."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(part in name for part in ('retina_cls', 'rpn_cls', 'fc_cls', 'fc_reg')):
                scale = 0.02 if param.dim() > 1 else 0.2
                param.add_(torch.randn(param.shape, generator=generator) * scale)
                if name.endswith('retina_cls.bias'):
                    param.clamp_(min=-2.5)  # from the 0.01 prior to about 0.08
    head = getattr(model, 'roi_head', None) or model.bbox_head
    head.test_cfg = type(head.test_cfg)(**dict(vars(head.test_cfg), score_thr=0.02))
    return model.eval()


def raw_images(batch, height, width, seed=0):
    """``(N, 3, H, W)`` uint8 BGR: blocks of colour, so that features are not plain noise, with
    pixel noise on top: two locations with the same pixels around them would score exactly
    alike, and NMS may keep either of two tied boxes."""
    rng = np.random.default_rng(seed)
    small = rng.integers(16, 240, (batch, 3, height // 8, width // 8))
    noise = rng.integers(-16, 16, (batch, 3, height, width))
    pixels = small.repeat(8, axis=2).repeat(8, axis=3) + noise
    return torch.from_numpy(pixels.astype(np.uint8))


def eager_detections(model, images):
    """``model.predict`` on images that fill the input: (dets, labels) in the graph's layout."""
    height, width = images.shape[-2:]
    samples = [DetSample(img_shape=(height, width), ori_shape=(height, width))
               for _ in range(images.shape[0])]
    with torch.no_grad():
        batch = model.data_preprocessor(dict(inputs=list(images), data_samples=samples))
        predicted = model.predict(batch['inputs'], batch['data_samples'])
    size = ExportableDetector(model).detector.predict_in_graph(batch['inputs'])[0].shape[1]
    dets = torch.zeros(len(predicted), size, 5)
    labels = torch.full((len(predicted), size), -1, dtype=torch.int64)
    for i, sample in enumerate(predicted):
        count = sample.pred.scores.shape[0]
        dets[i, :count, :4], dets[i, :count, 4] = sample.pred.bboxes, sample.pred.scores
        labels[i, :count] = sample.pred.labels
    return dets, labels


def retinanet(**_):
    return spread_scores(build_small_retinanet())


def faster_rcnn(joint=False):
    return spread_scores(build_small_faster_rcnn(joint=joint))


def all_anchors(model):
    rpn = model.rpn_head
    rpn.test_cfg = type(rpn.test_cfg)(**dict(vars(rpn.test_cfg), nms_pre=0))
    return model


def from_config(path, **changes):
    def build():
        cfg = Config.fromfile(osp.join(REPO, 'configs', path))
        cfg.merge_from_dict({'model.backbone.init_cfg': None,
                             **{f'model.{key}': value for key, value in changes.items()}})
        seed_everything(0)
        model = MODELS.build(cfg.model)
        model.init_weights()
        return spread_scores(model)
    return build


MODELS_TO_EXPORT = {
    'retinanet_r18': retinanet,
    'faster_rcnn_r18': faster_rcnn,
    'faster_rcnn_groupsoftmax': lambda: faster_rcnn(joint=True),
    # the softmax RPN ranks anchors by probability, whose random-weight values crowd within
    # 1e-6 of each other at the nms_pre cut, where onnxruntime's float rounding flips them:
    # nms_pre=0 (every anchor, the graph's other branch) keeps that parity exact
    'faster_rcnn_groupsoftmax_all_anchors': lambda: all_anchors(faster_rcnn(joint=True)),
    'retinanet_mobilenetv2': from_config('retinanet_mobilenetv2_facemask.py'),
    'retinanet_r50_gcb': from_config('retinanet_r50_gcb.py'),
    'retinanet_r50_se': from_config('retinanet_r50_se.py'),
    # torchvision's anchors (strides from the padded input) and RoI level rule
    'retinanet_tv': from_config('torchvision/retinanet_r50_fpn_tv.py'),
    'faster_rcnn_tv': from_config('torchvision/faster_rcnn_r50_fpn_tv.py'),
    'retinanet_vgg16': from_config('retinanet_vgg16.py', **{'neck.out_channels': 64,
                                                            'bbox_head.in_channels': 64,
                                                            'bbox_head.feat_channels': 64,
                                                            'bbox_head.stacked_convs': 1}),
}


# ------------------------------------------------------------------ the graph's post-processing
@pytest.mark.parametrize('name', sorted(MODELS_TO_EXPORT))
def test_predict_in_graph_equals_predict(name):
    """Fixed-size post-processing keeps exactly the eager detections (same floats)."""
    model = MODELS_TO_EXPORT[name]()
    images = raw_images(2, 128, 160)
    wrapper = ExportableDetector(model)
    with torch.no_grad():
        graph = wrapper(images.float())
    eager = eager_detections(model, images)
    report = compare_detections(eager, graph)
    counts = [a for a, _ in report.counts]
    assert min(counts) >= 8, report   # the heads really kept candidates
    assert [a == b for a, b in report.counts] == [True, True], report
    assert report.labels_equal and report.max_box_diff == 0 and report.max_score_diff == 0
    assert torch.equal(graph[0][eager[1] < 0], torch.zeros_like(graph[0][eager[1] < 0]))
    assert (graph[1] >= -1).all() and graph[1].dtype == torch.int64


def test_proposals_of_objectness_zero_are_kept_as_in_predict():
    """A softmax RPN whose background wins by ~25 logits rounds 1 - p(bg) to exactly 0: the
    eager head still keeps those proposals (fewer than max_per_img exist on a small input), so
    the graph must not take a score of 0 for "absent"."""
    model = faster_rcnn(joint=True)
    rpn = model.rpn_head
    with torch.no_grad():
        rpn.rpn_cls.bias[rpn.background_label::rpn.cls_out_channels] += 25.0
    images = raw_images(2, 128, 160)
    with torch.no_grad():
        graph = ExportableDetector(model)(images.float())
    report = compare_detections(eager_detections(model, images), graph)
    # proposals that all score 0 tie, and which of two tied proposals NMS keeps is arbitrary on
    # either side: what must agree is that they exist (the graph once kept none)
    assert [a for a, _ in report.counts] == [b for _, b in report.counts], report
    assert min(a for a, _ in report.counts) >= 8


def test_trained_faster_rcnn_in_graph_equals_predict():
    from test_faster_rcnn import synthetic_batch, train
    model = build_small_faster_rcnn()
    images, samples = synthetic_batch()
    train(model, images, samples, steps=8)
    model.eval()
    eager = eager_detections(model, torch.stack(images))
    with torch.no_grad():
        graph = ExportableDetector(model)(torch.stack(images).float())
    report = compare_detections(eager, graph)
    assert report.counts[0][0] > 0 and report.ok and report.max_box_diff == 0, report


def test_trained_weights_in_graph_equal_predict(trained):
    model, images, _, _ = trained
    eager = eager_detections(model, torch.stack(images))
    with torch.no_grad():
        graph = ExportableDetector(model)(torch.stack(images).float())
    report = compare_detections(eager, graph)
    assert report.counts[0][0] > 0 and report.ok and report.max_box_diff == 0, report


# ------------------------------------------------------------------ onnxruntime parity
@pytest.mark.parametrize('name,dynamic,batch', [
    ('retinanet_r18', False, 1), ('retinanet_r18', True, 2),
    ('faster_rcnn_r18', False, 2), ('faster_rcnn_r18', True, 1),
    ('faster_rcnn_groupsoftmax_all_anchors', True, 2), ('faster_rcnn_tv', True, 1)])
def test_onnxruntime_reproduces_pytorch(tmp_path, name, dynamic, batch):
    model = MODELS_TO_EXPORT[name]()
    out = str(tmp_path / f'{name}.onnx')
    report = export_onnx(model, out, shape=(128, 160), batch=batch, dynamic=dynamic,
                         classes=CLASSES)
    assert report.ok, report
    session = onnxruntime.InferenceSession(out, providers=['CPUExecutionProvider'])
    # a dynamic graph also at another size and another batch size than it was traced with
    runs = [(batch, 128, 160), (batch + 1, 96, 224)] if dynamic else [(batch, 128, 160)]
    for seed, (count, height, width) in enumerate(runs, 1):
        images = raw_images(count, height, width, seed)
        dets, labels = session.run(None, {'images': images.float().numpy()})
        expected = eager_detections(model, images)
        result = compare_detections(expected, (torch.from_numpy(dets), torch.from_numpy(labels)))
        assert min(a for a, _ in result.counts) >= 8, result
        assert result.ok, f'{height}x{width}: {result}'
        assert dets.shape == (count, 100, 5) and labels.dtype == np.int64
    graph = onnx.load(out)
    assert {n.op_type for n in graph.graph.node} >= {'NonMaxSuppression', 'TopK'}
    assert all(n.domain in ('', 'ai.onnx') for n in graph.graph.node)
    props = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(props['detkit.classes']) == list(CLASSES)


def test_trained_retinanet_onnx_parity(tmp_path, trained):
    model, images, _, _ = trained
    batch = torch.stack(images)
    out = str(tmp_path / 'trained.onnx')
    report = export_onnx(model, out, shape=(128, 128), batch=2, check_images=batch)
    assert report.ok and report.counts[0][0] > 0, report
    session = onnxruntime.InferenceSession(out, providers=['CPUExecutionProvider'])
    dets, labels = session.run(None, {'images': batch.float().numpy()})
    result = compare_detections(eager_detections(model, batch),
                                (torch.from_numpy(dets), torch.from_numpy(labels)))
    assert result.ok and result.max_box_diff < 1e-3, result


# ------------------------------------------------------------------ bad input
def test_contract_violations_are_named(tmp_path):
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node('Identity', ['x'], ['y'])], 'g', [x], [y])
    path = str(tmp_path / 'other.onnx')
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(OnnxContractError, match=r"other.onnx: inputs are \['x'\]; detkit expects "
                                                r"\['images'\]"):
        OnnxDetector(path)
    images = helper.make_tensor_value_info('images', TensorProto.FLOAT, [1, 3, 8, 8])
    dets = helper.make_tensor_value_info('dets', TensorProto.FLOAT, [1, 10, 4])
    labels = helper.make_tensor_value_info('labels', TensorProto.INT64, [1, 10])
    nodes = [helper.make_node('Identity', ['images'], ['dets']),
             helper.make_node('Identity', ['images'], ['labels'])]
    onnx.save(helper.make_model(helper.make_graph(nodes, 'g', [images], [dets, labels])), path)
    with pytest.raises(OnnxContractError, match="output 'dets' has 4 at axis 2; expected 5"):
        OnnxDetector(path)
    with pytest.raises(FileNotFoundError, match='nothing.onnx'):
        OnnxDetector(str(tmp_path / 'nothing.onnx'))


def test_bad_shapes_and_models_are_refused(tmp_path):
    with pytest.raises(ValueError, match='--shape 100 160: .* multiples of 32 .* use --shape '
                                         '128 160'):
        check_input_shape((100, 160), 32)
    assert check_input_shape((128, 160), 32) == (128, 160)
    with pytest.raises(ValueError, match='two positive integers'):
        check_input_shape((128,), 32)
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'retinanet_r50.py'))
    assert default_input_shape(cfg) == (800, 1344)
    model = build_small_retinanet()
    with pytest.raises(OnnxExportError, match='opset 13 is too old'):
        export_onnx(model, str(tmp_path / 'm.onnx'), shape=(128, 128), opset=13)

    class NoGraph(torch.nn.Module):
        data_preprocessor = model.data_preprocessor

    with pytest.raises(OnnxExportError, match='NoGraph cannot be exported: it has no '
                                              'predict_in_graph'):
        export_onnx(NoGraph(), str(tmp_path / 'm.onnx'), shape=(128, 128))
    with pytest.raises(OnnxExportError, match=r'check_images has shape \(1, 3, 64, 64\); '
                                              r'expected \(1, 3, 128, 128\)'):
        export_onnx(model, str(tmp_path / 'm.onnx'), shape=(128, 128),
                    check_images=torch.zeros(1, 3, 64, 64))
    assert list(tmp_path.iterdir()) == []


def test_a_failed_parity_check_writes_nothing(tmp_path, monkeypatch):
    import detkit.deploy.onnx_export as onnx_export
    monkeypatch.setattr(onnx_export, 'BOX_TOLERANCE_PX', -1.0)   # no export can pass
    model = retinanet()
    with pytest.raises(OnnxExportError, match=r'does not reproduce PyTorch .*m\.onnx was not '
                                              r'written'):
        export_onnx(model, str(tmp_path / 'm.onnx'), shape=(128, 128))
    assert list(tmp_path.iterdir()) == []   # no .onnx, no .onnx.partial


# ------------------------------------------------------------------ tools and apis
TINY_CONFIG = """
_base_ = {base!r}
data_root = {data_root!r}
amp = False
model = dict(
    backbone=dict(depth=18, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=32),
    bbox_head=dict(in_channels=32, feat_channels=32, stacked_convs=1),
    test_cfg=dict(score_thr=0.02))
pipeline_test = [
    dict(type='LoadImageFromFile'), dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations'), dict(type='PackDetInputs')]
test_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                       dataset=dict(data_root=data_root, pipeline=pipeline_test))
test_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json', classwise=False)
"""


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """A tiny RetinaNet config on a generated set of 128x128 images (the test input size: no
    resizing, no padding), its checkpoint, and the checkpoint exported twice by the tool."""
    from detkit.datasets.synthetic import make_shapes
    folder = tmp_path_factory.mktemp('deploy')
    root = str(folder / 'shapes') + '/'
    make_shapes(root, num_train=2, num_val=6, min_size=128, max_size=128, seed=5)
    config = str(folder / 'tiny.py')
    with open(config, 'w') as f:
        f.write(TINY_CONFIG.format(base=osp.join(REPO, 'configs', 'retinanet_r50_shapes.py'),
                                   data_root=root))
    cfg = Config.fromfile(config)
    seed_everything(0)
    model = spread_scores(MODELS.build(cfg.model))
    checkpoint = str(folder / 'tiny.pth')
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=CLASSES))), checkpoint)
    models = {}
    for kind, options in (('static', ['--batch', '2']), ('dynamic', ['--dynamic'])):
        models[kind] = str(folder / f'tiny_{kind}.onnx')
        done = subprocess.run([sys.executable, EXPORT, config, checkpoint, '--out',
                               models[kind], *options], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        assert 'labels equal' in done.stdout and f'wrote {models[kind]}' in done.stdout
    return config, checkpoint, models, folder


def test_export_tool_writes_the_default_shape(exported):
    _, _, models, _ = exported
    graph = onnx.load(models['static'])
    dims = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 128, 128]
    assert os.stat(models['static']).st_mode & 0o777 == 0o666 & ~current_umask()
    graph = onnx.load(models['dynamic'])
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ['N', 3, 'H', 'W']
    assert [d.dim_param or d.dim_value
            for d in graph.graph.output[0].type.tensor_type.shape.dim] == ['N', 100, 5]


def test_test_tool_on_onnx_matches_the_checkpoint(exported):
    config, checkpoint, models, folder = exported
    results = {}
    for kind, model in (('pth', checkpoint), ('static', models['static']),
                        ('dynamic', models['dynamic'])):
        out = str(folder / f'results_{kind}.json')
        done = subprocess.run([sys.executable, TEST, config, model, '--out', out,
                               '--work-dir', str(folder / 'work')], capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        with open(out) as f:
            results[kind] = json.load(f)
        results[kind + '_map'] = [line for line in done.stdout.splitlines()
                                  if 'bbox_mAP_copypaste' in line][-1].split('copypaste: ')[1]
    assert len(results['pth']) > 6 * 20
    for kind in ('static', 'dynamic'):
        assert results[kind + '_map'].split()[:6] == results['pth_map'].split()[:6]
        assert len(results[kind]) == len(results['pth'])
        for a, b in zip(results['pth'], results[kind]):
            assert (a['image_id'], a['category_id']) == (b['image_id'], b['category_id'])
            assert np.allclose(a['bbox'], b['bbox'], atol=1e-3) and abs(
                a['score'] - b['score']) < 1e-4


def test_init_detector_runs_an_onnx_file(exported):
    config, checkpoint, models, folder = exported
    image = str(sorted((folder / 'shapes' / 'val').glob('*'))[0])
    expected = inference_detector(init_detector(config, checkpoint), image)
    for kind in ('static', 'dynamic'):
        onnx_model = init_detector(config, models[kind])
        assert isinstance(onnx_model, OnnxDetector)
        result = inference_detector(onnx_model, [image, image, image])[2]
        assert result.class_names == CLASSES and len(result) == len(expected) > 0
        torch.testing.assert_close(result.bboxes, expected.bboxes, atol=1e-3, rtol=0)
        torch.testing.assert_close(result.scores, expected.scores, atol=1e-4, rtol=0)
        assert torch.equal(result.labels, expected.labels)
    with pytest.raises(ValueError, match='amp=True'):
        init_detector(config, models['static'], amp=True)


def test_int8_quantization_keeps_the_contract(exported):
    from detkit.deploy.quantize import quantize_onnx
    config, _, models, folder = exported
    out = str(folder / 'tiny_int8.onnx')
    convs = quantize_onnx(models['static'], out, str(folder / 'shapes' / 'val'), num_images=4)
    fp32, int8 = onnx.load(models['static']), onnx.load(out)
    assert convs == sum(n.op_type == 'Conv' for n in fp32.graph.node) >= 20
    # every convolution reads int8 weights (QDQ); NMS and top-k stay float
    producers = {o: n.op_type for n in int8.graph.node for o in n.output}
    conv_weights = [producers.get(n.input[1]) for n in int8.graph.node if n.op_type == 'Conv']
    assert conv_weights == ['DequantizeLinear'] * convs
    def detkit_metadata(model):
        return {p.key: p.value for p in model.metadata_props if p.key.startswith('detkit.')}

    assert detkit_metadata(int8) == detkit_metadata(fp32) and len(detkit_metadata(fp32)) == 7
    image = str(sorted((folder / 'shapes' / 'val').glob('*'))[0])
    expected = inference_detector(init_detector(config, models['static']), image)
    result = inference_detector(init_detector(config, out), image)
    assert len(result) > 0 and result.labels.dtype == torch.int64
    # int8 moves boxes and scores a little: the best box stays where it was
    best = result.bboxes[0]
    ious = torchvision_iou(best[None], expected.bboxes[expected.labels == result.labels[0]])
    assert float(ious.max()) > 0.8
    with pytest.raises(FileNotFoundError, match='holds no image'):
        quantize_onnx(models['static'], out, str(folder), num_images=4)
    with pytest.raises(OnnxContractError, match='tiny.pth'):
        quantize_onnx(str(folder / 'tiny.pth'), out, str(folder / 'shapes' / 'val'))


def torchvision_iou(a, b):
    from torchvision.ops import box_iou
    return box_iou(a, b)


def test_demo_runs_an_onnx_file(exported):
    sys.path.insert(0, osp.join(REPO, 'tools'))
    import demo
    config, checkpoint, models, folder = exported
    images = str(folder / 'shapes' / 'val')
    records = {}
    for kind, model in (('pth', checkpoint), ('onnx', models['dynamic'])):
        out_dir = folder / f'demo_{kind}'
        summary = demo.main([images, config, model, '--out-dir', str(out_dir), '--score-thr',
                             '0.05', '--batch-size', '2'])
        assert summary['count'] == 6
        records[kind] = json.loads((out_dir / 'detections.json').read_text())['images']
    assert sum(len(r['detections']) for r in records['pth']) > 6 * 5
    for a, b in zip(records['pth'], records['onnx']):
        assert [d['label'] for d in a['detections']] == [d['label'] for d in b['detections']]
        for d, e in zip(a['detections'], b['detections']):
            assert np.allclose(d['bbox'], e['bbox'], atol=0.011)  # the JSON keeps 2 decimals


def test_compare_detections_matches_sets_and_checks_the_order():
    dets = torch.tensor([[[0., 0., 10., 10., .9], [5., 5., 20., 20., .5], [1., 1., 4., 4., .5],
                          [0., 0., 0., 0., 0.]]])
    labels = torch.tensor([[2, 0, 1, -1]])
    swapped = dets[:, [0, 2, 1, 3]], labels[:, [0, 2, 1, 3]]   # a tie listed the other way
    report = compare_detections((dets, labels), swapped)
    assert report.ok and report.max_box_diff == 0 and report.counts == [(3, 3)]
    moved = dets.clone()
    moved[0, 1, 0] += 0.01
    report = compare_detections((dets, labels), (moved, labels))
    assert not report.ok and report.max_box_diff == pytest.approx(0.01, abs=1e-6)
    unsorted = dets[:, [1, 0, 2, 3]], labels[:, [1, 0, 2, 3]]
    report = compare_detections((dets, labels), unsorted)
    assert report.max_box_diff == 0 and not report.sorted_by_score and not report.ok
    fewer = labels.clone()
    fewer[0, 2] = -1
    assert compare_detections((dets, labels), (dets, fewer)).counts == [(3, 2)]


def test_onnx_on_images_that_need_resizing_and_padding(exported):
    """Images of 100-200 px in both orientations: the test pipeline resizes them to fit
    128x128 and OnnxDetector pads them with the mean colour, clips to the image and maps the
    boxes back. Only boxes near a padded edge may differ (the graph clips to its input)."""
    from torchvision.ops import box_iou

    from detkit.datasets.synthetic import make_shapes
    config, checkpoint, models, folder = exported
    root = folder / 'mixed'
    make_shapes(str(root), num_train=1, num_val=8, min_size=100, max_size=200, seed=9)
    images = sorted(str(p) for p in (root / 'val').glob('*.jpg'))
    expected = inference_detector(init_detector(config, checkpoint), images)
    sizes = {r.img_shape for r in expected}
    assert any(h > w for h, w in sizes) and any(w > h for h, w in sizes)
    for kind in ('static', 'dynamic'):
        results = inference_detector(init_detector(config, models[kind]), images)
        matched = total = 0
        for want, got in zip(expected, results):
            height, width = want.img_shape
            assert (got.bboxes >= 0).all() and (got.bboxes[:, [0, 2]] <= width).all()
            assert (got.bboxes[:, [1, 3]] <= height).all()
            total += len(want)
            if len(want) and len(got):
                iou = box_iou(want.bboxes, got.bboxes)
                same = (want.labels[:, None] == got.labels[None]) & (iou > 0.9999)
                matched += int(same.any(dim=1).sum())
        assert total > 8 * 10 and matched >= 0.9 * total, (kind, matched, total)
