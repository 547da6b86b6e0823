"""Resume mmengine checkpoints with ``torch.load(weights_only=True)`` (torch >= 2.6).

mmengine 0.10.7 saves its ``MessageHub`` into every checkpoint. The hub's ``HistoryBuffer``
objects pickle their numpy arrays and, through mmengine's registry of statistics methods,
``getattr(HistoryBuffer, 'min')``-style references; ``runtime_info`` holds numpy scalars and the
schedulers a ``collections.Counter``. torch's safe unpickler rightly refuses all of these by
default. Two measures, neither of which turns safe loading off:

1. ``HistoryBuffer`` is pickled as ``HistoryBuffer(log_list, count_list, max_length)`` (a
   ``copyreg`` reducer): plain lists of numbers, no arrays and no ``getattr``. Allowing
   ``builtins.getattr`` would let a crafted checkpoint reach any attribute of an allowed object.
2. Exactly these globals are allow-listed: ``HistoryBuffer``, numpy's scalar constructor with
   the ``dtype`` classes of numpy's numeric scalars, and ``collections.Counter``.

Anything else in a checkpoint is still refused by torch with an error naming the global.
"""
from __future__ import annotations

import collections
import copyreg

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

_NUMERIC_DTYPES = (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
                   np.uint8, np.uint16, np.uint32, np.uint64, np.bool_)


def _reduce_history_buffer(buffer: HistoryBuffer) -> tuple:
    log, count = buffer.data
    return HistoryBuffer, (log.tolist(), count.tolist(), buffer.max_length)


def _numpy_scalar_reconstructor():
    core = getattr(np, '_core', None) or np.core  # numpy 2 renamed numpy.core to numpy._core
    return core.multiarray.scalar


def safe_checkpoint_globals() -> list:
    """The exact types detkit adds to torch's ``weights_only`` allow-list.

    Returns:
        ``HistoryBuffer``, numpy's scalar reconstructor, ``numpy.dtype`` and the dtype classes
        of numpy's numeric scalars, and ``collections.Counter``.
    """
    dtype_classes = [type(np.dtype(t)) for t in _NUMERIC_DTYPES]
    return [HistoryBuffer, _numpy_scalar_reconstructor(), np.dtype, *dtype_classes,
            collections.Counter]


def enable_safe_resume() -> None:
    """Make mmengine checkpoints loadable with torch's safe unpickler (idempotent).

    Registers the ``HistoryBuffer`` reducer for checkpoints written from now on and allow-lists
    :func:`safe_checkpoint_globals`.
    """
    copyreg.pickle(HistoryBuffer, _reduce_history_buffer)
    torch.serialization.add_safe_globals(safe_checkpoint_globals())
