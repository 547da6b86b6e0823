"""Speed of a config's detector beside torchvision's, in float32 and each one's fastest setting.

    python tools/analysis/benchmark.py CONFIG [CONFIG ...] [--task train inference]
        [--batch 2] [--size 640] [--height 512] [--iters 5] [--warmup 2] [--device cpu]
        [--checkpoint CKPT] [--peer-weights] [--no-peer] [--compile] [--threads N]
        [--default-allocator] [--roof-repeats 8] [--profile N]

For each config and task, four variants run on the same uint8 batch (and, for ``train``, the
same ground truth), their timed iterations alternating after the warm-up so that a machine
whose speed drifts slows all alike:

* ``torchvision fp32`` and ``torchvision best``: torchvision's model of the same architecture
  (RetinaNet or Faster R-CNN with a ResNet-50 FPN, COCO-recipe freezing: FrozenBatchNorm, stem
  and layer1 frozen; told not to resize, so it sees the same pixels), in float32 and in its best
  setting: bfloat16 autocast + channels-last on the CPU, float16 autocast + channels-last (loss
  scaling in training) on CUDA;
* ``detkit fp32`` and ``detkit --amp``: the config's model, in float32 and as ``--amp`` builds it
  (:func:`detkit.engine.enable_amp`: on a CPU with native bfloat16, bf16 autocast and
  channels-last weights and batches, and for inference the model made inference-only as
  ``init_detector(amp=True)`` and ``tools/test.py --amp`` make it (batch norms folded into the
  convolutions, weights stored in bfloat16); without native bfloat16, float32);
* with ``--compile`` (inference): ``detkit --amp`` with its backbone, neck and head's forward
  under ``torch.compile`` (inductor with ``freezing``: weights constant-folded and prepacked)
  too; the first call of each input shape compiles, which the warm-up absorbs.

``inference`` times preprocessing, forward and post-processing (NMS included) in eval mode;
``train`` times SGD steps: preprocessing, forward, loss, backward and the update. Each row gives
the median seconds per iteration, images/s, the peak bytes the allocator held during one
iteration (CPU: from the profiler's memory events), GFLOPS (``torch.utils.flop_counter``'s
count of the iteration / its median time) and that as a share of the roof: the best GFLOPS of a
3x3 convolution of the row's dtype on this machine, measured at the start of the run. The
header names the CPU and its bfloat16 units (AVX512-BF16, AMX), and the C allocator's settings:
every variant runs with the ones detkit's tools set (:func:`detkit.engine.tune_cpu_allocator`:
freed memory kept for the next feature maps), or glibc's defaults with ``--default-allocator``.
``--profile N`` then prints, after the table, the ``N`` operators one iteration of each variant
spends most time in (``torch.profiler``'s self time, with each operator's share of the total).

Without a checkpoint the models have random weights, and random heads find different numbers
of detections, which changes post-processing time; ``--peer-weights`` (a ``configs/torchvision``
config) gives detkit the torchvision model's weights through the converter of
tools/model_converters, so that both find the same detections.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import os.path as osp
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402

import detkit.models  # noqa: E402,F401
from detkit.engine.allocator import tune_cpu_allocator  # noqa: E402
from detkit.engine.amp import (  # noqa: E402
    AmpFallbackWarning,
    compile_inference_model,
    cpu_bf16_flags,
    cpu_model_name,
    enable_amp,
    prepare_inference_model,
)
from detkit.registry import MODELS  # noqa: E402
from detkit.structures import DetSample  # noqa: E402

from profiling import (  # noqa: E402
    conv_roof_gflops,
    count_flops,
    cpu_peak_bytes,
    operator_times,
)

PEERS = {'RetinaNet': 'retinanet_resnet50_fpn', 'FasterRCNN': 'fasterrcnn_resnet50_fpn'}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('configs', nargs='+', metavar='CONFIG', help='config file(s)')
    parser.add_argument('--checkpoint', help='detkit checkpoint of a single CONFIG (default: '
                        'random weights)')
    parser.add_argument('--task', nargs='+', choices=['inference', 'train'],
                        default=['inference'], help='what to time (one or both)')
    parser.add_argument('--batch', type=int, default=2, help='images per iteration')
    parser.add_argument('--size', type=int, default=640, help='input width in pixels')
    parser.add_argument('--height', type=int, help='input height (default: --size)')
    parser.add_argument('--iters', type=int, default=5, help='timed iterations per variant')
    parser.add_argument('--warmup', type=int, default=2, help='untimed iterations first')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--no-peer', action='store_true', help='skip torchvision')
    parser.add_argument('--peer-weights', action='store_true',
                        help="give detkit torchvision's weights (a configs/torchvision config)")
    parser.add_argument('--compile', action='store_true',
                        help='inference: also time detkit --amp under torch.compile')
    parser.add_argument('--threads', type=int, help='torch intra-op threads on the CPU')
    parser.add_argument('--roof-repeats', type=int, default=8,
                        help='timed calls per shape of the roof convolution (median)')
    parser.add_argument('--profile', type=int, default=0, metavar='N',
                        help='after the table, the N operators each variant spends most time '
                        'in (torch.profiler, one iteration)')
    parser.add_argument('--default-allocator', action='store_true',
                        help="keep glibc's malloc defaults instead of what detkit's tools set "
                        '(detkit/engine/allocator.py), for every variant')
    args = parser.parse_args(argv)
    if args.roof_repeats < 1:
        parser.error(f'--roof-repeats must be at least 1, got {args.roof_repeats}')
    if args.peer_weights and (args.no_peer or args.checkpoint):
        parser.error('--peer-weights copies the peer\'s weights: it excludes --no-peer and '
                     '--checkpoint')
    if args.checkpoint and len(args.configs) > 1:
        parser.error('--checkpoint belongs to one config; got several configs')
    for name in ('batch', 'size', 'iters'):
        if getattr(args, name) < 1:
            parser.error(f'--{name} must be >= 1, got {getattr(args, name)}')
    return args


def rgb_images(images: list[torch.Tensor], model: torch.nn.Module) -> list[torch.Tensor]:
    """``images`` as torchvision reads them: detkit's preprocessor takes cv2's BGR order and, with
    ``bgr_to_rgb``, flips it, while torchvision's models take RGB; so the peer gets the flipped
    images and both models see the same pixels."""
    if getattr(model.data_preprocessor, 'bgr_to_rgb', False):
        return [img.flip(0) for img in images]
    return images


def make_batch(batch: int, height: int, width: int, num_classes: int,
               seed: int = 0) -> tuple[list[torch.Tensor], list[dict]]:
    """``batch`` random uint8 ``(3, height, width)`` images with 3-6 boxes each.

    Returns:
        The images and per image ``dict(boxes=(N, 4) xyxy float32, labels=(N,) int64 in
        0..num_classes-1)``.
    """
    gen = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(batch):
        images.append(torch.randint(0, 256, (3, height, width), dtype=torch.uint8,
                                    generator=gen))
        count = int(torch.randint(3, 7, (1,), generator=gen))
        size = torch.tensor([width, height], dtype=torch.float32)
        xy = torch.rand(count, 2, generator=gen) * size * 0.6
        wh = 16 + torch.rand(count, 2, generator=gen) * size * 0.35
        boxes = torch.cat([xy, torch.minimum(xy + wh, size - 1)], dim=1)
        targets.append(dict(boxes=boxes,
                            labels=torch.randint(0, num_classes, (count,), generator=gen)))
    return images, targets


def num_classes_of(cfg: Config) -> int:
    model = cfg.model
    head = model.get('bbox_head') or model.get('roi_head', {}).get('bbox_head', {})
    return int(head.get('num_classes', 80))


def build_detkit(cfg: Config, checkpoint: str | None, device: str) -> torch.nn.Module:
    if checkpoint:
        from detkit.apis import init_detector
        return init_detector(cfg, checkpoint, device=device)
    model_cfg = cfg.model.copy()
    backbone = model_cfg.get('backbone', {})
    if backbone.get('init_cfg') is not None:  # random weights, the recipe's freezing kept
        model_cfg.backbone = dict(backbone, init_cfg=None)
    model = MODELS.build(model_cfg)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # mmengine logs every initialised tensor at INFO
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)
    return model.to(device)


def build_detkit_like(cfg: Config, peer: torch.nn.Module | None, config: str,
                      device: str) -> torch.nn.Module:
    """detkit's model of ``cfg`` holding the torchvision ``peer``'s weights (strictly loaded)."""
    from detkit.models.converters import convert_torchvision_detector
    if peer is None:
        raise SystemExit(f'benchmark: --peer-weights needs a RetinaNet or Faster R-CNN config, '
                         f'{config} builds a {cfg.model.get("type")}')
    model_cfg = cfg.model.copy()
    norm_cfg = model_cfg.get('backbone', {}).get('norm_cfg', {})
    if norm_cfg.get('type') == 'FrozenBN':  # the peer's FrozenBatchNorm2d keeps eps 1e-5
        model_cfg.backbone = dict(model_cfg.backbone, norm_cfg=dict(norm_cfg, eps=1e-5),
                                  init_cfg=None)
    model = MODELS.build(model_cfg)
    converted = convert_torchvision_detector(peer.state_dict())['state_dict']
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as error:
        raise SystemExit(f'benchmark: --peer-weights: the weights of torchvision\'s model do '
                         f'not fit {config} (use a configs/torchvision config):\n{error}')
    return model.to(device)


def build_peer(model_type: str, num_classes: int, height: int, width: int,
               device: str) -> torch.nn.Module | None:
    """torchvision's model of the same architecture, random weights, COCO-recipe freezing."""
    from torchvision.models import resnet50
    from torchvision.models.detection import FasterRCNN, RetinaNet
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    from torchvision.ops.misc import FrozenBatchNorm2d

    size = dict(min_size=min(height, width), max_size=max(height, width))
    trunk = resnet50(norm_layer=FrozenBatchNorm2d)
    if model_type == 'RetinaNet':
        backbone = _resnet_fpn_extractor(trunk, 3, returned_layers=[2, 3, 4],
                                         extra_blocks=LastLevelP6P7(256, 256))
        model = RetinaNet(backbone, num_classes=num_classes, **size)
    elif model_type == 'FasterRCNN':  # label 0 is torchvision's background
        model = FasterRCNN(_resnet_fpn_extractor(trunk, 3), num_classes=num_classes + 1, **size)
    else:
        return None
    return model.to(device)


@torch.no_grad()
def count_detections(model, peer, images: list[torch.Tensor], peer_images: list[torch.Tensor],
                     device: str) -> tuple[int, int]:
    """The detections detkit's ``model`` finds on ``images`` and torchvision's ``peer`` on the
    same pixels, ``peer_images``."""
    model.eval()
    peer.eval()
    samples = [DetSample(img_shape=tuple(img.shape[1:]), ori_shape=tuple(img.shape[1:]))
               for img in images]
    data = model.data_preprocessor(dict(inputs=images, data_samples=samples), False)
    ours = sum(len(s.pred.scores) for s in model(**data, mode='predict'))
    theirs = sum(len(out['scores']) for out in peer([img.to(device).float() / 255
                                                     for img in peer_images]))
    return ours, theirs


def autocast(device: str, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=torch.float16 if kind == 'cuda' else torch.bfloat16)


def detkit_runner(model, images, targets, task: str, amp: bool,
                  device: str) -> Callable[[], None]:
    """One iteration of detkit's ``model`` on the batch: preprocessing (which emits the layout
    the model was built for), then inference or an SGD step; ``amp`` autocasts."""
    samples = [DetSample(img_shape=tuple(img.shape[1:]), ori_shape=tuple(img.shape[1:]),
                         gt_bboxes=t['boxes'], gt_labels=t['labels'])
               for img, t in zip(images, targets)]

    def batch(training: bool) -> dict:
        return model.data_preprocessor(dict(inputs=images, data_samples=list(samples)),
                                       training)

    if task == 'inference':
        model.eval()

        def run() -> None:
            with torch.no_grad(), autocast(device, amp):
                model(**batch(False), mode='predict')
        return run
    model.train()
    optimizer, scaler = make_optimizer(model, device, amp)

    def step() -> None:
        with autocast(device, amp):
            losses = model(**batch(True), mode='loss')
            total = sum(v for k, v in losses.items() if 'loss' in k)
        optimizer.zero_grad()
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
    return step


def peer_runner(model, images, targets, task: str, amp: bool, device: str,
                model_type: str) -> Callable[[], None]:
    offset = 1 if model_type == 'FasterRCNN' else 0
    peer_targets = [dict(boxes=t['boxes'].to(device), labels=(t['labels'] + offset).to(device))
                    for t in targets]

    def inputs() -> list[torch.Tensor]:
        return [img.to(device, non_blocking=True).float() / 255 for img in images]

    if task == 'inference':
        model.eval()

        def run() -> None:
            with torch.no_grad(), autocast(device, amp):
                model(inputs())
        return run
    model.train()
    optimizer, scaler = make_optimizer(model, device, amp)

    def step() -> None:
        with autocast(device, amp):
            total = sum(model(inputs(), peer_targets).values())
        optimizer.zero_grad()
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
    return step


def make_optimizer(model, device: str, amp: bool):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    use_scaler = amp and torch.device(device).type == 'cuda'  # bf16 needs no loss scaling
    return optimizer, torch.amp.GradScaler(torch.device(device).type, enabled=use_scaler)


def time_it(runs: list[Callable[[], None]], iters: int, warmup: int,
            device: str) -> list[list[float]]:
    """Seconds of each timed call of each run (the device is synchronised around each).

    Every run is warmed up first; then the timed calls alternate between the runs (detkit,
    torchvision, detkit, ...), so that a machine whose speed drifts (a shared CPU, a GPU's clock)
    slows both alike instead of whichever happened to run second.
    """
    cuda = torch.device(device).type == 'cuda'

    def seconds(run: Callable[[], None]) -> float:
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for run in runs:
        for _ in range(warmup):
            run()
    times = [[] for _ in runs]
    for _ in range(iters):
        for run, spent in zip(runs, times):
            spent.append(seconds(run))
    return times


@dataclass
class Variant:
    """One timed model: a name, how it computes, the call that runs one iteration."""

    name: str
    dtype: torch.dtype  # what its convolutions compute in, for the roof
    run: Callable[[], None]
    batch: int
    seconds: list[float] = field(default_factory=list)
    flops: int = 0
    peak_bytes: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def build_variants(config: str, args: argparse.Namespace, task: str, images, targets,
                   device: str) -> tuple[list[Variant], str]:
    """The variants of one config and task (see the module docstring), and what ``--amp``
    chose on this machine."""
    cfg = Config.fromfile(config)
    amp_cfg = Config.fromfile(config)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', AmpFallbackWarning)
        chosen = enable_amp(amp_cfg, train=task == 'train')
    model_type = cfg.model.get('type')
    num_classes = num_classes_of(cfg)
    height, width = images[0].shape[1:]
    low = torch.float16 if torch.device(device).type == 'cuda' else torch.bfloat16
    amp_dtype = torch.float32 if chosen == 'float32' else low
    amp = amp_dtype != torch.float32
    peer = None
    if not args.no_peer:
        peer = build_peer(model_type, num_classes, height, width, device)
    if args.peer_weights:
        detkit_fp32 = build_detkit_like(cfg, peer, config, device)
        detkit_amp = build_detkit_like(amp_cfg, peer, config, device)
    else:
        detkit_fp32 = build_detkit(cfg, args.checkpoint, device)
        detkit_amp = build_detkit(amp_cfg, args.checkpoint, device)
        detkit_amp.load_state_dict(detkit_fp32.state_dict())  # the same random weights
    if amp and task == 'inference':
        prepare_inference_model(detkit_amp, amp_dtype)  # as init_detector(amp=True), test.py
    variants = [Variant('detkit fp32', torch.float32,
                        detkit_runner(detkit_fp32, images, targets, task, False, device),
                        len(images)),
                Variant('detkit --amp', amp_dtype,
                        detkit_runner(detkit_amp, images, targets, task, amp, device),
                        len(images))]
    if args.compile and task == 'inference':
        compiled = copy.deepcopy(detkit_amp)
        compile_inference_model(compiled)   # as init_detector(compile=True)
        variants.append(Variant('detkit --amp, torch.compile', amp_dtype,
                                detkit_runner(compiled, images, targets, task, amp, device),
                                len(images)))
    if peer is not None:
        peer_images = rgb_images(images, detkit_fp32)
        if args.peer_weights and task == 'inference':
            counts = count_detections(detkit_fp32, peer, images, peer_images, device)
            print(f'same weights: detkit finds {counts[0]} detections, torchvision {counts[1]}')
        best = copy.deepcopy(peer).to(memory_format=torch.channels_last)
        variants += [
            Variant('torchvision fp32', torch.float32,
                    peer_runner(peer, peer_images, targets, task, False, device, model_type),
                    len(images)),
            Variant('torchvision best', low,
                    peer_runner(best, peer_images, targets, task, True, device, model_type),
                    len(images))]
    return variants, chosen


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark and print one table; return its rows as dicts."""
    args = parse_args(argv)
    allocator = ('glibc defaults (--default-allocator)' if args.default_allocator
                 else tune_cpu_allocator())   # as the tools, for detkit and torchvision alike
    if args.threads:
        torch.set_num_threads(args.threads)
    for config in args.configs:
        if not osp.isfile(config):
            sys.exit(f'benchmark: config file {config!r} does not exist')
        if 'train' in args.task and not Config.fromfile(config).model.get('train_cfg'):
            sys.exit(f'benchmark: --task train needs model.train_cfg in {config} (assigners and '
                     f'samplers); the configs/torchvision configs are for inference only')
    device = args.device
    height, width = args.height or args.size, args.size
    cuda = torch.device(device).type == 'cuda'
    low = torch.float16 if cuda else torch.bfloat16
    roofs = {torch.float32: conv_roof_gflops(torch.float32, device, args.roof_repeats),
             low: conv_roof_gflops(low, device, args.roof_repeats)}
    if cuda:
        machine = torch.cuda.get_device_name(device)
    else:
        flags = cpu_bf16_flags()
        units = ('unknown' if flags is None else
                 ', '.join(sorted(flags)) if flags else 'none (bf16 would be emulated)')
        machine = (f'CPU {cpu_model_name()}, {torch.get_num_threads()} threads, native bf16: '
                   f'{units}')
    print(f'{machine}; torch {torch.__version__}; batch {args.batch}x3x{height}x{width}; '
          f'{args.iters} timed iterations per variant (alternating) after {args.warmup} '
          f'warm-up; weights: ' + (args.checkpoint or ('random, the same in both'
                                                       if args.peer_weights else 'random')))
    print(f'allocator: {allocator}')
    print('roof (best 3x3 convolution, channels-last): '
          + ', '.join(f'{str(dtype).split(".")[-1]} {gflops:.0f} GFLOPS'
                      for dtype, gflops in roofs.items()))
    print('| config | task | variant | s/iter | images/s | peak MiB | GFLOPS | % of roof '
          '| vs torchvision fp32 | vs torchvision best |')
    print('| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
    rows: list[dict] = []
    profiles: list[tuple[str, list[tuple[str, float, int]]]] = []
    for config in args.configs:
        for task in args.task:
            torch.manual_seed(0)
            num_classes = num_classes_of(Config.fromfile(config))
            images, targets = make_batch(args.batch, height, width, num_classes)
            variants, chosen = build_variants(config, args, task, images, targets, device)
            times = time_it([v.run for v in variants], args.iters, args.warmup, device)
            for variant, spent in zip(variants, times):
                variant.seconds = spent
                variant.flops = count_flops(variant.run)
                variant.peak_bytes = (peak_cuda_bytes(variant.run, device) if cuda
                                      else cpu_peak_bytes(variant.run))
            medians = {v.name: v.median for v in variants}
            for variant in variants:
                gflops = variant.flops / variant.median / 1e9
                row = dict(config=osp.basename(config), task=task, variant=variant.name,
                           seconds=variant.median, images_per_s=variant.batch / variant.median,
                           peak_mib=variant.peak_bytes / 2**20, gflops=gflops,
                           roof_share=gflops / roofs[variant.dtype], amp=chosen)
                for peer in ('torchvision fp32', 'torchvision best'):
                    row[f'vs {peer}'] = (medians[peer] / variant.median
                                         if peer in medians else None)
                rows.append(row)
                ratios = ' | '.join(f'{row[k]:.2f}x' if row[k] else '-'
                                    for k in ('vs torchvision fp32', 'vs torchvision best'))
                print(f"| {row['config']} | {task} | {variant.name} | {row['seconds']:.3f} | "
                      f"{row['images_per_s']:.2f} | {row['peak_mib']:.0f} | {gflops:.0f} | "
                      f"{100 * row['roof_share']:.0f}% | {ratios} |", flush=True)
            if args.profile:   # profiled now, printed after the table
                profiles += [(f'{osp.basename(config)} {task}, {variant.name}',
                              operator_times(variant.run, device)) for variant in variants]
    for title, times in profiles:
        print_operator_times(title, times, args.profile)
    return rows


def print_operator_times(title: str, times: list[tuple[str, float, int]], most: int) -> None:
    """The ``most`` costliest operators of one profiled iteration, as a table."""
    total = sum(ms for _, ms, _ in times)
    print(f'\nwhere one iteration goes: {title} ({total:.0f} ms in operators, self time)')
    print('| operator | ms | share | calls |\n| --- | ---: | ---: | ---: |')
    for name, ms, calls in times[:most]:
        print(f'| {name} | {ms:.1f} | {100 * ms / total:.1f}% | {calls} |')


def peak_cuda_bytes(call: Callable[[], None], device: str) -> int:
    """The peak bytes CUDA's allocator holds during ``call()`` above what it held before."""
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    call()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


if __name__ == '__main__':
    main()
