"""Check, when detkit is imported, that the installed torch and torchvision belong together.

torchvision's wheels are built against one torch release and one build of it (CPU, a CUDA
version). Given another torch, ``import torchvision`` fails deep inside torchvision
(``operator torchvision::nms does not exist``) or, where it imports, its operators fail on
first use. Both happen when a torch already installed (say a CUDA build) meets a torchvision
that pip took for another one. This module turns that into one message naming both versions
and the fix, raised from ``import detkit``.

Pairing rule (every release since torch 2.1 / torchvision 0.16): torch ``2.Y.*`` goes with
torchvision ``0.(Y+15).*``, both from the same index (PyPI, or one of PyTorch's CPU/CUDA
indexes).
"""
from __future__ import annotations

import importlib.metadata
from typing import Callable

TESTED_PAIR = ('2.14.1', '0.29.1')  # what requirements/lock.txt installs and CI tests
TORCHVISION_MINOR_OFFSET = 15       # torch 2.Y pairs with torchvision 0.(Y+15)


class TorchPairError(ImportError):
    """torch and torchvision do not belong together."""


def _major_minor(version: str) -> tuple[int, int] | None:
    """``(major, minor)`` of a version string such as ``'2.14.1+cpu'``, or None."""
    parts = version.split('+')[0].split('.')
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def expected_torchvision_minor(torch_version: str) -> int | None:
    """The torchvision minor version built for ``torch_version`` (``'2.14.1'`` -> 29); None
    where the rule does not apply (torch 1.x, 2.0, or an unparsable version)."""
    torch_mm = _major_minor(torch_version)
    if torch_mm is None or torch_mm[0] != 2 or torch_mm[1] < 1:
        return None
    return torch_mm[1] + TORCHVISION_MINOR_OFFSET


def fix_message(torch_version: str) -> str:
    """How to get a matching pair, for a user who keeps ``torch_version`` or takes detkit's."""
    keep = ''
    minor = expected_torchvision_minor(torch_version)
    if minor is not None:
        keep = (f'To keep torch {torch_version}, install the torchvision built for it '
                f'(torchvision 0.{minor}.*) from the same index as that torch, e.g. '
                f'pip install "torchvision==0.{minor}.*" --index-url '
                'https://download.pytorch.org/whl/<cpu|cu1xx>.\n')
    return (f'{keep}To take the pair detkit is tested with: pip install '
            f'torch=={TESTED_PAIR[0]} torchvision=={TESTED_PAIR[1]} (or reinstall detkit with '
            'the README\'s install command, which pins both).')


def check_torch_pair(torch_version: str, torchvision_version: str | None,
                     import_torchvision: Callable[[], object]) -> None:
    """Raise :class:`TorchPairError` unless torchvision imports and was built for this torch.

    Args:
        torch_version: ``torch.__version__``.
        torchvision_version: torchvision's installed version (from its package metadata, which
            can be read when the import fails), or None when it is not installed.
        import_torchvision: imports torchvision (a parameter so that tests can fail it).

    Raises:
        TorchPairError: torchvision is missing, fails to import, or its minor version is not
            the one built for ``torch_version``; the message names both versions and the fix.
    """
    if torchvision_version is None:
        raise TorchPairError(f'detkit needs torchvision, which is not installed (torch is '
                             f'{torch_version}).\n{fix_message(torch_version)}')
    pair = f'torch {torch_version} and torchvision {torchvision_version}'
    try:
        import_torchvision()
    except Exception as error:  # torchvision raises RuntimeError (missing operator) or others
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise TorchPairError(
            f'{pair} do not belong together: import torchvision failed with "{reason}". '
            'torchvision was built for another torch release or build (CPU vs CUDA).\n'
            f'{fix_message(torch_version)}') from error
    minor = expected_torchvision_minor(torch_version)
    have = _major_minor(torchvision_version)
    if minor is not None and have is not None and have != (0, minor):
        raise TorchPairError(
            f'{pair} do not belong together: torch {torch_version} pairs with torchvision '
            f'0.{minor}.*, and torchvision\'s operators (nms, roi_align) fail with another '
            f'one.\n{fix_message(torch_version)}')


def check_installed_torch_pair() -> None:
    """:func:`check_torch_pair` for the torch that is imported and the installed torchvision."""
    import torch

    try:
        torchvision_version: str | None = importlib.metadata.version('torchvision')
    except importlib.metadata.PackageNotFoundError:
        torchvision_version = None

    def import_torchvision() -> object:
        import torchvision
        return torchvision

    check_torch_pair(torch.__version__, torchvision_version, import_torchvision)
