"""Crash-safe checkpoints: every file is written atomically and the newest good one is never lost.

mmengine 0.10.7 writes ``epoch_N.pth`` in place (a kill mid-write leaves a truncated file under the
final name), writes ``last_checkpoint`` in place, and with ``max_keep_ckpts`` deletes the oldest
kept checkpoint *before* writing the new one (a kill during that save can leave no checkpoint).
detkit's ``CheckpointHook`` (same name and arguments; configs with ``default_scope = 'detkit'``
get it) changes the order and the writes:

1. the new checkpoint goes to ``epoch_N.pth.tmp-<pid>``, is flushed to disk and renamed onto
   ``epoch_N.pth`` (a rename within one folder is atomic on POSIX and Windows);
2. ``last_checkpoint`` is replaced the same way, so it always names a complete file;
3. only then are checkpoints beyond ``max_keep_ckpts`` deleted.
"""
from __future__ import annotations

import os
import os.path as osp
import tempfile
from collections import deque
from pathlib import Path

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook as MMEngineCheckpointHook

from detkit.errors import InputError
from detkit.registry import HOOKS

ATOMIC_BACKEND = 'detkit_atomic_local'


def replace_as_new_file(tmp_path: str, path: str) -> None:
    """Rename a finished temporary file onto ``path``, with the mode a newly created file gets
    (``mkstemp`` makes its files readable by their owner only)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    os.replace(tmp_path, path)


def atomic_write(data: bytes | str, path: str | os.PathLike, encoding: str = 'utf-8') -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either its old content or all of the new.

    The data goes to a temporary file in the same folder, is flushed and fsync-ed, and is then
    renamed onto ``path``. If anything fails (or the process is interrupted) before the rename,
    ``path`` is untouched and the temporary file is removed where possible.

    Args:
        data: bytes, or text (encoded with ``encoding``).
        path: the destination file; its folder is created if needed.
        encoding: for text data.
    """
    path = os.fspath(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    payload = data.encode(encoding) if isinstance(data, str) else data
    fd, tmp_path = tempfile.mkstemp(prefix=osp.basename(path) + '.tmp-', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        replace_as_new_file(tmp_path, path)
    except BaseException:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
        raise


def check_output_file(path: str | os.PathLike) -> None:
    """Make sure ``path`` can be written before the work that produces it starts.

    Creates the folder if needed (as :func:`atomic_write` would), so that a tool fails in its
    first second, not after an evaluation or a conversion whose result it then could not keep.

    Raises:
        InputError: the folder cannot be created (a file stands in its way, no permission), it
            is not writable, or ``path`` is a folder; the message names the path and why.
    """
    path = os.fspath(path)
    folder = osp.dirname(osp.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise InputError(f'{path!r}: cannot create the folder {folder!r} '
                         f'({error.strerror})') from None
    if osp.isdir(path):
        raise InputError(f'{path!r} is a folder; expected a file name')
    if not os.access(folder, os.W_OK):
        raise InputError(f'{path!r}: the folder {folder!r} is not writable')


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend with atomic ``put`` and ``put_text`` (see
    :func:`atomic_write`); everything else is :class:`mmengine.fileio.LocalBackend`'s."""

    def put(self, obj: bytes, filepath: str | Path) -> None:
        atomic_write(obj, filepath)

    def put_text(self, obj: str, filepath: str | Path, encoding: str = 'utf-8') -> None:
        atomic_write(obj, filepath, encoding)


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


@HOOKS.register_module()
class CheckpointHook(MMEngineCheckpointHook):
    """mmengine's ``CheckpointHook`` with atomic writes and delete-after-save rotation.

    Takes the same arguments as :class:`mmengine.hooks.CheckpointHook`. When ``out_dir`` is
    local (or unset: the work dir) and no ``backend_args`` are given, checkpoints are written
    through :class:`AtomicLocalBackend`.
    """

    keep_ckpt_ids: deque[int]  # the epochs / iterations of the checkpoints kept, oldest first

    def __init__(self, *args, **kwargs) -> None:
        out_dir = kwargs.get('out_dir')
        remote = isinstance(out_dir, str) and '://' in out_dir
        if kwargs.get('backend_args') is None and kwargs.get('file_client_args') is None \
                and not remote:
            kwargs['backend_args'] = dict(backend=ATOMIC_BACKEND)
        super().__init__(*args, **kwargs)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self.max_keep_ckpts > 0:  # no maxlen: rotation deletes files only after a save
            self.keep_ckpt_ids = deque(self.keep_ckpt_ids)

    def _save_checkpoint_with_step(self, runner, step: int, meta: dict) -> None:
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        new_step = self.max_keep_ckpts > 0 and (not self.keep_ckpt_ids
                                                or self.keep_ckpt_ids[-1] != step)
        if new_step:  # recorded before saving, so that the checkpoint lists itself
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        runner.save_checkpoint(
            self.out_dir, ckpt_filename, self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta,
            by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        atomic_write(self.last_ckpt, osp.join(runner.work_dir, 'last_checkpoint'))
        if self.max_keep_ckpts <= 0:  # every checkpoint is kept
            return
        while len(self.keep_ckpt_ids) > self.max_keep_ckpts:
            old_path = self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(self.keep_ckpt_ids.popleft()))
            if self.file_backend.isfile(old_path):
                self.file_backend.remove(old_path)
            elif self.file_backend.isdir(old_path):  # deepspeed saves folders
                self.file_backend.rmtree(old_path)
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
