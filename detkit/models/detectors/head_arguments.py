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
# What a collaborator section may hold, per head.
_COLLABORATORS = {'bbox_head': ('assigner',), 'rpn_head': ('assigner', 'sampler'),
                  'roi_head': ('assigner', 'sampler')}


def head_arguments(train_cfg: Mapping[str, Any] | None, test_cfg: Mapping[str, Any] | None,
                   heads: Sequence[str], detector: str) -> dict[str, dict[str, Any]]:
    """The keyword arguments each head gets from mmdetection's ``train_cfg`` and ``test_cfg``.

    Single-stage (``heads=('bbox_head',)``): ``train_cfg=dict(assigner=...)`` becomes
    ``assigner=``, the whole ``test_cfg`` becomes ``test_cfg=``. Two-stage
    (``heads=('rpn_head', 'roi_head')``): ``train_cfg.rpn`` gives the RPN head's ``assigner=``
    and ``sampler=``, ``train_cfg.rpn_proposal`` its ``train_proposal_cfg=``, ``test_cfg.rpn``
    its ``test_cfg=``; ``train_cfg.rcnn`` and ``test_cfg.rcnn`` give the RoI head's.

    Args:
        train_cfg: the model's ``train_cfg`` (None or empty: the heads cannot train).
        test_cfg: the model's ``test_cfg`` (None or empty: the heads' defaults).
        heads: the detector's head attributes, which name the layout.
        detector: the detector's class name, for error messages.

    Returns:
        ``{head: {argument: value}}`` for every head in ``heads``.

    Raises:
        KeyError: a section or key the layout does not have, naming it and the expected ones.
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
            allowed = _COLLABORATORS[head]
            unknown = set(value) - set(allowed)
            if unknown:
                raise KeyError(f'{detector}: {key} has unknown keys {sorted(unknown)}; '
                               f'expected {" and ".join(allowed)}')
            arguments[head].update(value)
    return arguments


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
