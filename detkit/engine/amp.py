"""``--amp``: the fastest numerics a machine runs a detector with, chosen in one place.

* CPU with native bfloat16 (AVX512-BF16 or AMX-BF16): bfloat16 autocast (training through
  :class:`~detkit.engine.CPUAmpOptimWrapper`, validation and test through mmengine's loops with
  ``fp16=True``, which autocast to bfloat16 on the CPU) and the channels-last memory format for
  the whole model, whose data preprocessor then emits channels-last batches. On a recent Xeon or
  EPYC this is 2-4x faster than float32: oneDNN's bfloat16 convolutions want NHWC.
* CPU without native bfloat16: one warning naming what is missing; float32, as without
  ``--amp`` (bfloat16 would be emulated, slower than float32).
* CUDA: float16 autocast with dynamic loss scaling (mmengine's ``AmpOptimWrapper``). Whether
  channels-last helps there is not measured yet (no GPU was lent to the project), so it is off.

bfloat16 touches only what autocast lowers (convolutions, matrix products); the heads decode
boxes, rank and reduce losses in float32 (see their ``predict`` and ``loss``).

For inference alone (``tools/test.py``, :func:`detkit.apis.init_detector`) ``--amp`` also makes
the model inference-only once its weights are loaded (:func:`prepare_inference_model`;
:class:`~detkit.engine.InferenceFastPathHook` in the test loop), which a model that goes on
training cannot be: batch norms folded into the convolutions before them, and the weights of
convolutions and linear layers stored in the autocast dtype instead of being cast on every call.
"""
from __future__ import annotations

import os
import platform
import warnings
from typing import Any

import torch

from detkit.models.layers import fuse_conv_bn

_warned = False


class AmpFallbackWarning(UserWarning):
    """``--amp`` was asked for on a CPU without native bfloat16; float32 runs instead."""


def cpu_model_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or 'unknown CPU'


def cpu_bf16_flags() -> set[str] | None:
    """The CPU's native bfloat16 instruction sets among ``avx512_bf16``, ``amx_bf16`` (from
    ``/proc/cpuinfo``), or None where the flags cannot be read (not Linux)."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
            for line in f:
                if line.startswith('flags'):
                    flags = set(line.split(':', 1)[1].split())
                    return flags & {'avx512_bf16', 'amx_bf16'}
    except OSError:
        return None
    return None


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (``DETKIT_CPU_BF16=0``/``1`` overrides)."""
    forced = os.environ.get('DETKIT_CPU_BF16')
    if forced in ('0', '1'):
        return forced == '1'
    flags = cpu_bf16_flags()
    if flags is not None:
        return bool(flags)
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_amp_or_warn() -> bool:
    """True where the CPU fast path can run; otherwise warn once (naming the CPU and what it
    lacks) and return False, so that the caller stays in float32."""
    global _warned
    if native_cpu_bf16():
        return True
    if not _warned:
        _warned = True
        warnings.warn(f'--amp: this CPU ({cpu_model_name()}) has neither AVX512-BF16 nor '
                      'AMX-BF16, so bfloat16 would be emulated and slower than float32; '
                      'running in float32', AmpFallbackWarning, stacklevel=2)
    return False


def enable_amp(cfg: Any, train: bool = True, device: str | torch.device | None = None) -> str:
    """Switch a config (``mmengine.Config``) to the fastest numerics of this machine.

    Args:
        cfg: the whole config; changed in place: ``optim_wrapper`` (when ``train``),
            ``val_cfg``/``test_cfg`` (``fp16=True``), ``model.data_preprocessor``
            (``channels_last=True`` on the CPU fast path) and, when not ``train``,
            ``custom_hooks`` (:class:`~detkit.engine.InferenceFastPathHook` for the test
            loop).
        train: also switch the optimizer wrapper (``tools/train.py``); ``tools/test.py`` only
            needs the test loop and the model, whose batch norms it may fold.
        device: where the model will run; None: CUDA when it is available (as mmengine's
            Runner places it), else the CPU.

    Returns:
        What was chosen, in words, for the log: ``'cpu-bf16-channels-last'``,
        ``'cuda-fp16'`` or ``'float32'`` (no native bfloat16 on this CPU).
    """
    kind = torch.device(device).type if device is not None else (
        'cuda' if torch.cuda.is_available() else 'cpu')
    if kind == 'cuda':
        if train:
            wrapper = cfg.optim_wrapper
            if wrapper.get('type', 'OptimWrapper') != 'AmpOptimWrapper':
                wrapper.type = 'AmpOptimWrapper'
                wrapper.setdefault('loss_scale', 'dynamic')
        _loops_autocast(cfg)
        _fast_test_model(cfg, train, 'float16')
        return 'cuda-fp16'
    if not cpu_amp_or_warn():
        return 'float32'
    if train:
        cfg.optim_wrapper.type = 'CPUAmpOptimWrapper'
    _loops_autocast(cfg)
    _fast_test_model(cfg, train, 'bfloat16')
    preprocessor = cfg.model.get('data_preprocessor')
    if preprocessor is None:
        cfg.model.data_preprocessor = dict(type='DetDataPreprocessor', channels_last=True)
    else:
        preprocessor.channels_last = True
    return 'cpu-bf16-channels-last'


def autocast_dtype(chosen: str) -> torch.dtype | None:
    """The autocast dtype of what :func:`enable_amp` chose (None: float32, no autocast)."""
    return {'cpu-bf16-channels-last': torch.bfloat16, 'cuda-fp16': torch.float16}.get(chosen)


def _loops_autocast(cfg: Any) -> None:
    """Run the validation and test loops under autocast (mmengine's ``fp16=True``)."""
    for key, loop in (('val_cfg', 'ValLoop'), ('test_cfg', 'TestLoop')):
        section = cfg.get(key)
        if section is None:
            continue
        section.setdefault('type', loop)
        section.fp16 = True


def _fast_test_model(cfg: Any, train: bool, dtype: str) -> None:
    """A test-only run makes its model inference-only once the checkpoint is loaded."""
    if train:
        return
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(isinstance(h, dict) and h.get('type') == 'InferenceFastPathHook' for h in hooks):
        cfg.custom_hooks = [*hooks, dict(type='InferenceFastPathHook', dtype=dtype)]


def prepare_inference_model(model: torch.nn.Module, dtype: torch.dtype) -> tuple[int, int]:
    """Make ``model`` an inference-only model for autocast to ``dtype``, in place.

    1. Eval mode.
    2. Every batch norm that normalises a convolution's output alone (an ``nn.Sequential``
       neighbour or a declared ``conv_norm_pairs()`` pair) folded into that convolution
       (:func:`~detkit.models.layers.fuse_conv_bn`): one pass over each feature map fewer.
    3. The weights and biases of every ``Conv2d`` and ``Linear`` stored in ``dtype``: autocast
       would cast them from float32 on every call (Faster R-CNN's first fully connected layer
       alone holds 51 MB). Autocast computes these layers in ``dtype`` anyway, so the results
       are the same; norms and everything else keep float32.

    The model must then run under ``torch.autocast(..., dtype=dtype)``, as
    :func:`detkit.apis.inference_detector` and mmengine's test loop with ``fp16=True`` run it.
    Its state dict changes (the norms' entries go, the folded convolutions gain a bias), and a
    detkit detector is marked ``inference_only``: it refuses ``train()`` and losses.

    Args:
        model: the detector, its weights loaded.
        dtype: the autocast dtype it will run under (``torch.bfloat16`` or ``torch.float16``).

    Returns:
        The numbers of batch norms folded and of layers whose weights were cast.
    """
    fused = fuse_conv_bn(model.eval())
    if hasattr(model, 'inference_only'):
        setattr(model, 'inference_only', True)   # a detkit detector (BaseDetector)
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    for layer in layers:
        layer.to(dtype)
    return fused, len(layers)


def compile_inference_model(model: torch.nn.Module) -> list[str]:
    """``torch.compile`` the parts of a detector whose cost is fixed per input shape, in place.

    The backbone, the neck and the dense head (RetinaNet's ``bbox_head``, Faster R-CNN's
    ``rpn_head``) are compiled with inductor's ``freezing``: their parameters become constants,
    so batch norms fold, weights are prepacked for oneDNN and pointwise operations join the
    convolutions. Post-processing (thresholds, NMS, RoI sampling) has data-dependent shapes and
    stays eager. ``nn.Module.compile`` keeps the modules and their state-dict keys (which
    :func:`prepare_inference_model`, if it ran first, has changed).

    Compilation happens at the first call for each input shape (5-10 s for a ResNet-50 FPN on
    two cores) and must run without gradients, as :func:`detkit.apis.inference_detector` does.
    Measured on a 2-core EPYC (README, "CPU fast path"): 4-7% faster inference after that; for
    long runs at one input size, such as a video, not for a few images. Training does not gain.

    Args:
        model: a detector in eval mode.

    Returns:
        The names of the compiled parts.
    """
    options = {'freezing': True}
    compiled = []
    for name in ('backbone', 'neck', 'bbox_head', 'rpn_head'):
        part = getattr(model, name, None)
        if isinstance(part, torch.nn.Module):
            part.compile(options=options)
            compiled.append(name)
    return compiled
