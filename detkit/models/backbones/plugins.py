"""Plugins: small modules inserted inside ResNet blocks (``ResNet(plugins=[...])``).

A plugin is any module registered in ``detkit.registry.MODELS`` whose constructor takes
``in_channels`` and whose forward maps ``(N, in_channels, H, W)`` to the same shape. ResNet
passes the channel count found at the plugin's position. Two are shipped:

- :class:`SEBlock`: squeeze-and-excitation (Hu et al., 2018), a channel gate.
- :class:`ContextBlock`: the global context block of GCNet (Cao et al., 2019).
"""
from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from detkit.models.layers import build_activation_layer
from detkit.registry import MODELS


@MODELS.register_module()
class SEBlock(nn.Module):
    """Squeeze-and-excitation: rescale each channel by a gate computed from the global average.

    ``gate = sigmoid(fc2(relu(fc1(mean_hw(x)))))``, output ``x * gate``.

    Args:
        in_channels: channels ``C`` of the input.
        ratio: reduction of the hidden layer: ``C // ratio`` units (at least 1 is required).
        act_cfg: activation between the two fully connected layers.
        gate_cfg: activation producing the gate (``dict(type='HSigmoid')`` for MobileNetV3).

    Example:
        >>> se = SEBlock(64, ratio=16)
        >>> se(torch.randn(2, 64, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(self, in_channels: int, ratio: int = 16, act_cfg: dict = dict(type='ReLU'),
                 gate_cfg: dict = dict(type='Sigmoid')) -> None:
        super().__init__()
        if not isinstance(ratio, int) or ratio < 1:
            raise ValueError(f'SEBlock: ratio must be a positive int, got {ratio!r}')
        if not isinstance(in_channels, int) or in_channels // ratio < 1:
            raise ValueError(f'SEBlock: in_channels={in_channels!r} // ratio={ratio} must be at '
                             f'least 1; lower the ratio')
        hidden = in_channels // ratio
        self.in_channels = in_channels
        self.fc1 = nn.Linear(in_channels, hidden)
        self.activate = build_activation_layer(act_cfg)
        self.fc2 = nn.Linear(hidden, in_channels)
        self.gate = build_activation_layer(gate_cfg)

    def forward(self, x: Tensor) -> Tensor:
        """Gate the channels of ``x``.

        Args:
            x: ``(N, C, H, W)``.

        Returns:
            ``(N, C, H, W)``: ``x`` times a per-sample, per-channel gate in ``(0, 1)``.
        """
        pooled = x.mean(dim=(2, 3))
        gate = self.gate(self.fc2(self.activate(self.fc1(pooled))))
        return x * gate[:, :, None, None]


@MODELS.register_module()
class ContextBlock(nn.Module):
    """GCNet global context block: add (or multiply by) one context vector at every position.

    The context is a weighted sum of the features over all positions (attention pooling: the
    weights are a softmax over ``H*W`` of a 1x1 conv to one channel) or their plain mean. It is
    transformed by ``1x1 conv -> LayerNorm -> ReLU -> 1x1 conv`` and fused with ``x``:
    ``'channel_add'`` adds it, ``'channel_mul'`` multiplies ``x`` by its sigmoid.

    The last conv of each transform starts at zero, so with ``fusion_types=('channel_add',)`` a
    new block is the identity (and with ``'channel_mul'`` it starts as ``x * 0.5``). Attribute
    names (``conv_mask``, ``channel_add_conv.{0,1,3}``) follow the published GCNet models.

    Args:
        in_channels: channels ``C`` of the input.
        ratio: width of the transform relative to ``C``: ``int(C * ratio)`` channels (>= 1).
        pooling_type: ``'att'`` (attention pooling) or ``'avg'`` (global average).
        fusion_types: a non-empty subset of ``('channel_add', 'channel_mul')``.

    Example:
        >>> block = ContextBlock(64, ratio=1 / 4)
        >>> x = torch.randn(2, 64, 8, 8)
        >>> torch.equal(block(x), x)
        True
    """

    def __init__(self, in_channels: int, ratio: float = 1 / 16, pooling_type: str = 'att',
                 fusion_types: tuple[str, ...] = ('channel_add',)) -> None:
        super().__init__()
        if pooling_type not in ('att', 'avg'):
            raise ValueError(f"ContextBlock: pooling_type must be 'att' or 'avg', "
                             f'got {pooling_type!r}')
        fusion_types = tuple(fusion_types) if isinstance(fusion_types, (list, tuple)) else ()
        if not fusion_types or not set(fusion_types) <= {'channel_add', 'channel_mul'}:
            raise ValueError(f"ContextBlock: fusion_types must be a non-empty subset of "
                             f"('channel_add', 'channel_mul'), got {fusion_types!r}")
        planes = int(in_channels * ratio)
        if planes < 1:
            raise ValueError(f'ContextBlock: int(in_channels * ratio) = int({in_channels} * '
                             f'{ratio}) must be at least 1; raise the ratio')
        self.in_channels = in_channels
        self.pooling_type = pooling_type
        self.fusion_types = fusion_types

        if pooling_type == 'att':
            self.conv_mask = nn.Conv2d(in_channels, 1, kernel_size=1)
        self.channel_add_conv = (self._transform(in_channels, planes)
                                 if 'channel_add' in fusion_types else None)
        self.channel_mul_conv = (self._transform(in_channels, planes)
                                 if 'channel_mul' in fusion_types else None)
        self.reset_parameters()

    @staticmethod
    def _transform(channels: int, planes: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(channels, planes, kernel_size=1),
            nn.LayerNorm([planes, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, channels, kernel_size=1))

    def reset_parameters(self) -> None:
        """Kaiming (fan_in) ``conv_mask``; zero last conv of each transform."""
        if self.pooling_type == 'att':
            nn.init.kaiming_normal_(self.conv_mask.weight, mode='fan_in', nonlinearity='relu')
            assert self.conv_mask.bias is not None  # nn.Conv2d(bias=True) in __init__
            nn.init.zeros_(self.conv_mask.bias)
        for transform in (self.channel_add_conv, self.channel_mul_conv):
            if transform is not None:
                last = transform[-1]
                # _transform ends with a 1x1 nn.Conv2d with bias (Sequential yields nn.Module)
                assert isinstance(last, nn.Conv2d) and last.bias is not None
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)

    def spatial_pool(self, x: Tensor) -> Tensor:
        """Pool the features of all positions into one context vector per sample.

        Args:
            x: ``(N, C, H, W)``.

        Returns:
            ``(N, C, 1, 1)`` context.
        """
        if self.pooling_type == 'avg':
            return x.mean(dim=(2, 3), keepdim=True)
        n, c, h, w = x.shape
        weights = self.conv_mask(x).view(n, 1, h * w).softmax(dim=2)  # (N, 1, HW)
        context = torch.bmm(x.reshape(n, c, h * w), weights.transpose(1, 2))  # (N, C, 1)
        return context.view(n, c, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Fuse the global context into every position.

        Args:
            x: ``(N, C, H, W)``.

        Returns:
            ``(N, C, H, W)``.
        """
        context = self.spatial_pool(x)
        out = x
        if self.channel_mul_conv is not None:
            out = out * torch.sigmoid(self.channel_mul_conv(context))
        if self.channel_add_conv is not None:
            out = out + self.channel_add_conv(context)
        return out


POSITIONS = ('after_conv1', 'after_conv2', 'after_conv3')


def plugin_base_name(plugin_type: str | type, position: str) -> str:
    """The attribute name of a plugin inside a block, before any de-duplication postfix.

    Args:
        plugin_type: the registered name (or class) of the plugin, e.g. ``'SEBlock'``.
        position: where it is applied, one of ``POSITIONS``.

    Returns:
        snake_case of the type plus the position, e.g. ``'se_block_after_conv3'``.
    """
    name = plugin_type if isinstance(plugin_type, str) else plugin_type.__name__
    name = name.rsplit('.', 1)[-1]  # a scope-prefixed type such as 'detkit.SEBlock'
    snake = re.sub(r'(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])', '_', name).lower()
    return f'{snake}_{position}'


def build_plugin(cfg: dict, in_channels: int) -> nn.Module:
    """Build a plugin from its config, giving it the channel count at its position.

    Args:
        cfg: ``dict(type=..., **kwargs)`` of a plugin registered in ``detkit.registry.MODELS``;
            must not set ``in_channels``.
        in_channels: channels ``C`` of the ``(N, C, H, W)`` features the plugin transforms.

    Returns:
        The plugin module.
    """
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ValueError(f'plugin cfg must be a dict with a "type" key, got {cfg!r}')
    if 'in_channels' in cfg:
        raise ValueError(f'plugin cfg {cfg!r} must not set in_channels: ResNet passes the '
                         f'channel count found at the plugin position')
    return MODELS.build(dict(cfg, in_channels=in_channels))
