"""`import detkit` stops with both versions and the fix when torch and torchvision do not pair."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from detkit.torch_pair import (
    TorchPairError,
    check_torch_pair,
    expected_torchvision_minor,
    fix_message,
)


def _imports() -> object:
    return object()


def _fails() -> object:
    raise RuntimeError('operator torchvision::nms does not exist')


@pytest.mark.parametrize('torch_version, minor', [
    ('2.14.1', 29), ('2.13.0+cpu', 28), ('2.1.2+cu121', 16), ('2.0.1', None), ('1.13.1', None),
    ('nightly', None)])
def test_pairing_rule(torch_version, minor):
    assert expected_torchvision_minor(torch_version) == minor


def test_matching_pairs_pass():
    check_torch_pair('2.14.1', '0.29.1', _imports)
    check_torch_pair('2.13.0+cpu', '0.28.0+cpu', _imports)
    check_torch_pair('2.0.1', '0.15.2', _imports)  # before the rule: only the import counts


def test_torchvision_that_fails_to_import_names_both_versions_and_the_fix():
    with pytest.raises(TorchPairError) as info:
        check_torch_pair('2.13.0+cpu', '0.29.1', _fails)
    message = str(info.value)
    assert message.startswith('torch 2.13.0+cpu and torchvision 0.29.1 do not belong together')
    assert 'operator torchvision::nms does not exist' in message
    assert 'torchvision 0.28.*' in message and 'torch==2.14.1 torchvision==0.29.1' in message
    assert isinstance(info.value, ImportError)


def test_wrong_minor_is_refused_even_when_it_imports():
    with pytest.raises(TorchPairError, match=r'torch 2\.14\.1 pairs with torchvision 0\.29\.\*'):
        check_torch_pair('2.14.1', '0.28.0', _imports)


def test_missing_torchvision():
    with pytest.raises(TorchPairError, match='needs torchvision, which is not installed'):
        check_torch_pair('2.14.1', None, _imports)


def test_fix_message_without_rule_still_names_the_tested_pair():
    message = fix_message('1.13.1')
    assert 'keep' not in message and 'torch==2.14.1 torchvision==0.29.1' in message


def test_import_detkit_with_a_torchvision_that_fails(tmp_path):
    """A torchvision shadowed by one that fails as a mismatched build does: `import detkit`
    exits with detkit's message (the real torchvision's metadata gives its version)."""
    fake = tmp_path / 'torchvision'
    fake.mkdir()
    (fake / '__init__.py').write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp_path), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]))
    result = subprocess.run([sys.executable, '-c', 'import detkit'], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    ours = [line for line in result.stderr.splitlines() if line.startswith('detkit.torch_pair')]
    assert len(ours) == 1
    assert ours[0].startswith(f'detkit.torch_pair.TorchPairError: torch {torch.__version__} and '
                              'torchvision ')
    assert 'operator torchvision::nms does not exist' in ours[0]
    assert result.stderr.rstrip().endswith('(or reinstall detkit with the README\'s install '
                                           'command, which pins both).')
