"""VGG backbone (Simonyan and Zisserman, 2015): stages of 3x3 convs separated by 2x2 max pools.

Parameter names: ``layer{i}.{j}.conv.{weight,bias}`` and, with ``with_bn``,
``layer{i}.{j}.bn.*`` for conv ``j`` (0-based) of stage ``i`` (1-based). torchvision's
``features.N`` keys are renamed by
:func:`~detkit.models.converters.torchvision_backbones.convert_torchvision_vgg` (applied
automatically for ``init_cfg=dict(type='Pretrained', checkpoint='torchvision://vgg16')`` or
``vgg16_bn``).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from torch import Tensor, nn

from detkit.models.backbones.base import BaseBackbone
from detkit.models.converters.torchvision_backbones import convert_torchvision_vgg
from detkit.models.layers import ConvModule
from detkit.registry import MODELS

STAGE_CHANNELS = (64, 128, 256, 512, 512)


@MODELS.register_module()
class VGG(BaseBackbone):
    """VGG backbone returning the feature maps of chosen conv stages (before their pool).

    Stage ``i`` (0-based index) is a 2x2/stride-2 max pool (stages 1 and up) followed by
    ``n_i`` convs 3x3 (padding 1, with bias), each followed by a norm (``with_bn``) and ReLU:

    =====  ==================
    depth  convs per stage
    =====  ==================
    11     (1, 1, 2, 2, 2)
    13     (2, 2, 2, 2, 2)
    16     (2, 2, 3, 3, 3)
    19     (2, 2, 4, 4, 4)
    =====  ==================

    =====  ==========  =========  ========  ======  ==============================
    index  module      name       channels  stride  torchvision vgg16 (vgg16_bn)
    =====  ==========  =========  ========  ======  ==============================
    0      ``layer1``  conv1_x    64        1       ``features[:4]``  (``[:6]``)
    1      ``layer2``  conv2_x    128       2       ``features[:9]``  (``[:13]``)
    2      ``layer3``  conv3_x    256       4       ``features[:16]`` (``[:23]``)
    3      ``layer4``  conv4_x    512       8       ``features[:23]`` (``[:33]``)
    4      ``layer5``  conv5_x    512       16      ``features[:30]`` (``[:43]``)
    =====  ==========  =========  ========  ======  ==============================

    The pool that follows the last stage (torchvision's ``features[30]``) is not applied.

    Output sizes follow ``O = (I + 2P - K) / S + 1``: a 3x3 conv with ``P = 1``, ``S = 1``
    keeps the size (``O = I``); a 2x2 max pool with ``S = 2``, ``P = 0`` gives
    ``floor((I - 2) / 2) + 1 = floor(I / 2)``, or ``ceil(I / 2)`` with ``ceil_mode=True``. So
    the output of index ``i`` has size ``I`` halved ``i`` times: for ``I = 37``, 37, 18, 9, 4,
    2 (floor) or 37, 19, 10, 5, 3 (ceil).

    For an FPN, ``out_indices=(2, 3, 4)`` gives conv3_x, conv4_x, conv5_x: 256, 512, 512
    channels at strides 4, 8, 16. :attr:`out_channels` holds the channels of the chosen outputs.

    Weights are initialized at construction (ConvModule's Kaiming-normal fan_out convs with
    zero bias, norms with weight 1 and bias 0, as torchvision).

    Args:
        depth: 11, 13, 16 or 19.
        with_bn: a norm (``norm_cfg``) after every conv, as torchvision's ``vgg*_bn``.
        num_stages: stages to build, 1 to 5.
        out_indices: distinct stage indices in ``0..num_stages - 1`` whose outputs (after the
            last conv(+norm)+ReLU of the stage, before the next pool) are returned. Stages after
            the last chosen index are not run.
        frozen_stages: ``-1`` (or ``0``) freezes nothing; ``i`` freezes stages ``0..i-1``
            (``layer1..layer{i}``): ``requires_grad=False`` and eval mode.
        ceil_mode: round pooled sizes up instead of down (see above).
        norm_cfg: norm config used when ``with_bn``.
        norm_eval: keep every BatchNorm in eval mode (frozen running statistics) while the
            rest of the model trains.
        init_cfg: mmengine initialization config, e.g. ``dict(type='Pretrained',
            checkpoint='torchvision://vgg16')``.

    Example:
        >>> model = VGG(16, out_indices=(2, 3, 4)).eval()
        >>> [tuple(o.shape) for o in model(torch.randn(1, 3, 64, 64))]
        [(1, 256, 16, 16), (1, 512, 8, 8), (1, 512, 4, 4)]
    """

    arch_settings: dict[int, tuple[int, ...]] = {
        11: (1, 1, 2, 2, 2),
        13: (2, 2, 2, 2, 2),
        16: (2, 2, 3, 3, 3),
        19: (2, 2, 4, 4, 4),
    }

    def __init__(self, depth: int, *, with_bn: bool = False, num_stages: int = 5,
                 out_indices: Sequence[int] = (2, 3, 4), frozen_stages: int = -1,
                 ceil_mode: bool = False, norm_cfg: dict = dict(type='BN'),
                 norm_eval: bool = True, init_cfg: dict | list[dict] | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if depth not in self.arch_settings:
            raise ValueError(f'VGG: depth={depth!r} is not supported; expected one of '
                             f'{sorted(self.arch_settings)}')
        if isinstance(num_stages, bool) or not isinstance(num_stages, int) \
                or not 1 <= num_stages <= 5:
            raise ValueError(f'VGG: num_stages must be an int in 1..5, got {num_stages!r}')
        out_indices = tuple(out_indices)
        if (not out_indices or len(set(out_indices)) != len(out_indices)
                or not all(isinstance(i, int) and 0 <= i < num_stages for i in out_indices)):
            raise ValueError(f'VGG: out_indices must be distinct stage indices in '
                             f'0..{num_stages - 1} (num_stages={num_stages}), got {out_indices!r}')
        if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int) \
                or not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'VGG: frozen_stages must be an int in -1..{num_stages} '
                             f'(num_stages={num_stages}), got {frozen_stages!r}')
        self.depth = depth
        self.with_bn = with_bn
        self.num_stages = num_stages
        self.out_indices = tuple(sorted(out_indices))
        self.frozen_stages = frozen_stages
        self.ceil_mode = ceil_mode
        self.norm_eval = norm_eval

        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=ceil_mode)
        self.stage_names: list[str] = []
        in_channels = 3
        for index, num_convs in enumerate(self.arch_settings[depth][:num_stages]):
            out_channels = STAGE_CHANNELS[index]
            convs = []
            for _ in range(num_convs):
                convs.append(ConvModule(in_channels, out_channels, 3, padding=1, bias=True,
                                        norm_cfg=norm_cfg if with_bn else None,
                                        act_cfg=dict(type='ReLU')))
                in_channels = out_channels
            name = f'layer{index + 1}'
            self.add_module(name, nn.Sequential(*convs))
            self.stage_names.append(name)
        self.out_channels = tuple(STAGE_CHANNELS[i] for i in self.out_indices)
        self._freeze_stages()

    def frozen_modules(self) -> list[nn.Module]:
        """The first ``frozen_stages`` stages (VGG has no stem)."""
        return [getattr(self, name) for name in self.stage_names[:max(self.frozen_stages, 0)]]

    def convert_torchvision_state_dict(self, state_dict: Mapping[str, Tensor]) -> dict:
        """Rename a torchvision ``vgg*`` / ``vgg*_bn`` state dict for this model (for the loader).

        Args:
            state_dict: torchvision's ``{key: tensor}``.

        Returns:
            :func:`convert_torchvision_vgg` of it with this model's ``with_bn``.
        """
        return convert_torchvision_vgg(state_dict, with_bn=self.with_bn)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """Compute the stage outputs chosen by ``out_indices``.

        Args:
            x: ``(N, 3, H, W)`` images.

        Returns:
            One ``(N, C_i, H_i, W_i)`` tensor per index ``i`` of ``out_indices``, in index
            order: ``C_i`` from :attr:`out_channels`, ``H_i`` is ``H`` halved ``i`` times
            (floor, or ceil with ``ceil_mode``).
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f'VGG expects input of shape (N, 3, H, W), got {tuple(x.shape)}')
        outs = []
        for index, name in enumerate(self.stage_names[:self.out_indices[-1] + 1]):
            if index > 0:
                x = self.maxpool(x)
            x = getattr(self, name)(x)
            if index in self.out_indices:
                outs.append(x)
        return tuple(outs)
