"""mmdetection's ``train_cfg`` / ``test_cfg`` layout, translated into the heads' own arguments.

An mmdetection config hands the detector two dicts whose sections belong to its heads
(``train_cfg.rpn.assigner``, ``test_cfg.rcnn.score_thr``, ...). detkit keeps that layout, so
that configs and checkpoints move between the two, and translates it here, once, into keyword
arguments that say what each head uses (``assigner=``, ``sampler=``, ``test_cfg=``,
``train_proposal_cfg=``). The heads themselves never see ``train_cfg``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

# (section of train_cfg or test_cfg, or '' for the whole dict) -> (head, argument) per layout.
# A section that is a dict of the head's collaborators (assigner, sampler) maps to None: its
# keys become the head's arguments of the same names.
_SINGLE_STAGE: dict[tuple[str, str], tuple[str, str | None]] = {
    ('train_cfg', ''): ('bbox_head', None),
    ('test_cfg', ''): ('bbox_head', 'test_cfg'),
}
_TWO_STAGE: dict[tuple[str, str], tuple[str, str | None]] = {
    ('train_cfg', 'rpn'): ('rpn_head', None),
    ('train_cfg', 'rpn_proposal'): ('rpn_head', 'train_proposal_cfg'),
    ('train_cfg', 'rcnn'): ('roi_head', None),
    ('test_cfg', 'rpn'): ('rpn_head', 'test_cfg'),
    ('test_cfg', 'rcnn'): ('roi_head', 'test_cfg'),
}
_LAYOUTS = {('bbox_head',): _SINGLE_STAGE, ('rpn_head', 'roi_head'): _TWO_STAGE}
# What a collaborator section may hold, per head: keys that become the head's arguments.
_COLLABORATORS = {'bbox_head': ('assigner', 'allowed_border'),
                  'rpn_head': ('assigner', 'sampler', 'allowed_border'),
                  'roi_head': ('assigner', 'sampler')}
# Keys of mmdetection's train_cfg sections that detkit implements at mmdetection's default only
# (positives weigh 1; no debug output): accepted with that value and dropped.
_DEFAULT_ONLY: dict[str, Any] = {'pos_weight': -1, 'debug': False}
# A dense head trains every anchor it assigns; mmdetection's RetinaNet names that a sampler.
_NO_SAMPLER = 'PseudoSampler'


def head_arguments(train_cfg: Mapping[str, Any] | None, test_cfg: Mapping[str, Any] | None,
                   heads: Sequence[str], detector: str) -> dict[str, dict[str, Any]]:
    """The keyword arguments each head gets from mmdetection's ``train_cfg`` and ``test_cfg``.

    Single-stage (``heads=('bbox_head',)``): ``train_cfg=dict(assigner=..., allowed_border=...)``
    becomes ``assigner=`` and ``allowed_border=``, the whole ``test_cfg`` becomes ``test_cfg=``.
    Two-stage (``heads=('rpn_head', 'roi_head')``): ``train_cfg.rpn`` gives the RPN head's
    ``assigner=``, ``sampler=`` and ``allowed_border=``, ``train_cfg.rpn_proposal`` its
    ``train_proposal_cfg=``, ``test_cfg.rpn`` its ``test_cfg=``; ``train_cfg.rcnn`` and
    ``test_cfg.rcnn`` give the RoI head's. mmdetection's ``pos_weight=-1``, ``debug=False`` and
    (single-stage) ``sampler=dict(type='PseudoSampler')`` are what detkit does and are dropped;
    another value of them is an error.

    Args:
        train_cfg: the model's ``train_cfg`` (None or empty: the heads cannot train).
        test_cfg: the model's ``test_cfg`` (None or empty: the heads' defaults).
        heads: the detector's head attributes, which name the layout.
        detector: the detector's class name, for error messages.

    Returns:
        ``{head: {argument: value}}`` for every head in ``heads``.

    Raises:
        KeyError: a section or key the layout does not have, naming it and the expected ones.
        ValueError: ``pos_weight`` or ``debug`` at a value detkit does not implement.
    """
    layout = _LAYOUTS[tuple(heads)]
    arguments: dict[str, dict[str, Any]] = {head: {} for head in heads}
    for name, cfg in (('train_cfg', train_cfg), ('test_cfg', test_cfg)):
        cfg = dict(cfg or {})
        sections = [section for kind, section in layout if kind == name]
        if sections != ['']:
            unknown = set(cfg) - set(sections)
            if unknown:
                raise KeyError(f'{detector}: model.{name} has unknown sections '
                               f'{sorted(unknown)}; expected a subset of {sections}')
        for section in sections:
            value = cfg if section == '' else cfg.get(section)
            if not value:
                continue
            head, argument = layout[(name, section)]
            key = f'model.{name}' + (f'.{section}' if section else '')
            if argument is not None:
                arguments[head][argument] = value
                continue
            arguments[head].update(_collaborators(dict(value), head, key, detector))
    return arguments


def _collaborators(section: dict[str, Any], head: str, key: str,
                   detector: str) -> dict[str, Any]:
    """The head's arguments in one collaborator section (``train_cfg.rpn``, ...), after
    checking and dropping what mmdetection writes there at values detkit implements."""
    for name, default in _DEFAULT_ONLY.items():
        if name in section:
            value = section.pop(name)
            if value != default:
                raise ValueError(f'{detector}: {key}.{name}={value!r}: detkit implements '
                                 f'{name}={default!r} only (mmdetection\'s default)')
    sampler = section.get('sampler')
    if head == 'bbox_head' and isinstance(sampler, dict) and sampler.get('type') == _NO_SAMPLER:
        del section['sampler']  # every assigned anchor trains: what the dense head does
    allowed = _COLLABORATORS[head]
    unknown = set(section) - set(allowed)
    if unknown:
        raise KeyError(f'{detector}: {key} has unknown keys {sorted(unknown)}; expected '
                       f'{", ".join(allowed)} (and mmdetection\'s '
                       f'{", ".join(f"{k}={v!r}" for k, v in _DEFAULT_ONLY.items())}'
                       + (f", sampler=dict(type='{_NO_SAMPLER}')" if head == 'bbox_head' else '')
                       + ')')
    return section


def reject_config_beside_built_head(head: Any, head_name: str, detector: str,
                                    arguments: Mapping[str, Any]) -> None:
    """Raise when a head given as a built module would get arguments from ``train_cfg`` or
    ``test_cfg``: the detector cannot hand them to a head that already exists.

    Args:
        head: the head argument (a config dict, or a module).
        head_name: its argument name (``bbox_head``), for the message.
        detector: the detector's class name.
        arguments: what :func:`head_arguments` gives this head.

    Raises:
        ValueError: naming the head, the config and the arguments it would have set.
    """
    if isinstance(head, dict) or not arguments:
        return
    sources = sorted({'model.test_cfg' if name == 'test_cfg' else 'model.train_cfg'
                      for name in arguments})
    raise ValueError(
        f'{detector}: {head_name} is an already built {type(head).__name__}, and '
        f'{" and ".join(sources)} would give it {", ".join(sorted(arguments))}; a built head '
        f'keeps the ones it was built with. Give {head_name} as a config dict, or build it with '
        f'those arguments and leave them out of {" and ".join(sources)}.')
