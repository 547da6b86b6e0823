"""Convert a torchvision RetinaNet / Faster R-CNN R50-FPN (v1) checkpoint into a detkit checkpoint.

Usage::

    python tools/model_converters/torchvision_to_detkit.py IN OUT \
        [--arch auto|retinanet|faster_rcnn]

``IN`` is what torchvision saves (``torch.save(model.state_dict())``, also under ``'model'`` or
``'state_dict'``), e.g. the COCO weights in the torch hub cache::

    python tools/model_converters/torchvision_to_detkit.py \\
        ~/.cache/torch/hub/checkpoints/retinanet_resnet50_fpn_coco-eeacb38b.pth \\
        checkpoints/retinanet_r50_fpn_tv.pth
    python tools/model_converters/torchvision_to_detkit.py \\
        ~/.cache/torch/hub/checkpoints/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth \\
        checkpoints/faster_rcnn_r50_fpn_tv.pth

``OUT`` (written atomically) holds ``state_dict`` and ``meta.dataset_meta.classes`` and loads
into ``configs/torchvision/retinanet_r50_fpn_tv.py`` or ``faster_rcnn_r50_fpn_tv.py`` with
``detkit.apis.init_detector``. The key mapping and the class layout are described in
:mod:`detkit.models.converters.torchvision_detection`.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

from detkit.models.converters.torchvision_detection import (  # noqa: E402
    TORCHVISION_ARCHS,
    convert_torchvision_detector,
    detect_torchvision_arch,
    load_torchvision_state_dict,
    save_checkpoint_atomic,
    unwrap_state_dict,
)

CONFIGS = {'retinanet': 'configs/torchvision/retinanet_r50_fpn_tv.py',
           'faster_rcnn': 'configs/torchvision/faster_rcnn_r50_fpn_tv.py'}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: ``IN OUT [--arch ...]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('input', metavar='IN', help='torchvision checkpoint (.pth)')
    parser.add_argument('output', metavar='OUT', help='detkit checkpoint to write (.pth)')
    parser.add_argument('--arch', default='auto', choices=['auto', *TORCHVISION_ARCHS],
                        help='the torchvision model (default: told from the keys)')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Convert ``IN`` to ``OUT``; print what was written.

    Args:
        argv: the command line arguments (default ``sys.argv[1:]``).

    Returns:
        The converted checkpoint (``state_dict`` and ``meta``).
    """
    args = parse_args(argv)
    try:
        state = unwrap_state_dict(load_torchvision_state_dict(args.input), repr(args.input))
        arch = detect_torchvision_arch(state) if args.arch == 'auto' else args.arch
        checkpoint = convert_torchvision_detector(state, arch,
                                                  source=os.path.basename(args.input))
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f'torchvision_to_detkit.py: {error}') from error
    save_checkpoint_atomic(checkpoint, args.output)
    meta = checkpoint['meta']
    print(f"{meta['converted_from']}: {len(checkpoint['state_dict'])} tensors -> {args.output}; "
          f"{len(meta['dataset_meta']['classes'])} classes; config: {CONFIGS[arch]}")
    return checkpoint


if __name__ == '__main__':
    main()
