"""Distributed training and testing on CPUs (gloo), which mmengine 0.10.7 cannot start alone.

Under ``torchrun`` with ``--launcher pytorch``, mmengine 0.10.7 calls ``torch.cuda.set_device``
before creating the process group and wraps the model in DistributedDataParallel with
``device_ids=[LOCAL_RANK]``; both fail on a machine without a GPU. :func:`configure_launcher`
(called by ``tools/train.py`` and ``tools/test.py``) makes a CPU run work:

- the process group is created without touching CUDA (``enable_cpu_process_group``);
- ``env_cfg.dist_cfg.backend`` becomes ``'gloo'`` when it asks for NCCL, which needs GPUs;
- the model is wrapped by :class:`CPUDistributedDataParallel` (``device_ids=None``).

On machines with CUDA nothing changes.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as torch_dist
from mmengine.dist import utils as mmengine_dist_utils
from mmengine.model import MMDistributedDataParallel

from detkit.registry import MODEL_WRAPPERS

_MMENGINE_INIT_PYTORCH = mmengine_dist_utils._init_dist_pytorch


def _init_dist_pytorch_cpu_aware(backend: str, init_backend: str = 'torch', **kwargs) -> None:
    if torch.cuda.is_available() or init_backend != 'torch':
        return _MMENGINE_INIT_PYTORCH(backend, init_backend=init_backend, **kwargs)
    torch_dist.init_process_group(backend=backend, rank=int(os.environ['RANK']),
                                  world_size=int(os.environ['WORLD_SIZE']), **kwargs)


def enable_cpu_process_group() -> None:
    """Let mmengine's ``init_dist('pytorch', ...)`` create a process group without CUDA
    (idempotent; with CUDA present mmengine's own function runs)."""
    mmengine_dist_utils._init_dist_pytorch = _init_dist_pytorch_cpu_aware


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
