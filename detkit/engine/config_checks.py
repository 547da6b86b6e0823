"""Checks run on a whole config before the Runner builds anything.

A typo in a ``type`` or a data set that is not where the config says should stop a run in the
first second with a message that names the config key, not an hour later inside a worker.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import inspect
import os.path as osp
import types
import typing
from typing import Any, Iterable

from mmengine.config import Config, DictAction

from detkit.errors import InputError
from detkit.registry import (
    ALL_REGISTRIES,
    REMOVED_ARGUMENTS,
    SCOPE,
    check_config_types,
    removed_argument_message,
)

QUICK_START_HINT = (
    'To try detkit without COCO, train on the synthetic shapes set, which this command '
    'generates:\n'
    '    python tools/train.py configs/retinanet_r50_shapes.py')


class ConfigOptions(DictAction):
    """mmengine's ``--cfg-options KEY=VALUE ...`` action, whose malformed items are argparse
    errors naming the item and the expected form instead of a traceback (mmengine raises
    ``ValueError`` for an item without ``=`` and ``AssertionError`` for unbalanced brackets)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        items = values if isinstance(values, list) else [values]
        for item in items:
            key, sep, value = str(item).partition('=')
            if not sep or not key:
                parser.error(f'{option_string} {item!r}: expected KEY=VALUE, e.g. '
                             'train_cfg.max_epochs=12 or model.bbox_head.num_classes=3')
            try:
                self._parse_iterable(value)
            except (AssertionError, ValueError) as error:
                parser.error(f'{option_string} {item!r}: the value {value!r} is not a number, '
                             f'string, or bracketed list/tuple ({error})')
        super().__call__(parser, namespace, values, option_string)


def load_config(path: str) -> Config:
    """``Config.fromfile``, whose syntax errors name the file and the line that holds them.

    mmengine reports a syntax error in a config, or in any of its ``_base_`` files, as
    ``File "<unknown>", line N``: which file is not said.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        InputError: a syntax error: ``'FILE:LINE: what'``, FILE the config or the ``_base_``
            file that holds it.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file {path!r} does not exist')
    try:
        return Config.fromfile(path)
    except SyntaxError as error:
        raise InputError(_syntax_error_where(path, error)) from None


def _syntax_error_where(path: str, error: SyntaxError) -> str:
    """``'FILE:LINE: message'`` of the first file among ``path`` and its ``_base_`` files (depth
    first, in order) that Python cannot compile."""
    queue, seen = [path], set()
    while queue:
        file = queue.pop(0)
        if file in seen or not osp.isfile(file):
            continue
        seen.add(file)
        with open(file, encoding='utf-8', errors='replace') as f:
            source = f.read()
        try:
            tree = ast.parse(source, filename=file)
        except SyntaxError as found:
            return f'{file}:{found.lineno}: {found.msg}'
        for node in tree.body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name)
                    and node.targets[0].id == '_base_'):
                try:
                    bases = ast.literal_eval(node.value)
                except ValueError:
                    continue
                bases = [bases] if isinstance(bases, str) else list(bases)
                queue[:0] = [osp.normpath(osp.join(osp.dirname(file), b)) for b in bases
                             if isinstance(b, str) and '::' not in b]
    return f'{path}: line {error.lineno} of it or of one of its _base_ files: {error.msg}'


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


def missing_data_paths(cfg: Any, stage: str) -> list[tuple[str, str]]:
    """The annotation files and image folders a run will read that do not exist.

    Args:
        cfg: the whole config (``mmengine.Config`` or dict).
        stage: ``'train'`` (training data, and validation data when ``val_cfg`` is set) or
            ``'test'`` (test data).

    Returns:
        ``(config key, path)`` of each missing path, in config order.
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
    return missing


def check_data_paths(cfg: Any, stage: str) -> None:
    """Check that the annotation files and image folders a run will read exist.

    Args:
        cfg: the whole config (``mmengine.Config`` or dict).
        stage: ``'train'`` or ``'test'``, see :func:`missing_data_paths`.

    Raises:
        FileNotFoundError: listing every missing path with its config key, where the data is
            expected (data/README.md) and, for COCO, how to run the offline quick start instead.
    """
    missing = missing_data_paths(cfg, stage)
    if not missing:
        return
    lines = '\n'.join(f'    {key} = {path!r}' for key, path in missing)
    message = (f'the data this run needs is not there; these config paths do not exist:\n{lines}\n'
               'data/README.md describes the layout each data set is expected in.')
    if any('coco' in path.lower() for _, path in missing):
        message += ('\nCOCO 2017 goes under data/coco/: '
                    'annotations/instances_{train,val}2017.json, train2017/ and val2017/ '
                    '(or point data_root elsewhere with\n'
                    '    --cfg-options train_dataloader.dataset.data_root=/path/to/coco/ ...).\n'
                    + QUICK_START_HINT)
    raise FileNotFoundError(message)


# Plain annotations whose values a config can be checked against.
_SIMPLE_TYPES = {int: (int,), float: (int, float), bool: (bool,), str: (str,)}


def _detkit_class(type_name: str) -> type[Any] | None:
    """The class registered under ``type_name`` by detkit itself (not by mmengine or torch)."""
    for registry in ALL_REGISTRIES:
        registry.import_from_location()
        cls = registry.module_dict.get(type_name)
        if inspect.isclass(cls) and cls.__module__.startswith(SCOPE + '.'):
            return cls
    return None


def _accepted_types(annotation: Any) -> tuple[type, ...] | None:
    """Python types a value may have for a simple annotation (``int``, ``float | None``, ...);
    ``None`` when the annotation is not simple enough to check."""
    if annotation in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[annotation]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        accepted: tuple[type, ...] = ()
        for member in typing.get_args(annotation):
            if member is type(None):
                accepted += (type(None),)
            elif member in _SIMPLE_TYPES:
                accepted += _SIMPLE_TYPES[member]
            else:
                return None
        return accepted
    return None


def _type_names(accepted: tuple[type, ...]) -> str:
    names = ['None' if t is type(None) else t.__name__ for t in dict.fromkeys(accepted)]
    return ' or '.join(names)


def check_config_arguments(cfg: Any, prefix: str = '') -> None:
    """Check the keys and simple value types of every config dict whose ``type`` is a detkit
    class, against that class's constructor, before anything is built.

    A key the constructor does not take (``model.backbone.dpeth``) and a value of the wrong
    type for an ``int``/``float``/``bool``/``str`` argument (``model.backbone.depth='50'``)
    are errors. Classes that take ``**kwargs``, and mmengine's or torch's classes, are left to
    their own checks.

    Args:
        cfg: a config (as dict), or any nested dict/list inside one.
        prefix: the dotted key of ``cfg`` (for the message).

    Raises:
        KeyError: an unknown key, naming it, the class and the closest argument names.
        TypeError: a value of the wrong type, naming the key, the value and the expected type.
    """
    if isinstance(cfg, (list, tuple)):
        for index, value in enumerate(cfg):
            check_config_arguments(value, f'{prefix}.{index}' if prefix else str(index))
        return
    if not isinstance(cfg, dict):
        return
    for key, value in cfg.items():
        check_config_arguments(value, f'{prefix}.{key}' if prefix else str(key))
    type_name = cfg.get('type')
    if not isinstance(type_name, str):
        return
    cls = _detkit_class(type_name)
    if cls is None:
        return
    signature = inspect.signature(cls.__init__)
    parameters = {name: p for name, p in signature.parameters.items() if name != 'self'}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that cannot be evaluated: check the names only
        hints = {}
    where = f'{prefix}.' if prefix else ''
    for key, value in cfg.items():
        if key in ('type', '_scope_', '_delete_'):
            continue
        if key in REMOVED_ARGUMENTS and key not in parameters:
            raise KeyError(f'{where}{key}: {removed_argument_message(type_name, key)}')
        if key not in parameters:
            close = difflib.get_close_matches(key, list(parameters), n=3, cutoff=0.6)
            hint = (f"; did you mean {', '.join(repr(c) for c in close)}?" if close else
                    f'; it takes {", ".join(parameters)}')
            raise KeyError(f'{where}{key}: {type_name} has no argument {key!r}{hint}')
        accepted = _accepted_types(hints.get(key))
        if accepted is not None and not isinstance(value, accepted) \
                or (accepted is not None and isinstance(value, bool)
                    and bool not in accepted):
            raise TypeError(f'{where}{key}={value!r}: {type_name} expects '
                            f'{_type_names(accepted)}, got {type(value).__name__}')


def check_config(cfg: Any, stage: str) -> None:
    """All pre-flight checks: registered ``type`` names, the arguments of detkit's classes,
    then data paths.

    Args:
        cfg: the whole config.
        stage: ``'train'`` or ``'test'``, see :func:`check_data_paths`.
    """
    plain = cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg
    check_config_types(plain)
    check_config_arguments(plain)
    check_data_paths(cfg, stage)
