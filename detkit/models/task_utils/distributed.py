"""Loss normalisers that agree across the processes of a distributed run."""
from __future__ import annotations

import torch.distributed as dist
from torch import Tensor


def mean_over_processes(value: Tensor) -> Tensor:
    """The mean of ``value`` over the processes of the default group (``value`` itself when not
    distributed).

    A head that divides its loss by its own positive count gives, under DistributedDataParallel
    (which averages gradients), a different update than one process with the same global batch.
    Dividing by the mean count over processes instead makes the two equal:
    ``mean_r(S_r / mean(N)) = sum(S_r) / sum(N)``.

    Args:
        value: a scalar tensor (e.g. a positive-anchor count), on the device the backend uses.

    Returns:
        A new tensor; no gradient flows through the all-reduce.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    total = value.detach().clone().float()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return (total / dist.get_world_size()).to(value.dtype)
