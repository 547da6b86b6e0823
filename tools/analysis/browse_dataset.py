"""Draw what the model is trained on: the data pipeline's output images with their boxes.

    python tools/analysis/browse_dataset.py CONFIG --out-dir DIR [--phase train|val|test]
        [--num 20] [--cfg-options KEY=VALUE ...]

Builds ``<phase>_dataloader.dataset`` of the config, runs its pipeline (so resizing, flipping and
any augmentation are applied as in training) and writes ``DIR/<index>_<image name>.jpg`` with the
ground-truth boxes and class names; ignore regions (COCO crowd, VOC difficult) are drawn in grey.
Prints the number of boxes per class over the browsed images.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from collections import Counter

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from mmengine.config import Config  # noqa: E402

from detkit.engine import ConfigOptions  # noqa: E402
from detkit.registry import DATASETS, check_config_types  # noqa: E402
from detkit.visualization import draw_detections  # noqa: E402

IGNORE_COLOR = (160, 160, 160)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('--out-dir', required=True, help='where the drawn images go')
    parser.add_argument('--phase', choices=['train', 'val', 'test'], default='train',
                        help='which dataloader to browse')
    parser.add_argument('--num', type=int, default=20, help='how many images (from the start)')
    parser.add_argument('--cfg-options', nargs='+', action=ConfigOptions, metavar='KEY=VALUE',
                        help='override config keys')
    return parser.parse_args(argv)


def boxes_in_original_pixels(pipeline: list) -> bool:
    """Whether the pipeline loads the boxes after resizing (test pipelines do: the metric compares
    with the annotation file), so they are in pixels of the original image, not of the output."""
    types = [step.get('type') for step in pipeline]
    if 'LoadAnnotations' not in types:
        return False
    resizes = [i for i, t in enumerate(types) if t == 'Resize']
    return bool(resizes) and types.index('LoadAnnotations') > resizes[0]


def draw_sample(item: dict, class_names: tuple[str, ...], original_pixels: bool) -> np.ndarray:
    """The pipeline output ``dict(inputs=(3, H, W) BGR tensor, data_samples=DetSample)`` drawn:
    boxes and names in class colours, ignore regions in grey. ``original_pixels``: the boxes are
    in pixels of the original image and are scaled by the sample's ``scale_factor`` first."""
    image = item['inputs'].permute(1, 2, 0).numpy()
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    sample = item['data_samples']
    scale = np.ones(4, np.float32)
    if original_pixels:
        w_scale, h_scale = sample.scale_factor
        scale = np.array([w_scale, h_scale, w_scale, h_scale], np.float32)
    drawn = draw_detections(np.ascontiguousarray(image), sample.gt_bboxes.numpy() * scale,
                            sample.gt_labels.numpy(), None, class_names)
    for x1, y1, x2, y2 in (sample.gt_ignore_bboxes.numpy() * scale).round().astype(int).tolist():
        cv2.rectangle(drawn, (x1, y1), (x2, y2), IGNORE_COLOR, 1)
    return drawn


def main(argv: list[str] | None = None) -> Counter:
    args = parse_args(argv)
    if not osp.isfile(args.config):
        sys.exit(f'browse_dataset: config file {args.config!r} does not exist')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    key = f'{args.phase}_dataloader'
    if key not in cfg or 'dataset' not in cfg[key]:
        sys.exit(f'browse_dataset: config {args.config!r} has no {key}.dataset')
    try:
        check_config_types(cfg[key].dataset, f'{key}.dataset')
        dataset = DATASETS.build(cfg[key].dataset)
    except (KeyError, FileNotFoundError, ValueError) as error:
        sys.exit(f'browse_dataset {args.config} ({key}.dataset): {error}')
    class_names = tuple(dataset.metainfo.get('classes', ()))
    original_pixels = boxes_in_original_pixels(list(cfg[key].dataset.get('pipeline', [])))
    os.makedirs(args.out_dir, exist_ok=True)
    counts: Counter = Counter()
    num = min(args.num, len(dataset))
    for index in range(num):
        item = dataset[index]
        sample = item['data_samples']
        counts.update(class_names[label] if label < len(class_names) else f'class_{label}'
                      for label in sample.gt_labels.tolist())
        counts['(ignore regions)'] += int(sample.gt_ignore_bboxes.shape[0])
        name = osp.splitext(osp.basename(sample.img_path) or f'image{index}')[0]
        out_path = osp.join(args.out_dir, f'{index:04d}_{name}.jpg')
        if not cv2.imwrite(out_path, draw_sample(item, class_names, original_pixels)):
            sys.exit(f'browse_dataset: could not write {out_path!r}')
    print(f'wrote {num} of {len(dataset)} {args.phase} images to {args.out_dir}; boxes: '
          + ', '.join(f'{name} {n}' for name, n in sorted(counts.items()) if n))
    return counts


if __name__ == '__main__':
    main()
