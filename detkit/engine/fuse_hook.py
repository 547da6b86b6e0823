"""``tools/test.py --amp``: batch norms folded into convolutions once the weights are loaded."""
from __future__ import annotations

from typing import Any

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from detkit.models.layers import fuse_conv_bn
from detkit.registry import HOOKS


@HOOKS.register_module()
class FuseConvBNHook(Hook):
    """Before the test loop, put the model in eval mode and fold its batch norms into the
    convolutions before them (:func:`~detkit.models.layers.fuse_conv_bn`).

    ``before_test`` runs after mmengine's Runner has loaded the checkpoint and before the first
    batch; only the test loop is touched (a validation during training keeps the norms, which
    training goes on to use). :func:`detkit.engine.enable_amp` adds this hook for the test loop.
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self.fused = 0

    def before_test(self, runner: Any) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self.fused = fuse_conv_bn(model.eval())
        runner.logger.info(f'FuseConvBNHook: folded {self.fused} batch norms into the '
                           'convolutions before them')
