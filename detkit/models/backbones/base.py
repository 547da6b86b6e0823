"""The one base class of detkit's backbones: frozen stages, ``norm_eval`` and ``init_cfg``."""
from __future__ import annotations

from mmengine.model import BaseModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from detkit.models.weight_init import detkit_default_scope


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
