"""Turns a collated list of uint8 images into one normalised, padded batch tensor."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from mmengine.model import BaseDataPreprocessor
from torch import Tensor

from detkit.registry import MODELS
from detkit.structures import DetSample


@MODELS.register_module()
class DetDataPreprocessor(BaseDataPreprocessor):
    """Normalise images, optionally swap BGR to RGB, and pad the batch to a common size.

    Padding goes to the bottom and right, so box coordinates are unchanged; the padded size is
    the largest image of the batch rounded up to a multiple of ``pad_size_divisor``. Padded
    pixels hold ``pad_value`` after normalisation.

    Args:
        mean: per-channel mean, in the channel order *after* the optional BGR->RGB swap.
        std: per-channel standard deviation, same order as ``mean``.
        bgr_to_rgb: swap the channel order of the (BGR, as decoded by cv2) input.
        pad_size_divisor: the padded height and width are multiples of this.
        pad_value: the value of padded pixels in the normalised batch.
        non_blocking: copy to the device without blocking the host.
        channels_last: emit the batch in the channels-last memory format (NHWC strides), the
            layout oneDNN's bfloat16 convolutions run fastest on; the detector then holds its
            weights channels-last too (``--amp`` on a CPU sets this, see
            :func:`detkit.engine.enable_amp`).

    Example:
        >>> pre = DetDataPreprocessor(mean=[0, 0, 0], std=[1, 1, 1], pad_size_divisor=32)
        >>> img = torch.zeros(3, 50, 70, dtype=torch.uint8)
        >>> pre(dict(inputs=[img], data_samples=[DetSample()]))['inputs'].shape
        torch.Size([1, 3, 64, 96])
    """

    def __init__(self, mean: Sequence[float] = (123.675, 116.28, 103.53),
                 std: Sequence[float] = (58.395, 57.12, 57.375), bgr_to_rgb: bool = True,
                 pad_size_divisor: int = 32, pad_value: float = 0.0,
                 non_blocking: bool = False, channels_last: bool = False) -> None:
        super().__init__(non_blocking)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f'DetDataPreprocessor: mean and std need 3 values (one per '
                             f'channel), got mean={list(mean)} std={list(std)}')
        if any(s <= 0 for s in std):
            raise ValueError(f'DetDataPreprocessor: std must be positive, got {list(std)}')
        if pad_size_divisor < 1:
            raise ValueError(f'DetDataPreprocessor: pad_size_divisor must be >= 1, '
                             f'got {pad_size_divisor}')
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(3, 1, 1),
                             persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(3, 1, 1),
                             persistent=False)
        self.bgr_to_rgb = bgr_to_rgb
        self.pad_size_divisor = pad_size_divisor
        self.pad_value = pad_value
        self.channels_last = bool(channels_last)

    def forward(self, data: dict, training: bool = False) -> dict:
        """Build the batch.

        Args:
            data: ``inputs``, a list of B ``(3, Hi, Wi)`` uint8 (or float) tensors, or an already
                stacked ``(B, 3, H, W)`` tensor; ``data_samples``, a list of B
                :class:`DetSample` (or None).
            training: unused; the same steps run in training and testing.

        Returns:
            ``dict(inputs=(B, 3, Hp, Wp) float32 tensor, data_samples=list of DetSample)``
            with every sample's tensors on the model's device and ``pad_shape`` set; a sample
            whose ``img_shape`` / ``ori_shape`` is unset ``(0, 0)`` gets its image's size.
        """
        images = data['inputs']
        if isinstance(images, Tensor):
            images = list(images.unbind(0)) if images.dim() == 4 else [images]
        samples = data.get('data_samples')
        if not images:
            raise ValueError('DetDataPreprocessor: the batch holds no image')
        for index, image in enumerate(images):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f'DetDataPreprocessor: image {index} of the batch has shape '
                                 f'{tuple(image.shape)}; expected (3, H, W)')
        batch = self._normalise_and_pad(images)
        if samples is not None:
            batch_shape = (int(batch.shape[2]), int(batch.shape[3]))
            samples = [self._to_device(sample, batch_shape, (int(image.shape[1]),
                                                             int(image.shape[2])))
                       for sample, image in zip(samples, images)]
        return dict(inputs=batch, data_samples=samples)

    def _normalise_and_pad(self, images: list[Tensor]) -> Tensor:
        divisor = self.pad_size_divisor
        height = math.ceil(max(img.shape[1] for img in images) / divisor) * divisor
        width = math.ceil(max(img.shape[2] for img in images) / divisor) * divisor
        batch = torch.full((len(images), 3, height, width), float(self.pad_value),
                           dtype=torch.float32, device=self.device)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        for index, image in enumerate(images):
            image = image.to(self.device, non_blocking=self._non_blocking).float()
            if self.bgr_to_rgb:
                image = image.flip(0)
            batch[index, :, :image.shape[1], :image.shape[2]] = (image - self.mean) / self.std
        return batch

    def _to_device(self, sample: DetSample, batch_shape: tuple[int, int],
                   image_shape: tuple[int, int]) -> DetSample:
        sample = sample.to(self.device)
        divisor = self.pad_size_divisor
        sample.pad_shape = (math.ceil(image_shape[0] / divisor) * divisor,
                            math.ceil(image_shape[1] / divisor) * divisor)
        sample.batch_input_shape = batch_shape
        # A sample made by hand (not by PackDetInputs) may not know its image's size yet.
        if sample.img_shape == (0, 0):
            sample.img_shape = image_shape
        if sample.ori_shape == (0, 0):
            sample.ori_shape = image_shape
        return sample
