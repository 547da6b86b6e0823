"""The one base class of detkit's backbones: ``init_cfg`` resolved in detkit's registries."""
from __future__ import annotations

from mmengine.model import BaseModule

from detkit.models.weight_init import detkit_default_scope


class BaseBackbone(BaseModule):
    """An mmengine ``BaseModule`` whose ``init_weights`` looks ``init_cfg`` types up in detkit.

    ``init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')`` thus means
    :class:`detkit.models.weight_init.PretrainedInit` (read from the torch hub cache, never
    downloaded, torchvision keys converted) even for a backbone built outside a Runner, where
    mmengine's default scope is not ``detkit``.
    """

    def init_weights(self) -> None:
        """Apply ``init_cfg`` as mmengine does, inside detkit's default scope."""
        with detkit_default_scope():
            super().init_weights()
