"""Make a config's synthetic data set when it is missing, before a run checks its data paths.

A config whose data set detkit can draw itself says so in one top-level key::

    generated_data = dict(kind='shapes', root='data/shapes/', num_train=300, num_val=60, seed=0)

``kind`` names a generator of :mod:`detkit.datasets.synthetic` (:data:`GENERATORS`); the other
keys are its arguments. ``tools/train.py`` and ``tools/test.py`` call
:func:`prepare_generated_data` first: when a data path the run reads is missing under ``root``
and ``root`` does not exist (or is empty), the set is drawn into a temporary folder beside it and
renamed into place, so an interrupted generation never leaves a half-written set. A folder that
exists but lacks files is left alone: the data-path check then lists what is missing. Configs of
real data sets (COCO, CCTSDB, VOC) have no ``generated_data`` and never invent data.
"""
from __future__ import annotations

import contextlib
import fcntl
import inspect
import os
import os.path as osp
import shutil
import tempfile
import time
from typing import Any, Callable, Iterator

from detkit.datasets.synthetic import make_facemask, make_shapes, make_shapes_partial

from .config_checks import missing_data_paths

GENERATORS: dict[str, Callable[..., dict[str, str]]] = {
    'shapes': make_shapes,
    'partial': make_shapes_partial,
    'facemask': make_facemask,
}


def _is_under(path: str, root: str) -> bool:
    path, root = osp.abspath(path), osp.abspath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


@contextlib.contextmanager
def _exclusive(lock_path: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path``: the processes of one distributed run that start
    together generate the set once, the others wait and then find it."""
    with open(lock_path, 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def generate_data_set(spec: dict[str, Any]) -> str:
    """Draw the data set ``spec`` describes into ``spec['root']`` (which must not exist or be
    empty), through a temporary folder that is renamed into place.

    Args:
        spec: ``kind`` (a key of :data:`GENERATORS`), ``root`` and the generator's arguments.

    Returns:
        The log line: where, how many images, which seed and how long it took.

    Raises:
        KeyError: ``kind`` or ``root`` is missing or ``kind`` is unknown, naming the choices.
        TypeError: an argument the generator does not take.
    """
    spec = dict(spec)
    kind, root = spec.pop('kind', None), spec.pop('root', None)
    if kind not in GENERATORS:
        raise KeyError(f'generated_data.kind={kind!r}: expected one of '
                       f'{", ".join(repr(k) for k in GENERATORS)}')
    if not root:
        raise KeyError('generated_data.root is missing: the folder the data set is drawn into')
    root = root.rstrip('/\\') or root
    parent = osp.dirname(osp.abspath(root))
    os.makedirs(parent, exist_ok=True)
    start = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix=f'.{osp.basename(root)}.generating-', dir=parent)
    try:
        try:
            GENERATORS[kind](tmp, **spec)
        except TypeError as error:
            raise TypeError(f'generated_data: {error} (kind={kind!r})') from None
        if osp.isdir(root):  # an empty folder: make room for the rename
            os.rmdir(root)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - start
    parameters = inspect.signature(GENERATORS[kind]).parameters
    value = {name: spec.get(name, p.default) for name, p in parameters.items()}
    return (f'{root}/ was missing: generated the synthetic {kind!r} data set there '
            f'({value["num_train"]} train + {value["num_val"]} val images, seed '
            f'{value["seed"]}) in {seconds:.1f} s')


def prepare_generated_data(cfg: Any, stage: str,
                           log: Callable[[str], None] = print) -> str | None:
    """Generate the config's ``generated_data`` set if the run needs it and it is not there.

    Args:
        cfg: the whole config (``mmengine.Config`` or dict).
        stage: ``'train'`` or ``'test'``: which data paths the run reads.
        log: where the one log line goes.

    Returns:
        The log line when a data set was generated, else None (no ``generated_data`` key, the
        data is there, the missing paths lie elsewhere, or ``root`` exists with other files).
    """
    spec = cfg.get('generated_data')
    if not spec:
        return None
    root = spec.get('root')
    if not root:
        raise KeyError('generated_data.root is missing: the folder the data set is drawn into')
    if not any(_is_under(path, root) for _, path in missing_data_paths(cfg, stage)):
        return None
    lock_path = osp.join(osp.dirname(osp.abspath(root.rstrip('/\\'))),
                         f'.{osp.basename(root.rstrip("/")) or "data"}.lock')
    os.makedirs(osp.dirname(lock_path), exist_ok=True)
    with _exclusive(lock_path):
        if osp.isdir(root) and os.listdir(root):  # there now (another process), or other files
            return None
        line = generate_data_set(dict(spec))
    log(line)
    return line
