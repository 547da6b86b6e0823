"""Activation layers named by config: ``act_cfg=dict(type='ReLU')`` and friends.

Registered in ``detkit.registry.MODELS`` (the extra keys of a config go to the constructor):
``ReLU``, ``ReLU6``, ``LeakyReLU`` (``negative_slope``), ``SiLU``, ``GELU`` (``approximate``),
``Sigmoid``, ``HSigmoid`` (``nn.Hardsigmoid``: ``relu6(x + 3) / 6``) and ``HSwish``
(``nn.Hardswish``).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from detkit.registry import MODELS

ACTIVATION_LAYERS: dict[str, type[nn.Module]] = {
    'ReLU': nn.ReLU,
    'ReLU6': nn.ReLU6,
    'LeakyReLU': nn.LeakyReLU,
    'SiLU': nn.SiLU,
    'GELU': nn.GELU,
    'Sigmoid': nn.Sigmoid,
    'HSigmoid': nn.Hardsigmoid,
    'HSwish': nn.Hardswish,
}
# The types whose constructor takes ``inplace``.
INPLACE_ACTIVATIONS = frozenset({'ReLU', 'ReLU6', 'LeakyReLU', 'SiLU', 'HSigmoid', 'HSwish'})

for _name, _cls in ACTIVATION_LAYERS.items():
    MODELS.register_module(name=_name, module=_cls)


def build_activation_layer(cfg: dict) -> nn.Module:
    """Build an activation layer from a config.

    Args:
        cfg: ``dict(type=..., **kwargs)`` with ``type`` one of ``ACTIVATION_LAYERS``; the other
            keys (``inplace``, ``negative_slope``...) go to the layer's constructor.

    Returns:
        The activation module; it maps a tensor of any shape to one of the same shape.

    Raises:
        ValueError: ``cfg`` is not a dict with a known ``type``, or has keys the layer does
            not take.

    Example:
        >>> build_activation_layer(dict(type='LeakyReLU', negative_slope=0.1))
        LeakyReLU(negative_slope=0.1)
    """
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ValueError(f'act_cfg must be a dict with a "type" key, got {cfg!r}')
    kwargs: dict[str, Any] = dict(cfg)
    act_type = kwargs.pop('type')
    if act_type not in ACTIVATION_LAYERS:
        raise ValueError(f'act_cfg type={act_type!r} is not a known activation; expected one '
                         f'of {sorted(ACTIVATION_LAYERS)}')
    if 'inplace' in kwargs and act_type not in INPLACE_ACTIVATIONS:
        raise ValueError(f'act_cfg type={act_type!r} does not take "inplace"; the types that '
                         f'do are {sorted(INPLACE_ACTIVATIONS)}')
    try:
        return ACTIVATION_LAYERS[act_type](**kwargs)
    except TypeError as error:
        raise ValueError(f'act_cfg type={act_type!r}: unexpected keys {sorted(kwargs)} '
                         f'({error})') from error
