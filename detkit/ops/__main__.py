"""``python -m detkit.ops [info|build]``: report or prebuild detkit's compiled kernels.

``info`` (the default) prints what is compiled and loaded; ``build`` compiles the CPU kernels and,
where a CUDA toolkit is found (no GPU needed), the CUDA kernels, and exits non-zero if a build
that was attempted failed. ``build --cpu-only`` skips CUDA.
"""
from __future__ import annotations

import argparse
import sys

from .info import build, info


def _print_info(report: dict) -> None:
    print(f"torch {report['torch']} (CUDA {report['torch_cuda']}); "
          f"cache {report['cache_dir']}")
    for kind in ('cpu', 'cuda'):
        entry = report[kind]
        state = 'loaded' if entry['loaded'] else ('compiled' if entry['compiled'] else 'missing')
        line = f"  {kind:4s} kernels: {state}"
        if kind == 'cpu' and entry.get('isa'):
            line += f" (instruction set {entry['isa']}, threads: {entry['threads']})"
        if kind == 'cuda':
            line += (f" (nvcc {entry['nvcc_version'] or 'not found'}, archs "
                     f"{entry['arch_list']}, GPU {'yes' if entry['device_available'] else 'no'})")
        print(line)
        if entry['library']:
            print(f"       library: {entry['library']}")
        if entry['reason'] and not entry['loaded']:
            print(f"       not loaded: {entry['reason']}")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(prog='python -m detkit.ops', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('command', nargs='?', default='info', choices=('info', 'build'))
    parser.add_argument('--cpu-only', action='store_true', help='build: skip the CUDA kernels')
    args = parser.parse_args(argv)
    if args.command == 'info':
        _print_info(info(load=True))
        return 0
    results = build(cuda=False if args.cpu_only else None)
    _print_info(info(load=False))
    failed = [kind for kind, status in results.items()
              if status is not None and not status.loaded]
    if results['cuda'] is None:
        print('  (CUDA build skipped: ' + ('--cpu-only' if args.cpu_only else
                                          'no CUDA toolkit found') + ')')
    if failed:
        print(f"build failed for: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
