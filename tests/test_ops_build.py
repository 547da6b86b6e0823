"""The CUDA kernels compile wherever a CUDA toolkit is present, GPU or not.

CI has nvcc but no GPU: this test compiles (or finds in the cache) the CUDA library there, so a
kernel that does not compile cannot land. On a machine without nvcc it is skipped.
"""
import pytest
import torch

from detkit.ops import _extension
from detkit.ops.info import build


@pytest.mark.skipif(not torch.version.cuda or _extension.find_cuda_home() is None,
                    reason='no CUDA toolkit (nvcc) or a CPU-only torch: nothing to compile')
def test_cuda_sources_compile_with_nvcc():
    results = build(cuda=True)
    status = results['cuda']
    assert status is not None
    assert status.compiled, f'the CUDA kernels did not compile: {status.reason}'
    assert status.library is not None and status.library.endswith('.so')
    assert results['cpu'].loaded, results['cpu'].reason
    if torch.cuda.is_available():
        assert status.loaded, status.reason
