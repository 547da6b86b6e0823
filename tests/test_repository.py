"""The repository keeps its promises: CI runs the README's commands, and the lock files pin
every requirement of setup.cfg to a version inside its range."""
from __future__ import annotations

import configparser
import os.path as osp
import re

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def readme_command(section: str) -> str:
    """The one command of the first ```bash block under ``## <section>``."""
    with open(osp.join(REPO, 'README.md'), encoding='utf-8') as f:
        text = f.read()
    body = text.split(f'\n## {section}\n', 1)[1].split('\n## ', 1)[0]
    block = re.search(r'```bash\n(.*?)```', body, re.S)
    assert block is not None, f'no bash block under ## {section}'
    lines = [line for line in block.group(1).splitlines() if line and not line.startswith('#')]
    assert len(lines) == 1, lines
    return lines[0]


def ci_commands() -> list[str]:
    with open(osp.join(REPO, '.ci', 'run'), encoding='utf-8') as f:
        lines = [line.strip() for line in f]
    return [line for line in lines if line and not line.startswith(('#', 'set ', 'cd '))]


def test_ci_runs_the_readme_commands_then_lint_and_types():
    assert ci_commands() == [readme_command('Install'), readme_command('Test'),
                             'ruff check detkit tools tests configs', 'mypy']
    assert readme_command('Install') == \
        'pip install -e ".[dev,deploy,eval,vis]" -c requirements/lock.txt'


def lock_pins(name: str, seen: tuple[str, ...] = ()) -> dict[str, str]:
    """``{canonical name: version}`` of a lock file and the files it nests (-c/-r)."""
    pins: dict[str, str] = {}
    path = osp.join(REPO, 'requirements', name)
    with open(path, encoding='utf-8') as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if not line:
                continue
            nested = re.match(r'^-[cr]\s+(\S+)$', line)
            if nested:
                assert nested.group(1) not in seen
                pins.update(lock_pins(nested.group(1), seen + (name,)))
                continue
            req = Requirement(line)
            specs = list(req.specifier)
            assert len(specs) == 1 and specs[0].operator == '==', f'{name}: {line!r} not exact'
            pins[canonicalize_name(req.name)] = specs[0].version
    return pins


def setup_requirements() -> list[Requirement]:
    parser = configparser.ConfigParser()
    parser.read(osp.join(REPO, 'setup.cfg'), encoding='utf-8')
    texts = parser.get('options', 'install_requires').split('\n')
    for extra in parser.options('options.extras_require'):
        texts += parser.get('options.extras_require', extra).split('\n')
    return [Requirement(t.strip()) for t in texts if t.strip()]


def test_lock_pins_every_requirement_inside_its_range():
    pins = lock_pins('lock.txt')
    without_torch = lock_pins('lock-without-torch.txt')
    assert {'torch', 'torchvision'} <= set(pins) and not {'torch', 'torchvision'} & set(
        without_torch)
    for req in setup_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f'setup.cfg requires {req}; requirements/lock.txt does not pin it'
        assert req.specifier.contains(pins[name], prereleases=True), \
            f'requirements/lock.txt pins {name}=={pins[name]}, outside setup.cfg\'s {req}'
    for tool in ('pytest', 'ruff', 'mypy'):
        assert tool in without_torch
