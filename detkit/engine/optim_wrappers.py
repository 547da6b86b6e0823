"""Mixed precision on the CPU: bfloat16 autocast around forward and loss.

mmengine's ``AmpOptimWrapper`` refuses to start without CUDA (and fp16 with loss scaling is the
right choice there). On the CPU, bfloat16 keeps float32's exponent range, so it needs no loss
scaling: this wrapper only runs the forward pass under ``torch.autocast('cpu', torch.bfloat16)``;
parameters, gradients and the optimizer stay float32.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper

from detkit.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(OptimWrapper):
    """An ``OptimWrapper`` whose ``optim_context`` autocasts to bfloat16 on the CPU.

    Args:
        **kwargs: the arguments of mmengine's ``OptimWrapper`` (``optimizer``, ``clip_grad``,
            ``accumulative_counts``).
    """

    @contextmanager
    def optim_context(self, model: torch.nn.Module):
        """Gradient-accumulation context of ``OptimWrapper`` plus CPU bfloat16 autocast."""
        with super().optim_context(model), torch.autocast('cpu', dtype=torch.bfloat16):
            yield
