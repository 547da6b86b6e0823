"""Train a detector from a config: ``python tools/train.py CONFIG [options]``.

The arguments are mmdetection's. Before anything is built, a synthetic data set the config
names in ``generated_data`` is drawn if it is missing, and the config is checked: every ``type``
must be registered and the data it names must exist.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a source tree

from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner, find_latest_checkpoint  # noqa: E402

import detkit  # noqa: E402,F401  (safe checkpoint loading)
from detkit.engine import (  # noqa: E402
    ConfigOptions,
    check_config,
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
    parser = argparse.ArgumentParser(description='Train a detkit detector')
    parser.add_argument('config', help='config file, e.g. configs/retinanet_r50.py')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto', metavar='CKPT',
                        help='resume from CKPT, or from the latest checkpoint in the work dir '
                        'when no CKPT is given')
    parser.add_argument('--amp', action='store_true',
                        help='the fastest numerics of this machine: on a CPU with native '
                        'bfloat16, bf16 autocast + channels-last; on CUDA fp16 with dynamic loss '
                        'scaling (a config can say amp=True)')
    parser.add_argument('--vis-backend', nargs='+', choices=('local', 'tensorboard'),
                        default=['local'],
                        help="where scalars go besides the log: 'local' (vis_data/*.json, what "
                        "tools/analysis/analyze_logs.py reads; always kept) and 'tensorboard' "
                        '(event files in <work_dir>/<time>/vis_data; the vis extra)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by (total batch / '
                        'auto_scale_lr.base_batch_size)')
    parser.add_argument('--sync-bn', action='store_true',
                        help='distributed training: turn BatchNorm layers into SyncBatchNorm '
                        '(statistics over the whole global batch)')
    parser.add_argument('--cfg-options', nargs='+', action=ConfigOptions, metavar='KEY=VALUE',
                        help='override config keys, e.g. train_cfg.max_epochs=1')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher (pytorch: under torchrun)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_config(args: argparse.Namespace) -> Config:
    """The config file with the command line applied on top."""
    cfg = load_config(args.config)   # FileNotFoundError, ValueError naming FILE:LINE
    configure_launcher(cfg, args.launcher)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        apply_own_data(cfg)   # own_data = dict(root=..., classes=...): your COCO-format set
    except (KeyError, ValueError) as error:
        sys.exit(f'tools/train.py {args.config}: {error.args[0]}')
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp or cfg.get('amp', False):
        print(f'--amp: {enable_amp(cfg, train=True)}', flush=True)
    if 'tensorboard' in args.vis_backend:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            sys.exit('tools/train.py: --vis-backend tensorboard needs the tensorboard package: '
                     'pip install -e ".[vis]" -c requirements/lock.txt')
        cfg.visualizer = dict(type='Visualizer', vis_backends=[
            dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')])
    if args.sync_bn:
        cfg.sync_bn = 'torch'  # mmengine's Runner converts the model when it is distributed
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise KeyError('--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=...) in '
                           f'the config {args.config}')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        # The work dir's last checkpoint when there is one; otherwise a first run, which starts
        # from the config's load_from (fine-tuning weights) rather than from random weights.
        latest = find_latest_checkpoint(cfg.work_dir)
        if latest is not None:
            cfg.resume, cfg.load_from = True, latest
        else:
            print(f'--resume: no checkpoint in {cfg.work_dir} yet; a new run'
                  + (f' from load_from={cfg.load_from!r}' if cfg.get('load_from') else ''),
                  flush=True)
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(f'--resume {args.resume!r}: no such checkpoint file')
        cfg.resume, cfg.load_from = True, args.resume
    load_from = cfg.get('load_from')
    if (isinstance(load_from, str) and '://' not in load_from
            and not osp.isfile(osp.expanduser(load_from))):   # mmengine expands ~ too
        raise FileNotFoundError(
            f'load_from={load_from!r}: no such checkpoint file (relative to {os.getcwd()}); '
            'write the weights there (e.g. tools/model_converters/torchvision_to_detkit.py) or '
            'point --cfg-options load_from=PATH at them')
    return cfg


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(f'CPU allocator: {tune_cpu_allocator()}', flush=True)  # before the model is built
    try:
        cfg = build_config(args)
        prepare_generated_data(cfg, stage='train')  # a synthetic set the config can draw
        check_config(cfg, stage='train')
        load_from = cfg.get('load_from')
        local = isinstance(load_from, str) and '://' not in load_from
        state = read_checkpoint(osp.expanduser(load_from))[0] if local else None
    except (KeyError, TypeError, ValueError, FileNotFoundError) as error:
        sys.exit(f'tools/train.py {args.config}: {error.args[0]}')
    try:   # a bad input found while building or running: its message, not a traceback
        runner = Runner.from_cfg(cfg)
        if state is not None:
            # mmengine loads load_from non-strictly (a fine-tune's resized classifier stays as
            # initialised, logged); a checkpoint of which no tensor fits is another model's.
            check_state_fits(runner.model, state, load_from, args.config, exact=False)
            del state
        runner.train()
    except InputError as error:
        sys.exit(f'tools/train.py {args.config}: {error}')
    close_process_group()  # under torchrun: before the interpreter's shutdown, not during it


if __name__ == '__main__':
    main()
