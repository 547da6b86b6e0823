"""Distributed training and testing on CPUs (gloo), which mmengine 0.10.7 cannot start alone.

Under ``torchrun`` with ``--launcher pytorch`` on a machine without CUDA, mmengine 0.10.7 fails
twice: it calls ``torch.cuda.set_device(LOCAL_RANK)`` before creating the process group, and it
wraps the model in DistributedDataParallel with ``device_ids=[LOCAL_RANK]``.
:func:`configure_launcher` (called by ``tools/train.py`` and ``tools/test.py``) makes such a run
work, through mmengine's public configuration where it has one:

- ``env_cfg.dist_cfg.backend`` becomes ``'gloo'`` when it asks for NCCL, which needs GPUs;
- ``model_wrapper_cfg`` names :class:`CPUDistributedDataParallel` (registered in detkit's
  ``MODEL_WRAPPERS``), which passes ``device_ids=None`` for a model on the CPU;
- the process group is created without touching CUDA by :func:`enable_cpu_process_group`, the
  one patch (below).

On machines with CUDA nothing changes.

Why a patch. ``Runner.setup_env`` calls ``mmengine.dist.init_dist(launcher, **dist_cfg)``,
which for ``'pytorch'`` calls the private ``mmengine.dist.utils._init_dist_pytorch``; that
calls ``torch.cuda.set_device`` unconditionally. No public mmengine hook runs in between:
``dist_cfg`` only chooses the backend, ``init_backend`` and ``init_process_group``'s arguments,
the ``launcher`` is one of 'pytorch', 'slurm' and 'mpi' (all set a CUDA device), and
``model_wrapper_cfg`` acts once the group exists; the tools build the Runner with
``Runner.from_cfg``, so no Runner subclass can override ``setup_env``. Creating the group
beforehand with ``torch.distributed.init_process_group`` (the Runner then skips ``init_dist``)
would need public calls only, but ``configure_launcher`` runs before the tools merge
``--cfg-options``, so a ``dist_cfg`` given on the command line (a ``timeout``, say) would be
silently ignored. The patch therefore replaces ``_init_dist_pytorch`` (the name is
:data:`MMENGINE_INIT_PYTORCH`) by a function that, without CUDA, calls the public
``torch.distributed.init_process_group`` with mmengine's final ``dist_cfg``, and otherwise
mmengine's own function. ``tests/test_distributed.py`` fails, naming the function and
mmengine's version, if mmengine drops it or ``init_dist`` stops calling it.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import mmengine
import torch
import torch.distributed as torch_dist
from mmengine.dist import utils as mmengine_dist_utils
from mmengine.model import MMDistributedDataParallel

from detkit.registry import MODEL_WRAPPERS

#: The private function of ``mmengine.dist.utils`` that :func:`enable_cpu_process_group`
#: replaces: ``mmengine.dist.init_dist('pytorch', ...)`` looks it up there at call time.
MMENGINE_INIT_PYTORCH = '_init_dist_pytorch'

# mmengine's own function, kept when it is replaced (None before enable_cpu_process_group).
_mmengine_init_pytorch: Callable[..., None] | None = None


def _init_dist_pytorch_cpu_aware(backend: str, init_backend: str = 'torch',
                                 **kwargs: Any) -> None:
    """Create the process group as mmengine does, but without CUDA when there is none."""
    assert _mmengine_init_pytorch is not None  # set by enable_cpu_process_group
    if torch.cuda.is_available() or init_backend != 'torch':
        _mmengine_init_pytorch(backend, init_backend=init_backend, **kwargs)
    else:
        torch_dist.init_process_group(backend=backend, rank=int(os.environ['RANK']),
                                      world_size=int(os.environ['WORLD_SIZE']), **kwargs)


def enable_cpu_process_group() -> None:
    """Let mmengine's ``init_dist('pytorch', ...)`` create a process group without CUDA.

    Replaces ``mmengine.dist.utils._init_dist_pytorch`` (see the module docstring for why no
    public API does this); idempotent. With CUDA present mmengine's own function runs.

    Raises:
        RuntimeError: the installed mmengine has no ``mmengine.dist.utils._init_dist_pytorch``
            (naming its version), so a CPU distributed run cannot be started.
    """
    global _mmengine_init_pytorch
    current = getattr(mmengine_dist_utils, MMENGINE_INIT_PYTORCH, None)
    if current is _init_dist_pytorch_cpu_aware:
        return
    if not callable(current):
        raise RuntimeError(
            f'mmengine {mmengine.__version__} has no function mmengine.dist.utils.'
            f'{MMENGINE_INIT_PYTORCH}, which detkit replaces to start a distributed run on a '
            f'machine without CUDA (detkit/engine/distributed.py); use mmengine 0.10.x, or run '
            f'with --launcher none')
    _mmengine_init_pytorch = current
    setattr(mmengine_dist_utils, MMENGINE_INIT_PYTORCH, _init_dist_pytorch_cpu_aware)


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's DistributedDataParallel wrapper for a model on the CPU: ``device_ids`` must be
    ``None`` there (mmengine passes ``[LOCAL_RANK]``). Models on a GPU keep the given ids."""

    def __init__(self, module: torch.nn.Module, device_ids: list[int] | None = None,
                 **kwargs) -> None:
        on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
        super().__init__(module=module, device_ids=None if on_cpu else device_ids, **kwargs)


def configure_launcher(cfg, launcher: str) -> None:
    """Set ``cfg.launcher`` and, for a distributed run on a machine without CUDA, the backend
    and model wrapper that work there.

    Args:
        cfg: the run's mmengine ``Config`` (changed in place).
        launcher: ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
    """
    cfg.launcher = launcher
    if launcher == 'none' or torch.cuda.is_available():
        return
    enable_cpu_process_group()
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'  # NCCL needs GPUs
    if cfg.get('model_wrapper_cfg') is None:
        # Scoped name: mmengine looks the wrapper up with Registry.get, which ignores
        # default_scope.
        cfg.model_wrapper_cfg = dict(
            type='detkit.CPUDistributedDataParallel', broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))


def close_process_group() -> None:
    """End a distributed run cleanly: wait for every process, then destroy the process group.

    Called by ``tools/train.py`` and ``tools/test.py`` when the Runner has finished. A gloo group
    left for the interpreter's shutdown to tear down aborted one process in ten on a 2-core
    machine ("terminate called without an active exception", SIGABRT, after the run had
    finished and saved everything), which torchrun reports as a failed run. The barrier makes
    no process destroy its end while another still uses it. Without a process group it does
    nothing.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()
