"""torchvision detection checkpoints -> detkit checkpoints (RetinaNet and Faster R-CNN R50-FPN v1).

torchvision's ``retinanet_resnet50_fpn`` and ``fasterrcnn_resnet50_fpn`` (the v1 models, the ones
``*_Weights.COCO_V1`` holds) become detkit's ``configs/torchvision/retinanet_r50_fpn_tv.py`` and
``configs/torchvision/faster_rcnn_r50_fpn_tv.py``. The keys map as follows, torchvision ->
detkit (``{p}`` is ``weight`` or ``bias``; where two torchvision forms are given, the first is
what torchvision >= 0.10 writes and the second the older form, and both are read)::

    backbone.body.<ResNet-50 key>                         backbone.<ResNet-50 key>
    backbone.fpn.inner_blocks.{i}.0.{p} | .{i}.{p}        neck.lateral_convs.{i}.conv.{p}
    backbone.fpn.layer_blocks.{i}.0.{p} | .{i}.{p}        neck.fpn_convs.{i}.conv.{p}
    backbone.fpn.extra_blocks.p6.{p}, p7.{p}  (RetinaNet)  neck.fpn_convs.3.conv.{p}, 4.conv.{p}
    head.classification_head.conv.{i}.0.{p} | .{2i}.{p}   bbox_head.cls_convs.{i}.conv.{p}
    head.classification_head.cls_logits.{p}               bbox_head.retina_cls.{p}
    head.regression_head.conv.{i}.0.{p} | .{2i}.{p}       bbox_head.reg_convs.{i}.conv.{p}
    head.regression_head.bbox_reg.{p}                     bbox_head.retina_reg.{p}
    rpn.head.conv.0.0.{p} | rpn.head.conv.{p}             rpn_head.rpn_conv.{p}
    rpn.head.cls_logits.{p}, rpn.head.bbox_pred.{p}       rpn_head.rpn_cls.{p}, .rpn_reg.{p}
    roi_heads.box_head.fc6.{p}, fc7.{p}                   roi_head.bbox_head.shared_fcs.{0,1}.{p}
    roi_heads.box_predictor.cls_score.{p}                 roi_head.bbox_head.fc_cls.{p} (reordered)
    roi_heads.box_predictor.bbox_pred.{p}                 roi_head.bbox_head.fc_reg.{p} (4 dropped)

BatchNorm's ``num_batches_tracked`` (present when torchvision built the model with
``nn.BatchNorm2d`` rather than ``FrozenBatchNorm2d``) is dropped: detkit's frozen BatchNorm keeps
only the statistics and the affine parameters.

Classes. Both torchvision models score the 91 entries of torchvision's COCO category list
(:data:`COCO_CATEGORIES`: ``'__background__'``, ``'person'``, ..., with ``'N/A'`` for the ids
COCO does not use), so a torchvision label is the COCO category id.

- RetinaNet keeps all 91 sigmoid classes (``num_classes=91``): detkit's labels are torchvision's.
- Faster R-CNN's softmax has background FIRST (class 0) and class-specific deltas for it too;
  detkit puts background LAST and has no deltas for it (``num_classes=90``). The rows marked *
  are reordered: ``fc_cls`` takes torchvision's rows ``[1, ..., 90, 0]`` and ``fc_reg`` drops
  the 4 background rows. A detkit label is then the torchvision label minus 1, and the class
  names are ``COCO_CATEGORIES[1:]``.

Example:
    >>> from torchvision.models.detection import retinanet_resnet50_fpn
    >>> tv = retinanet_resnet50_fpn(weights=None, weights_backbone=None)
    >>> checkpoint = convert_torchvision_detector(tv.state_dict())
    >>> checkpoint['state_dict']['bbox_head.retina_cls.weight'].shape
    torch.Size([819, 256, 3, 3])
    >>> len(checkpoint['meta']['dataset_meta']['classes'])
    91
"""
from __future__ import annotations

import argparse
import io
import os
import os.path as osp
from collections import OrderedDict
from typing import Any, Mapping

import torch
from torch import Tensor
from torchvision.models.detection import RetinaNet_ResNet50_FPN_Weights

#: torchvision's COCO category list (91 names, index = COCO category id), shared by its
#: RetinaNet and Faster R-CNN COCO weights.
COCO_CATEGORIES: tuple[str, ...] = tuple(RetinaNet_ResNet50_FPN_Weights.COCO_V1.meta['categories'])

#: The architectures :func:`convert_torchvision_detector` reads, with torchvision's builder name.
TORCHVISION_ARCHS: dict[str, str] = {'retinanet': 'retinanet_resnet50_fpn',
                                     'faster_rcnn': 'fasterrcnn_resnet50_fpn'}

RESNET50_STAGE_BLOCKS = (3, 4, 6, 3)
BN_BUFFERS = ('weight', 'bias', 'running_mean', 'running_var')
PARAMS = ('weight', 'bias')
RETINANET_ANCHORS = 9  # 3 sizes x 3 ratios per location
KEYS_SHOWN = 8         # keys named in an error message

# detkit key -> the torchvision keys it may come from, the current torchvision style first.
KeyMap = dict[str, tuple[str, ...]]


def _resnet50_key_map() -> KeyMap:
    """ResNet-50 body: ``backbone.body.X`` -> ``backbone.X`` (detkit's ResNet keeps the names)."""
    names = ['conv1.weight'] + [f'bn1.{b}' for b in BN_BUFFERS]
    for stage, num_blocks in enumerate(RESNET50_STAGE_BLOCKS, start=1):
        for block in range(num_blocks):
            prefix = f'layer{stage}.{block}'
            for conv in (1, 2, 3):
                names.append(f'{prefix}.conv{conv}.weight')
                names += [f'{prefix}.bn{conv}.{b}' for b in BN_BUFFERS]
            if block == 0:
                names.append(f'{prefix}.downsample.0.weight')
                names += [f'{prefix}.downsample.1.{b}' for b in BN_BUFFERS]
    return {f'backbone.{name}': (f'backbone.body.{name}',) for name in names}


def _fpn_key_map(num_inputs: int) -> KeyMap:
    key_map: KeyMap = {}
    for i in range(num_inputs):
        for p in PARAMS:
            key_map[f'neck.lateral_convs.{i}.conv.{p}'] = (
                f'backbone.fpn.inner_blocks.{i}.0.{p}', f'backbone.fpn.inner_blocks.{i}.{p}')
            key_map[f'neck.fpn_convs.{i}.conv.{p}'] = (
                f'backbone.fpn.layer_blocks.{i}.0.{p}', f'backbone.fpn.layer_blocks.{i}.{p}')
    return key_map


def retinanet_key_map() -> KeyMap:
    """The key map of ``retinanet_resnet50_fpn`` (v1): detkit key -> accepted torchvision keys.

    Returns:
        A dict from every key of detkit's ``configs/torchvision/retinanet_r50_fpn_tv.py`` model
        to the torchvision keys it may be read from (new style first, then the pre-0.10 one).
    """
    key_map = {**_resnet50_key_map(), **_fpn_key_map(3)}
    for extra, index in (('p6', 3), ('p7', 4)):
        for p in PARAMS:
            key_map[f'neck.fpn_convs.{index}.conv.{p}'] = (
                f'backbone.fpn.extra_blocks.{extra}.{p}',)
    for tower, branch in (('cls_convs', 'classification_head'), ('reg_convs', 'regression_head')):
        for i in range(4):
            for p in PARAMS:
                key_map[f'bbox_head.{tower}.{i}.conv.{p}'] = (
                    f'head.{branch}.conv.{i}.0.{p}', f'head.{branch}.conv.{2 * i}.{p}')
    for p in PARAMS:
        key_map[f'bbox_head.retina_cls.{p}'] = (f'head.classification_head.cls_logits.{p}',)
        key_map[f'bbox_head.retina_reg.{p}'] = (f'head.regression_head.bbox_reg.{p}',)
    return key_map


def faster_rcnn_key_map() -> KeyMap:
    """The key map of ``fasterrcnn_resnet50_fpn`` (v1): detkit key -> accepted torchvision keys.

    Returns:
        A dict from every key of detkit's ``configs/torchvision/faster_rcnn_r50_fpn_tv.py`` model
        to the torchvision keys it may be read from (new style first, then the pre-0.10 one).
        ``fc_cls`` and ``fc_reg`` also change their row layout (see the module docstring).
    """
    key_map = {**_resnet50_key_map(), **_fpn_key_map(4)}
    for p in PARAMS:
        key_map[f'rpn_head.rpn_conv.{p}'] = (f'rpn.head.conv.0.0.{p}', f'rpn.head.conv.{p}')
        key_map[f'rpn_head.rpn_cls.{p}'] = (f'rpn.head.cls_logits.{p}',)
        key_map[f'rpn_head.rpn_reg.{p}'] = (f'rpn.head.bbox_pred.{p}',)
        key_map[f'roi_head.bbox_head.shared_fcs.0.{p}'] = (f'roi_heads.box_head.fc6.{p}',)
        key_map[f'roi_head.bbox_head.shared_fcs.1.{p}'] = (f'roi_heads.box_head.fc7.{p}',)
        key_map[f'roi_head.bbox_head.fc_cls.{p}'] = (f'roi_heads.box_predictor.cls_score.{p}',)
        key_map[f'roi_head.bbox_head.fc_reg.{p}'] = (f'roi_heads.box_predictor.bbox_pred.{p}',)
    return key_map


KEY_MAPS = {'retinanet': retinanet_key_map, 'faster_rcnn': faster_rcnn_key_map}


def unwrap_state_dict(content: Any, source: str = 'the checkpoint') -> dict[str, Tensor]:
    """The state dict inside a loaded torchvision checkpoint.

    Args:
        content: what ``torch.load`` returned: a state dict, or a dict holding it under
            ``'model'`` (torchvision's reference training scripts) or ``'state_dict'``.
        source: how to name the checkpoint in error messages.

    Returns:
        ``{key: tensor}``, without a ``'module.'`` prefix that every key carries
        (``DistributedDataParallel``).

    Raises:
        ValueError: no state dict of tensors was found.
    """
    if isinstance(content, Mapping):
        for wrapper in ('model', 'state_dict'):
            if isinstance(content.get(wrapper), Mapping):
                content = content[wrapper]
                break
    if not isinstance(content, Mapping) or not content or \
            not all(isinstance(v, Tensor) for v in content.values()):
        kind = (f'a dict with keys {sorted(content)[:KEYS_SHOWN]}'
                if isinstance(content, Mapping) else f'a {type(content).__name__}')
        raise ValueError(f'{source} holds {kind}; expected a torchvision state dict '
                         "(torch.save(model.state_dict())), possibly under 'model' or "
                         "'state_dict'")
    state = dict(content)
    if all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    return state


def detect_torchvision_arch(state_dict: Mapping[str, Tensor]) -> str:
    """Which torchvision detector a state dict belongs to, from its head keys.

    Args:
        state_dict: a torchvision detection state dict.

    Returns:
        ``'retinanet'`` (keys under ``head.classification_head.``) or ``'faster_rcnn'``
        (``rpn.head.`` and ``roi_heads.``).

    Raises:
        ValueError: neither; the message shows some of the keys.
    """
    keys = list(state_dict)
    if any(k.startswith('head.classification_head.') for k in keys):
        return 'retinanet'
    if any(k.startswith('rpn.head.') for k in keys) and \
            any(k.startswith('roi_heads.') for k in keys):
        return 'faster_rcnn'
    raise ValueError('cannot tell the torchvision architecture: no head.classification_head.* '
                     '(RetinaNet) and no rpn.head.* + roi_heads.* (Faster R-CNN) keys; the '
                     f'first keys are {keys[:KEYS_SHOWN]}; give the architecture explicitly '
                     f'(one of {sorted(TORCHVISION_ARCHS)}) if it is one of them')


def convert_torchvision_detector(checkpoint: Any, arch: str = 'auto',
                                 source: str = '') -> dict:
    """Convert a torchvision RetinaNet / Faster R-CNN R50-FPN (v1) checkpoint to detkit's format.

    Args:
        checkpoint: a torchvision state dict, or a dict holding it under ``'model'`` or
            ``'state_dict'`` (see :func:`unwrap_state_dict`).
        arch: ``'retinanet'``, ``'faster_rcnn'`` or ``'auto'`` (:func:`detect_torchvision_arch`).
        source: where the checkpoint came from (e.g. its file), recorded in ``meta``.

    Returns:
        ``{'state_dict': OrderedDict, 'meta': {'dataset_meta': {'classes': names},
        'converted_from': str}}``: the weights of detkit's ``configs/torchvision`` model and the
        class names of its labels (91 for RetinaNet, 90 for Faster R-CNN, see the module
        docstring).

    Raises:
        ValueError: an unknown ``arch``; keys that the architecture does not have (another
            model, e.g. Mask R-CNN or a v2 model) or that it needs and the checkpoint lacks,
            named; a class count other than torchvision's 91 COCO categories.
    """
    name = f'torchvision checkpoint{f" {source}" if source else ""}'
    state = unwrap_state_dict(checkpoint, name)
    if arch == 'auto':
        arch = detect_torchvision_arch(state)
    if arch not in KEY_MAPS:
        raise ValueError(f"arch={arch!r} is not supported; expected 'auto' or one of "
                         f'{sorted(KEY_MAPS)}')
    model = f'{TORCHVISION_ARCHS[arch]} (v1)'
    key_map = KEY_MAPS[arch]()
    converted = _rename(state, key_map, f'{name} ({model})')
    if arch == 'retinanet':
        _check_rows(converted, 'bbox_head.retina_cls.weight', RETINANET_ANCHORS, name)
        classes = COCO_CATEGORIES
    else:
        _check_rows(converted, 'roi_head.bbox_head.fc_cls.weight', 1, name)
        _check_rows(converted, 'roi_head.bbox_head.fc_reg.weight', 4, name)
        for p in PARAMS:
            scores = converted[f'roi_head.bbox_head.fc_cls.{p}']
            converted[f'roi_head.bbox_head.fc_cls.{p}'] = torch.cat([scores[1:], scores[:1]])
            deltas = converted[f'roi_head.bbox_head.fc_reg.{p}']
            converted[f'roi_head.bbox_head.fc_reg.{p}'] = deltas[4:].clone()
        classes = COCO_CATEGORIES[1:]
    meta = dict(dataset_meta=dict(classes=classes),
                converted_from=f'torchvision {model}' + (f' {source}' if source else ''))
    return dict(state_dict=converted, meta=meta)


def _rename(state: dict[str, Tensor], key_map: KeyMap, name: str) -> OrderedDict:
    """Apply ``key_map``; name every unknown, missing or doubly given key."""
    accepted = {source: target for target, sources in key_map.items() for source in sources}
    batch_counters = {source[:-len('running_mean')] + 'num_batches_tracked'
                      for source in accepted if source.endswith('.running_mean')}
    unknown = sorted(k for k in state if k not in accepted and k not in batch_counters)
    converted: OrderedDict = OrderedDict()
    missing, doubled = [], []
    for target, sources in key_map.items():
        found = [source for source in sources if source in state]
        if not found:
            missing.append(' or '.join(sources))
        elif len(found) > 1:
            doubled.append(' and '.join(found))
        else:
            converted[target] = state[found[0]]
    problems = []
    for what, keys in (('unknown keys (not part of the model; another architecture?)', unknown),
                       ('missing keys', missing),
                       ('keys given in both the old and the new torchvision style', doubled)):
        if keys:
            shown = ', '.join(keys[:KEYS_SHOWN])
            more = f', ... ({len(keys)} in all)' if len(keys) > KEYS_SHOWN else ''
            problems.append(f'{len(keys)} {what}: {shown}{more}')
    if problems:
        raise ValueError(f'{name}: ' + '; '.join(problems))
    return converted


def _check_rows(state: dict[str, Tensor], key: str, rows_per_class: int, name: str) -> None:
    """The layer at ``key`` must predict torchvision's 91 COCO categories."""
    rows = int(state[key].shape[0])
    expected = rows_per_class * len(COCO_CATEGORIES)
    if rows != expected:
        raise ValueError(f'{name}: {key} has {rows} output rows ({rows / rows_per_class:g} '
                         f'classes); the detkit configs in configs/torchvision expect '
                         f'torchvision\'s {len(COCO_CATEGORIES)} COCO categories '
                         f'({expected} rows)')


def load_torchvision_state_dict(path: str | os.PathLike) -> Any:
    """Read a torchvision checkpoint file safely (``torch.load(weights_only=True)``).

    ``argparse.Namespace`` is allowed besides tensors and containers: torchvision's reference
    training scripts store their arguments as one next to the model.

    Args:
        path: the ``.pth`` file.

    Returns:
        What the file holds (pass it to :func:`convert_torchvision_detector`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be unpickled safely; torch's message says what it refused.
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'torchvision checkpoint {path!r} does not exist')
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # the unpickler names what it refused
        raise ValueError(f'cannot read {path!r} with torch.load(weights_only=True): '
                         f'{error}') from error


def save_checkpoint_atomic(checkpoint: dict, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`detkit.engine.atomic_write`: a reader never sees a
    half-written file, and an interrupted save leaves any previous ``path`` untouched.

    Args:
        checkpoint: what to save.
        path: the destination; its folder is created if needed.
    """
    from detkit.engine.checkpoint_hook import atomic_write
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write(buffer.getvalue(), path)
