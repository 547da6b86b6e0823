"""detkit.apis (init_detector, inference_detector), detkit.visualization and tools/demo.py."""
from __future__ import annotations

import json
import os.path as osp
import sys

import cv2
import numpy as np
import pytest
import torch

from detkit.apis import DetResult, inference_detector, init_detector
from detkit.visualization import class_color, draw_detections

from detector_checks import one_thread  # noqa: F401  (module fixture)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools'))
import demo  # noqa: E402

CLASSES = ('circle', 'square', 'triangle', 'star', 'cross')
TINY_CONFIG = """
_base_ = {base!r}
model = dict(
    backbone=dict(depth=18),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=64),
    bbox_head=dict(in_channels=64, feat_channels=64, stacked_convs=1))
test_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations'), dict(type='PackDetInputs')]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
"""


def write_tiny_config(folder) -> str:
    path = osp.join(str(folder), 'tiny.py')
    with open(path, 'w') as f:
        f.write(TINY_CONFIG.format(base=osp.join(REPO, 'configs', 'retinanet_r50_shapes.py')))
    return path


def textured_image(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST)
    cv2.circle(image, (width // 3, height // 2), min(height, width) // 5, (20, 200, 240), -1)
    return image


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """A tiny RetinaNet config and a checkpoint whose classifier fires everywhere."""
    folder = tmp_path_factory.mktemp('apis')
    config = write_tiny_config(folder)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match='random weights'):
        model = init_detector(config)
    with torch.no_grad():  # prior 0.5: every anchor scores far above the 0.05 threshold
        model.bbox_head.retina_cls.bias.fill_(0.0)
    checkpoint = osp.join(str(folder), 'tiny.pth')
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=CLASSES))), checkpoint)
    return config, checkpoint, model.state_dict()


@pytest.fixture(scope='module')
def detector(tiny):
    config, checkpoint, _ = tiny
    return init_detector(config, checkpoint)


def test_init_detector_loads_weights_and_class_names(tiny, detector):
    _, _, state = tiny
    assert not detector.training
    assert detector.dataset_meta['classes'] == CLASSES
    loaded = detector.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_path_and_array_give_the_same_detections(tmp_path, detector):
    image = textured_image(96, 128, seed=1)
    path = osp.join(str(tmp_path), 'a.png')
    cv2.imwrite(path, image)
    from_path = inference_detector(detector, path)
    from_array = inference_detector(detector, image)
    assert isinstance(from_path, DetResult) and from_path.img_path == path
    assert len(from_path) == 100  # max_per_img of the RetinaNet test config
    assert from_path.img_shape == (96, 128)
    assert from_path.class_names == CLASSES
    assert torch.equal(from_path.bboxes, from_array.bboxes)
    assert torch.equal(from_path.scores, from_array.scores)
    assert torch.equal(from_path.labels, from_array.labels)
    assert torch.all(from_path.scores[:-1] >= from_path.scores[1:])
    assert from_path.bboxes.dtype == torch.float32 and from_path.labels.dtype == torch.int64


def test_batched_list_equals_single_calls(detector):
    images = [textured_image(96, 128, seed=s) for s in (2, 3, 4)]
    batched = inference_detector(detector, images, batch_size=2)
    assert isinstance(batched, list) and len(batched) == 3
    for image, result in zip(images, batched):
        single = inference_detector(detector, image)
        # A batch of 2 and a batch of 1 run different oneDNN convolution kernels; their float32
        # rounding, amplified by the random network and scaled by the box size (not by the
        # coordinate's value), moves a coordinate by up to about 1.2e-4 px on a 128-px image.
        torch.testing.assert_close(result.bboxes, single.bboxes, atol=5e-4, rtol=0)
        torch.testing.assert_close(result.scores, single.scores, atol=1e-6, rtol=0)
        assert torch.equal(result.labels, single.labels)


def test_boxes_come_back_in_pixels_of_the_given_image(detector):
    small = textured_image(96, 128, seed=5)
    # Twice the size by pixel repetition: Resize (bilinear) halves it back to exactly `small`.
    large = cv2.resize(small, (256, 192), interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(cv2.resize(large, (128, 96), interpolation=cv2.INTER_LINEAR), small)
    at_small, at_large = inference_detector(detector, [small, large])
    assert at_large.img_shape == (192, 256)
    assert torch.equal(at_small.labels, at_large.labels)
    torch.testing.assert_close(at_large.scores, at_small.scores, atol=1e-6, rtol=0)
    torch.testing.assert_close(at_large.bboxes, at_small.bboxes * 2, atol=1e-3, rtol=0)
    assert float(at_large.bboxes[:, 2].max()) <= 256 and float(at_large.bboxes.min()) >= 0


def test_result_to_dict_and_threshold(detector):
    result = inference_detector(detector, textured_image(96, 128, seed=6))
    threshold = float(result.scores[10])
    above = result.above(threshold)
    assert len(above) == int((result.scores >= threshold).sum()) >= 11
    record = json.loads(json.dumps(above.to_dict()))
    assert (record['height'], record['width']) == (96, 128)
    assert len(record['detections']) == len(above)
    first = record['detections'][0]
    assert first['class_name'] == CLASSES[first['label']]
    assert first['bbox'] == pytest.approx(above.bboxes[0].tolist(), abs=0.01)


@pytest.mark.parametrize('bad, error, words', [
    ('missing.png', FileNotFoundError, 'missing.png'),
    (np.zeros((32, 32, 3), np.float32), ValueError, 'uint8'),
    (np.zeros((32, 32), np.uint8), ValueError, '(H, W, 3)'),
    (np.zeros((0, 32, 3), np.uint8), ValueError, 'empty'),
    (42, TypeError, 'int'),
])
def test_wrong_inputs_say_what_is_expected(detector, bad, error, words):
    with pytest.raises(error, match=words.replace('(', r'\(').replace(')', r'\)')):
        inference_detector(detector, [textured_image(32, 32, 0), bad])


def test_checkpoint_of_another_model_is_refused_with_the_keys(tmp_path, tiny):
    config, _, state = tiny
    other = {k: v for k, v in state.items() if not k.startswith('bbox_head.retina_reg')}
    other['bbox_head.retina_cls.weight'] = torch.zeros(27, 64, 3, 3)  # 3 classes, not 5
    other['roi_head.bbox_head.fc_cls.weight'] = torch.zeros(4, 8)
    path = osp.join(str(tmp_path), 'other.pth')
    torch.save(dict(state_dict=other), path)
    with pytest.raises(ValueError) as info:
        init_detector(config, path)
    message = str(info.value)
    assert 'other.pth' in message and 'another architecture' in message
    assert '2 keys missing: bbox_head.retina_reg.bias, bbox_head.retina_reg.weight' in message
    assert '1 keys unexpected: roi_head.bbox_head.fc_cls.weight' in message
    assert 'bbox_head.retina_cls.weight: checkpoint (27, 64, 3, 3) vs model (45, 64, 3, 3)' \
        in message
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        init_detector(config, osp.join(str(tmp_path), 'nope.pth'))
    with pytest.raises(FileNotFoundError, match='nope.py'):
        init_detector(osp.join(str(tmp_path), 'nope.py'))


def test_class_colors_are_distinct_and_stable():
    colors = [class_color(i) for i in range(20)]
    assert len(set(colors)) == 20
    assert class_color(3) == colors[3]
    nearest = min(np.abs(np.subtract(a, b)).sum() for i, a in enumerate(colors[:8])
                  for b in colors[i + 1:8])
    assert nearest >= 60  # the first classes are far apart in colour


@pytest.mark.parametrize('size, thickness', [(120, 1), (800, 2), (2000, 5)])
def test_drawing_marks_the_box_and_nothing_far_from_it(size, thickness):
    image = np.full((size, size, 3), 128, np.uint8)
    x1, y1, x2, y2 = size // 4, size // 3, size * 3 // 4, size * 5 // 6
    drawn = draw_detections(image, [[x1, y1, x2, y2], [0, 0, 5, 5]], [2, 0], [0.9, 0.1],
                            CLASSES, score_thr=0.3)
    assert drawn.shape == image.shape and np.array_equal(image, np.full_like(image, 128))
    color = class_color(2)
    mid_y = (y1 + y2) // 2
    assert tuple(drawn[mid_y, x1]) == color and tuple(drawn[mid_y, x2]) == color
    # the line is `thickness` pixels wide: just outside it the image is untouched
    assert tuple(drawn[mid_y, x1 - thickness // 2 - 2]) == (128, 128, 128)
    assert tuple(drawn[mid_y, (x1 + x2) // 2]) == (128, 128, 128)  # inside the box: untouched
    label_band = drawn[max(0, y1 - 3 * thickness - 5):y1, x1:x1 + 10]
    assert (label_band == np.array(color, np.uint8)).all(axis=-1).any()  # the label's background
    assert tuple(drawn[2, 2]) == (128, 128, 128)  # the 0.1 box is below score_thr


def test_drawing_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match='2 boxes, 1 labels'):
        draw_detections(np.zeros((8, 8, 3), np.uint8), [[0, 0, 1, 1]] * 2, [0])


def test_demo_on_a_folder_and_a_video(tmp_path, tiny, capsys):
    config, checkpoint, _ = tiny
    folder = tmp_path / 'images'
    folder.mkdir()
    images = {f'img{i}.png': textured_image(96 + 16 * i, 128, seed=10 + i) for i in range(3)}
    for name, image in images.items():
        cv2.imwrite(str(folder / name), image)
    (folder / 'broken.png').write_bytes(b'not an image')
    out_dir = tmp_path / 'out'
    summary = demo.main([str(folder), config, checkpoint, '--out-dir', str(out_dir),
                         '--score-thr', '0.3', '--batch-size', '2'])
    assert summary['count'] == 3
    printed = capsys.readouterr()
    assert 'skipped' in printed.err and 'broken.png' in printed.err
    assert 'img0.png: ' in printed.out and 'images/s' in printed.out
    records = json.loads((out_dir / 'detections.json').read_text())['images']
    assert [osp.basename(r['img_path']) for r in records] == sorted(images)
    for record in records:
        source = images[osp.basename(record['img_path'])]
        drawn = cv2.imread(record['output'])
        assert drawn.shape == source.shape
        assert record['detections'] and all(d['score'] >= 0.3 for d in record['detections'])
        x1, y1, x2, y2 = (int(round(v)) for v in record['detections'][0]['bbox'])
        x1, x2 = min(max(x1, 0), source.shape[1] - 1), min(max(x2, 0), source.shape[1] - 1)
        y1, y2 = min(max(y1, 0), source.shape[0] - 1), min(max(y2, 0), source.shape[0] - 1)
        mid_y = (y1 + y2) // 2
        # the box's left edge is drawn: those pixels changed
        assert not np.array_equal(drawn[mid_y, x1], source[mid_y, x1])

    video = str(tmp_path / 'clip.mp4')
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*'mp4v'), 5.0, (128, 96))
    for i in range(5):
        writer.write(textured_image(96, 128, seed=20 + i))
    writer.release()
    summary = demo.main([video, config, checkpoint, '--out-dir', str(out_dir / 'video')])
    assert summary['count'] == 5
    frames = json.loads((out_dir / 'video' / 'detections.json').read_text())['images']
    assert [f['frame'] for f in frames] == [0, 1, 2, 3, 4]
    capture = cv2.VideoCapture(str(out_dir / 'video' / 'clip_det.mp4'))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    assert (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (128, 96)
    capture.release()

    # a truncated file: the frames that could be read, and a warning for the rest
    avi = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*'MJPG'), 5.0, (128, 96))
    for i in range(8):
        writer.write(textured_image(96, 128, seed=30 + i))
    writer.release()
    cut = tmp_path / 'cut.avi'
    cut.write_bytes(avi.read_bytes()[:avi.stat().st_size // 2])
    capsys.readouterr()
    summary = demo.main([str(cut), config, checkpoint, '--out-dir', str(out_dir / 'cut')])
    declared = int(cv2.VideoCapture(str(cut)).get(cv2.CAP_PROP_FRAME_COUNT))
    assert declared == 8 and 0 < summary['count'] < 8
    assert (f"video {str(cut)!r} declares 8 frames; only the first {summary['count']} could be "
            'read') in capsys.readouterr().err


def test_demo_names_a_missing_input(tmp_path, tiny):
    config, checkpoint, _ = tiny
    with pytest.raises(SystemExit, match='nothing.jpg'):
        demo.main([str(tmp_path / 'nothing.jpg'), config, checkpoint])


def test_tile_origins_cover_the_image_with_overlap():
    from detkit.apis.slicing import image_tiles, tile_origins
    assert tile_origins(1000, 400, 0.2) == [0, 320, 600]
    assert tile_origins(400, 400, 0.2) == [0] and tile_origins(300, 400, 0.5) == [0]
    assert tile_origins(500, 200, 0.0) == [0, 200, 300]
    for length, size, overlap in ((1000, 400, 0.2), (777, 160, 0.25), (161, 160, 0.2)):
        origins = tile_origins(length, size, overlap)
        assert origins[0] == 0 and origins[-1] + size == length
        gaps = np.diff(origins)
        assert (gaps <= size * (1 - overlap) + 1e-9).all() and (gaps > 0).all()
    assert len(image_tiles(np.zeros((300, 1000, 3), np.uint8), 400, 0.2)) == 3
    with pytest.raises(ValueError, match='slice_overlap'):
        tile_origins(100, 50, 1.0)


def test_merge_detections_moves_tiles_and_removes_duplicates():
    from detkit.apis.slicing import merge_detections
    whole = DetResult(torch.tensor([[100., 100., 150., 150.]]), torch.tensor([0.6]),
                      torch.tensor([1]), ('a', 'b'))
    tile = DetResult(torch.tensor([[0., 0., 50., 50.], [5., 5., 20., 20.]]),
                     torch.tensor([0.9, 0.8]), torch.tensor([1, 0]), ('a', 'b'))
    boxes, scores, labels = merge_detections([(whole, 0, 0), (tile, 100, 100)], 0.5, 10)
    # the tile's first box is the whole image's box, moved: the better score survives NMS
    assert boxes.tolist() == [[100, 100, 150, 150], [105, 105, 120, 120]]
    assert scores.tolist() == pytest.approx([0.9, 0.8]) and labels.tolist() == [1, 0]
    assert len(merge_detections([(whole, 0, 0), (tile, 100, 100)], 0.5, 1)[0]) == 1


def test_sliced_inference_runs_tiles_and_the_whole_image(detector, monkeypatch):
    image = textured_image(256, 384, seed=5)
    calls = []
    original = inference_detector

    def counting(model, images, **kwargs):
        calls.append([i.shape for i in images] if isinstance(images, list) else None)
        return original(model, images, **kwargs)

    import detkit.apis.inference as inference_module
    monkeypatch.setattr(inference_module, 'inference_detector', counting)
    sliced = inference_module.inference_detector(detector, image, slice_size=160,
                                                 slice_overlap=0.25)
    # tiles start at 0 and 96 down, 0, 120, 224 across (384 - 160 = 224): 6 tiles + the whole
    assert calls[-1] == [(256, 384, 3)] + [(160, 160, 3)] * 6
    assert len(sliced) > 0 and sliced.img_shape == (256, 384)
    assert (sliced.bboxes[:, [0, 2]] <= 384).all() and (sliced.bboxes[:, [1, 3]] <= 256).all()
    assert (sliced.scores[:-1] >= sliced.scores[1:]).all()
    # an image no larger than a tile: the whole image alone, the same detections
    small = textured_image(128, 128, seed=6)
    plain, single = original(detector, small), original(detector, small, slice_size=160)
    torch.testing.assert_close(single.bboxes, plain.bboxes[:300])


def test_demo_slices_large_images(tmp_path, tiny):
    config, checkpoint, _ = tiny
    folder = tmp_path / 'large'
    folder.mkdir()
    cv2.imwrite(str(folder / 'big.png'), textured_image(300, 400, seed=8))
    summary = demo.main([str(folder), config, checkpoint, '--out-dir', str(tmp_path / 'out'),
                         '--slice', '128', '--slice-overlap', '0.25'])
    assert summary['count'] == 1
    record = json.loads((tmp_path / 'out' / 'detections.json').read_text())['images'][0]
    boxes = np.array([d['bbox'] for d in record['detections']])
    assert len(boxes) > 0 and (boxes[:, [0, 2]] <= 400).all() and (boxes[:, [1, 3]] <= 300).all()
    with pytest.raises(SystemExit):
        demo.main([str(folder), config, checkpoint, '--slice', '128', '--slice-overlap', '1'])


def test_compiled_detector_finds_the_same_detections(tiny, detector):
    """init_detector(compile=True): backbone, neck and head under torch.compile (inductor,
    freezing); the same state-dict keys and, up to float rounding, the same detections."""
    config, checkpoint, state = tiny
    compiled = init_detector(config, checkpoint, compile=True)
    assert set(compiled.state_dict()) == set(state)
    image = textured_image(96, 128, seed=5)
    want = inference_detector(detector, image)
    got = inference_detector(compiled, image)
    assert len(got) == len(want) == 100
    torch.testing.assert_close(got.scores, want.scores, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.bboxes, want.bboxes, atol=1e-2, rtol=0)
    assert torch.equal(got.labels, want.labels)
    # the compiled call replaces the modules' own (nn.Module.compile, torch pinned)
    assert all(getattr(compiled, part)._compiled_call_impl is not None
               for part in ('backbone', 'neck', 'bbox_head'))
    with pytest.raises(ValueError, match='compile=True compiles PyTorch modules'):
        init_detector(config, 'model.onnx', compile=True)


def test_demo_compile_reaches_init_detector(tmp_path, tiny, monkeypatch):
    config, checkpoint, _ = tiny
    asked = []

    def recording_init_detector(*args, **kwargs):
        asked.append(kwargs['compile'])
        return init_detector(*args, **dict(kwargs, compile=False))  # the flag, not the cost
    monkeypatch.setattr(demo, 'init_detector', recording_init_detector)
    path = str(tmp_path / 'a.png')
    cv2.imwrite(path, textured_image(96, 128, seed=6))
    for flags, expected in (([], False), (['--compile'], True)):
        demo.main([path, config, checkpoint, '--out-dir', str(tmp_path / 'out'), *flags])
        assert asked[-1] is expected
