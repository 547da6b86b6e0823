"""One RetinaNet R50-FPN training iteration: detkit next to torchvision, measured in one run.

    python tools/analysis/benchmark_train_step.py [--batch 2] [--size 512] [--iters 5]

Both models get the same uint8 batch and the same ground truth, start from random weights
with the COCO-recipe freezing (stem + layer1 frozen, BatchNorm statistics fixed), and take full
SGD steps: preprocessing (normalise + pad), forward, loss, backward and the optimizer update.
torchvision's transform is told not to resize (min_size = max_size = the input size), so both
see the same pixels. The table shows the median time per iteration and the ratio.
"""
from __future__ import annotations

import argparse
import os.path as osp
import statistics
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from torchvision.models import resnet50  # noqa: E402
from torchvision.models.detection import RetinaNet  # noqa: E402
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor  # noqa: E402
from torchvision.ops.feature_pyramid_network import LastLevelP6P7  # noqa: E402
from torchvision.ops.misc import FrozenBatchNorm2d  # noqa: E402

import detkit.models  # noqa: E402,F401
from detkit.registry import MODELS  # noqa: E402
from detkit.structures import DetSample  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def make_batch(batch: int, size: int, seed: int = 0) -> tuple[list[torch.Tensor], list[dict]]:
    """``batch`` random uint8 images ``(3, size, size)`` with 3-6 boxes each (xyxy, labels)."""
    gen = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(batch):
        images.append(torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen))
        count = int(torch.randint(3, 7, (1,), generator=gen))
        xy = torch.rand(count, 2, generator=gen) * size * 0.6
        wh = 16 + torch.rand(count, 2, generator=gen) * size * 0.35
        boxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], dim=1)
        targets.append(dict(boxes=boxes, labels=torch.randint(0, 80, (count,), generator=gen)))
    return images, targets


def build_detkit(size: int) -> torch.nn.Module:
    cfg = Config.fromfile(osp.join(REPO, 'configs/retinanet_r50.py'))
    cfg.model.backbone.init_cfg = None  # random weights, same freezing as the COCO recipe
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.train()


def build_torchvision(size: int) -> torch.nn.Module:
    # torchvision's retinanet_resnet50_fpn with ImageNet weights: FrozenBatchNorm, layers 2-4
    # trainable; built here without the weights. Labels are 0..79 as in detkit.
    backbone = resnet50(norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(backbone, 3, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(256, 256))
    return RetinaNet(backbone, num_classes=80, min_size=size, max_size=size).train()


def detkit_step(model, optimizer, images, targets) -> None:
    samples = [DetSample(img_shape=tuple(img.shape[1:]), ori_shape=tuple(img.shape[1:]),
                         gt_bboxes=t['boxes'], gt_labels=t['labels'])
               for img, t in zip(images, targets)]
    data = model.data_preprocessor(dict(inputs=images, data_samples=samples), True)
    losses = model(**data, mode='loss')
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()


def torchvision_step(model, optimizer, images, targets) -> None:
    losses = model([img.float() / 255 for img in images], targets)
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()


def time_steps(step, model, images, targets, iters: int, warmup: int) -> list[float]:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    times = []
    for index in range(warmup + iters):
        start = time.perf_counter()
        step(model, optimizer, images, targets)
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--size', type=int, default=512)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(0)
    images, targets = make_batch(args.batch, args.size)
    rows = []
    for name, build, step in (('detkit', build_detkit, detkit_step),
                              ('torchvision', build_torchvision, torchvision_step)):
        model = build(args.size)
        times = time_steps(step, model, images, targets, args.iters, args.warmup)
        rows.append((name, statistics.median(times), min(times)))
        del model
    base = rows[1][1]
    print(f'RetinaNet R50-FPN training iteration, batch {args.batch}x3x{args.size}x{args.size}, '
          f'{torch.get_num_threads()} threads, torch {torch.__version__}, '
          f'{args.iters} timed iterations after {args.warmup} warm-up')
    print(f"{'model':<12} {'median s/iter':>14} {'min s/iter':>11} {'speed vs torchvision':>21}")
    for name, median, fastest in rows:
        print(f'{name:<12} {median:>14.3f} {fastest:>11.3f} {base / median:>20.2f}x')


if __name__ == '__main__':
    main()
