"""Normalization layers named by config: ``norm_cfg=dict(type='BN')`` and friends.

:func:`build_norm_layer` returns the layer together with its conventional attribute name
(``bn1``, ``gn``...). Models store the layer under that name so that checkpoint keys stay those
of torchvision and mmdetection (``layer1.0.bn1.weight``, ``lateral_convs.0.gn.weight``).

Registered in ``detkit.registry.MODELS``:

=============  =========================  ============  ===================================
type           layer                      name prefix   extra keys in the config
=============  =========================  ============  ===================================
``BN``         ``nn.BatchNorm2d``         ``bn``        ``eps``, ``momentum``, ``affine``...
``SyncBN``     ``nn.SyncBatchNorm``       ``bn``        as BN, plus ``process_group``
``GN``         ``nn.GroupNorm``           ``gn``        ``num_groups`` (required), ``eps``
``FrozenBN``   :class:`FrozenBatchNorm2d`  ``bn``        ``eps``
=============  =========================  ============  ===================================

Every config may also carry ``requires_grad`` (default ``True``), which is applied to the
layer's parameters rather than passed to its constructor.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from detkit.registry import MODELS


class FrozenBatchNorm2d(nn.Module):
    """Batch normalization with fixed statistics and affine parameters (no gradients, no updates).

    ``weight``, ``bias``, ``running_mean`` and ``running_var`` are buffers, named as in
    ``nn.BatchNorm2d`` so that a BatchNorm2d state dict (torchvision or mmdetection checkpoint)
    loads into it; a ``num_batches_tracked`` entry in that state dict is accepted and dropped.

    Args:
        num_features: number of channels ``C`` of the input.
        eps: added to the variance before the square root.

    Example:
        >>> bn = FrozenBatchNorm2d(8)
        >>> bn(torch.randn(2, 8, 4, 4)).shape
        torch.Size([2, 8, 4, 4])
    """

    # The buffers registered in __init__ (nn.Module.__getattr__ alone types them Tensor | Module).
    weight: Tensor
    bias: Tensor
    running_mean: Tensor
    running_var: Tensor

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f'FrozenBatchNorm2d: num_features must be a positive int, '
                             f'got {num_features!r}')
        self.num_features = num_features
        self.eps = eps
        self.register_buffer('weight', torch.ones(num_features))
        self.register_buffer('bias', torch.zeros(num_features))
        self.register_buffer('running_mean', torch.zeros(num_features))
        self.register_buffer('running_var', torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        """Normalize ``x`` with the stored statistics.

        Args:
            x: ``(N, C, H, W)`` features.

        Returns:
            ``(N, C, H, W)``: ``(x - mean) / sqrt(var + eps) * weight + bias`` per channel.
        """
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(f'FrozenBatchNorm2d({self.num_features}) expects input of shape '
                             f'(N, {self.num_features}, H, W), got {tuple(x.shape)}')
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict,
                              strict: bool, missing_keys: list, unexpected_keys: list,
                              error_msgs: list) -> None:
        # A BatchNorm2d checkpoint carries a step counter that a frozen layer has no use for.
        state_dict.pop(prefix + 'num_batches_tracked', None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return f'{self.num_features}, eps={self.eps}'


# type -> (layer class, attribute-name prefix).
NORM_LAYERS: dict[str, tuple[type[nn.Module], str]] = {
    'BN': (nn.BatchNorm2d, 'bn'),
    'SyncBN': (nn.SyncBatchNorm, 'bn'),
    'GN': (nn.GroupNorm, 'gn'),
    'FrozenBN': (FrozenBatchNorm2d, 'bn'),
}
for _name, (_cls, _) in NORM_LAYERS.items():
    MODELS.register_module(name=_name, module=_cls)


def build_norm_layer(cfg: dict, num_features: int,
                     postfix: int | str = '') -> tuple[str, nn.Module]:
    """Build a normalization layer from a config and name it the conventional way.

    Args:
        cfg: ``dict(type=..., **kwargs)`` with ``type`` one of ``NORM_LAYERS``; the other keys
            go to the layer's constructor, except ``requires_grad`` (default ``True``) which
            sets ``requires_grad`` of the layer's parameters. ``GN`` needs ``num_groups``.
        num_features: number of channels ``C`` normalized by the layer (input ``(N, C, H, W)``).
        postfix: appended to the name, e.g. ``1`` gives ``'bn1'``.

    Returns:
        ``(name, layer)``: ``name`` is ``'bn' + postfix`` for BN, SyncBN and FrozenBN and
        ``'gn' + postfix`` for GN.

    Raises:
        ValueError: ``cfg`` is not a dict with a known ``type``, or GN's ``num_groups`` is
            missing or does not divide ``num_features``.

    Example:
        >>> name, layer = build_norm_layer(dict(type='GN', num_groups=4), 16, postfix=1)
        >>> name, type(layer).__name__
        ('gn1', 'GroupNorm')
    """
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ValueError(f'norm_cfg must be a dict with a "type" key, got {cfg!r}')
    if not isinstance(postfix, (int, str)):
        raise ValueError(f'postfix must be an int or str, got {postfix!r}')
    kwargs: dict[str, Any] = dict(cfg)
    norm_type = kwargs.pop('type')
    if norm_type not in NORM_LAYERS:
        raise ValueError(f'norm_cfg type={norm_type!r} is not a known normalization layer; '
                         f'expected one of {sorted(NORM_LAYERS)}')
    requires_grad = kwargs.pop('requires_grad', True)
    layer_cls, abbr = NORM_LAYERS[norm_type]

    if norm_type == 'GN':
        num_groups = kwargs.pop('num_groups', None)
        if not isinstance(num_groups, int) or num_groups < 1:
            raise ValueError(f"norm_cfg type='GN' needs num_groups (a positive int), "
                             f'got num_groups={num_groups!r}')
        if num_features % num_groups != 0:
            raise ValueError(f"norm_cfg type='GN': num_groups={num_groups} must divide the "
                             f'number of channels {num_features}')
        layer = _construct(layer_cls, norm_type, num_groups, num_features, **kwargs)
    else:
        layer = _construct(layer_cls, norm_type, num_features, **kwargs)

    for param in layer.parameters():
        param.requires_grad = requires_grad
    return f'{abbr}{postfix}', layer


def _construct(layer_cls: type[nn.Module], norm_type: str, *args: Any, **kwargs: Any) -> nn.Module:
    try:
        return layer_cls(*args, **kwargs)
    except TypeError as error:
        raise ValueError(f'norm_cfg type={norm_type!r}: unexpected keys {sorted(kwargs)} for '
                         f'{layer_cls.__name__} ({error})') from error
