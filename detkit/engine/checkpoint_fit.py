"""Read a checkpoint's weights and say, before anything runs, whether they fit a model.

mmengine's Runner loads ``load_from`` non-strictly and only logs the keys that did not fit, so a
checkpoint of another architecture would be evaluated, or trained from, as random weights with
a warning in the log. The tools read the file here first and stop with its name and what is
wrong: unreadable (empty, truncated, another format), no tensors, or keys and shapes that are
not the model's.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from detkit.errors import InputError


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The state dict and ``meta`` of a checkpoint, read with torch's safe unpickler.

    Args:
        path: a ``torch.save`` file: a state dict, or a dict holding one under ``state_dict``
            (mmengine's checkpoints); DistributedDataParallel's ``module.`` prefixes are removed.

    Returns:
        ``(state_dict, meta)``; ``meta`` is ``{}`` where the checkpoint has none.

    Raises:
        FileNotFoundError: no such file.
        InputError: the file is empty, not a PyTorch checkpoint (or a truncated one), holds a
            global the safe unpickler refuses (named), or holds no state dict of tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint {path!r} does not exist')
    if os.path.getsize(path) == 0:
        raise InputError(f'checkpoint {path!r} is an empty file')
    try:
        content = torch.load(path, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError,
            zipfile.BadZipFile) as error:
        reason = _unpickler_reason(str(error))
        if 'Unsupported global' in reason:   # a real checkpoint holding a refused type
            raise InputError(f'cannot load checkpoint {path!r} safely: {reason}') from None
        raise InputError(f'checkpoint {path!r} is not a PyTorch checkpoint or is truncated '
                         f'(torch.load: {type(error).__name__}: {reason})') from None
    if not isinstance(content, dict):
        raise InputError(f'checkpoint {path!r} holds a {type(content).__name__}; expected a '
                         'state dict or a dict with a `state_dict`')
    state = content.get('state_dict', content)
    if not isinstance(state, dict) or not state or not all(
            isinstance(v, Tensor) for v in state.values()):
        raise InputError(f'checkpoint {path!r} has no state dict of tensors')
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    meta = content.get('meta', {})
    return state, meta if isinstance(meta, dict) else {}


def _unpickler_reason(message: str) -> str:
    """The line that says what torch's safe unpickler refused, without the advice around it
    (``Weights only load failed. ... WeightsUnpickler error: <reason>\\n\\nCheck ...``)."""
    marker = 'WeightsUnpickler error:'
    if marker not in message:
        return message
    return ' '.join(message.split(marker, 1)[1].split('Check the documentation')[0].split())


@dataclass
class StateFit:
    """How a checkpoint's state dict fits a model's: the keys by what happens to them."""

    loaded: list[str]        # in both, same shape: these tensors would load
    missing: list[str]       # the model's keys the checkpoint lacks
    unexpected: list[str]    # the checkpoint's keys the model lacks
    mismatched: list[str]    # 'key: checkpoint (shape) vs model (shape)'

    @property
    def exact(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        """The misfits, five keys of each kind at most: '3 keys missing: a, b, c; ...'."""
        parts = []
        for title, keys in (('missing', self.missing), ('unexpected', self.unexpected),
                            ('with other shapes', self.mismatched)):
            if keys:
                shown = ', '.join(keys[:5]) + (f', ... ({len(keys)} in all)'
                                               if len(keys) > 5 else '')
                parts.append(f'{len(keys)} keys {title}: {shown}')
        return '; '.join(parts)


def state_fit(model: torch.nn.Module, state: dict[str, Tensor]) -> StateFit:
    """Compare ``state`` with ``model.state_dict()`` key by key and shape by shape."""
    expected = model.state_dict()
    mismatched = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}'
                  for k in expected if k in state and state[k].shape != expected[k].shape]
    return StateFit(
        loaded=[k for k in expected if k in state and state[k].shape == expected[k].shape],
        missing=sorted(set(expected) - set(state)),
        unexpected=sorted(set(state) - set(expected)),
        mismatched=mismatched)


def check_state_fits(model: torch.nn.Module, state: dict[str, Tensor], path: str, config: str,
                     exact: bool) -> StateFit:
    """Raise unless the state dict read from ``path`` fits ``model``.

    Args:
        model: the built model (weights not loaded yet; a DDP wrapper's ``module`` is used).
        state: the checkpoint's state dict (:func:`read_checkpoint`).
        path: the checkpoint file, for the message.
        config: the config's name, for the message.
        exact: every key and shape must match (evaluation: a missing tensor would be random);
            otherwise (fine-tuning, where a resized classifier is expected not to load) at
            least one tensor must load: a checkpoint of which nothing fits is another model's.

    Returns:
        The fit, for a caller that reports it.

    Raises:
        InputError: the checkpoint does not fit (the message names the file, the config and
            the keys).
    """
    model = getattr(model, 'module', model)
    fit = state_fit(model, state)
    if exact and not fit.exact:
        raise InputError(f'checkpoint {path!r} does not fit the model of config {config} (is '
                         f'it for another architecture or class count?); {fit.describe()}')
    if not exact and not fit.loaded:
        raise InputError(f'none of the {len(state)} tensors of checkpoint {path!r} fits the '
                         f'model of config {config} (another architecture?); '
                         f'{fit.describe()}')
    return fit
