"""The last transform: pack the results dict into the model's ``inputs`` and ``DetSample``."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from detkit.registry import TRANSFORMS
from detkit.structures import DetSample


@TRANSFORMS.register_module()
class PackDetInputs:
    """Pack an image and its annotations as ``dict(inputs=..., data_samples=DetSample(...))``.

    ``inputs`` is the image as a ``(3, H, W)`` tensor, BGR, of the image's dtype (``uint8``
    unless loaded with ``to_float32``); normalisation and padding are the data preprocessor's
    job. ``DetSample`` gets the meta data and, when present, ``gt_bboxes`` ``(N, 4)`` float32,
    ``gt_labels`` ``(N,)`` int64 and ``gt_ignore_bboxes`` ``(M, 4)`` float32 (xyxy pixels of
    ``img_shape``); absent ones stay empty. A :class:`~detkit.datasets.JointDataset` adds
    ``dataset_index`` (int) and ``label_groups`` (``(K+1,)`` group ids), carried over as
    ``DetSample.dataset_index`` and an int64 ``DetSample.label_groups`` when present.
    """

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        """Pack ``results``.

        Args:
            results: a dict with ``img`` ``(H, W, 3)`` and the keys set by the loading and
                geometric transforms.

        Returns:
            ``dict(inputs=(3, H, W) tensor, data_samples=DetSample)``.
        """
        if 'img' not in results:
            raise KeyError(f"PackDetInputs needs results['img'] (put LoadImageFromFile first), "
                           f"got keys {sorted(results)}")
        img = results['img']
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"PackDetInputs: results['img'] must be (H, W, 3), got "
                             f"{img.shape} for {results.get('img_path', '?')!r}")
        inputs = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).contiguous()
        height, width = img.shape[:2]
        ori_height, ori_width = results.get('ori_shape', (height, width))
        w_scale, h_scale = results.get('scale_factor', (1.0, 1.0))
        sample = DetSample(
            img_path=str(results.get('img_path', '')),
            img_id=int(results.get('img_id', -1)),
            ori_shape=(int(ori_height), int(ori_width)),
            img_shape=(int(height), int(width)),
            scale_factor=(float(w_scale), float(h_scale)),
            flip=bool(results.get('flip', False)))
        if 'gt_bboxes' in results:
            sample.gt_bboxes = _tensor(results['gt_bboxes'], torch.float32).reshape(-1, 4)
        if 'gt_labels' in results:
            sample.gt_labels = _tensor(results['gt_labels'], torch.int64).reshape(-1)
        if 'gt_ignore_bboxes' in results:
            sample.gt_ignore_bboxes = _tensor(results['gt_ignore_bboxes'],
                                              torch.float32).reshape(-1, 4)
        if 'dataset_index' in results:
            sample.dataset_index = int(results['dataset_index'])
        if 'label_groups' in results:
            sample.label_groups = _tensor(results['label_groups'], torch.int64).reshape(-1)
        if ('gt_bboxes' in results and 'gt_labels' in results
                and sample.gt_bboxes.shape[0] != sample.gt_labels.shape[0]):
            raise ValueError(f'PackDetInputs: {sample.gt_bboxes.shape[0]} gt_bboxes but '
                             f'{sample.gt_labels.shape[0]} gt_labels for {sample.img_path!r}')
        return dict(inputs=inputs, data_samples=sample)

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'


def _tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(array)).to(dtype)
