"""What the detection data sets share once their annotations are read: training-time image
filtering and per-image labels."""
from __future__ import annotations

import logging

from mmengine.logging import print_log

FILTER_KEYS = ('filter_empty_gt', 'min_size')


def filter_images(data_list: list[dict], filter_cfg: dict | None, test_mode: bool,
                  source: str) -> list[dict]:
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
    kept, num_empty, num_small = [], 0, 0
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


def trained_labels(info: dict) -> list[int]:
    """The labels of an image's non-ignored objects, repeats kept (for class-balanced sampling).

    Args:
        info: one data-list entry with ``instances``.
    """
    return [i['bbox_label'] for i in info['instances'] if i['ignore_flag'] == 0]
