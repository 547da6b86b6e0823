"""Checks run on a whole config before the Runner builds anything.

A typo in a ``type`` or a data set that is not where the config says should stop a run in the
first second with a message that names the config key, not an hour later inside a worker.
"""
from __future__ import annotations

import os.path as osp
from typing import Any, Iterable

from detkit.registry import check_config_types

QUICK_START_HINT = (
    'To try detkit without COCO, generate the synthetic shapes set and train on it:\n'
    '    python tools/misc/make_synthetic.py shapes --out data/shapes\n'
    '    python tools/train.py configs/retinanet_r50_shapes.py')


def _dataset_paths(dataset: dict, key: str) -> Iterable[tuple[str, str]]:
    """``(config key, path)`` of a dataset config's annotation file and image folder."""
    if not isinstance(dataset, dict):
        return
    for index, child in enumerate(dataset.get('datasets') or []):  # dataset wrappers
        yield from _dataset_paths(child, f'{key}.datasets[{index}]')
    if isinstance(dataset.get('dataset'), dict):
        yield from _dataset_paths(dataset['dataset'], f'{key}.dataset')
    data_root = dataset.get('data_root') or ''
    ann_file = dataset.get('ann_file')
    if ann_file:
        yield f'{key}.ann_file', ann_file if osp.isabs(ann_file) else osp.join(data_root, ann_file)
    prefix = dataset.get('data_prefix') or {}
    if isinstance(prefix, dict) and prefix.get('img') is not None:
        img_dir = prefix['img']
        yield f'{key}.data_prefix.img', img_dir if osp.isabs(img_dir) else osp.join(data_root,
                                                                                     img_dir)


def _evaluator_paths(evaluator: Any, key: str) -> Iterable[tuple[str, str]]:
    metrics = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
    for index, metric in enumerate(metrics):
        if isinstance(metric, dict) and metric.get('ann_file'):
            sub = f'{key}[{index}]' if isinstance(evaluator, (list, tuple)) else key
            yield f'{sub}.ann_file', metric['ann_file']


def check_data_paths(cfg: Any, stage: str) -> None:
    """Check that the annotation files and image folders a run will read exist.

    Args:
        cfg: the whole config (``mmengine.Config`` or dict).
        stage: ``'train'`` (training data, and validation data when ``val_cfg`` is set) or
            ``'test'`` (test data).

    Raises:
        FileNotFoundError: listing every missing path with its config key, where the data is
            expected (data/README.md) and, for COCO, how to run the offline quick start instead.
    """
    if stage not in ('train', 'test'):
        raise ValueError(f"check_data_paths: stage={stage!r}; expected 'train' or 'test'")
    parts = [('train_dataloader', 'val_dataloader', 'val_evaluator'), ('test_dataloader',
                                                                        'test_evaluator')]
    keys = parts[0] if stage == 'train' else parts[1]
    if stage == 'train' and not cfg.get('val_cfg'):
        keys = keys[:1]
    missing = []
    for key in keys:
        section = cfg.get(key)
        if section is None:
            continue
        paths = (_evaluator_paths(section, key) if key.endswith('evaluator') else
                 _dataset_paths(section.get('dataset', {}), f'{key}.dataset'))
        missing += [(k, p) for k, p in paths if not osp.exists(p)]
    if not missing:
        return
    lines = '\n'.join(f'    {key} = {path!r}' for key, path in missing)
    message = (f'the data this run needs is not there; these config paths do not exist:\n{lines}\n'
               'data/README.md describes the layout each data set is expected in.')
    if any('coco' in path.lower() for _, path in missing):
        message += ('\nCOCO 2017 goes under data/coco/: annotations/instances_{train,val}2017.json,'
                    ' train2017/ and val2017/ (or point data_root elsewhere with\n'
                    '    --cfg-options train_dataloader.dataset.data_root=/path/to/coco/ ...).\n'
                    + QUICK_START_HINT)
    raise FileNotFoundError(message)


def check_config(cfg: Any, stage: str) -> None:
    """All pre-flight checks: registered ``type`` names, then data paths.

    Args:
        cfg: the whole config.
        stage: ``'train'`` or ``'test'``, see :func:`check_data_paths`.
    """
    check_config_types(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg)
    check_data_paths(cfg, stage)
