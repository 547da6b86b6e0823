"""Fused C++/CUDA kernels for detkit's losses and RoIAlign, with pure-PyTorch fallbacks.

Each loss op computes its loss and, when the logits require grad, its gradient in one pass; CPU
tensors run the C++ kernel, CUDA tensors the CUDA kernel, and where a kernel cannot be built or
loaded the pure-PyTorch reference runs instead (one :class:`OpsFallbackWarning` says why).
:func:`multi_level_roi_align` pools RoIs from several pyramid levels in one multi-threaded CPU
kernel; on CUDA it runs torchvision's RoIAlign per level.
The kernels are compiled on first use into a cache; ``python -m detkit.ops build`` prebuilds them
and ``python -m detkit.ops`` reports what is compiled and loaded (see ``detkit/ops/_extension.py``
for the environment variables).
"""
from __future__ import annotations

from ._extension import OpsFallbackWarning
from .focal_loss import sigmoid_focal_loss, sigmoid_focal_loss_reference
from .group_softmax import group_softmax_cross_entropy, group_softmax_cross_entropy_reference
from .info import build, info
from .roi_align import multi_level_roi_align, multi_level_roi_align_reference, roi_compute_dtype

__all__ = ['OpsFallbackWarning', 'build', 'group_softmax_cross_entropy',
           'group_softmax_cross_entropy_reference', 'info', 'multi_level_roi_align',
           'multi_level_roi_align_reference', 'roi_compute_dtype', 'sigmoid_focal_loss',
           'sigmoid_focal_loss_reference']
