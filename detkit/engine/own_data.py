"""``own_data``: train and evaluate a config's model on a COCO-format data set of your own.

A config that says::

    _base_ = 'configs/retinanet_r50_shapes.py'
    own_data = dict(root='data/pets/', classes=('cat', 'dog'))

is that recipe on ``data/pets/``: :func:`apply_own_data` points the train, val and test data
sets at ``root`` (``CocoDataset``, ``annotations/instances_{train,val}.json``, image paths
relative to ``root``, as ``yolo2coco.py`` and ``labelme2coco.py`` write them) with those
classes, the COCO metrics at the same files, and the detection head at ``len(classes)``
classes; a synthetic set the base would draw (``generated_data``) is dropped. A child config
cannot re-point the variables its base used when it built those dicts, hence one key, read by
``tools/train.py``, ``tools/test.py`` and :func:`~detkit.apis.init_detector`.
"""
from __future__ import annotations

from typing import Any

OWN_DATA_KEYS = {'root': None, 'classes': None, 'train': 'annotations/instances_train.json',
                 'val': 'annotations/instances_val.json', 'test': None, 'img_prefix': ''}


def apply_own_data(cfg: Any) -> None:
    """Rewrite ``cfg`` in place for its ``own_data`` (nothing without one).

    Raises:
        KeyError: an unknown ``own_data`` key, or a model without a head to size.
        ValueError: ``root`` or ``classes`` missing or of the wrong type.
    """
    spec = cfg.get('own_data')
    if not spec:
        return
    unknown = sorted(set(spec) - set(OWN_DATA_KEYS))
    if unknown:
        raise KeyError(f'own_data has unknown keys {unknown}; expected a subset of '
                       f'{sorted(OWN_DATA_KEYS)}')
    values = {**OWN_DATA_KEYS, **dict(spec)}
    root, classes = values['root'], values['classes']
    if not isinstance(root, str) or not root:
        raise ValueError(f"own_data.root must name the data set's folder, got {root!r}")
    if (not isinstance(classes, (list, tuple)) or not classes
            or not all(isinstance(c, str) and c for c in classes)):
        raise ValueError(f'own_data.classes must be the class names in label order, got '
                         f'{classes!r}')
    if len(set(classes)) != len(classes):
        raise ValueError(f'own_data.classes lists a name twice: {list(classes)}')
    root = root if root.endswith('/') else root + '/'
    files = {'train': values['train'], 'val': values['val'],
             'test': values['test'] or values['val']}
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if loader is None:
            continue
        loader['dataset'] = dict(type='CocoDataset', data_root=root, ann_file=files[split],
                                 data_prefix=dict(img=values['img_prefix']),
                                 metainfo=dict(classes=tuple(classes)),
                                 filter_cfg=loader['dataset'].get('filter_cfg'),
                                 pipeline=loader['dataset'].get('pipeline', []),
                                 test_mode=split != 'train')
    for split in ('val', 'test'):
        evaluators = cfg.get(f'{split}_evaluator')
        for evaluator in evaluators if isinstance(evaluators, list) else [evaluators]:
            if isinstance(evaluator, dict) and evaluator.get('type') == 'CocoMetric':
                evaluator['ann_file'] = root + files[split]
    model = cfg.model
    head = model.get('roi_head', {}).get('bbox_head') if 'roi_head' in model else \
        model.get('bbox_head')
    if head is None:
        raise KeyError('own_data: the model has neither bbox_head nor roi_head.bbox_head, '
                       'whose num_classes it sets')
    head['num_classes'] = len(classes)
    cfg.pop('generated_data', None)
