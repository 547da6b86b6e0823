"""``tools/test.py --amp``: the inference-only fast path, applied once the weights are loaded."""
from __future__ import annotations

from typing import Any

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from detkit.engine.amp import prepare_inference_model
from detkit.registry import HOOKS


@HOOKS.register_module()
class InferenceFastPathHook(Hook):
    """Before the test loop, make the model inference-only (``--amp``'s test path).

    :func:`~detkit.engine.amp.prepare_inference_model`: eval mode, batch norms folded into the
    convolutions before them, convolution and linear weights stored in ``dtype``. With mmengine's
    ``EMAHook`` in the run it does nothing but say so: that hook swaps the averaged parameters in
    by position, which folding would misalign.

    ``before_test`` runs after mmengine's Runner has loaded the checkpoint and before the first
    batch; only the test loop is touched (a validation during training keeps the model as it
    is, since training goes on with it). :func:`detkit.engine.enable_amp` adds this hook, for a
    test-only run, with its autocast dtype.

    Args:
        dtype: ``'bfloat16'`` (the CPU fast path) or ``'float16'`` (CUDA).
    """

    priority = 'VERY_LOW'

    def __init__(self, dtype: str = 'bfloat16') -> None:
        if dtype not in ('bfloat16', 'float16'):
            raise ValueError(f"InferenceFastPathHook: dtype must be 'bfloat16' or 'float16', "
                             f'got {dtype!r}')
        self.dtype: torch.dtype = getattr(torch, dtype)
        self.fused = self.cast = 0

    def before_test(self, runner: Any) -> None:
        if any(type(hook).__name__ == 'EMAHook' for hook in runner.hooks):
            runner.logger.warning('InferenceFastPathHook: the run has an EMAHook, which swaps '
                                  'parameters by position; batch norms stay unfolded and '
                                  'weights float32 (autocast still runs)')
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self.fused, self.cast = prepare_inference_model(model, self.dtype)
        runner.logger.info(f'InferenceFastPathHook: {self.fused} batch norms folded into '
                           f'convolutions; {self.cast} convolution and linear layers hold '
                           f'{self.dtype} weights')
