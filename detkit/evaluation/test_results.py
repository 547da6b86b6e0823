"""A config's test set beside a results file of ``tools/test.py --out``, per image, for the
analysis tools (``confusion_matrix.py``, ``pr_curves.py``)."""
from __future__ import annotations

import json
import os.path as osp
from typing import Any

import numpy as np
from mmengine.config import Config
from mmengine.registry import DefaultScope

from detkit.errors import InputError
from detkit.registry import DATASETS


def load_images(config: str | Config,
                results_file: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Ground truth of the config's test set beside the detections of ``results_file``.

    Args:
        config: a config file (read with its ``own_data``, as tools/test.py reads it) or a
            loaded ``Config``.
        results_file: the COCO results JSON of ``tools/test.py --out``.

    Returns:
        Per image ``img_id``, ``gt_boxes (N, 4)``, ``gt_labels (N,)``, ``ignore_boxes (M, 4)``
        (xyxy original-image pixels) and lists ``det_boxes``, ``det_labels``, ``det_scores``;
        and the class names.

    Raises:
        FileNotFoundError: the config or the results file does not exist.
        KeyError, ValueError: a bad ``own_data``; a detection names an image or a category
            the test set does not have.
    """
    if isinstance(config, str):
        from detkit.engine.config_checks import load_config
        from detkit.engine.own_data import apply_own_data
        cfg = load_config(config)   # FileNotFoundError, or ValueError naming FILE:LINE
        apply_own_data(cfg)
    else:
        cfg = config
    if not osp.isfile(results_file):
        raise FileNotFoundError(f'results file {results_file!r} does not '
                                'exist (tools/test.py CONFIG CKPT --out RESULTS.json writes it)')
    dataset_cfg = dict(cfg.test_dataloader.dataset, test_mode=True, pipeline=[])
    with DefaultScope.overwrite_default_scope('detkit'):   # detkit's registries for its types
        dataset = DATASETS.build(dataset_cfg)
    classes = list(dataset.metainfo['classes'])
    cat2label = dict(getattr(dataset, 'cat2label', {}) or
                     {k + 1: k for k in range(len(classes))})
    images: dict[int, dict[str, Any]] = {}
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        instances = info['instances']
        gt = [i for i in instances if not i.get('ignore_flag', 0)]
        images[int(info['img_id'])] = dict(
            img_id=int(info['img_id']),
            gt_boxes=np.array([i['bbox'] for i in gt], np.float64).reshape(-1, 4),
            gt_labels=np.array([i['bbox_label'] for i in gt], np.int64),
            ignore_boxes=np.array([i['bbox'] for i in instances if i.get('ignore_flag', 0)],
                                  np.float64).reshape(-1, 4),
            det_boxes=[], det_labels=[], det_scores=[])
    for number, det in enumerate(read_results(results_file)):
        image = images.get(det['image_id'])
        if image is None:
            raise ValueError(f'{results_file}: detection {number} is on image_id '
                             f'{det["image_id"]}, which the test set of the config does not have')
        if det['category_id'] not in cat2label:
            raise ValueError(f'{results_file}: detection {number} has category_id '
                             f'{det["category_id"]}; the test set has {sorted(cat2label)}')
        x, y, w, h = det['bbox']
        image['det_boxes'].append([x, y, x + w, y + h])
        image['det_labels'].append(cat2label[det['category_id']])
        image['det_scores'].append(det['score'])
    return list(images.values()), classes


def read_results(results_file: str) -> list[dict[str, Any]]:
    """A COCO results JSON, every detection checked: a list of objects with an integer
    ``image_id`` and ``category_id``, ``bbox`` four numbers ``[x, y, w, h]`` and a number
    ``score``.

    Raises:
        InputError: the file is not JSON or not a list, or a detection breaks the form (named
            by its index, with what was expected and what it holds).
    """
    try:
        with open(results_file, encoding='utf-8') as f:
            detections = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f'{results_file}: not a JSON file ({error})') from None
    if not isinstance(detections, list):
        raise InputError(f'{results_file}: expected a list of detections (COCO results, as '
                         f'tools/test.py --out writes), got a {type(detections).__name__}')
    checked = []
    for number, det in enumerate(detections):
        where = f'{results_file}: detection {number}'
        if not isinstance(det, dict):
            raise InputError(f'{where}: expected an object with image_id, category_id, bbox '
                             f'and score, got {det!r}')
        for key in ('image_id', 'category_id', 'bbox', 'score'):
            if key not in det:
                raise InputError(f'{where}: no {key!r} (it has {sorted(det)})')
        for key in ('image_id', 'category_id'):
            if isinstance(det[key], bool) or not isinstance(det[key], int):
                raise InputError(f'{where}: {key} must be an integer, got {det[key]!r}')
        box = det['bbox']
        if not (isinstance(box, list) and len(box) == 4
                and all(_is_number(v) for v in box)):
            raise InputError(f'{where}: bbox must be 4 numbers [x, y, w, h], got {box!r}')
        if not _is_number(det['score']):
            raise InputError(f'{where}: score must be a number, got {det["score"]!r}')
        checked.append(det)
    return checked


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
