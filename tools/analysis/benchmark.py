"""Images per second of a config's detector, and of torchvision's equivalent, in one run.

    python tools/analysis/benchmark.py CONFIG [CHECKPOINT] --task inference|train
        [--batch 2] [--size 512] [--iters 10] [--warmup 2] [--device cpu] [--amp]
        [--channels-last] [--no-peer] [--peer-weights]

Both models get the same uint8 batch (and, for ``train``, the same ground truth). ``inference``
times preprocessing (normalise + pad), forward and post-processing (NMS included) in eval mode;
``train`` times full SGD steps: preprocessing, forward, loss, backward and the update. The peer
is torchvision's model of the same architecture (RetinaNet or Faster R-CNN with a ResNet-50 FPN,
COCO-recipe freezing: FrozenBatchNorm, stem and layer1 frozen), told not to resize
(``min_size = max_size = --size``) so both see the same pixels. Without a checkpoint both have
random weights; random heads give different detection counts, which changes post-processing
time. For inference numbers that compare like with like, run a ``configs/torchvision`` config
with ``--peer-weights``: detkit then gets the torchvision model's (random) weights through the
converter of tools/model_converters, and both models find the same detections. ``--amp``:
bfloat16 autocast on the CPU, float16 (with loss scaling in training) on CUDA. After the
warm-up the timed iterations alternate between the two models, so that drift in the machine's
speed affects both alike. The table gives the median
seconds per iteration, images/s and the ratio to torchvision.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os.path as osp
import statistics
import sys
import time
from typing import Callable

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402

import detkit.models  # noqa: E402,F401
from detkit.registry import MODELS  # noqa: E402
from detkit.structures import DetSample  # noqa: E402

PEERS = {'RetinaNet': 'retinanet_resnet50_fpn', 'FasterRCNN': 'fasterrcnn_resnet50_fpn'}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', nargs='?', help='detkit checkpoint (default: random)')
    parser.add_argument('--task', choices=['inference', 'train'], default='inference')
    parser.add_argument('--batch', type=int, default=2, help='images per iteration')
    parser.add_argument('--size', type=int, default=512,
                        help='square input side in pixels (e.g. 800; 1333x800 needs --height)')
    parser.add_argument('--height', type=int, help='input height (default: --size)')
    parser.add_argument('--iters', type=int, default=10, help='timed iterations')
    parser.add_argument('--warmup', type=int, default=2, help='untimed iterations first')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--amp', action='store_true', help='mixed precision')
    parser.add_argument('--channels-last', action='store_true', help='NHWC memory format')
    parser.add_argument('--no-peer', action='store_true', help='skip torchvision')
    parser.add_argument('--peer-weights', action='store_true',
                        help="give detkit torchvision's weights (a configs/torchvision config)")
    parser.add_argument('--threads', type=int, help='torch intra-op threads on the CPU')
    args = parser.parse_args(argv)
    if args.peer_weights and (args.no_peer or args.checkpoint):
        parser.error('--peer-weights copies the peer\'s weights: it excludes --no-peer and a '
                     'checkpoint')
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


def detkit_runner(model, images, targets, task: str, amp: bool, device: str,
                  channels_last: bool) -> Callable[[], None]:
    samples = [DetSample(img_shape=tuple(img.shape[1:]), ori_shape=tuple(img.shape[1:]),
                         gt_bboxes=t['boxes'], gt_labels=t['labels'])
               for img, t in zip(images, targets)]

    def batch(training: bool) -> dict:
        data = model.data_preprocessor(dict(inputs=images, data_samples=list(samples)),
                                       training)
        if channels_last:
            data['inputs'] = data['inputs'].contiguous(memory_format=torch.channels_last)
        return data

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


def main(argv: list[str] | None = None) -> list[tuple[str, float, float]]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not osp.isfile(args.config):
        sys.exit(f'benchmark: config file {args.config!r} does not exist')
    cfg = Config.fromfile(args.config)
    if args.task == 'train' and not cfg.model.get('train_cfg'):
        sys.exit(f'benchmark: --task train needs model.train_cfg in {args.config} (assigners and '
                 f'samplers); the configs/torchvision configs are for inference only')
    model_type = cfg.model.get('type')
    num_classes = num_classes_of(cfg)
    height, width = args.height or args.size, args.size
    torch.manual_seed(0)
    images, targets = make_batch(args.batch, height, width, num_classes)
    peer = None
    if args.peer_weights:
        peer = build_peer(model_type, num_classes, height, width, args.device)
        detkit_model = build_detkit_like(cfg, peer, args.config, args.device)
    else:
        detkit_model = build_detkit(cfg, args.checkpoint, args.device)
    if args.channels_last:
        detkit_model = detkit_model.to(memory_format=torch.channels_last)
    peer_images = rgb_images(images, detkit_model)
    names = ['detkit']
    runs = [detkit_runner(detkit_model, images, targets, args.task, args.amp, args.device,
                          args.channels_last)]
    if args.peer_weights and args.task == 'inference':
        counts = count_detections(detkit_model, peer, images, peer_images, args.device)
        print(f'same weights: detkit finds {counts[0]} detections, torchvision {counts[1]}')
    if peer is None and not args.no_peer:
        peer = build_peer(model_type, num_classes, height, width, args.device)
    if peer is not None:
        if args.channels_last:
            peer = peer.to(memory_format=torch.channels_last)
        names.append(f'torchvision {PEERS[model_type]}')
        runs.append(peer_runner(peer, peer_images, targets, args.task, args.amp, args.device,
                                model_type))
    rows = list(zip(names, time_it(runs, args.iters, args.warmup, args.device)))
    device = (torch.cuda.get_device_name(args.device)
              if torch.device(args.device).type == 'cuda'
              else f'CPU, {torch.get_num_threads()} threads')
    print(f'{osp.basename(args.config)} {args.task}, batch {args.batch}x3x{height}x{width}, '
          f'{device}, torch {torch.__version__}, amp={args.amp}, '
          f'channels_last={args.channels_last}, {args.iters} timed iterations each (alternating) '
          f'after {args.warmup} warm-up, weights: '
          + (args.checkpoint or ('random, the same in both' if args.peer_weights else 'random')))
    print(f"{'model':<40} {'median s/iter':>14} {'images/s':>9} {'vs torchvision':>15}")
    summary = []
    peer_median = statistics.median(rows[1][1]) if len(rows) > 1 else None
    for name, times in rows:
        median = statistics.median(times)
        ratio = f'{peer_median / median:.2f}x' if peer_median else '-'
        print(f'{name:<40} {median:>14.4f} {args.batch / median:>9.2f} {ratio:>15}')
        summary.append((name, median, args.batch / median))
    return summary


if __name__ == '__main__':
    main()
