"""ResNet backbone (He et al., 2016) returning the outputs of chosen stages (C2..C5).

With default settings the parameter names are exactly those of ``torchvision.models.resnet``
without ``fc`` (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``...), so a
torchvision or mmdetection ImageNet checkpoint loads with ``strict=True``. The norm attribute
names come from :func:`~detkit.models.layers.build_norm_layer`: with ``norm_cfg=dict(type='GN',
...)`` they read ``gn1``, ``gn2``... instead of ``bn1``, ``bn2``.
"""
from __future__ import annotations

from typing import Sequence, cast

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from detkit.models.backbones.base import BaseBackbone, maybe_checkpoint
from detkit.models.backbones.plugins import POSITIONS, build_plugin, plugin_base_name
from detkit.models.layers import add_into, build_norm_layer
from detkit.models.layers.fuse import conv_norm, sequential_conv_norm
from detkit.registry import MODELS

# (config, position) of the plugins of one stage, as passed to a block.
StagePlugins = Sequence[tuple[dict, str]]


def _add_plugins(block: ResBlock, plugins: StagePlugins, channels_at: dict[str, int]) -> None:
    """Build ``plugins`` into ``block`` under distinct names; record them per position."""
    block.plugin_names = {position: [] for position in channels_at}
    for cfg, position in plugins:
        if position not in channels_at:
            raise ValueError(f'{type(block).__name__} has no plugin position {position!r}; '
                             f'expected one of {sorted(channels_at)}')
        base = plugin_base_name(cfg.get('type', ''), position)
        name, repeat = base, 1
        while hasattr(block, name):
            repeat += 1
            name = f'{base}_{repeat}'
        block.add_module(name, build_plugin(cfg, channels_at[position]))
        block.plugin_names[position].append(name)


def _apply_plugins(block: ResBlock, x: Tensor, position: str) -> Tensor:
    """Run the plugins of ``block`` at ``position`` on ``x`` in the order they were given."""
    for name in block.plugin_names[position]:
        x = getattr(block, name)(x)
    return x


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34); output channels ``planes``.

    Args:
        inplanes: channels of the input ``(N, inplanes, H, W)``.
        planes: channels of the output (``expansion`` is 1).
        stride: stride of the first conv.
        dilation: dilation (and padding) of the first conv.
        downsample: maps the input to the output's shape for the residual, or ``None``.
        style: unused (the stride is always on the first conv); kept for a uniform signature.
        with_cp: run the block under activation checkpointing when training.
        norm_cfg: norm config of the convs.
        plugins: ``(cfg, position)`` pairs, position ``'after_conv1'`` or ``'after_conv2'``;
            a plugin after conv1 sees ``planes`` channels, after conv2 (before the residual
            addition) ``planes`` channels.
    """

    expansion = 1
    plugin_names: dict[str, list[str]]  # position -> plugin attribute names, set by _add_plugins

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, style: str = 'pytorch',
                 with_cp: bool = False, norm_cfg: dict = dict(type='BN'),
                 plugins: StagePlugins = ()) -> None:
        super().__init__()
        self.norm1_name, norm1 = build_norm_layer(norm_cfg, planes, postfix=1)
        self.norm2_name, norm2 = build_norm_layer(norm_cfg, planes, postfix=2)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.add_module(self.norm1_name, norm1)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.add_module(self.norm2_name, norm2)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.dilation = dilation
        self.with_cp = with_cp
        _add_plugins(self, plugins, {'after_conv1': planes, 'after_conv2': planes})

    @property
    def last_norm(self) -> nn.Module:
        """The norm before the residual addition (zeroed by ``zero_init_residual``)."""
        return getattr(self, self.norm2_name)

    def conv_norm_pairs(self) -> list[tuple[str, str]]:
        """(convolution, norm) attribute names where the norm reads the convolution's output
        alone (:func:`~detkit.models.layers.fuse_conv_bn`)."""
        return [('conv1', self.norm1_name), ('conv2', self.norm2_name)]

    def _residual(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else sequential_conv_norm(self.downsample, x)
        out = self.relu(conv_norm(self.conv1, getattr(self, self.norm1_name), x))
        out = _apply_plugins(self, out, 'after_conv1')
        out = conv_norm(self.conv2, getattr(self, self.norm2_name), out)
        out = _apply_plugins(self, out, 'after_conv2')
        return add_into(out, identity)   # out is this block's own map

    def forward(self, x: Tensor) -> Tensor:
        """Run the block.

        Args:
            x: ``(N, inplanes, H, W)``.

        Returns:
            ``(N, planes, H / stride, W / stride)`` (sizes rounded up).
        """
        return self.relu(maybe_checkpoint(self._residual, x, self, self.with_cp and self.training))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand with a residual (ResNet-50+); output ``4 * planes`` channels.

    Args:
        inplanes: channels of the input ``(N, inplanes, H, W)``.
        planes: width of the 3x3 conv; the output has ``planes * expansion`` channels.
        stride: stride of the block: on the 3x3 conv (``style='pytorch'``, torchvision's
            "ResNet v1.5") or on the first 1x1 conv (``style='caffe'``, the original paper).
        dilation: dilation (and padding) of the 3x3 conv.
        downsample: maps the input to the output's shape for the residual, or ``None``.
        style: ``'pytorch'`` or ``'caffe'``.
        with_cp: run the block under activation checkpointing when training.
        norm_cfg: norm config of the convs.
        plugins: ``(cfg, position)`` pairs; a plugin ``'after_conv1'`` or ``'after_conv2'`` sees
            ``planes`` channels, ``'after_conv3'`` (before the residual addition)
            ``planes * expansion``.
    """

    expansion = 4
    plugin_names: dict[str, list[str]]  # position -> plugin attribute names, set by _add_plugins

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, style: str = 'pytorch',
                 with_cp: bool = False, norm_cfg: dict = dict(type='BN'),
                 plugins: StagePlugins = ()) -> None:
        super().__init__()
        if style not in ('pytorch', 'caffe'):
            raise ValueError(f"Bottleneck: style must be 'pytorch' or 'caffe', got {style!r}")
        conv1_stride, conv2_stride = (1, stride) if style == 'pytorch' else (stride, 1)
        out_planes = planes * self.expansion
        self.norm1_name, norm1 = build_norm_layer(norm_cfg, planes, postfix=1)
        self.norm2_name, norm2 = build_norm_layer(norm_cfg, planes, postfix=2)
        self.norm3_name, norm3 = build_norm_layer(norm_cfg, out_planes, postfix=3)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=conv1_stride, bias=False)
        self.add_module(self.norm1_name, norm1)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=conv2_stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.add_module(self.norm2_name, norm2)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.add_module(self.norm3_name, norm3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self.dilation = dilation
        self.style = style
        self.with_cp = with_cp
        _add_plugins(self, plugins, {'after_conv1': planes, 'after_conv2': planes,
                                    'after_conv3': out_planes})

    @property
    def last_norm(self) -> nn.Module:
        """The norm before the residual addition (zeroed by ``zero_init_residual``)."""
        return getattr(self, self.norm3_name)

    def conv_norm_pairs(self) -> list[tuple[str, str]]:
        """(convolution, norm) attribute names where the norm reads the convolution's output
        alone (:func:`~detkit.models.layers.fuse_conv_bn`)."""
        return [('conv1', self.norm1_name), ('conv2', self.norm2_name),
                ('conv3', self.norm3_name)]

    def _residual(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else sequential_conv_norm(self.downsample, x)
        out = self.relu(conv_norm(self.conv1, getattr(self, self.norm1_name), x))
        out = _apply_plugins(self, out, 'after_conv1')
        out = self.relu(conv_norm(self.conv2, getattr(self, self.norm2_name), out))
        out = _apply_plugins(self, out, 'after_conv2')
        out = conv_norm(self.conv3, getattr(self, self.norm3_name), out)
        out = _apply_plugins(self, out, 'after_conv3')
        return add_into(out, identity)   # out is this block's own map

    def forward(self, x: Tensor) -> Tensor:
        """Run the block.

        Args:
            x: ``(N, inplanes, H, W)``.

        Returns:
            ``(N, planes * 4, H / stride, W / stride)`` (sizes rounded up).
        """
        return self.relu(maybe_checkpoint(self._residual, x, self, self.with_cp and self.training))


# The residual block of a ResNet depth (see ResNet.arch_settings).
ResBlock = BasicBlock | Bottleneck


@MODELS.register_module()
class ResNet(BaseBackbone):
    """ResNet backbone: a stem (stride 4) and up to four stages of residual blocks.

    ======  ============  ===================  ==============================
    depth   block         blocks per stage     channels of C2..C5 (default)
    ======  ============  ===================  ==============================
    18      BasicBlock    (2, 2, 2, 2)         64, 128, 256, 512
    34      BasicBlock    (3, 4, 6, 3)         64, 128, 256, 512
    50      Bottleneck    (3, 4, 6, 3)         256, 512, 1024, 2048
    101     Bottleneck    (3, 4, 23, 3)        256, 512, 1024, 2048
    152     Bottleneck    (3, 8, 36, 3)        256, 512, 1024, 2048
    ======  ============  ===================  ==============================

    Weights are initialized at construction: Kaiming-normal (fan_out, ReLU gain) convs, norms
    with weight 1 and bias 0, and with ``zero_init_residual`` the last norm of every block with
    weight 0 (each block starts as its shortcut). Plugins keep their own initialization.
    ``init_cfg=dict(type='Pretrained', checkpoint=...)`` then loads a checkpoint when mmengine
    calls ``init_weights()``.

    Args:
        depth: one of 18, 34, 50, 101, 152.
        in_channels: channels of the input image.
        stem_channels: output channels of the stem.
        base_channels: width of the first stage; stage ``i`` has ``base_channels * 2**i``
            (times 4 for Bottleneck) output channels.
        num_stages: how many stages to build, 1 to 4.
        strides: stride of each stage (``num_stages`` values).
        dilations: dilation of the 3x3 convs of each stage (``num_stages`` values).
        out_indices: the stages (0-based) whose outputs are returned, in stage order.
        style: ``'pytorch'`` (stride on the 3x3 conv) or ``'caffe'`` (stride on the first 1x1
            conv of a Bottleneck).
        deep_stem: replace the 7x7 stem conv by three 3x3 convs (``self.stem``, as ResNet-D).
        avg_down: downsample the shortcut with a stride-``s`` average pool followed by a
            stride-1 1x1 conv instead of a stride-``s`` 1x1 conv (as ResNet-D).
        frozen_stages: ``-1`` freezes nothing, ``0`` the stem, ``i`` the stem and stages
            ``1..i``: their parameters get ``requires_grad=False`` and they stay in eval mode.
        norm_cfg: norm config of every conv (``requires_grad`` applies to the norm parameters).
        norm_eval: keep every BatchNorm/SyncBatchNorm in eval mode (frozen running statistics)
            while the rest of the model trains.
        with_cp: activation checkpointing of each block when training (saves memory, costs a
            second forward of the block). With ``norm_eval=False`` the BN running statistics
            are then updated twice per step.
        zero_init_residual: initialize the last norm weight of each block to 0.
        plugins: list of ``dict(cfg=dict(type=..., ...), position=..., stages=...)``:
            ``position`` one of ``'after_conv1'``, ``'after_conv2'``, ``'after_conv3'``
            (Bottleneck only); ``stages`` an optional tuple of ``num_stages`` bools (default:
            every stage). Every block of a chosen stage gets the plugin, built with its
            channel count as ``in_channels``, under the name ``<snake_type>_<position>`` (plus
            ``_2``, ``_3``... when repeated in the same block).
        init_cfg: mmengine initialization config, e.g. ``dict(type='Pretrained',
            checkpoint='torchvision://resnet50')``.

    Example:
        >>> model = ResNet(depth=18).eval()
        >>> [tuple(c.shape) for c in model(torch.randn(1, 3, 64, 64))]
        [(1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4), (1, 512, 2, 2)]
    """

    arch_settings: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, ...]]] = {
        18: (BasicBlock, (2, 2, 2, 2)),
        34: (BasicBlock, (3, 4, 6, 3)),
        50: (Bottleneck, (3, 4, 6, 3)),
        101: (Bottleneck, (3, 4, 23, 3)),
        152: (Bottleneck, (3, 8, 36, 3)),
    }

    def __init__(self, depth: int, *, in_channels: int = 3, stem_channels: int = 64,
                 base_channels: int = 64, num_stages: int = 4,
                 strides: Sequence[int] = (1, 2, 2, 2), dilations: Sequence[int] = (1, 1, 1, 1),
                 out_indices: Sequence[int] = (0, 1, 2, 3), style: str = 'pytorch',
                 deep_stem: bool = False, avg_down: bool = False, frozen_stages: int = -1,
                 norm_cfg: dict = dict(type='BN', requires_grad=True), norm_eval: bool = True,
                 with_cp: bool = False, zero_init_residual: bool = True,
                 plugins: Sequence[dict] | None = None,
                 init_cfg: dict | list[dict] | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if depth not in self.arch_settings:
            raise ValueError(f'ResNet: depth={depth!r} is not supported; expected one of '
                             f'{sorted(self.arch_settings)}')
        if not isinstance(num_stages, int) or not 1 <= num_stages <= 4:
            raise ValueError(f'ResNet: num_stages must be an int in 1..4, got {num_stages!r}')
        strides, dilations = tuple(strides), tuple(dilations)
        for name, values in (('strides', strides), ('dilations', dilations)):
            if len(values) != num_stages or not all(isinstance(v, int) and v >= 1
                                                    for v in values):
                raise ValueError(f'ResNet: {name} must hold num_stages={num_stages} positive '
                                 f'ints, got {values!r}')
        out_indices = tuple(out_indices)
        if (not out_indices or len(set(out_indices)) != len(out_indices)
                or not all(isinstance(i, int) and 0 <= i < num_stages for i in out_indices)):
            raise ValueError(f'ResNet: out_indices must be distinct stage indices in '
                             f'0..{num_stages - 1} (num_stages={num_stages}), got {out_indices!r}')
        if style not in ('pytorch', 'caffe'):
            raise ValueError(f"ResNet: style must be 'pytorch' or 'caffe', got {style!r}")
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'ResNet: frozen_stages must be an int in -1..{num_stages} '
                             f'(num_stages={num_stages}), got {frozen_stages!r}')
        if deep_stem and stem_channels < 2:
            raise ValueError(f'ResNet: deep_stem needs stem_channels >= 2, got {stem_channels}')

        self.depth = depth
        self.block, stage_blocks = self.arch_settings[depth]
        self.stage_blocks = stage_blocks[:num_stages]
        self.in_channels = in_channels
        self.num_stages = num_stages
        self.strides = strides
        self.dilations = dilations
        self.out_indices = tuple(sorted(out_indices))
        self.style = style
        self.deep_stem = deep_stem
        self.avg_down = avg_down
        self.frozen_stages = frozen_stages
        self.norm_cfg = norm_cfg
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.zero_init_residual = zero_init_residual
        stage_plugins = self._plugins_per_stage(plugins)

        self._make_stem(in_channels, stem_channels)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self.stage_names: list[str] = []
        stage_channels = []
        inplanes = stem_channels
        for i in range(num_stages):
            planes = base_channels * 2 ** i
            stage = self._make_stage(inplanes, planes, self.stage_blocks[i], strides[i],
                                     dilations[i], stage_plugins[i])
            name = f'layer{i + 1}'
            self.add_module(name, stage)
            self.stage_names.append(name)
            inplanes = planes * self.block.expansion
            stage_channels.append(inplanes)
        self.out_channels = tuple(stage_channels[i] for i in self.out_indices)

        self._init_weights()
        self._freeze_stages()

    def _plugins_per_stage(self, plugins: Sequence[dict] | None) -> list[list[tuple[dict, str]]]:
        per_stage: list[list[tuple[dict, str]]] = [[] for _ in range(self.num_stages)]
        for index, plugin in enumerate(plugins or ()):
            where = f'ResNet: plugins[{index}]'
            if not isinstance(plugin, dict) or not {'cfg', 'position'} <= set(plugin) or \
                    not set(plugin) <= {'cfg', 'position', 'stages'}:
                raise ValueError(f'{where} must be dict(cfg=..., position=..., stages=...) '
                                 f'(stages optional), got {plugin!r}')
            cfg, position = plugin['cfg'], plugin['position']
            if not isinstance(cfg, dict) or 'type' not in cfg:
                raise ValueError(f'{where}.cfg must be a dict with a "type" key, got {cfg!r}')
            if position not in POSITIONS:
                raise ValueError(f'{where}.position={position!r}; expected one of {POSITIONS}')
            if position == 'after_conv3' and self.block is BasicBlock:
                raise ValueError(f"{where}.position='after_conv3' is not available for "
                                 f'depth={self.depth}: BasicBlock has only conv1 and conv2; use '
                                 f"'after_conv1' or 'after_conv2'")
            stages = plugin.get('stages')
            if stages is None:
                stages = (True,) * self.num_stages
            if len(stages) != self.num_stages or not all(isinstance(s, bool) for s in stages):
                raise ValueError(f'{where}.stages must hold num_stages={self.num_stages} bools, '
                                 f'got {stages!r}')
            for i, enabled in enumerate(stages):
                if enabled:
                    per_stage[i].append((cfg, position))
        return per_stage

    def _make_stem(self, in_channels: int, stem_channels: int) -> None:
        if self.deep_stem:
            half = stem_channels // 2
            layers: list[nn.Module] = []
            for index, (c_in, c_out, stride) in enumerate(
                    ((in_channels, half, 2), (half, half, 1), (half, stem_channels, 1))):
                layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                           build_norm_layer(self.norm_cfg, c_out, postfix=index + 1)[1],
                           nn.ReLU(inplace=True)]
            self.stem = nn.Sequential(*layers)
        else:
            self.conv1 = nn.Conv2d(in_channels, stem_channels, 7, stride=2, padding=3,
                                   bias=False)
            self.norm1_name, norm1 = build_norm_layer(self.norm_cfg, stem_channels, postfix=1)
            self.add_module(self.norm1_name, norm1)
            self.relu = nn.ReLU(inplace=True)

    def conv_norm_pairs(self) -> list[tuple[str, str]]:
        """The stem's (convolution, norm) attribute names (a deep stem is a Sequential, whose
        consecutive children :func:`~detkit.models.layers.fuse_conv_bn` pairs itself)."""
        return [] if self.deep_stem else [('conv1', self.norm1_name)]

    def _make_stage(self, inplanes: int, planes: int, num_blocks: int, stride: int,
                    dilation: int, plugins: StagePlugins) -> nn.Sequential:
        out_planes = planes * self.block.expansion
        downsample = None
        if stride != 1 or inplanes != out_planes:
            layers: list[nn.Module] = []
            conv_stride = stride
            if self.avg_down and stride != 1:
                conv_stride = 1
                layers.append(nn.AvgPool2d(kernel_size=stride, stride=stride, ceil_mode=True,
                                           count_include_pad=False))
            layers += [nn.Conv2d(inplanes, out_planes, 1, stride=conv_stride, bias=False),
                       build_norm_layer(self.norm_cfg, out_planes)[1]]
            downsample = nn.Sequential(*layers)
        blocks = []
        for index in range(num_blocks):
            blocks.append(self.block(
                inplanes if index == 0 else out_planes, planes,
                stride=stride if index == 0 else 1, dilation=dilation,
                downsample=downsample if index == 0 else None, style=self.style,
                with_cp=self.with_cp, norm_cfg=self.norm_cfg, plugins=plugins))
        return nn.Sequential(*blocks)

    def _blocks(self) -> list[ResBlock]:
        return [block for name in self.stage_names for block in getattr(self, name)]

    def _init_weights(self) -> None:
        plugin_modules = {id(m) for block in self._blocks()
                          for names in block.plugin_names.values() for name in names
                          for m in getattr(block, name).modules()}
        for m in self.modules():
            if id(m) in plugin_modules:
                continue
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, (_BatchNorm, nn.GroupNorm)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.zero_init_residual:
            for block in self._blocks():
                # a BN/GN (or FrozenBN) weight; nn.Module types it Tensor | Module
                nn.init.zeros_(cast(Tensor, block.last_norm.weight))

    def _stem_modules(self) -> list[nn.Module]:
        if self.deep_stem:
            return [self.stem]
        return [self.conv1, getattr(self, self.norm1_name)]

    def frozen_modules(self) -> list[nn.Module]:
        """The stem (``frozen_stages >= 0``) and stages ``layer1 .. layer{frozen_stages}``."""
        if self.frozen_stages < 0:
            return []
        return self._stem_modules() + [getattr(self, f'layer{i}')
                                       for i in range(1, self.frozen_stages + 1)]


    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """Compute the features of the stages in ``out_indices``.

        Args:
            x: ``(N, in_channels, H, W)`` images.

        Returns:
            One ``(N, C_i, H / s_i, W / s_i)`` tensor per index of ``out_indices``, in stage
            order; ``C_i`` is ``self.out_channels[i]`` and ``s_i`` the cumulative stride (4, 8,
            16, 32 with the default ``strides``; sizes rounded up).
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'ResNet expects input of shape (N, {self.in_channels}, H, W), '
                             f'got {tuple(x.shape)}')
        if self.deep_stem:
            x = sequential_conv_norm(self.stem, x)
        else:
            x = self.relu(conv_norm(self.conv1, getattr(self, self.norm1_name), x))
        x = self.maxpool(x)
        outs = []
        for index, name in enumerate(self.stage_names):
            x = getattr(self, name)(x)
            if index in self.out_indices:
                outs.append(x)
        return tuple(outs)
