"""Feature Pyramid Network (Lin et al., 2017): backbone levels -> same-width pyramid levels."""
from __future__ import annotations

from typing import Any, Sequence

import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from detkit.models.layers import ConvModule, add_into
from detkit.registry import MODELS

EXTRA_CONV_SOURCES = ('on_input', 'on_lateral', 'on_output')


@MODELS.register_module()
class FPN(BaseModule):
    """Feature Pyramid Network with optional extra (coarser) levels.

    Let ``used = inputs[start_level:backbone_end_level]``. Each used level goes through a 1x1
    lateral conv; from the coarsest down, each lateral gets the lateral above it added after a
    nearest upsampling to its exact size (so odd sizes such as 13x13 over 7x7 work); a 3x3 conv
    then gives one output per used level. When ``num_outs`` exceeds the number of used levels,
    the extra levels come from:

    - ``add_extra_convs=False``: ``max_pool2d(kernel_size=1, stride=2)`` of the last output.
    - a string: stride-2 3x3 convs, appended to ``fpn_convs``. The first reads
      ``inputs[backbone_end_level - 1]`` (``'on_input'``, e.g. C5), the last lateral
      (``'on_lateral'``) or the last output (``'on_output'``, e.g. P5); each later one reads the
      previous extra level, through a ReLU first when ``relu_before_extra_convs``.
      ``add_extra_convs=True`` means ``'on_input'``.

    Parameter keys: ``lateral_convs.{i}.conv.{weight,bias}`` and ``fpn_convs.{j}.conv.*``
    (RetinaNet: laterals 0..2, fpn convs 0..4), as in mmdetection.

    Args:
        in_channels: channels of each backbone level given to :meth:`forward`.
        out_channels: channels of every output level.
        num_outs: number of output levels.
        start_level: index of the first input level used.
        end_level: index of the last input level used (inclusive); ``-1`` for the last one.
            When it is not ``-1``, no extra level is allowed: ``num_outs`` must equal
            ``end_level - start_level + 1``.
        add_extra_convs: ``False``, ``True``, ``'on_input'``, ``'on_lateral'`` or
            ``'on_output'`` (see above).
        relu_before_extra_convs: apply ReLU to the input of the second and later extra convs.
        no_norm_on_lateral: build the lateral convs without norm even when ``norm_cfg`` is set.
        conv_cfg: conv config of every ConvModule (``None`` for ``nn.Conv2d``).
        norm_cfg: norm config of every ConvModule, ``None`` for none.
        act_cfg: activation config of every ConvModule, ``None`` for none.
        upsample_cfg: keyword arguments of ``F.interpolate`` for the top-down path: ``mode``
            and optionally ``align_corners``; with ``scale_factor`` the upsampled size comes
            from the factor rather than from the lower level's size.
        init_cfg: mmengine initialization applied by ``init_weights()`` (default: Xavier
            uniform for every ``Conv2d``, bias 0). Before that, convs have ConvModule's
            Kaiming initialization.

    Example:
        >>> fpn = FPN([256, 512, 1024, 2048], 256, num_outs=5, start_level=1,
        ...           add_extra_convs='on_input')
        >>> feats = [torch.randn(1, c, 64 // 2 ** i, 64 // 2 ** i)
        ...          for i, c in enumerate([256, 512, 1024, 2048])]
        >>> [tuple(p.shape[2:]) for p in fpn(feats)]
        [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, num_outs: int, *,
                 start_level: int = 0, end_level: int = -1,
                 add_extra_convs: bool | str = False, relu_before_extra_convs: bool = False,
                 no_norm_on_lateral: bool = False, conv_cfg: dict | None = None,
                 norm_cfg: dict | None = None, act_cfg: dict | None = None,
                 upsample_cfg: dict = dict(mode='nearest'),
                 init_cfg: dict | list[dict] | None = dict(type='Xavier', layer='Conv2d',
                                                           distribution='uniform')) -> None:
        super().__init__(init_cfg=init_cfg)
        in_channels = list(in_channels)
        num_ins = len(in_channels)
        if not in_channels or not all(isinstance(c, int) and c > 0 for c in in_channels):
            raise ValueError(f'FPN: in_channels must be a non-empty list of positive ints, '
                             f'got {in_channels!r}')
        if not isinstance(start_level, int) or not 0 <= start_level < num_ins:
            raise ValueError(f'FPN: start_level must be in 0..{num_ins - 1} '
                             f'(len(in_channels)={num_ins}), got {start_level!r}')
        if end_level == -1:
            backbone_end_level = num_ins
            min_outs = num_ins - start_level
            if not isinstance(num_outs, int) or num_outs < min_outs:
                raise ValueError(f'FPN: num_outs must be at least len(in_channels) - '
                                 f'start_level = {min_outs}, got {num_outs!r}')
        else:
            if not isinstance(end_level, int) or not start_level <= end_level < num_ins:
                raise ValueError(f'FPN: end_level must be -1 or in {start_level}..{num_ins - 1} '
                                 f'(start_level..len(in_channels) - 1), got {end_level!r}')
            backbone_end_level = end_level + 1
            if num_outs != end_level - start_level + 1:
                raise ValueError(f'FPN: with end_level={end_level}, num_outs must be '
                                 f'end_level - start_level + 1 = {end_level - start_level + 1}, '
                                 f'got {num_outs!r}')
        if add_extra_convs is True:
            add_extra_convs = 'on_input'
        if add_extra_convs is not False and add_extra_convs not in EXTRA_CONV_SOURCES:
            raise ValueError(f'FPN: add_extra_convs must be False, True or one of '
                             f'{EXTRA_CONV_SOURCES}, got {add_extra_convs!r}')
        upsample_cfg = dict(upsample_cfg)
        if not set(upsample_cfg) <= {'mode', 'scale_factor', 'align_corners'}:
            raise ValueError(f"FPN: upsample_cfg keys must be among 'mode', 'scale_factor', "
                             f"'align_corners', got {sorted(upsample_cfg)}")

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_ins = num_ins
        self.num_outs = num_outs
        self.start_level = start_level
        self.end_level = end_level
        self.backbone_end_level = backbone_end_level
        self.add_extra_convs = add_extra_convs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.no_norm_on_lateral = no_norm_on_lateral
        self.upsample_cfg = upsample_cfg

        # The ConvModule arguments every conv shares (values of several types: Any).
        common: dict[str, Any] = dict(conv_cfg=conv_cfg, act_cfg=act_cfg, inplace=False)
        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for level in range(start_level, backbone_end_level):
            self.lateral_convs.append(ConvModule(
                in_channels[level], out_channels, 1,
                norm_cfg=None if no_norm_on_lateral else norm_cfg, **common))
            self.fpn_convs.append(ConvModule(out_channels, out_channels, 3, padding=1,
                                             norm_cfg=norm_cfg, **common))
        num_extra = num_outs - (backbone_end_level - start_level)
        if add_extra_convs:
            for index in range(num_extra):
                channels = (in_channels[backbone_end_level - 1]
                            if index == 0 and add_extra_convs == 'on_input' else out_channels)
                self.fpn_convs.append(ConvModule(channels, out_channels, 3, stride=2, padding=1,
                                                 norm_cfg=norm_cfg, **common))

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """Build the pyramid.

        Args:
            inputs: ``len(in_channels)`` tensors, level ``i`` of shape
                ``(N, in_channels[i], H_i, W_i)``, finest first.

        Returns:
            ``num_outs`` tensors of shape ``(N, out_channels, H'_j, W'_j)``, finest first:
            ``H'_j = H_{start_level + j}`` for the used levels, then each extra level halves
            the previous one (rounded up).
        """
        if len(inputs) != self.num_ins:
            raise ValueError(f'FPN expects {self.num_ins} input levels (len(in_channels)), '
                             f'got {len(inputs)}')
        for level, (x, channels) in enumerate(zip(inputs, self.in_channels)):
            if x.dim() != 4 or x.shape[1] != channels:
                raise ValueError(f'FPN: inputs[{level}] must have shape (N, {channels}, H, W) '
                                 f'(in_channels[{level}]), got {tuple(x.shape)}')

        laterals = [conv(inputs[self.start_level + i])
                    for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            # the lateral conv's own output: summed in place where no gradient flows
            coarse = self._upsample(laterals[i], laterals[i - 1])
            laterals[i - 1] = add_into(laterals[i - 1], coarse)
        outs = [self.fpn_convs[i](lateral) for i, lateral in enumerate(laterals)]

        num_used = len(outs)
        if self.num_outs > num_used:
            if not self.add_extra_convs:
                for _ in range(self.num_outs - num_used):
                    outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
            else:
                source = {'on_input': inputs[self.backbone_end_level - 1],
                          'on_lateral': laterals[-1],
                          'on_output': outs[-1]}[self.add_extra_convs]
                outs.append(self.fpn_convs[num_used](source))
                for i in range(num_used + 1, self.num_outs):
                    x = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                    outs.append(self.fpn_convs[i](x))
        return tuple(outs)

    def _upsample(self, coarse: Tensor, fine: Tensor) -> Tensor:
        if 'scale_factor' in self.upsample_cfg:
            return F.interpolate(coarse, **self.upsample_cfg)
        return F.interpolate(coarse, size=fine.shape[2:], **self.upsample_cfg)
