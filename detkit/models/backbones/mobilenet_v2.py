"""MobileNetV2 backbone (Sandler et al., 2018): inverted residual blocks with linear bottlenecks.

Parameter names follow the structure (``stem``, ``layer1..layer7`` of inverted residuals with
``expand_conv``, ``depthwise_conv`` and ``project_conv``, ``final_conv``) rather than
torchvision's flat ``features.N`` list. A torchvision state dict is renamed by
:func:`~detkit.models.converters.torchvision_backbones.convert_torchvision_mobilenet_v2`, whose
module docstring gives the key mapping; it is applied automatically for
``init_cfg=dict(type='Pretrained', checkpoint='torchvision://mobilenet_v2')``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from torch import Tensor, nn

from detkit.models.backbones.base import BaseBackbone, maybe_checkpoint
from detkit.models.converters.torchvision_backbones import (
    MOBILENET_V2_SETTINGS,  # (t, c, n, s) per stage, shared with the torchvision key converter
    convert_torchvision_mobilenet_v2,
)
from detkit.models.layers import ConvModule
from detkit.registry import MODELS

STEM_CHANNELS = 32
FINAL_CHANNELS = 1280
# Cumulative stride of the output of out index 0..7 (layer1..layer7, final_conv).
OUT_STRIDES = (2, 4, 8, 16, 16, 32, 32, 32)


def make_divisible(value: float, divisor: int = 8, min_ratio: float = 0.9) -> int:
    """Round a channel count to the nearest multiple of ``divisor``, never far below it.

    Args:
        value: the unrounded channel count, e.g. ``24 * widen_factor``.
        divisor: the result is a multiple of it (at least ``divisor``).
        min_ratio: the result is at least ``min_ratio * value``; rounding down further adds
            one ``divisor``.

    Returns:
        The rounded channel count, e.g. 24 for 22.4, 32 for 33.6 and 16 for 12.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < min_ratio * value:
        rounded += divisor
    return rounded


class InvertedResidual(nn.Module):
    """1x1 expansion, 3x3 depthwise, linear 1x1 projection; a residual when shapes allow.

    ``expand_conv`` (absent when ``expand_ratio == 1``) and ``depthwise_conv`` are conv + norm +
    activation; ``project_conv`` is conv + norm without activation (the linear bottleneck). The
    input is added to the output when ``stride == 1`` and ``in_channels == out_channels``.

    Args:
        in_channels: channels of the input ``(N, in_channels, H, W)``.
        out_channels: channels of the output.
        stride: stride of the depthwise conv (1 or 2).
        expand_ratio: hidden width is ``round(in_channels * expand_ratio)``.
        norm_cfg: norm config of the three convs.
        act_cfg: activation config of the expansion and depthwise convs.
        with_cp: run the block under activation checkpointing when training and a backward
            will reach it (see :func:`~detkit.models.backbones.base.maybe_checkpoint`).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int,
                 norm_cfg: dict, act_cfg: dict, with_cp: bool = False) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f'InvertedResidual: stride must be 1 or 2, got {stride!r}')
        hidden = int(round(in_channels * expand_ratio))
        self.use_residual = stride == 1 and in_channels == out_channels
        self.with_cp = with_cp
        self.expand_conv = (ConvModule(in_channels, hidden, 1, norm_cfg=norm_cfg,
                                       act_cfg=act_cfg) if expand_ratio != 1 else None)
        self.depthwise_conv = ConvModule(hidden, hidden, 3, stride=stride, padding=1,
                                         groups=hidden, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.project_conv = ConvModule(hidden, out_channels, 1, norm_cfg=norm_cfg, act_cfg=None)

    def _block(self, x: Tensor) -> Tensor:
        out = x if self.expand_conv is None else self.expand_conv(x)
        out = self.project_conv(self.depthwise_conv(out))
        return x + out if self.use_residual else out

    def forward(self, x: Tensor) -> Tensor:
        """Run the block.

        Args:
            x: ``(N, in_channels, H, W)``.

        Returns:
            ``(N, out_channels, ceil(H / stride), ceil(W / stride))``.
        """
        return maybe_checkpoint(self._block, x, self, self.with_cp and self.training)


@MODELS.register_module()
class MobileNetV2(BaseBackbone):
    """MobileNetV2 backbone: a stride-2 stem, seven stages of inverted residuals, a final 1x1 conv.

    ``out_indices`` picks among eight outputs (channels for ``widen_factor=1``; sizes for an
    input ``H x W`` are ``ceil(H / stride)``):

    =====  ==============  ======  ========  ================================  ==============
    index  module          stride  channels  torchvision output                 blocks (t, n)
    =====  ==============  ======  ========  ================================  ==============
    0      ``layer1``      2       16        ``features[:2]``                  (1, 1)
    1      ``layer2``      4       24        ``features[:4]``                  (6, 2)
    2      ``layer3``      8       32        ``features[:7]``  (C3)            (6, 3)
    3      ``layer4``      16      64        ``features[:11]``                 (6, 4)
    4      ``layer5``      16      96        ``features[:14]`` (C4)            (6, 3)
    5      ``layer6``      32      160       ``features[:17]``                 (6, 3)
    6      ``layer7``      32      320       ``features[:18]``                 (6, 1)
    7      ``final_conv``  32      1280      ``features[:19]`` (C5)            1x1 conv
    =====  ==============  ======  ========  ================================  ==============

    The default ``out_indices=(2, 4, 7)`` gives C3-C5 equivalents (strides 8, 16, 32; 32, 96
    and 1280 channels) for an FPN. Stage channels are ``make_divisible(c * widen_factor)``, the
    stem has ``make_divisible(32 * widen_factor)`` and the final conv
    ``make_divisible(1280 * max(1, widen_factor))`` channels, as in the paper and torchvision
    (``widen_factor=0.5``: 8, 16, 16, 32, 48, 80, 160, 1280; ``1.4``: 24, 32, 48, 88, 136, 224,
    448, 1792). :attr:`out_channels` holds the channels of the chosen outputs.

    Weights are initialized at construction (ConvModule's Kaiming-normal fan_out convs, norms
    with weight 1 and bias 0, as torchvision); ``init_cfg=dict(type='Pretrained',
    checkpoint='torchvision://mobilenet_v2')`` loads torchvision's ImageNet weights (renamed by
    :func:`convert_torchvision_mobilenet_v2`) when ``init_weights()`` is called.

    Args:
        widen_factor: width multiplier of every conv.
        out_indices: the outputs to return (see the table), distinct, in 0..7. Modules after
            the last chosen output are not run (their parameters get no gradient: freeze them
            with ``frozen_stages`` or let DDP find unused parameters).
        frozen_stages: ``-1`` freezes nothing, ``0`` the stem, ``i`` the stem and the first
            ``i`` of the eight modules ``layer1..layer7, final_conv``: their parameters get
            ``requires_grad=False`` and they stay in eval mode.
        norm_cfg: norm config of every conv.
        act_cfg: activation of the stem, expansion, depthwise and final convs (ReLU6).
        norm_eval: keep every BatchNorm in eval mode (frozen running statistics) while the
            rest of the model trains, as detkit's ResNet does by default.
        with_cp: activation checkpointing of each inverted residual when training and a
            backward will reach it (saves memory, costs a second forward of the block).
        init_cfg: mmengine initialization config.

    Example:
        >>> model = MobileNetV2().eval()
        >>> [tuple(o.shape) for o in model(torch.randn(1, 3, 64, 64))]
        [(1, 32, 8, 8), (1, 96, 4, 4), (1, 1280, 2, 2)]
    """

    num_outputs = len(MOBILENET_V2_SETTINGS) + 1

    def __init__(self, *, widen_factor: float = 1.0, out_indices: Sequence[int] = (2, 4, 7),
                 frozen_stages: int = -1, norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU6'), norm_eval: bool = True,
                 with_cp: bool = False, init_cfg: dict | list[dict] | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if isinstance(widen_factor, bool) or not isinstance(widen_factor, (int, float)) \
                or widen_factor <= 0:
            raise ValueError(f'MobileNetV2: widen_factor must be a positive number, '
                             f'got {widen_factor!r}')
        out_indices = tuple(out_indices)
        if (not out_indices or len(set(out_indices)) != len(out_indices) or not all(
                isinstance(i, int) and 0 <= i < self.num_outputs for i in out_indices)):
            raise ValueError(f'MobileNetV2: out_indices must be distinct ints in '
                             f'0..{self.num_outputs - 1} (0-6: layer1..layer7, 7: final_conv), '
                             f'got {out_indices!r}')
        if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int) \
                or not -1 <= frozen_stages <= self.num_outputs:
            raise ValueError(f'MobileNetV2: frozen_stages must be an int in '
                             f'-1..{self.num_outputs}, got {frozen_stages!r}')
        self.widen_factor = widen_factor
        self.out_indices = tuple(sorted(out_indices))
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp

        in_channels = make_divisible(STEM_CHANNELS * widen_factor)
        self.stem = ConvModule(3, in_channels, 3, stride=2, padding=1, norm_cfg=norm_cfg,
                               act_cfg=act_cfg)
        self.stage_names: list[str] = []
        channels = []
        for index, (expand_ratio, c, num_blocks, stride) in enumerate(MOBILENET_V2_SETTINGS):
            out_channels = make_divisible(c * widen_factor)
            blocks = []
            for b in range(num_blocks):
                blocks.append(InvertedResidual(in_channels, out_channels,
                                               stride if b == 0 else 1, expand_ratio,
                                               norm_cfg=norm_cfg, act_cfg=act_cfg,
                                               with_cp=with_cp))
                in_channels = out_channels
            name = f'layer{index + 1}'
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            channels.append(out_channels)
        final_channels = make_divisible(FINAL_CHANNELS * max(1.0, widen_factor))
        self.final_conv = ConvModule(in_channels, final_channels, 1, norm_cfg=norm_cfg,
                                     act_cfg=act_cfg)
        channels.append(final_channels)
        self.stage_channels = tuple(channels)
        self.out_channels = tuple(channels[i] for i in self.out_indices)
        self._freeze_stages()

    def _output_modules(self) -> list[nn.Module]:
        """The eight modules of out indices 0..7."""
        return [getattr(self, name) for name in self.stage_names] + [self.final_conv]

    def frozen_modules(self) -> list[nn.Module]:
        """The stem (``frozen_stages >= 0``) and the first ``frozen_stages`` output modules."""
        if self.frozen_stages < 0:
            return []
        return [self.stem] + self._output_modules()[:self.frozen_stages]

    def convert_torchvision_state_dict(self, state_dict: Mapping[str, Tensor]) -> dict:
        """Rename a torchvision ``mobilenet_v2`` state dict for this model (used by the loader).

        Args:
            state_dict: torchvision's ``{key: tensor}``.

        Returns:
            :func:`convert_torchvision_mobilenet_v2` of it.
        """
        return convert_torchvision_mobilenet_v2(state_dict)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """Compute the outputs chosen by ``out_indices``.

        Args:
            x: ``(N, 3, H, W)`` images.

        Returns:
            One ``(N, C_i, ceil(H / s_i), ceil(W / s_i))`` tensor per index of ``out_indices``,
            in index order, with ``C_i`` from :attr:`out_channels` and ``s_i`` the stride of the
            class docstring's table.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f'MobileNetV2 expects input of shape (N, 3, H, W), '
                             f'got {tuple(x.shape)}')
        x = self.stem(x)
        outs = []
        for index, module in enumerate(self._output_modules()):
            x = module(x)
            if index in self.out_indices:
                outs.append(x)
            if index == self.out_indices[-1]:
                break
        return tuple(outs)
