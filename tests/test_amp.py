"""``--amp`` on the CPU: bfloat16 autocast + channels-last, chosen by the machine, the layout kept
through the forward pass, and the detections and losses of float32 within bfloat16's tolerance.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from mmengine.config import Config

from detkit.engine import amp as amp_module
from detkit.engine.amp import AmpFallbackWarning, enable_amp, prepare_inference_model
from detkit.models.task_utils import bbox_overlaps
from detkit.registry import MODELS

from detector_checks import RETINANET_CONFIG, small_retinanet_config

SHAPES_CONFIG = RETINANET_CONFIG.parent.parent.parent / 'retinanet_r50_shapes.py'
CHANNELS_LAST = torch.channels_last


@pytest.fixture
def native_bf16(monkeypatch):
    monkeypatch.setenv('DETKIT_CPU_BF16', '1')
    monkeypatch.setattr(amp_module.torch.cuda, 'is_available', lambda: False)


def test_enable_amp_on_a_cpu_with_native_bf16(native_bf16):
    cfg = Config.fromfile(str(SHAPES_CONFIG))
    assert enable_amp(cfg, train=True) == 'cpu-bf16-channels-last'
    assert cfg.optim_wrapper.type == 'CPUAmpOptimWrapper'
    assert cfg.model.data_preprocessor.channels_last is True
    assert cfg.val_cfg.fp16 is True and cfg.test_cfg.fp16 is True
    test_only = Config.fromfile(str(SHAPES_CONFIG))
    enable_amp(test_only, train=False)
    assert test_only.optim_wrapper.type == 'OptimWrapper' and test_only.test_cfg.fp16


def test_enable_amp_without_native_bf16_warns_once_and_stays_float32(monkeypatch):
    monkeypatch.setenv('DETKIT_CPU_BF16', '0')
    monkeypatch.setattr(amp_module.torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(amp_module, '_warned', False)
    cfg = Config.fromfile(str(SHAPES_CONFIG))
    before = cfg.to_dict()
    with pytest.warns(AmpFallbackWarning, match=r'--amp: this CPU \(.*\) has neither AVX512-BF16 '
                                                r'nor AMX-BF16.*running in float32'):
        assert enable_amp(cfg) == 'float32'
    assert cfg.to_dict() == before
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # a second time: no warning
        assert enable_amp(Config.fromfile(str(SHAPES_CONFIG))) == 'float32'


def channels_last_model(state_dict, fused=True):
    """The model as the inference fast path runs it: channels-last, batch norms folded,
    convolution and linear weights in bfloat16 (``fused``), or as training runs it."""
    cfg = small_retinanet_config()
    cfg.data_preprocessor.channels_last = True
    model = MODELS.build(cfg)
    model.load_state_dict(state_dict)
    model.eval()
    if fused:
        # ResNet-18's 20 norms (stem, 8 blocks x 2, 3 downsamples) folded; its 20 convolutions,
        # the FPN's 8 and the head's 4 in bfloat16
        assert prepare_inference_model(model, torch.bfloat16) == (20, 32)
    return model


def test_channels_last_survives_the_forward_pass(trained):
    model, images, samples, _ = trained
    fast = channels_last_model(model.state_dict())
    convs = [m for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=CHANNELS_LAST) for m in convs)
    data = fast.data_preprocessor(dict(inputs=images, data_samples=samples), False)
    assert data['inputs'].is_contiguous(memory_format=CHANNELS_LAST)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        feats = fast.extract_feat(data['inputs'])
        cls_scores, bbox_preds = fast.bbox_head(feats)
    for tensor in (*feats, *cls_scores, *bbox_preds):
        assert tensor.dtype == torch.bfloat16
        assert tensor.is_contiguous(memory_format=CHANNELS_LAST), tuple(tensor.stride())


def test_fast_path_finds_the_float32_detections(trained):
    model, images, samples, _ = trained
    fast = channels_last_model(model.state_dict())
    with torch.no_grad():
        want = model(**model.data_preprocessor(dict(inputs=images, data_samples=samples)),
                     mode='predict')
        with torch.autocast('cpu', dtype=torch.bfloat16):
            got = fast(**fast.data_preprocessor(dict(inputs=images, data_samples=samples)),
                       mode='predict')
    for expected, actual in zip(want, got):
        confident = expected.pred.scores > 0.3
        assert int(confident.sum()) >= 1
        assert actual.pred.bboxes.dtype == torch.float32  # decoded in float32
        for box, score, label in zip(expected.pred.bboxes[confident],
                                     expected.pred.scores[confident],
                                     expected.pred.labels[confident]):
            same = actual.pred.labels == label
            iou = bbox_overlaps(box[None], actual.pred.bboxes[same])[0]
            best = int(iou.argmax())
            # bfloat16 keeps 8 bits of mantissa: boxes move by well under a pixel here,
            # scores by a few thousandths
            assert float(iou[best]) > 0.97
            assert float(actual.pred.scores[same][best]) == pytest.approx(float(score), abs=0.03)


def test_fast_path_losses_match_float32(trained):
    model, images, samples, _ = trained
    fast = channels_last_model(model.state_dict(), fused=False)  # training keeps its norms
    losses = {}
    for name, net, autocast in (('fp32', model, False), ('amp', fast, True)):
        net.train()
        batch = net.data_preprocessor(dict(inputs=images, data_samples=samples), True)
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
            out = net(batch['inputs'], batch['data_samples'], mode='loss')
        losses[name] = out
        net.eval()
    for key in ('loss_cls', 'loss_bbox'):
        assert losses['amp'][key].dtype == torch.float32  # reduced in float32
        assert float(losses['amp'][key].detach()) == pytest.approx(
            float(losses['fp32'][key].detach()), rel=0.05)
