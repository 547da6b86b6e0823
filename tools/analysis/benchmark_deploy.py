"""Images/s and COCO mAP of one detector as PyTorch float32, PyTorch --amp and onnxruntime
float32 / int8, on the config's test set, in one run.

    python tools/analysis/benchmark_deploy.py CONFIG CHECKPOINT --onnx MODEL.onnx \
        [--int8 MODEL.int8.onnx] [--passes 2] [--threads 2] [--max-images N]

Every variant runs the config's test pipeline, data loader and metric (what ``tools/test.py``
does) over the same images; the time is that of the model's ``test_step`` (preprocessing,
forward, post-processing; for onnxruntime the padding and the session), not of image decoding.
Each pass runs every variant once, in turn, so that a machine whose speed drifts slows all
alike; the first pass is a warm-up unless ``--passes 1``, and the mAP is that of the last pass.
"""
from __future__ import annotations

import argparse
import contextlib
import os.path as osp
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.evaluator import Evaluator  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import detkit  # noqa: E402,F401
from detkit.apis import init_detector  # noqa: E402
from detkit.deploy import OnnxDetector  # noqa: E402
from detkit.engine.amp import cpu_model_name  # noqa: E402
from detkit.engine.generated_data import prepare_generated_data  # noqa: E402
from detkit.engine.own_data import apply_own_data  # noqa: E402


def run_pass(model: Any, loader: Any, evaluator: Evaluator, size: int) -> tuple[float, dict]:
    """One pass over the test set: (seconds in test_step, metrics)."""
    dtype = getattr(model, 'amp_dtype', None)
    autocast = (torch.autocast('cpu', dtype=dtype) if dtype is not None
                else contextlib.nullcontext())
    seconds = 0.0
    for data in loader:
        start = time.perf_counter()
        with torch.no_grad(), autocast:
            outputs = model.test_step(data)
        seconds += time.perf_counter() - start
        evaluator.process(data_samples=outputs, data_batch=data)
    return seconds, evaluator.evaluate(size)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='detkit checkpoint (.pth)')
    parser.add_argument('--onnx', required=True, help='its float32 export')
    parser.add_argument('--int8', help='its int8 quantization')
    parser.add_argument('--passes', type=int, default=2, help='passes over the test set')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads(),
                        help='torch and onnxruntime intra-op threads')
    parser.add_argument('--max-images', type=int, help='use the first N test images only')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = Config.fromfile(args.config)
    apply_own_data(cfg)
    prepare_generated_data(cfg, stage='test')
    loader_cfg = cfg.test_dataloader.copy()
    loader_cfg.update(num_workers=0, persistent_workers=False)
    if args.max_images:
        loader_cfg.dataset = dict(loader_cfg.dataset, indices=args.max_images)
    DefaultScope.get_instance('benchmark_deploy', scope_name='detkit')  # detkit's registries
    loader = Runner.build_dataloader(loader_cfg)
    size = len(loader.dataset)
    variants: dict[str, Any] = {
        'PyTorch float32': init_detector(cfg, args.checkpoint, cfg_options={'amp': False}),
        'PyTorch --amp': init_detector(cfg, args.checkpoint, amp=True),
        # onnxruntime with as many threads as torch
        'onnxruntime float32': OnnxDetector(args.onnx, threads=args.threads),
    }
    if args.int8:
        variants['onnxruntime int8'] = OnnxDetector(args.int8, threads=args.threads)
    evaluators = {name: Evaluator(cfg.test_evaluator) for name in variants}
    for evaluator in evaluators.values():
        evaluator.dataset_meta = loader.dataset.metainfo
    times: dict[str, list[float]] = {name: [] for name in variants}
    metrics: dict[str, dict] = {}
    for _ in range(args.passes):
        for name, model in variants.items():
            seconds, metrics[name] = run_pass(model, loader, evaluators[name], size)
            times[name].append(seconds)
    timed = {name: t[1:] or t for name, t in times.items()}
    base = statistics.median(timed['PyTorch float32'])
    warm_up = ' (the first a warm-up)' if args.passes > 1 else ''
    print(f'{cpu_model_name()}, {args.threads} threads; {size} test images of {args.config}; '
          f'{args.passes} passes{warm_up}')
    print('| variant | images/s | vs PyTorch float32 | bbox mAP | AP50 |')
    print('| --- | ---: | ---: | ---: | ---: |')
    rows = []
    for name in variants:
        seconds = statistics.median(timed[name])
        found = metrics[name]
        mean_ap = next(v for k, v in found.items() if k.endswith('bbox_mAP'))
        ap50 = next(v for k, v in found.items() if k.endswith('bbox_mAP_50'))
        rows.append(dict(variant=name, images_per_s=size / seconds, mAP=mean_ap, AP50=ap50))
        print(f'| {name} | {size / seconds:.2f} | {base / seconds:.2f}x | {mean_ap:.3f} | '
              f'{ap50:.3f} |')
    return rows


if __name__ == '__main__':
    main()
