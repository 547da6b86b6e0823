"""The one base class of detkit's backbones: frozen stages, ``norm_eval`` and ``init_cfg``."""
from __future__ import annotations

from typing import Callable

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from detkit.models.weight_init import detkit_default_scope


def maybe_checkpoint(function: Callable[[Tensor], Tensor], x: Tensor, block: nn.Module,
                     enabled: bool) -> Tensor:
    """``function(x)``, under activation checkpointing when that saves memory in a backward.

    With ``enabled`` (a block's ``with_cp`` while training), the block's activations are
    recomputed in backward instead of stored, whenever a backward will reach it: grad mode is on
    and its input or one of its own parameters needs grad. A block behind frozen stages (input
    without grad, trainable weights) is checkpointed too: the non-reentrant checkpoint needs no
    input gradient.

    Args:
        function: the block's computation, ``(N, C, H, W) -> (N, C', H', W')``.
        x: its input.
        block: the module whose parameters ``function`` uses.
        enabled: whether checkpointing is wanted.

    Returns:
        ``function(x)``.
    """
    if enabled and torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in block.parameters())):
        return checkpoint(function, x, use_reentrant=False)
    return function(x)


class BaseBackbone(BaseModule):
    """What ResNet, MobileNetV2 and VGG share: frozen stages, ``norm_eval`` and weight loading.

    A subclass sets ``self.norm_eval`` and says which modules ``frozen_stages`` freezes in
    :meth:`frozen_modules`; those get ``requires_grad=False`` and, like every BatchNorm when
    ``norm_eval`` is set, stay in eval mode while the model trains.

    ``init_weights`` looks ``init_cfg`` types up in detkit's registries, so
    ``init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')`` means
    :class:`detkit.models.weight_init.PretrainedInit` (read from the torch hub cache, never
    downloaded, torchvision keys converted) even for a backbone built outside a Runner, where
    mmengine's default scope is not ``detkit``.
    """

    norm_eval: bool = False

    def frozen_modules(self) -> list[nn.Module]:
        """The modules that ``frozen_stages`` freezes (stem first); none by default."""
        return []

    def _freeze_stages(self) -> None:
        for module in self.frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'BaseBackbone':
        """Set train/eval mode, keeping frozen stages (and, with ``norm_eval``, BN) in eval.

        Args:
            mode: ``True`` for training mode.

        Returns:
            ``self``.
        """
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def init_weights(self) -> None:
        """Apply ``init_cfg`` as mmengine does, inside detkit's default scope."""
        with detkit_default_scope():
            super().init_weights()
