"""Save the random generators' states in checkpoints so that a resumed run continues exactly.

mmengine seeds the generators once at start. A run resumed from ``epoch_N.pth`` is seeded again
and so draws different random numbers from then on than the run that wrote the checkpoint:
different flips (``RandomFlip`` uses numpy's generator when ``num_workers=0``) and different
RoI samples (Faster R-CNN's sampler uses torch's). ``RNGStateHook`` stores Python's, numpy's and
torch's CPU (and CUDA, where present) generator states in the checkpoint and restores them on
resume. With ``randomness=dict(seed=..., deterministic=True)`` a run killed and resumed ends
with the same weights as one that was never interrupted (tested on the CPU).

Data loader workers draw from their own generators: mmengine re-seeds them identically every
epoch when ``persistent_workers=False``, so resumption stays exact with workers too; persistent
workers carry their state across epochs, which no checkpoint holds.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from mmengine.hooks import Hook

from detkit.registry import HOOKS

KEY = 'rng_state'


def capture_rng_state() -> dict:
    """The current states of Python's, numpy's and torch's global generators.

    Returns:
        A dict of tensors, ints and tuples only (loadable with ``weights_only=True``).
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = dict(
        python=random.getstate(),
        numpy=dict(name=name, keys=torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                   pos=int(pos), has_gauss=int(has_gauss), cached_gaussian=float(cached)),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Set the global generators to a state from :func:`capture_rng_state`."""
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state['numpy']
    np.random.set_state((numpy_state['name'], numpy_state['keys'].numpy().astype(np.uint32),
                         numpy_state['pos'], numpy_state['has_gauss'],
                         numpy_state['cached_gaussian']))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        cuda_states = state['cuda']
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Writes the generators' states into every checkpoint and restores them on resume."""

    priority = 'VERY_LOW'  # after the other hooks have used the generators for this step

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[KEY] = capture_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Only when resuming: weights loaded to start a new run (load_from) start fresh draws.
        if KEY in checkpoint and getattr(runner, '_resume', False):
            restore_rng_state(checkpoint[KEY])
