"""detkit's registries: children of mmengine's root registries under the scope ``detkit``.

mmengine's ``Runner`` builds every component of a config through its root registries. With
``default_scope = 'detkit'`` in the config, a root registry switches to the child below, so a
config's ``type='RetinaNet'`` finds :class:`detkit.models.detectors.RetinaNet` and a
``type='SGD'`` still finds the optimizer registered by mmengine in the parent.

Each child names the package that registers into it (``locations``); mmengine imports that
package the first time the child is searched, so a config never needs ``custom_imports``.

An unknown ``type`` is reported by :func:`check_config_types` (run by ``tools/train.py`` and
``tools/test.py`` before anything is built) and by ``Registry.build`` of the registries below,
with the registered names closest to the misspelt one.
"""
from __future__ import annotations

import difflib
from typing import Any, Iterable

from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOG_PROCESSORS as MMENGINE_LOG_PROCESSORS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import TASK_UTILS as MMENGINE_TASK_UTILS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import WEIGHT_INITIALIZERS as MMENGINE_WEIGHT_INITIALIZERS
from mmengine.registry import Registry

SCOPE = 'detkit'

# Arguments detkit's classes took once and take no more, with what to write instead. A config
# that still sets one stops with this text, in the pre-flight check (tools/train.py) and when
# the class is built.
REMOVED_ARGUMENTS: dict[str, str] = {
    'use_group_softmax': (
        "GroupSoftmax is chosen by naming its loss: remove use_group_softmax and write "
        "loss_cls=dict(type='GroupSoftmaxLoss') (an RPN head with num_datasets=D, whose base "
        "config has a sigmoid loss: loss_cls=dict(type='GroupSoftmaxLoss', use_sigmoid=False))"),
}


def removed_argument_message(type_name: str, key: str) -> str:
    """The error text for a config key of :data:`REMOVED_ARGUMENTS`."""
    return f'{type_name} no longer takes {key}: {REMOVED_ARGUMENTS[key]}'


class DetkitRegistry(Registry):
    """An mmengine ``Registry`` whose ``build`` names the closest registered types on a miss
    and says what to write instead of a removed argument."""

    def build(self, cfg: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if isinstance(cfg, dict) and isinstance(cfg.get('type'), str):
            if self.get(cfg['type']) is None:
                raise KeyError(unknown_type_message(cfg['type'], [self]))
            removed = sorted(set(cfg) & set(REMOVED_ARGUMENTS))
            if removed:
                raise TypeError(removed_argument_message(cfg['type'], removed[0]))
        return super().build(cfg, *args, **kwargs)


def _child(name: str, parent: Registry, location: str) -> DetkitRegistry:
    return DetkitRegistry(name, parent=parent, scope=SCOPE, locations=[location])


MODELS = _child('model', MMENGINE_MODELS, 'detkit.models')
TASK_UTILS = _child('task util', MMENGINE_TASK_UTILS, 'detkit.models.task_utils')
DATASETS = _child('dataset', MMENGINE_DATASETS, 'detkit.datasets')
DATA_SAMPLERS = _child('data sampler', MMENGINE_DATA_SAMPLERS, 'detkit.datasets')
TRANSFORMS = _child('transform', MMENGINE_TRANSFORMS, 'detkit.datasets.transforms')
METRICS = _child('metric', MMENGINE_METRICS, 'detkit.evaluation')
EVALUATOR = _child('evaluator', MMENGINE_EVALUATOR, 'detkit.evaluation')
HOOKS = _child('hook', MMENGINE_HOOKS, 'detkit.engine')
LOOPS = _child('loop', MMENGINE_LOOPS, 'detkit.engine')
OPTIMIZERS = _child('optimizer', MMENGINE_OPTIMIZERS, 'detkit.engine')
OPTIM_WRAPPERS = _child('optim wrapper', MMENGINE_OPTIM_WRAPPERS, 'detkit.engine')
OPTIM_WRAPPER_CONSTRUCTORS = _child('optimizer wrapper constructor',
                                    MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, 'detkit.engine')
PARAM_SCHEDULERS = _child('parameter scheduler', MMENGINE_PARAM_SCHEDULERS, 'detkit.engine')
MODEL_WRAPPERS = _child('model_wrapper', MMENGINE_MODEL_WRAPPERS, 'detkit.engine')
WEIGHT_INITIALIZERS = _child('weight initializer', MMENGINE_WEIGHT_INITIALIZERS, 'detkit.models')
VISUALIZERS = _child('visualizer', MMENGINE_VISUALIZERS, 'detkit.engine')
VISBACKENDS = _child('vis_backend', MMENGINE_VISBACKENDS, 'detkit.engine')
FUNCTIONS = _child('function', MMENGINE_FUNCTIONS, 'detkit.datasets')
LOG_PROCESSORS = _child('log_processor', MMENGINE_LOG_PROCESSORS, 'detkit.engine')

ALL_REGISTRIES = (MODELS, TASK_UTILS, DATASETS, DATA_SAMPLERS, TRANSFORMS, METRICS, EVALUATOR,
                  HOOKS, LOOPS, OPTIMIZERS, OPTIM_WRAPPERS, OPTIM_WRAPPER_CONSTRUCTORS,
                  PARAM_SCHEDULERS, MODEL_WRAPPERS, WEIGHT_INITIALIZERS, VISUALIZERS, VISBACKENDS,
                  FUNCTIONS, LOG_PROCESSORS)


def build_if_config(spec: Any, registry: Registry, **default_args: Any) -> Any:
    """Build ``spec`` from ``registry`` when it is a config dict; return it unchanged otherwise.

    Modules call this at construction so that they hold real objects, whether a config or the
    caller passed the sub-object.

    Args:
        spec: a config dict with a ``type`` key, or an already built object.
        registry: the registry that knows ``spec['type']``.
        default_args: values for keys the config does not set.

    Returns:
        The built object.
    """
    if isinstance(spec, dict):
        return registry.build(spec, default_args=default_args or None)
    return spec


def registered_names(registries: Iterable[Registry] = ALL_REGISTRIES) -> set[str]:
    """Every name registered in ``registries`` or their parents (importing their locations).

    Args:
        registries: the registries to list.

    Returns:
        The set of registered type names.
    """
    names: set[str] = set()
    for registry in registries:
        registry.import_from_location()
        node: Registry | None = registry
        while node is not None:
            names.update(node.module_dict)
            node = node.parent
    return names


def unknown_type_message(name: str, registries: Iterable[Registry], key: str = 'type') -> str:
    """The error text for an unregistered ``type``: the key, the value and the closest names.

    Args:
        name: the ``type`` value that is registered nowhere.
        registries: where it was looked up.
        key: the config key holding the value, e.g. ``model.backbone.type``.

    Returns:
        A message such as ``model.backbone.type='ResNt' is not registered in the detkit
        registries (model); closest registered names: 'ResNet'``.
    """
    registries = list(registries)
    candidates = registered_names(registries)
    close = difflib.get_close_matches(name, sorted(candidates), n=5, cutoff=0.5)
    where = ', '.join(sorted({r.name for r in registries}))
    hint = (f"closest registered names: {', '.join(repr(c) for c in close)}" if close else
            'no registered name is close; check the spelling or register the class with '
            '@MODELS.register_module() (or the registry it belongs to)')
    return f'{key}={name!r} is not registered in the detkit registries ({where}); {hint}'


# Config sections whose ``type`` selects an option inside a module rather than a registered class
# (``test_cfg.nms=dict(type='nms', iou_threshold=0.5)``, as in mmdetection's configs).
UNREGISTERED_TYPE_KEYS = frozenset({'nms'})


def check_config_types(cfg: Any, prefix: str = '') -> None:
    """Check, before anything is built, that every ``type`` string in a config is registered.

    Every nested dict with a string ``type`` is looked up in all detkit registries (and, through
    them, mmengine's). Callable or class ``type`` values are left alone.

    Args:
        cfg: a config, or any nested dict/list inside one.
        prefix: the dotted key of ``cfg`` inside the whole config (for the error message).

    Raises:
        KeyError: naming the dotted config key, its value and the closest registered names.
    """
    import mmengine.runner  # noqa: F401  (registers mmengine's loops, hooks and optimizers)

    if isinstance(cfg, dict):
        type_name = cfg.get('type')
        leaf = prefix.rsplit('.', 1)[-1]
        if (isinstance(type_name, str) and leaf not in UNREGISTERED_TYPE_KEYS
                and not _is_registered(type_name)):
            raise KeyError(unknown_type_message(type_name, ALL_REGISTRIES,
                                                key=f'{prefix}.type' if prefix else 'type'))
        for key, value in cfg.items():
            check_config_types(value, f'{prefix}.{key}' if prefix else str(key))
    elif isinstance(cfg, (list, tuple)):
        for index, value in enumerate(cfg):
            check_config_types(value, f'{prefix}[{index}]')


def _is_registered(name: str) -> bool:
    # A scope-prefixed name such as 'mmengine.SGD' is resolved by Registry.get as well.
    return any(registry.get(name) is not None for registry in ALL_REGISTRIES)
