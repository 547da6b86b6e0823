"""Evaluate a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [--out results.json] [--amp]``.

CHECKPOINT is a detkit ``.pth`` or an ``.onnx`` file of tools/deployment/export_onnx.py (run by
onnxruntime behind the same test pipeline and metric). ``--show-dir DIR`` draws every image with
its ground truth on the left and its detections (``--show-score-thr``) on the right.

Prints COCO bbox mAP (AP, AP50, AP75, APs/m/l) through the config's ``test_evaluator``;
``--out`` also writes the detections as a COCO results JSON (original category ids, xywh).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import shutil
import sys
import tempfile

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a source tree

from mmengine.runner import Runner  # noqa: E402

import detkit  # noqa: E402,F401  (safe checkpoint loading)
from detkit.engine import (  # noqa: E402
    ConfigOptions,
    check_config,
    check_output_file,
    close_process_group,
    configure_launcher,
    enable_amp,
    load_config,
    prepare_generated_data,
    tune_cpu_allocator,
)
from detkit.engine.checkpoint_fit import check_state_fits, read_checkpoint  # noqa: E402
from detkit.engine.own_data import apply_own_data  # noqa: E402
from detkit.errors import InputError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Evaluate a detkit checkpoint')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file (.pth)')
    parser.add_argument('--work-dir', help='where the evaluation log goes')
    parser.add_argument('--out', metavar='RESULTS.json',
                        help='also write the detections as a COCO results JSON')
    parser.add_argument('--show-dir', metavar='DIR',
                        help='draw each image: ground truth | detections, into DIR')
    parser.add_argument('--show-score-thr', type=float, default=0.3,
                        help='detections drawn by --show-dir score at least this')
    parser.add_argument('--amp', action='store_true',
                        help='the fastest numerics of this machine (bf16 autocast + '
                        'channels-last on a CPU with native bfloat16, fp16 on CUDA); a config '
                        'can say amp=True')
    parser.add_argument('--cfg-options', nargs='+', action=ConfigOptions, metavar='KEY=VALUE',
                        help='override config keys')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    print(f'CPU allocator: {tune_cpu_allocator()}', flush=True)  # before the model is built
    if not osp.isfile(args.config):
        sys.exit(f'tools/test.py: config file {args.config!r} does not exist')
    if not osp.isfile(args.checkpoint):
        sys.exit(f'tools/test.py: checkpoint {args.checkpoint!r} does not exist')
    try:
        cfg = load_config(args.config)
    except ValueError as error:
        sys.exit(f'tools/test.py: {error}')
    configure_launcher(cfg, args.launcher)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        apply_own_data(cfg)   # own_data = dict(root=..., classes=...): your COCO-format set
    except (KeyError, ValueError) as error:
        sys.exit(f'tools/test.py {args.config}: {error.args[0]}')
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.checkpoint.endswith('.onnx'):
        # an exported model: onnxruntime runs it behind the config's test pipeline and metric
        if args.amp:
            sys.exit(f'tools/test.py: --amp does not apply to {args.checkpoint!r}, which runs in '
                     'the precision it was exported in')
        import detkit.deploy  # noqa: F401  (registers OnnxDetector)
        cfg.model = dict(type='OnnxDetector', path=args.checkpoint)
        cfg.load_from = None
        cfg.amp = False
    elif args.amp or cfg.get('amp', False):
        print(f'--amp: {enable_amp(cfg, train=False)}', flush=True)
    out_dir = None
    if args.out:
        if not args.out.endswith('.json'):
            sys.exit(f'tools/test.py: --out {args.out!r} must name a .json file')
        try:
            check_output_file(args.out)   # now, not after the evaluation
        except ValueError as error:
            sys.exit(f'tools/test.py: --out {error}')
        out_dir = tempfile.mkdtemp(prefix='detkit_test_')
        evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [
            cfg.test_evaluator]
        for evaluator in evaluators:
            if evaluator.get('type') == 'CocoMetric':
                evaluator.outfile_prefix = osp.join(out_dir, 'results')
    cfg.custom_hooks = [*cfg.get('custom_hooks', []), dict(type='InferenceProgressHook')]
    if args.show_dir:
        cfg.custom_hooks.append(dict(type='ShowResultsHook', out_dir=args.show_dir,
                                     score_thr=args.show_score_thr))
    try:
        prepare_generated_data(cfg, stage='test')  # a synthetic set the config can draw
        check_config(cfg, stage='test')
        state = None if cfg.load_from is None else read_checkpoint(cfg.load_from)[0]
    except (KeyError, TypeError, ValueError, FileNotFoundError) as error:
        sys.exit(f'tools/test.py {args.config}: {error.args[0]}')
    try:   # a bad input found while building or running: its message, not a traceback
        runner = Runner.from_cfg(cfg)
        if state is not None:   # mmengine would load a misfit non-strictly, with a warning
            check_state_fits(runner.model, state, cfg.load_from, args.config, exact=True)
            del state
        metrics = runner.test()
        if out_dir is not None:
            produced = osp.join(out_dir, 'results.bbox.json')
            if osp.isfile(produced):
                shutil.move(produced, args.out)
                print(f'detections written to {args.out}')
    except InputError as error:
        sys.exit(f'tools/test.py {args.config}: {error}')
    finally:   # the temporary results folder goes however the run ends
        if out_dir is not None:
            shutil.rmtree(out_dir, ignore_errors=True)
    close_process_group()  # under torchrun: before the interpreter's shutdown, not during it
    return metrics


if __name__ == '__main__':
    main()
