"""Report and prebuild detkit's compiled kernels (``detkit.ops.info()``, ``.build()``)."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from . import _extension


def info(load: bool = False) -> dict:
    """Which compiled kernels are built (in the cache) and loaded (in this process).

    Args:
        load: also load kernels that are already compiled (never compiles).

    Returns:
        A dict: ``torch``, ``cache_dir``, and per kind (``'cpu'``, ``'cuda'``) the fields of
        :class:`~detkit.ops._extension.KernelStatus` (``compiled``, ``loaded``, ``library``,
        ``reason``), plus ``isa`` (CPU instruction set in use), ``threads`` (``'openmp'``: the CPU
        kernels use torch's intra-op threads; ``'serial'``: one thread) and
        ``arch_list``/``nvcc`` (CUDA).
    """
    report: dict[str, Any] = {'torch': torch.__version__, 'torch_cuda': torch.version.cuda,
              'cache_dir': str(_extension.cache_root())}
    for kind in _extension.KINDS:
        library = _extension.library(kind)
        if load and not library.loaded and library.compiled_library() is not None:
            library.ensure(build=False)
        report[kind] = dataclasses.asdict(library.status())
    loaded = report['cpu']['loaded']
    report['cpu']['isa'] = torch.ops.detkit_cpu.cpu_isa() if loaded else None
    report['cpu']['threads'] = torch.ops.detkit_cpu.parallel_backend() if loaded else None
    home = _extension.find_cuda_home()
    report['cuda']['nvcc'] = str(home / 'bin' / 'nvcc') if home else None
    report['cuda']['nvcc_version'] = _extension.nvcc_version() if home else None
    report['cuda']['arch_list'] = _extension.cuda_arch_list()
    report['cuda']['device_available'] = torch.cuda.is_available()
    return report


def build(cuda: bool | None = None) -> dict:
    """Compile (or find in the cache) and load the kernels: ``python -m detkit.ops build``.

    Args:
        cuda: build the CUDA library too. None: when a CUDA toolkit (nvcc) is found, which needs
            no GPU. False: CPU only.

    Returns:
        ``{'cpu': KernelStatus, 'cuda': KernelStatus or None}`` (None: not attempted).
    """
    results: dict = {}
    cpu = _extension.library('cpu')
    cpu.ensure(build=True)
    results['cpu'] = cpu.status()
    if cuda is None:
        cuda = bool(torch.version.cuda) and _extension.find_cuda_home() is not None
    results['cuda'] = None
    if cuda:
        library = _extension.library('cuda')
        library.ensure(build=True)
        results['cuda'] = library.status()
    return results
