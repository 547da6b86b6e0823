"""torchvision classification state dicts -> detkit backbone keys (ResNet, MobileNetV2, VGG).

:func:`convert_torchvision_state_dict` picks the conversion from the torchvision model name; the
``Pretrained`` initializer (:mod:`detkit.models.weight_init`) applies it to
``torchvision://NAME`` checkpoints, and MobileNetV2 and VGG apply theirs to a local copy of a
torchvision file. This module imports nothing from ``detkit.models``: the backbones and the
loader import it, never the other way round.

ResNet: torchvision's keys are detkit's (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer1.0.downsample.0``...); only the ImageNet head ``fc.*`` is dropped.

MobileNetV2 (:func:`convert_torchvision_mobilenet_v2`): torchvision's flat ``features.N`` list
becomes named stages, torchvision key -> detkit key (``k`` = 2..17 a block with expansion):

- ``features.0.0.*``, ``features.0.1.*`` -> ``stem.conv.*``, ``stem.bn.*``
- ``features.k.conv.0.0.*``, ``.conv.0.1.*`` -> ``layer{s}.{b}.expand_conv.conv.*``, ``.bn.*``
- ``features.k.conv.1.0.*``, ``.conv.1.1.*`` -> ``layer{s}.{b}.depthwise_conv.conv.*``, ``.bn.*``
- ``features.k.conv.2.*``, ``.conv.3.*``     -> ``layer{s}.{b}.project_conv.conv.*``, ``.bn.*``
- ``features.1.conv.0.0.*``, ``.conv.0.1.*`` -> ``layer1.0.depthwise_conv.conv.*``, ``.bn.*``
- ``features.1.conv.1.*``, ``.conv.2.*``     -> ``layer1.0.project_conv.conv.*``, ``.bn.*``
- ``features.18.0.*``, ``features.18.1.*`` -> ``final_conv.conv.*``, ``final_conv.bn.*``
- ``classifier.*`` (the ImageNet head) -> dropped

Block ``k`` of torchvision is block ``b`` (0-based) of stage ``s`` (1-based) counting the
blocks of :data:`MOBILENET_V2_SETTINGS` in order: ``features.1`` is ``layer1.0``,
``features.2``/``3`` are ``layer2.0``/``1``, ``features.4..6`` are ``layer3.0..2``, and so on.
Blocks with expansion ratio 1 (only ``layer1``) have no ``expand_conv``.

VGG (:func:`convert_torchvision_vgg`): conv ``j`` (0-based) of stage ``i`` (1-based) in
torchvision's ``features.N`` list becomes ``layer{i}.{j}.conv.*`` and, for ``vgg*_bn``, the
BatchNorm after it ``layer{i}.{j}.bn.*``.
"""
from __future__ import annotations

import re
from typing import Mapping

from torch import Tensor

#: MobileNetV2's stage table (the paper's Table 2, torchvision's ``inverted_residual_setting``):
#: per stage (expand ratio t, output channels c, number of blocks n, stride of the first block
#: s). :class:`~detkit.models.backbones.mobilenet_v2.MobileNetV2` is built from it and
#: :func:`convert_torchvision_mobilenet_v2` numbers torchvision's blocks with it.
MOBILENET_V2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def convert_torchvision_state_dict(model_name: str,
                                   state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename the keys of a torchvision model's state dict to those of the detkit backbone.

    ==================================  ==================================================
    torchvision model                   conversion
    ==================================  ==================================================
    ``resnet*``, ``resnext*``,          keys are already ResNet's; ``fc.*`` is dropped
    ``wide_resnet*``
    ``mobilenet_v2``                    :func:`convert_torchvision_mobilenet_v2`
    ``vgg11`` ... ``vgg19``,            :func:`convert_torchvision_vgg` (``with_bn`` from
    ``vgg11_bn`` ... ``vgg19_bn``       the name)
    anything else                       unchanged
    ==================================  ==================================================

    Args:
        model_name: a torchvision model name, e.g. ``'vgg16_bn'``.
        state_dict: that model's ``{key: tensor}``.

    Returns:
        ``{detkit key: tensor}``.
    """
    if model_name == 'mobilenet_v2':
        return convert_torchvision_mobilenet_v2(state_dict)
    vgg = re.fullmatch(r'vgg(11|13|16|19)(_bn)?', model_name)
    if vgg:
        return convert_torchvision_vgg(state_dict, with_bn=vgg.group(2) is not None)
    if model_name.startswith(('resnet', 'resnext', 'wide_resnet')):
        return {key: value for key, value in state_dict.items() if not key.startswith('fc.')}
    return dict(state_dict)


def _torchvision_block_names() -> list[tuple[str, bool]]:
    """``(detkit module path, has expand_conv)`` of torchvision's ``features.1..17``."""
    names = []
    for stage, (expand_ratio, _, num_blocks, _) in enumerate(MOBILENET_V2_SETTINGS):
        names += [(f'layer{stage + 1}.{b}', expand_ratio != 1) for b in range(num_blocks)]
    return names


# Sub-module paths inside a torchvision InvertedResidual -> detkit's, with and without expansion.
_BLOCK_RENAMES = {
    True: {'conv.0.0': 'expand_conv.conv', 'conv.0.1': 'expand_conv.bn',
           'conv.1.0': 'depthwise_conv.conv', 'conv.1.1': 'depthwise_conv.bn',
           'conv.2': 'project_conv.conv', 'conv.3': 'project_conv.bn'},
    False: {'conv.0.0': 'depthwise_conv.conv', 'conv.0.1': 'depthwise_conv.bn',
            'conv.1': 'project_conv.conv', 'conv.2': 'project_conv.bn'},
}
_CONV_BN_RENAMES = {'0': 'conv', '1': 'bn'}


def convert_torchvision_mobilenet_v2(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename torchvision ``mobilenet_v2`` keys to detkit ``MobileNetV2``'s (module docstring).

    Works for every ``width_mult`` (only names change). ``classifier.*`` is dropped; keys that
    are not torchvision MobileNetV2 keys are kept unchanged (the loader reports them).

    Args:
        state_dict: ``{key: tensor}`` of ``torchvision.models.mobilenet_v2()``.

    Returns:
        ``{detkit key: tensor}``, the same tensors.

    Example:
        >>> import torchvision
        >>> from detkit.models.backbones import MobileNetV2
        >>> sd = convert_torchvision_mobilenet_v2(torchvision.models.mobilenet_v2().state_dict())
        >>> MobileNetV2().load_state_dict(sd)
        <All keys matched successfully>
    """
    blocks = _torchvision_block_names()
    last = len(blocks) + 1
    converted: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith('classifier.'):
            continue
        match = re.fullmatch(r'features\.(\d+)\.(.+)\.([^.]+)', key)
        new_key = None
        if match:
            index, module_path, leaf = int(match.group(1)), match.group(2), match.group(3)
            if index in (0, last) and module_path in _CONV_BN_RENAMES:
                owner = 'stem' if index == 0 else 'final_conv'
                new_key = f'{owner}.{_CONV_BN_RENAMES[module_path]}.{leaf}'
            elif 1 <= index <= len(blocks):
                block, has_expand = blocks[index - 1]
                renamed = _BLOCK_RENAMES[has_expand].get(module_path)
                if renamed is not None:
                    new_key = f'{block}.{renamed}.{leaf}'
        converted[new_key or key] = value
    return converted


def convert_torchvision_vgg(state_dict: Mapping[str, Tensor], with_bn: bool) -> dict[str, Tensor]:
    """Rename torchvision ``vgg{11,13,16,19}[_bn]`` keys to detkit ``VGG``'s.

    torchvision's ``features`` is a flat list: per conv ``Conv2d, [BatchNorm2d,] ReLU`` and a
    ``MaxPool2d`` after each stage. The convs are the 4-D ``features.N.weight`` entries; a gap
    of one extra index between two consecutive convs is a pool, i.e. a new stage. Conv ``j`` of
    stage ``i`` becomes ``layer{i}.{j}.conv.*`` and, with ``with_bn``, the norm right after it
    ``layer{i}.{j}.bn.*``. ``classifier.*`` is dropped; other keys are kept unchanged (the
    loader reports them).

    Args:
        state_dict: ``{key: tensor}`` of a torchvision VGG (or of its ``features`` with the
            ``features.`` prefix).
        with_bn: the checkpoint is of a ``vgg*_bn`` model.

    Returns:
        ``{detkit key: tensor}``, the same tensors.

    Raises:
        ValueError: the layout disagrees with ``with_bn`` (e.g. ``with_bn=True`` for a plain
            ``vgg16`` state dict), naming the offending ``features`` index.
    """
    layer_keys: dict[int, list[tuple[str, str]]] = {}
    converted: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith('classifier.'):
            continue
        match = re.fullmatch(r'features\.(\d+)\.([^.]+)', key)
        if match:
            layer_keys.setdefault(int(match.group(1)), []).append((match.group(2), key))
        else:
            converted[key] = value
    conv_indices = sorted(i for i, entries in layer_keys.items()
                          if any(leaf == 'weight' and state_dict[key].dim() == 4
                                 for leaf, key in entries))
    step = 3 if with_bn else 2  # conv, [bn,] relu
    renames: dict[int, str] = {}
    stage, position = 1, 0
    for n, index in enumerate(conv_indices):
        if n > 0:
            gap = index - conv_indices[n - 1]
            if gap == step + 1:
                stage, position = stage + 1, 0
            elif gap != step:
                raise ValueError(
                    f'convert_torchvision_vgg(with_bn={with_bn}): convs at features.'
                    f'{conv_indices[n - 1]} and features.{index} are {gap} layers apart, '
                    f'expected {step} (same stage) or {step + 1} (a pool between); is the '
                    f'checkpoint a {"plain vgg" if with_bn else "vgg*_bn"} model?')
        renames[index] = f'layer{stage}.{position}.conv'
        if with_bn:
            norm_index = index + 1
            if not any(leaf == 'running_mean' for leaf, _ in layer_keys.get(norm_index, ())):
                raise ValueError(f'convert_torchvision_vgg(with_bn=True): features.{norm_index} '
                                 f'after the conv features.{index} is not a BatchNorm; the '
                                 f'checkpoint looks like a plain vgg (use with_bn=False)')
            renames[norm_index] = f'layer{stage}.{position}.bn'
        position += 1
    for index, entries in layer_keys.items():
        for leaf, key in entries:
            new_key = f'{renames[index]}.{leaf}' if index in renames else key
            converted[new_key] = state_dict[key]
    unconverted_norms = [i for i, entries in layer_keys.items() if i not in renames and any(
        leaf == 'running_mean' for leaf, _ in entries)]
    if unconverted_norms and not with_bn:
        raise ValueError(f'convert_torchvision_vgg(with_bn=False): features.'
                         f'{unconverted_norms[0]} is a BatchNorm; the checkpoint looks like a '
                         f'vgg*_bn model (use with_bn=True)')
    return converted
