"""int8 copy of an exported detector: onnxruntime static quantization of its convolutions.

    python tools/deployment/quantize_onnx.py MODEL.onnx --calib-images DIR \
        --out MODEL.int8.onnx [--num-images 64] [--method minmax|entropy|percentile]

The activation ranges are calibrated on the first ``--num-images`` images of ``DIR`` (sorted by
name): real images of the data set, resized to fit the graph's input and padded as the test
pipeline would. Box decoding, top-k and NMS stay float32; the int8 file has the same inputs,
outputs and metadata, so ``tools/test.py CONFIG MODEL.int8.onnx`` evaluates it.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from detkit.deploy import OnnxContractError  # noqa: E402
from detkit.deploy.quantize import CALIBRATION_METHODS, quantize_onnx  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('model', help='float32 .onnx from tools/deployment/export_onnx.py')
    parser.add_argument('--calib-images', required=True, help='folder of calibration images')
    parser.add_argument('--out', required=True, help='the int8 .onnx to write')
    parser.add_argument('--num-images', type=int, default=64, help='calibration images used')
    parser.add_argument('--method', choices=CALIBRATION_METHODS, default='minmax',
                        help='how activation ranges are chosen')
    args = parser.parse_args(argv)
    if not args.out.endswith('.onnx'):
        sys.exit(f'quantize_onnx: --out {args.out!r} must name a .onnx file')
    if args.num_images < 1:
        sys.exit(f'quantize_onnx: --num-images must be >= 1, got {args.num_images}')
    start = time.perf_counter()
    try:
        convs = quantize_onnx(args.model, args.out, args.calib_images,
                              num_images=args.num_images, method=args.method)
    except (FileNotFoundError, OnnxContractError, ValueError) as error:
        sys.exit(str(error))
    print(f'wrote {args.out}: {convs} convolutions in int8 (QDQ, per-channel weights), '
          f'calibrated ({args.method}) on {args.num_images} images at most of '
          f'{args.calib_images} in {time.perf_counter() - start:.1f} s')


if __name__ == '__main__':
    main()
