"""Batch samplers registered in DATA_SAMPLERS."""
from __future__ import annotations

from typing import Any, Iterator, Protocol

from torch.utils.data import BatchSampler

from detkit.errors import InputError
from detkit.registry import DATA_SAMPLERS


class SamplerWithDataset(Protocol):
    """An index sampler that knows its data set (e.g. mmengine's ``DefaultSampler``).

    Attributes:
        dataset: has ``get_data_info(idx)``, a dict with ``width`` and ``height``.
    """

    dataset: Any

    def __iter__(self) -> Iterator[int]:
        ...

    def __len__(self) -> int:
        ...


@DATA_SAMPLERS.register_module()
class AspectRatioBatchSampler(BatchSampler):
    """Batch images of the same orientation, so a padded batch wastes little space.

    Indices from ``sampler`` go to one of two buckets, landscape (``width >= height``) or portrait
    (``width < height``), read from ``sampler.dataset.get_data_info(idx)``; a bucket is yielded
    as a batch when it holds ``batch_size`` indices. At the end of the epoch the leftovers of both
    buckets (fewer than ``2 * batch_size``, possibly mixed) are yielded in batches of
    ``batch_size``; ``drop_last`` drops only the final batch shorter than ``batch_size``. Every
    index of ``sampler`` is therefore yielded once (but for a dropped last batch), and
    ``len(self)`` is ``len(sampler) // batch_size`` (``drop_last``) or its ceiling.

    Args:
        sampler: an index sampler whose ``dataset`` has ``get_data_info(idx)`` with ``width``
            and ``height`` (e.g. mmengine's ``DefaultSampler`` over a ``CocoDataset``).
        batch_size: the number of indices per batch.
        drop_last: drop the final batch when it is shorter than ``batch_size``.
    """

    # BatchSampler types it as any iterable of indices; this one reads ``sampler.dataset``.
    sampler: SamplerWithDataset

    def __init__(self, sampler: SamplerWithDataset, batch_size: int,
                 drop_last: bool = False) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise InputError(f'AspectRatioBatchSampler: batch_size must be a positive int, got '
                             f'{batch_size!r}')
        dataset = getattr(sampler, 'dataset', None)
        if dataset is None or not hasattr(dataset, 'get_data_info'):
            raise TypeError(f'AspectRatioBatchSampler: the sampler ({type(sampler).__name__}) '
                            'must have a .dataset with get_data_info(idx) giving width and '
                            'height')
        # BatchSampler.__init__ only stores these; set them directly to skip its int check
        # on samplers that torch does not know.
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self._is_portrait: dict[int, bool] = {}

    def _portrait(self, idx: int) -> bool:
        """Whether image ``idx`` is taller than wide (cached: the data info does not change)."""
        if idx not in self._is_portrait:
            info = self.sampler.dataset.get_data_info(idx)
            if 'width' not in info or 'height' not in info:
                raise KeyError(f'AspectRatioBatchSampler: get_data_info({idx}) has no '
                               f"'width'/'height' (keys: {sorted(info)})")
            self._is_portrait[idx] = info['width'] < info['height']
        return self._is_portrait[idx]

    def __iter__(self) -> Iterator[list[int]]:
        buckets: tuple[list[int], list[int]] = ([], [])  # landscape, portrait
        for idx in self.sampler:
            bucket = buckets[int(self._portrait(idx))]
            bucket.append(idx)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                bucket.clear()
        leftovers = buckets[0] + buckets[1]
        for start in range(0, len(leftovers), self.batch_size):
            batch = leftovers[start:start + self.batch_size]
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return (len(self.sampler) + self.batch_size - 1) // self.batch_size
