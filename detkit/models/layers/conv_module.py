"""ConvModule: a 2-D convolution followed by an optional normalization and activation."""
from __future__ import annotations

from typing import Any, Literal, cast

from torch import Tensor, nn

from detkit.models.layers.activation import INPLACE_ACTIVATIONS, build_activation_layer
from detkit.models.layers.fuse import conv_norm
from detkit.models.layers.norm import build_norm_layer

# The conv_cfg types ConvModule builds (``None`` means ``dict(type='Conv2d')``).
CONV_TYPES = ('Conv2d', 'Conv')


class ConvModule(nn.Module):
    """``conv -> norm -> activation``, with the attribute names of mmdetection's ConvModule.

    The convolution is ``self.conv`` (``nn.Conv2d``), the norm is stored under the name given by
    :func:`~detkit.models.layers.norm.build_norm_layer` (``bn``, ``gn``) and reachable as
    ``self.norm``, the activation is ``self.activate``. State-dict keys therefore read
    ``conv.weight``, ``conv.bias``, ``bn.weight``, ``bn.running_mean``, ``gn.weight``...

    Initialization (at construction): the conv weight is Kaiming-normal with ``mode='fan_out'``
    (the variance of the gradients is kept through the layer, as in torchvision's ResNet) for a
    ReLU gain, or a leaky-ReLU gain with the configured ``negative_slope``; the conv bias is 0; the
    norm weight is 1 and its bias 0. A parent's mmengine ``init_cfg`` (e.g. FPN's Xavier) can
    overwrite this: the method is deliberately not called ``init_weights`` so that mmengine's
    ``BaseModule.init_weights`` never re-runs it after the parent's initializer.

    Args:
        in_channels: channels of the input ``(N, in_channels, H, W)``.
        out_channels: channels of the output.
        kernel_size: conv kernel size (int or ``(kh, kw)``).
        stride: conv stride.
        padding: conv zero padding.
        dilation: conv dilation.
        groups: conv groups; must divide both channel counts.
        bias: ``'auto'`` (a bias iff there is no norm), ``True`` or ``False``.
        conv_cfg: ``None`` or ``dict(type='Conv2d')``; the only convolution built here.
        norm_cfg: ``None`` (no norm) or a norm config, e.g. ``dict(type='BN')``.
        act_cfg: ``None`` (no activation) or an activation config, e.g. ``dict(type='ReLU')``.
        inplace: passed to the activation when its type takes ``inplace`` and ``act_cfg`` does
            not set it.

    Example:
        >>> m = ConvModule(3, 8, 3, padding=1, norm_cfg=dict(type='BN'))
        >>> m(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 8, 16, 16])
        >>> list(m.state_dict())[:3]
        ['conv.weight', 'bn.weight', 'bn.bias']
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool | str = 'auto',
                 conv_cfg: dict[str, Any] | None = None, norm_cfg: dict[str, Any] | None = None,
                 act_cfg: dict[str, Any] | None = dict(type='ReLU'), inplace: bool = True) -> None:
        super().__init__()
        if conv_cfg is not None and (not isinstance(conv_cfg, dict)
                                     or conv_cfg.get('type') not in CONV_TYPES
                                     or set(conv_cfg) != {'type'}):
            raise ValueError(f'ConvModule: conv_cfg must be None or dict(type=...) with type in '
                             f'{CONV_TYPES}, got {conv_cfg!r}')
        if bias != 'auto' and not isinstance(bias, bool):
            raise ValueError(f"ConvModule: bias must be 'auto', True or False, got {bias!r}")
        for name, value in (('in_channels', in_channels), ('out_channels', out_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'ConvModule: {name} must be a positive int, got {value!r}')
        if in_channels % groups or out_channels % groups:
            raise ValueError(f'ConvModule: groups={groups} must divide in_channels='
                             f'{in_channels} and out_channels={out_channels}')
        with_bias = bias if isinstance(bias, bool) else norm_cfg is None  # bias='auto'

        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, dilation=dilation, groups=groups, bias=with_bias)
        self.in_channels = in_channels
        self.out_channels = out_channels

        self.norm_name: str | None = None
        if norm_cfg is not None:
            self.norm_name, norm = build_norm_layer(norm_cfg, out_channels)
            self.add_module(self.norm_name, norm)

        self.activate: nn.Module | None = None
        self._negative_slope = 0.0
        if act_cfg is not None:
            act_cfg = dict(act_cfg)
            if act_cfg.get('type') in INPLACE_ACTIVATIONS:
                act_cfg.setdefault('inplace', inplace)
            activate = build_activation_layer(act_cfg)
            self.activate = activate
            if act_cfg['type'] == 'LeakyReLU':
                assert isinstance(activate, nn.LeakyReLU)  # names the type for its attribute
                self._negative_slope = activate.negative_slope
        self.reset_parameters()

    @property
    def norm(self) -> nn.Module | None:
        """The normalization layer, or ``None`` when the module has none."""
        return getattr(self, self.norm_name) if self.norm_name is not None else None

    def conv_norm_pairs(self) -> list[tuple[str, str]]:
        """``('conv', norm name)`` when there is a norm: it reads the convolution's output
        alone (:func:`~detkit.models.layers.fuse_conv_bn`)."""
        return [('conv', self.norm_name)] if self.norm_name is not None else []

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan_out) conv weight and zero bias; norm weight 1 and bias 0."""
        nonlinearity: Literal['leaky_relu', 'relu'] = (
            'leaky_relu' if self._negative_slope > 0 else 'relu')
        nn.init.kaiming_normal_(self.conv.weight, a=self._negative_slope, mode='fan_out',
                                nonlinearity=nonlinearity)
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)
        norm = self.norm
        weight = getattr(norm, 'weight', None)
        if norm is not None and isinstance(weight, nn.Parameter):
            nn.init.ones_(weight)
            # An affine BN/GN: its bias is a Parameter too (nn.Module types it Tensor | Module).
            nn.init.zeros_(cast(Tensor, norm.bias))

    def forward(self, x: Tensor) -> Tensor:
        """Apply conv, then the norm and the activation when present.

        Args:
            x: ``(N, in_channels, H, W)``.

        Returns:
            ``(N, out_channels, H', W')`` with ``H', W'`` given by the conv's stride, padding
            and dilation.
        """
        if self.norm_name is not None:
            x = conv_norm(self.conv, getattr(self, self.norm_name), x)  # one conv when it can
        else:
            x = self.conv(x)
        if self.activate is not None:
            x = self.activate(x)
        return x
