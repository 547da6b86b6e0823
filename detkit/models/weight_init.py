"""Pretrained weights: ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=None)``.

``checkpoint`` is either

- a local file path: a ``torch.save``-d state dict, or a dict holding one under ``'state_dict'``
  or ``'model'`` (an mmengine or detkit training checkpoint), or
- ``torchvision://NAME``: ``NAME`` is a torchvision model name (``resnet50``, ``mobilenet_v2``,
  ``vgg16``, ``vgg16_bn``...; its ``DEFAULT`` weights are used) or a weights enum member
  (``ResNet50_Weights.IMAGENET1K_V1``). The weights' ``url`` gives a file name that is looked up
  in the torch hub cache, ``torch.hub.get_dir()/checkpoints/<file name>`` (``get_dir()`` is
  ``$TORCH_HOME/hub``, by default ``~/.cache/torch/hub``).

detkit never downloads: a missing file is an error at ``init_weights()`` naming the path looked
for, the url and the two ways to provide the file.

Loading (:func:`load_pretrained`): ``torch.load(weights_only=True)``; the ``'module.'`` prefix
of ``DataParallel`` checkpoints is stripped; with ``prefix='backbone.'`` only the keys starting
with it are kept, without it (as mmengine does); torchvision layouts are converted to detkit's
by :func:`~detkit.models.converters.torchvision_backbones.convert_torchvision_state_dict`
(ResNet keys are identical once ``fc.*`` is dropped, MobileNetV2 and VGG have converters). The
state dict is then loaded non-strictly: missing and unexpected keys are logged as a warning, a
shape mismatch or a checkpoint of which no key matches the model is an error.

mmengine's ``BaseModule.init_weights`` builds initializers with ``build_from_cfg(cfg,
mmengine.registry.WEIGHT_INITIALIZERS)``, which follows the current ``DefaultScope``: under scope
``detkit`` (a Runner with ``default_scope='detkit'``, or :func:`detkit_default_scope`) the type
``'Pretrained'`` is found first in detkit's child registry, i.e. :class:`PretrainedInit` below;
with no default scope it would be mmengine's own ``PretrainedInit`` (which downloads
``torchvision://`` urls and knows no key conversion). detkit backbones therefore run
``init_weights`` inside :func:`detkit_default_scope`, so that both a Runner and a bare
``MobileNetV2(init_cfg=...).init_weights()`` use this loader.
"""
from __future__ import annotations

import contextlib
import difflib
import logging
import os
import os.path as osp
from typing import Any, Iterator, Mapping, NamedTuple, Protocol, runtime_checkable
from urllib.parse import urlparse

import torch
from mmengine.logging import print_log
from mmengine.model.weight_init import update_init_info
from mmengine.registry import DefaultScope
from torch import Tensor, nn

from detkit.engine.safe_checkpoint import enable_safe_resume
from detkit.models.converters.torchvision_backbones import convert_torchvision_state_dict
from detkit.registry import SCOPE, WEIGHT_INITIALIZERS

TORCHVISION_PREFIX = 'torchvision://'
# Longest key list written in full in a log message or error; the rest is counted.
MAX_LISTED_KEYS = 10


class ResolvedCheckpoint(NamedTuple):
    """Where a ``checkpoint`` string points to.

    Attributes:
        path: the local file to load.
        torchvision_model: the torchvision model name for ``torchvision://`` checkpoints
            (selects the key conversion), else ``None``.
        url: the download url of ``torchvision://`` weights, else ``None``.
    """

    path: str
    torchvision_model: str | None
    url: str | None


class LoadReport(NamedTuple):
    """What :func:`load_pretrained` loaded.

    Attributes:
        loaded: model keys set from the checkpoint.
        missing: model keys the checkpoint does not hold (left as initialized).
        unexpected: checkpoint keys the model does not have (ignored).
    """

    loaded: list[str]
    missing: list[str]
    unexpected: list[str]


@contextlib.contextmanager
def detkit_default_scope() -> Iterator[None]:
    """Make ``detkit`` the mmengine default scope inside the ``with`` block.

    Registry lookups by mmengine (``build_from_cfg``, hence ``init_cfg`` types) then search
    detkit's child registries before mmengine's. Nothing changes when the scope already is
    ``detkit``; otherwise the previous scope is restored on exit.

    Returns:
        A context manager.
    """
    current = DefaultScope.get_current_instance()
    if current is not None and current.scope_name == SCOPE:
        yield
        return
    with DefaultScope.overwrite_default_scope(SCOPE):
        yield


@runtime_checkable
class TorchvisionKeyConverter(Protocol):
    """A module that renames a torchvision state dict's keys to its own (VGG, MobileNetV2)."""

    def convert_torchvision_state_dict(
            self, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The entries of ``state_dict`` under this module's key names."""
        ...


def _key_list(keys: list[str]) -> str:
    shown = ', '.join(keys[:MAX_LISTED_KEYS])
    if len(keys) > MAX_LISTED_KEYS:
        shown += f', ... ({len(keys) - MAX_LISTED_KEYS} more, {len(keys)} in all)'
    return shown


def _torchvision_weights(name: str) -> tuple[str, Any]:
    """``(model name, weights enum member)`` for a torchvision model or weights name."""
    from torchvision import models

    if '.' in name:
        try:
            weights = models.get_weight(name)
        except (ValueError, KeyError, AttributeError) as error:
            raise ValueError(f"checkpoint='{TORCHVISION_PREFIX}{name}': {name!r} is not a "
                             f"torchvision weights name such as 'ResNet50_Weights.IMAGENET1K_V1' "
                             f'({error})') from error
        for model_name in models.list_models():
            if models.get_model_weights(model_name) is type(weights):
                return model_name, weights
        raise ValueError(f"checkpoint='{TORCHVISION_PREFIX}{name}': no torchvision model uses "
                         f'the weights {name!r}')
    try:
        weights_enum = models.get_model_weights(name)
    except (ValueError, KeyError) as error:
        close = difflib.get_close_matches(name, models.list_models(), n=5, cutoff=0.6)
        hint = f"closest torchvision model names: {', '.join(close)}" if close else (
            'see torchvision.models.list_models()')
        raise ValueError(f"checkpoint='{TORCHVISION_PREFIX}{name}': {name!r} is not a "
                         f'torchvision model name; {hint}') from error
    return name, weights_enum.DEFAULT


def hub_checkpoint_path(url: str) -> str:
    """The file that ``torch.hub.load_state_dict_from_url(url)`` would read or download to.

    Args:
        url: the download url of a checkpoint.

    Returns:
        ``torch.hub.get_dir()/checkpoints/<last component of the url's path>``.
    """
    file_name = osp.basename(urlparse(url).path)
    return osp.join(torch.hub.get_dir(), 'checkpoints', file_name)


def resolve_checkpoint(checkpoint: str | os.PathLike) -> ResolvedCheckpoint:
    """Find the local file of a ``checkpoint`` string without downloading anything.

    Args:
        checkpoint: a local file path or ``torchvision://NAME`` (see the module docstring).

    Returns:
        The local path, with the torchvision model name and url for ``torchvision://``.

    Raises:
        FileNotFoundError: the file does not exist; for ``torchvision://`` the message names
            the path looked for, the url and how to provide the file.
        ValueError: an unknown torchvision name, or a url scheme detkit does not resolve.
    """
    if isinstance(checkpoint, os.PathLike):
        checkpoint = os.fspath(checkpoint)
    if not isinstance(checkpoint, str) or not checkpoint:
        raise ValueError(f"init_cfg=dict(type='Pretrained', checkpoint=...) needs a file path or "
                         f"'{TORCHVISION_PREFIX}NAME', got checkpoint={checkpoint!r}")
    if checkpoint.startswith(TORCHVISION_PREFIX):
        name = checkpoint[len(TORCHVISION_PREFIX):]
        model_name, weights = _torchvision_weights(name)
        path = hub_checkpoint_path(weights.url)
        if not osp.isfile(path):
            raise FileNotFoundError(
                f"checkpoint='{checkpoint}' ({type(weights).__name__}.{weights.name}) must be the "
                f'file {path}, which does not exist (detkit never downloads weights). Either '
                f'download {weights.url} on a machine with internet access and copy it to '
                f'{path} (the directory is torch.hub.get_dir(), i.e. $TORCH_HOME/hub), or set '
                f"init_cfg=dict(type='Pretrained', checkpoint='/path/to/"
                f"{osp.basename(path)}') to a local copy.")
        return ResolvedCheckpoint(path, model_name, weights.url)
    scheme = urlparse(checkpoint).scheme
    if '://' in checkpoint and len(scheme) > 1:  # len > 1 keeps Windows drive letters
        raise ValueError(f'checkpoint={checkpoint!r}: detkit loads local files and '
                         f"'{TORCHVISION_PREFIX}NAME' only; download {scheme}:// checkpoints "
                         f'yourself and pass the local path')
    path = osp.expanduser(checkpoint)
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint file {checkpoint!r} (absolute path '
                                f'{osp.abspath(path)}) does not exist; init_cfg=dict('
                                f"type='Pretrained', checkpoint=...) expects an existing local "
                                f"file or '{TORCHVISION_PREFIX}NAME'")
    return ResolvedCheckpoint(path, None, None)


def load_state_dict_file(path: str, map_location: str | torch.device = 'cpu') -> dict[str, Tensor]:
    """Read the state dict of a checkpoint file with torch's safe unpickler.

    Args:
        path: a ``torch.save``-d state dict, or a dict holding it under ``'state_dict'`` or
            ``'model'``.
        map_location: where to put the tensors.

    Returns:
        ``{key: tensor}`` with a leading ``'module.'`` removed from every key that has it.

    Raises:
        ValueError: the file cannot be read safely or holds no tensor.
    """
    enable_safe_resume()  # detkit/mmengine training checkpoints carry a MessageHub
    try:
        content = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise ValueError(f'cannot read checkpoint file {path} with torch.load(weights_only=True)'
                         f': {type(error).__name__}: {error}') from error
    if isinstance(content, Mapping):
        for key in ('state_dict', 'model'):
            if isinstance(content.get(key), Mapping):
                content = content[key]
                break
    if not isinstance(content, Mapping):
        raise ValueError(f'checkpoint file {path} holds a {type(content).__name__}, expected a '
                         f"state dict (or a dict with a 'state_dict' or 'model' entry)")
    state_dict = {(key[len('module.'):] if key.startswith('module.') else key): value
                  for key, value in content.items() if isinstance(value, Tensor)}
    if not state_dict:
        raise ValueError(f'checkpoint file {path} holds no tensors (keys: '
                         f'{_key_list(sorted(map(str, content)))})')
    return state_dict


def select_prefix(state_dict: Mapping[str, Tensor], prefix: str,
                  source: str = 'the checkpoint') -> dict[str, Tensor]:
    """Keep the keys that start with ``prefix``, with the prefix removed.

    Args:
        state_dict: ``{key: tensor}``.
        prefix: e.g. ``'backbone.'`` to take a detector's backbone; a missing trailing dot
            is added.
        source: names the checkpoint in the error message.

    Returns:
        ``{key[len(prefix):]: tensor}`` for the selected keys.

    Raises:
        ValueError: no key starts with ``prefix``.
    """
    if not prefix.endswith('.'):
        prefix += '.'
    selected = {key[len(prefix):]: value for key, value in state_dict.items()
                if key.startswith(prefix)}
    if not selected:
        heads = sorted({key.split('.', 1)[0] + '.' for key in state_dict})
        raise ValueError(f'prefix={prefix!r}: no key of {source} starts with it; its keys start '
                         f'with {_key_list(heads)}')
    return selected


def _matching_keys(state_dict: Mapping[str, Tensor], model_keys: set[str]) -> int:
    return sum(key in model_keys for key in state_dict)


def load_pretrained(module: nn.Module, checkpoint: str | os.PathLike, prefix: str | None = None,
                    map_location: str | torch.device = 'cpu') -> LoadReport:
    """Load a checkpoint into ``module`` non-strictly, logging missing and unexpected keys.

    A local file whose keys match none of the module's is converted with the module's
    ``convert_torchvision_state_dict`` method when it has one (MobileNetV2, VGG), so that a
    copied torchvision file loads as ``torchvision://`` would.

    Args:
        module: the model (or backbone) to load into.
        checkpoint: a local path or ``torchvision://NAME`` (see :func:`resolve_checkpoint`).
        prefix: keep only the checkpoint keys starting with it, without it (``'backbone.'``).
        map_location: where ``torch.load`` puts the tensors.

    Returns:
        The keys loaded, missing from the checkpoint and unexpected by the model.

    Raises:
        FileNotFoundError: the checkpoint file is not there (see :func:`resolve_checkpoint`).
        ValueError: the file is unreadable, ``prefix`` selects nothing, a key's shape differs
            from the model's (naming the key and both shapes), or no key matches the model.
    """
    resolved = resolve_checkpoint(checkpoint)
    source = (f'{checkpoint} ({resolved.path})' if resolved.torchvision_model
              else resolved.path)
    state_dict = load_state_dict_file(resolved.path, map_location)
    if prefix:
        state_dict = select_prefix(state_dict, prefix, source)

    model_state = module.state_dict()
    model_keys = set(model_state)
    if resolved.torchvision_model is not None:
        state_dict = convert_torchvision_state_dict(resolved.torchvision_model, state_dict)
    elif _matching_keys(state_dict, model_keys) == 0 and isinstance(
            module, TorchvisionKeyConverter):
        converted = module.convert_torchvision_state_dict(state_dict)
        if _matching_keys(converted, model_keys) > 0:
            print_log(f'{source}: torchvision key layout detected and converted for '
                      f'{type(module).__name__}', logger='current', level=logging.INFO)
            state_dict = converted

    matched = [key for key in state_dict if key in model_keys]
    if not matched:
        raise ValueError(
            f'checkpoint {source}: none of its {len(state_dict)} keys matches '
            f'{type(module).__name__}; the model expects keys such as '
            f'{_key_list(sorted(model_keys)[:5])} but the checkpoint holds '
            f"{_key_list(sorted(state_dict)[:5])}. Is it another model's checkpoint? "
            f"(prefix='backbone.' selects the backbone of a detector checkpoint)")
    mismatched = [f'{key}: checkpoint {tuple(state_dict[key].shape)} vs model '
                  f'{tuple(model_state[key].shape)}'
                  for key in matched if state_dict[key].shape != model_state[key].shape]
    if mismatched:
        raise ValueError(f'checkpoint {source}: {len(mismatched)} keys have a shape other than '
                         f"{type(module).__name__}'s (another depth or width?): "
                         f'{_key_list(mismatched)}')

    result = module.load_state_dict(state_dict, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    name = type(module).__name__
    print_log(f'loaded {len(matched)} tensors of {name} from {source}', logger='current',
              level=logging.INFO)
    if missing:
        print_log(f'{name}: {len(missing)} missing keys, not in checkpoint {source} (left as '
                  f'initialized): {_key_list(missing)}', logger='current', level=logging.WARNING)
    if unexpected:
        print_log(f'{name}: {len(unexpected)} unexpected keys in checkpoint {source} '
                  f'(ignored): {_key_list(unexpected)}', logger='current', level=logging.WARNING)
    return LoadReport(matched, missing, unexpected)


@WEIGHT_INITIALIZERS.register_module(name='Pretrained')
class PretrainedInit:
    """The ``init_cfg`` type ``'Pretrained'`` of detkit: :func:`load_pretrained` as an initializer.

    Args:
        checkpoint: a local path or ``torchvision://NAME``.
        prefix: keep only the checkpoint keys starting with it, without it (``'backbone.'``).
        map_location: where ``torch.load`` puts the tensors.

    Example:
        >>> init_cfg = dict(type='Pretrained', checkpoint='torchvision://mobilenet_v2')
    """

    def __init__(self, checkpoint: str | os.PathLike, prefix: str | None = None,
                 map_location: str | torch.device = 'cpu') -> None:
        if prefix is not None and not isinstance(prefix, str):
            raise ValueError(f"init_cfg type='Pretrained': prefix must be None or a str such as "
                             f"'backbone.', got {prefix!r}")
        self.checkpoint = checkpoint
        self.prefix = prefix
        self.map_location = map_location

    def __call__(self, module: nn.Module) -> None:
        """Load the checkpoint into ``module``.

        Args:
            module: the module whose ``init_cfg`` this is.
        """
        load_pretrained(module, self.checkpoint, self.prefix, self.map_location)
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=f'{type(self).__name__}: loaded from '
                                               f'{self.checkpoint}')
