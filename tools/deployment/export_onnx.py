"""Export a detector to one ONNX file: normalisation, decoding and NMS in the graph.

    python tools/deployment/export_onnx.py CONFIG CHECKPOINT --out MODEL.onnx [--shape H W]
        [--dynamic] [--batch N] [--opset 17]

The graph takes ``images`` float32 ``(N, 3, H, W)``, raw BGR pixels 0-255 as ``cv2.imread``
gives them, already resized and padded to the model's test input, and returns ``dets (N, K,
5)`` (x1, y1, x2, y2 in input pixels, score; sorted by score, zero rows after the last
detection) and ``labels (N, K)`` (int64, -1 after the last detection), K the config's
``max_per_img``. ``--shape`` defaults to the config's test scale padded to the size divisor;
``--dynamic`` makes N, H and W dynamic. Before the file is written, onnxruntime runs it on a
random batch and its detections are compared with PyTorch's (the largest differences are
printed); a model that does not reproduce PyTorch is not written.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from detkit.apis import init_detector  # noqa: E402
from detkit.deploy import (  # noqa: E402
    OnnxExportError,
    check_input_shape,
    default_input_shape,
    export_onnx,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='detkit checkpoint (.pth)')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input height and width (default: the test scale, padded)')
    parser.add_argument('--dynamic', action='store_true', help='dynamic N, H and W')
    parser.add_argument('--batch', type=int, default=1, help='N of a static graph')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset (16 or newer)')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for path, what in ((args.config, 'config file'), (args.checkpoint, 'checkpoint')):
        if not osp.isfile(path):
            sys.exit(f'export_onnx: {what} {path!r} does not exist')
    if not args.out.endswith('.onnx'):
        sys.exit(f'export_onnx: --out {args.out!r} must name a .onnx file')
    if args.batch < 1:
        sys.exit(f'export_onnx: --batch must be >= 1, got {args.batch}')
    try:
        model = init_detector(args.config, args.checkpoint, device='cpu')
        divisor = int(model.data_preprocessor.pad_size_divisor)
        shape = (check_input_shape(args.shape, divisor) if args.shape
                 else default_input_shape(model.cfg))
        start = time.perf_counter()
        report = export_onnx(model, args.out, shape=shape, batch=args.batch,
                             dynamic=args.dynamic, opset=args.opset,
                             classes=model.dataset_meta['classes'])
    except (OnnxExportError, ValueError, KeyError, TypeError, FileNotFoundError) as error:
        sys.exit(f'export_onnx {args.config}: {error}')
    kind = 'dynamic N, H, W' if args.dynamic else f'{args.batch}x3x{shape[0]}x{shape[1]}'
    print(f'wrote {args.out} ({kind}, opset {args.opset}) in {time.perf_counter() - start:.1f} '
          f's; onnxruntime vs PyTorch on a {args.batch}x3x{shape[0]}x{shape[1]} batch: {report}')


if __name__ == '__main__':
    main()
