"""Build, cache and load detkit's compiled kernels: one CPU library and one CUDA library.

The kernels are compiled on first use (or by ``python -m detkit.ops build``) with
``torch.utils.cpp_extension.load`` against the torch that is imported, never against a copy in a
build-isolation environment. Each build lives in its own cache folder named after the torch
version and a hash of the sources, the flags, the torch install and the compiler, so a changed
source or a new torch builds anew and an unchanged one is only loaded (no compiler runs).

Environment variables:
    DETKIT_OPS_CACHE: cache root (default ``$XDG_CACHE_HOME/detkit/ops``, else
        ``~/.cache/detkit/ops``).
    DETKIT_OPS_DISABLE=1: never build or load; every op runs the pure-PyTorch reference.
    DETKIT_REQUIRE_OPS=1: a kernel that cannot be built or loaded raises instead of falling back.
    DETKIT_OPS_VERBOSE=1: show the compiler commands and output.
    DETKIT_OPS_CPU_ISA=baseline|avx2|avx512: cap the CPU instruction set the kernels use.
    DETKIT_OPS_POISON=1: fill kernel outputs with NaN before the kernels write (debugging).
    TORCH_CUDA_ARCH_LIST: CUDA architectures to build for (default ``8.0;9.0+PTX``).
    CUDA_HOME: the CUDA toolkit (default: found from ``nvcc`` on PATH or /usr/local/cuda).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parent / 'csrc'
KINDS = ('cpu', 'cuda')
DEFAULT_CUDA_ARCH_LIST = '8.0;9.0+PTX'

_CPU_SOURCES = ('cpu/ops_cpu.cpp', 'cpu/focal_loss_cpu.cpp', 'cpu/group_softmax_cpu.cpp',
                'cpu/roi_align_cpu.cpp')
_CUDA_SOURCES = ('cuda/ops_cuda.cpp', 'cuda/focal_loss_cuda.cu', 'cuda/group_softmax_cuda.cu')
# No -march: one build runs on any CPU of its architecture, and the hot loops pick AVX2/AVX-512
# at run time (csrc/cpu/vec_math.h). -fopenmp-simd enables `omp simd` without an OpenMP runtime;
# -fno-trapping-math lets the compiler turn float selects into blends (without it, gcc keeps
# branches in the AVX2/SSE loops because a compare might raise an FP exception: 6x slower).
# Neither changes results: no -ffast-math, so NaN, inf and rounding keep IEEE semantics.
# -fopenmp: ATen's at::parallel_for is a header template that runs its body on one thread unless
# the including file is compiled with OpenMP; the library then links libgomp.so.1, which resolves
# to the copy torch has already loaded (one OpenMP runtime, torch.set_num_threads applies).
_CPU_CFLAGS = ('-O3', '-fopenmp', '-fno-math-errno', '-fno-trapping-math')
_CPU_LDFLAGS = ('-fopenmp',)
_CUDA_HOST_CFLAGS = ('-O3',)
_CUDA_NVCC_FLAGS = ('-O3', '-std=c++17')


class OpsFallbackWarning(RuntimeWarning):
    """A compiled kernel is unavailable and detkit runs the slower pure-PyTorch reference."""


@dataclass
class KernelStatus:
    """What is known about one compiled library in this process.

    Args:
        kind: ``'cpu'`` or ``'cuda'``.
        compiled: a finished build for this torch and these sources is in the cache.
        loaded: its operators are registered in this process (``torch.ops.detkit_<kind>``).
        library: path of the shared library, when compiled.
        reason: why it is not loaded, or None.
    """

    kind: str
    compiled: bool = False
    loaded: bool = False
    library: str | None = None
    reason: str | None = None


def env_flag(name: str) -> bool:
    """Whether environment variable ``name`` is set to a true value (1, true, yes, on)."""
    return os.environ.get(name, '').strip().lower() in ('1', 'true', 'yes', 'on')


def cache_root() -> Path:
    """The folder under which every build of detkit's kernels is cached."""
    if os.environ.get('DETKIT_OPS_CACHE'):
        return Path(os.environ['DETKIT_OPS_CACHE']).expanduser()
    xdg = os.environ.get('XDG_CACHE_HOME')
    base = Path(xdg).expanduser() if xdg else Path.home() / '.cache'
    return base / 'detkit' / 'ops'


def find_cuda_home() -> Path | None:
    """The CUDA toolkit holding ``bin/nvcc`` and ``include/cuda_runtime.h``, or None.

    Looks at CUDA_HOME / CUDA_PATH, then follows ``nvcc`` on PATH (also through a wrapper script
    that ``exec``s the real one), then /usr/local/cuda.
    """
    candidates: list[Path] = []
    for var in ('CUDA_HOME', 'CUDA_PATH'):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]))
    nvcc = shutil.which('nvcc')
    if nvcc is not None:
        resolved = Path(nvcc).resolve()
        candidates.append(resolved.parent.parent)
        exec_target = _exec_target(resolved)
        if exec_target is not None:
            candidates.append(exec_target.parent.parent)
    candidates.append(Path('/usr/local/cuda'))
    for home in candidates:
        if (home / 'bin' / 'nvcc').exists() and (home / 'include' / 'cuda_runtime.h').exists():
            return home.resolve()
    return None


def _exec_target(script: Path) -> Path | None:
    """The program a small shell wrapper ``exec``s (``exec /path/to/nvcc "$@"``), or None."""
    try:
        if script.stat().st_size > 4096:
            return None
        text = script.read_text(errors='ignore')
    except OSError:
        return None
    match = re.search(r'exec\s+"?([^\s"]+/nvcc)"?', text)
    return Path(match.group(1)) if match else None


def cuda_arch_list() -> str:
    """The CUDA architectures the CUDA library is built for (TORCH_CUDA_ARCH_LIST or default)."""
    return os.environ.get('TORCH_CUDA_ARCH_LIST', '').strip() or DEFAULT_CUDA_ARCH_LIST


def _gencode_flags(arch_list: str) -> list[str]:
    flags = []
    for item in re.split(r'[;\s,]+', arch_list):
        if not item:
            continue
        ptx = item.endswith('+PTX')
        number = item.removesuffix('+PTX')
        if not re.fullmatch(r'\d+\.\d+a?', number):
            raise ValueError(f'TORCH_CUDA_ARCH_LIST: cannot read {item!r}; expected entries '
                             f'like "9.0" or "9.0+PTX" separated by ";"')
        code = number.replace('.', '')
        flags.append(f'-gencode=arch=compute_{code},code=sm_{code}')
        if ptx:
            flags.append(f'-gencode=arch=compute_{code},code=compute_{code}')
    if not flags:
        raise ValueError('TORCH_CUDA_ARCH_LIST is empty')
    return flags


class _Library:
    """One compiled library: its build recipe, its cache folder and its load state."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = f'detkit_ops_{kind}'
        self.lock = threading.Lock()
        self.loaded = False
        self.library: str | None = None
        self.reason: str | None = None
        self.attempted = False

    # ---- recipe -------------------------------------------------------------------------------
    def sources(self) -> list[Path]:
        names = _CPU_SOURCES if self.kind == 'cpu' else _CUDA_SOURCES
        return [CSRC / name for name in names]

    def recipe(self) -> dict:
        """Everything that decides the binary; its hash names the cache folder."""
        recipe = {
            'torch': torch.__version__,
            'torch_dir': str(Path(torch.__file__).resolve().parent),
            'torch_cuda': torch.version.cuda,
            'python': sys.version.split()[0],
            'cxx': os.environ.get('CXX', 'c++'),
            'cflags': list(_CPU_CFLAGS if self.kind == 'cpu' else _CUDA_HOST_CFLAGS),
        }
        if self.kind == 'cpu':
            recipe['ldflags'] = list(_CPU_LDFLAGS)
        if self.kind == 'cuda':
            recipe['nvcc_flags'] = list(_CUDA_NVCC_FLAGS) + _gencode_flags(cuda_arch_list())
            home = find_cuda_home()
            recipe['cuda_home'] = str(home) if home else None
        return recipe

    def build_dir(self) -> Path:
        digest = hashlib.sha256()
        digest.update(repr(sorted(self.recipe().items())).encode())
        # The shared headers and this library's own folder: a CUDA edit leaves the CPU build be.
        own = sorted(CSRC.glob('*')) + sorted((CSRC / self.kind).rglob('*'))
        for path in own:
            if path.is_file():
                digest.update(str(path.relative_to(CSRC)).encode())
                digest.update(path.read_bytes())
        tag = re.sub(r'[^A-Za-z0-9.+_-]', '_', torch.__version__)
        return cache_root() / f'{self.kind}-torch{tag}-{digest.hexdigest()[:16]}'

    def marker(self) -> Path:
        return self.build_dir() / 'BUILD_OK'

    def compiled_library(self) -> str | None:
        """Path of the finished build in the cache, or None."""
        try:
            marker = self.marker()
            if marker.exists():
                library = marker.read_text().strip()
                if library and Path(library).exists():
                    return library
        except OSError:
            pass
        return None

    def unavailable_reason(self) -> str | None:
        """Why this library cannot be built on this machine, or None if it can be tried."""
        if env_flag('DETKIT_OPS_DISABLE'):
            return 'disabled by DETKIT_OPS_DISABLE'
        if self.kind == 'cuda':
            if not torch.version.cuda:
                return f'torch {torch.__version__} was built without CUDA'
            if find_cuda_home() is None:
                return ('no CUDA toolkit found (nvcc and include/cuda_runtime.h); set CUDA_HOME '
                        'or put nvcc on PATH')
        compiler = os.environ.get('CXX', 'c++')
        if shutil.which(compiler) is None:
            return f'no C++ compiler found ({compiler!r} is not on PATH; set CXX)'
        if not _import_cpp_extension('cpu').is_ninja_available():
            return 'the ninja build tool is missing (pip install ninja)'
        return None

    # ---- build and load -----------------------------------------------------------------------
    def ensure(self, build: bool = True) -> bool:
        """Load the library, compiling it first if ``build`` and no cached build exists.

        Returns:
            Whether its operators are now registered in this process.
        """
        with self.lock:
            if self.loaded:
                return True
            if self.attempted and (self.reason is not None) and build:
                return False  # one failed build per process is enough
            if env_flag('DETKIT_OPS_DISABLE'):
                self.reason = 'disabled by DETKIT_OPS_DISABLE'
                return False
            library = self.compiled_library()
            if library is None:
                if not build:
                    self.reason = 'not compiled yet'
                    return False
                self.attempted = True
                reason = self.unavailable_reason()
                if reason is not None:
                    self.reason = reason
                    return False
                try:
                    library = self._compile()
                except Exception as error:  # compiler errors come as RuntimeError/OSError/...
                    self.reason = f'build failed: {_tail(str(error))}'
                    return False
            try:
                torch.ops.load_library(library)
            except Exception as error:
                self.reason = f'cannot load {library}: {_tail(str(error))}'
                return False
            self.loaded, self.library, self.reason = True, library, None
            return True

    def _compile(self) -> str:
        build_dir = self.build_dir()
        build_dir.mkdir(parents=True, exist_ok=True)
        verbose = env_flag('DETKIT_OPS_VERBOSE')
        print(f'detkit.ops: compiling the {self.kind.upper()} kernels into {build_dir} '
              f'(once per torch version and source change)', file=sys.stderr, flush=True)
        extra_include = [str(CSRC)]
        cpp_extension = _import_cpp_extension(self.kind)
        if self.kind == 'cpu':
            library = cpp_extension.load(
                name=self.name, sources=[str(s) for s in self.sources()],
                extra_cflags=list(_CPU_CFLAGS), extra_ldflags=list(_CPU_LDFLAGS),
                extra_include_paths=extra_include,
                build_directory=str(build_dir), is_python_module=False, with_cuda=False,
                verbose=verbose)
        else:
            library = cpp_extension.load(
                name=self.name, sources=[str(s) for s in self.sources()],
                extra_cflags=list(_CUDA_HOST_CFLAGS),
                extra_cuda_cflags=list(_CUDA_NVCC_FLAGS) + _gencode_flags(cuda_arch_list()),
                extra_include_paths=extra_include, build_directory=str(build_dir),
                is_python_module=False, with_cuda=True, verbose=verbose)
        library = str(library) if library else str(build_dir / f'{self.name}.so')
        # The marker of the folder built into, not self.marker(): that hashes the sources again,
        # and a source edited during the build would mark a folder for sources never compiled.
        (build_dir / 'BUILD_OK').write_text(library + '\n')
        return library

    def status(self) -> KernelStatus:
        library = self.library or self.compiled_library()
        reason = self.reason
        if not self.loaded and reason is None:
            reason = self.unavailable_reason() or ('compiled, not loaded yet' if library
                                                   else 'not compiled yet')
        return KernelStatus(self.kind, compiled=library is not None, loaded=self.loaded,
                            library=library, reason=None if self.loaded else reason)


def _import_cpp_extension(kind: str):
    """torch.utils.cpp_extension, with CUDA_HOME pointing at a real toolkit for CUDA builds."""
    if kind == 'cuda':
        home = find_cuda_home()
        if home is not None and not os.environ.get('CUDA_HOME'):
            os.environ['CUDA_HOME'] = str(home)
    # Importing it logs "No CUDA runtime is found" on a machine without a GPU: not news here.
    logger = logging.getLogger('torch.utils.cpp_extension')
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        logger.setLevel(level)
    if kind == 'cuda':
        home = find_cuda_home()
        # The module found CUDA_HOME at its first import, maybe from a wrapper script's folder.
        if home is not None and not (Path(str(cpp_extension.CUDA_HOME)) / 'include' /
                                     'cuda_runtime.h').exists():
            cpp_extension.CUDA_HOME = str(home)
    return cpp_extension


def _tail(text: str, lines: int = 25) -> str:
    kept = text.strip().splitlines()[-lines:]
    return '\n'.join(kept)


_LIBRARIES = {kind: _Library(kind) for kind in KINDS}
_WARNED: set[str] = set()
# Tests set this to True: every output buffer handed to a kernel starts as NaN, so an element the
# kernel forgets to write shows up. DETKIT_OPS_POISON=1 does the same from the environment.
POISON_OUTPUTS = env_flag('DETKIT_OPS_POISON')


def new_output(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
               memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """An uninitialised output buffer for a kernel (NaN-filled when :data:`POISON_OUTPUTS`),
    in ``memory_format``."""
    out = torch.empty(shape, dtype=dtype, device=device, memory_format=memory_format)
    return out.fill_(float('nan')) if POISON_OUTPUTS else out


def library(kind: str) -> _Library:
    """The :class:`_Library` of ``kind`` (``'cpu'`` or ``'cuda'``)."""
    return _LIBRARIES[kind]


def kernels_for(device: torch.device):
    """The compiled operators for tensors on ``device``, or None (after one warning) to fall back.

    Args:
        device: the device of the op's inputs.

    Returns:
        ``torch.ops.detkit_cpu`` / ``torch.ops.detkit_cuda``, or None when no kernel can run there.

    Raises:
        RuntimeError: when DETKIT_REQUIRE_OPS=1 and the kernel cannot be built or loaded.
    """
    kind = device.type
    if kind not in _LIBRARIES:
        reason = f'detkit has no compiled kernels for {kind} tensors'
    else:
        lib = _LIBRARIES[kind]
        if lib.loaded or lib.ensure(build=True):
            return getattr(torch.ops, f'detkit_{kind}')
        reason = lib.reason or 'unknown'
    if env_flag('DETKIT_REQUIRE_OPS'):
        raise RuntimeError(f'detkit.ops: the compiled {kind} kernels are required '
                           f'(DETKIT_REQUIRE_OPS=1) but unavailable: {reason}')
    if kind not in _WARNED:
        _WARNED.add(kind)
        warnings.warn(f'detkit.ops: compiled {kind} kernels unavailable ({reason}); running the '
                      f'pure-PyTorch reference instead, which is slower and uses more memory. '
                      f'`python -m detkit.ops` shows the details.', OpsFallbackWarning,
                      stacklevel=3)
    return None


def nvcc_version() -> str | None:
    """``release X.Y`` of the nvcc in the CUDA toolkit found, or None."""
    home = find_cuda_home()
    if home is None:
        return None
    try:
        out = subprocess.run([str(home / 'bin' / 'nvcc'), '--version'], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'release ([\d.]+)', out)
    return match.group(1) if match else None
