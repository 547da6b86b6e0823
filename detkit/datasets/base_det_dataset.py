"""What detkit's detection data sets share: bad-sample handling, training-time image filtering
and per-image labels, on top of mmengine's ``BaseDataset``."""
from __future__ import annotations

import logging
from typing import Any, Callable

from mmengine.dataset import BaseDataset
from mmengine.dataset.base_dataset import force_full_init
from mmengine.logging import print_log

from .bad_samples import BadSampleHandler

FILTER_KEYS = ('filter_empty_gt', 'min_size')

# One image of a data list: ``img_path``, ``img_id``, ``height``, ``width`` and ``instances``
# (dicts with ``bbox`` xyxy in pixels, ``bbox_label`` and ``ignore_flag``), plus what a data
# set or mmengine adds (VOC's ``stem``, ``sample_idx``): an open dict, not a TypedDict.
DataInfo = dict[str, Any]

# A data set's pipeline step: a transform config (built from detkit's TRANSFORMS) or a callable
# that takes the results dict and returns it updated (``None``: mmengine draws another sample).
PipelineStep = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any] | None]


def filter_images(data_list: list[DataInfo], filter_cfg: dict[str, Any] | None,
                  test_mode: bool, source: str) -> list[DataInfo]:
    """Apply a data set's ``filter_cfg`` in training; in ``test_mode`` every image is kept.

    Args:
        data_list: one dict per image with ``width``, ``height`` and ``instances``
            (``ignore_flag`` 0 or 1 each).
        filter_cfg: ``filter_empty_gt=True`` drops images without a non-ignored object;
            ``min_size=32`` drops images whose shorter side is below 32 px.
        test_mode: whether the data set is for evaluation (then nothing is dropped).
        source: names the data set in the log line, e.g. ``'CocoDataset (ann.json)'``.

    Returns:
        The kept images, in order; a log line counts what each rule dropped.
    """
    if test_mode or not filter_cfg:
        return data_list
    filter_empty_gt = bool(filter_cfg.get('filter_empty_gt', False))
    min_size = filter_cfg.get('min_size', 0) or 0
    kept: list[DataInfo] = []
    num_empty, num_small = 0, 0
    for info in data_list:
        if filter_empty_gt and not any(i['ignore_flag'] == 0 for i in info['instances']):
            num_empty += 1
        elif min(info['width'], info['height']) < min_size:
            num_small += 1
        else:
            kept.append(info)
    if num_empty or num_small:
        print_log(f'{source}: kept {len(kept)} of {len(data_list)} images (filter_empty_gt '
                  f'dropped {num_empty}, min_size={min_size} dropped {num_small})',
                  logger='current', level=logging.INFO)
    return kept


def trained_labels(info: DataInfo) -> list[int]:
    """The labels of an image's non-ignored objects, repeats kept (for class-balanced sampling).

    Args:
        info: one data-list entry with ``instances``.

    Returns:
        The ``bbox_label`` of every instance whose ``ignore_flag`` is 0, in order.
    """
    return [i['bbox_label'] for i in info['instances'] if i['ignore_flag'] == 0]


class BaseDetDataset(BaseDataset):
    """mmengine's ``BaseDataset`` with what every detkit detection data set does the same way.

    A subclass reads its annotation format in ``load_data_list`` into one dict per image
    (``img_path``, ``width``, ``height``, ``instances`` with ``bbox``, ``bbox_label`` and
    ``ignore_flag``) and passes its constructor arguments on; this class adds:

    - ``bad_sample`` (``'error'`` or ``'skip'``): what happens when an image cannot be read, see
      :mod:`detkit.datasets.bad_samples`; ``skipped_files`` lists what was skipped;
    - ``filter_cfg`` applied in training by :func:`filter_images`;
    - ``get_cat_ids`` for class-balanced sampling.

    Args:
        bad_sample: ``'error'`` (default) or ``'skip'``.
        **kwargs: mmengine ``BaseDataset`` arguments.
    """

    def __init__(self, bad_sample: str = 'error', **kwargs: Any) -> None:
        self.bad_samples = BadSampleHandler(bad_sample, owner=type(self).__name__)
        super().__init__(**kwargs)

    @property
    def skipped_files(self) -> list[str]:
        """The image paths skipped so far because they cannot be read (``bad_sample='skip'``)."""
        return self.bad_samples.skipped_files

    def prepare_data(self, idx: int) -> Any:
        """The pipeline's output for sample ``idx``; ``None`` for a skipped unreadable image
        (mmengine then draws another)."""
        return self.bad_samples.prepare(self, idx, super().prepare_data)

    def filter_data(self) -> list[DataInfo]:
        """Apply ``filter_cfg`` in training (see :func:`filter_images`)."""
        return filter_images(self.data_list, self.filter_cfg, self.test_mode,
                             f'{type(self).__name__} ({self.ann_file or self.data_root})')

    @force_full_init
    def get_cat_ids(self, idx: int) -> list[int]:
        """The labels of the non-ignored objects of image ``idx`` (class-balanced sampling)."""
        return trained_labels(self.get_data_info(idx))
