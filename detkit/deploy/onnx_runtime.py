"""An exported ``.onnx`` detector behind detkit's model interface, run by onnxruntime.

:class:`OnnxDetector` has the ``test_step`` that mmengine's test loop and
:func:`~detkit.apis.inference_detector` call: it takes the test pipeline's resized images,
pads them as the data preprocessor would (with the mean colour, which normalises to the
preprocessor's zero padding), runs the session, drops the padding rows of the contract, clips
the boxes to each image and maps them back to the original image.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from detkit.deploy.graph import INPUT_NAMES
from detkit.deploy.onnx_export import (
    METADATA_KEYS,
    OnnxContractError,
    check_contract,
    load_onnx,
)
from detkit.registry import MODELS
from detkit.structures import Detections, DetSample


@MODELS.register_module()
class OnnxDetector(nn.Module):
    """An ONNX detector with the contract of :mod:`detkit.deploy.graph`.

    Registered, so that ``tools/test.py CONFIG MODEL.onnx`` evaluates it by replacing the
    config's model with ``dict(type='OnnxDetector', path=...)``.

    Args:
        path: the ``.onnx`` file (written by ``tools/deployment/export_onnx.py``).
        threads: onnxruntime's intra-op threads (0: its default, all cores).

    Attributes:
        input_shape: ``(H, W)`` of a static graph's input, or None for a dynamic one.
        batch_size: ``N`` of a static graph's input, or None.
        classes: the class names stored at export.

    Raises:
        FileNotFoundError: the file does not exist.
        OnnxContractError: its inputs, outputs or ``detkit.*`` metadata are not detkit's.
    """

    def __init__(self, path: str | os.PathLike[str], threads: int = 0) -> None:
        super().__init__()
        import onnxruntime

        self.path = os.fspath(path)
        model = load_onnx(self.path, load_external_data=False)
        check_contract(model, self.path)
        props = {p.key: p.value for p in model.metadata_props}
        missing = [key for key in METADATA_KEYS if key not in props]
        if missing:
            raise OnnxContractError(f'{self.path}: metadata {missing} missing; export the model '
                                    'with tools/deployment/export_onnx.py')
        self.classes = tuple(json.loads(props['detkit.classes']))
        mean = json.loads(props['detkit.mean'])
        # the preprocessor's mean is in the order after its BGR->RGB swap; padding is raw BGR
        self.pad_bgr = mean[::-1] if json.loads(props['detkit.bgr_to_rgb']) else mean
        self.pad_size_divisor = int(props['detkit.pad_size_divisor'])
        dims = [d.dim_value if d.HasField('dim_value') else None
                for d in model.graph.input[0].type.tensor_type.shape.dim]
        self.batch_size = dims[0]
        self.input_shape = (dims[2], dims[3]) if dims[2] and dims[3] else None
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(self.path, options,
                                                    providers=['CPUExecutionProvider'])
        self.dataset_meta: dict[str, Any] = dict(classes=self.classes)

    def pad(self, images: Sequence[Tensor]) -> np.ndarray:
        """``(3, Hi, Wi)`` uint8 images -> one ``(N, 3, H, W)`` float32 batch, padded at the
        bottom and right with the mean colour to the graph's size (static) or the largest image
        rounded up to the size divisor (dynamic).

        Raises:
            ValueError: an image is larger than a static graph's input, or the batch does not
                fit a static batch size.
        """
        if self.input_shape is not None:
            height, width = self.input_shape
        else:
            divisor = self.pad_size_divisor
            height = math.ceil(max(int(i.shape[1]) for i in images) / divisor) * divisor
            width = math.ceil(max(int(i.shape[2]) for i in images) / divisor) * divisor
        batch = np.empty((len(images), 3, height, width), np.float32)
        batch[:] = np.asarray(self.pad_bgr, np.float32)[None, :, None, None]
        for index, image in enumerate(images):
            h, w = int(image.shape[1]), int(image.shape[2])
            if h > height or w > width:
                raise ValueError(f'OnnxDetector: image {index} is {h}x{w} after the test '
                                 f'pipeline, larger than the graph input {height}x{width} of '
                                 f'{self.path} (a landscape default shape cannot take a '
                                 f'portrait image); export with --dynamic, or with --shape '
                                 f'{max(height, width)} {max(height, width)}')
            batch[index, :, :h, :w] = image.cpu().numpy()
        return batch

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the session on a padded raw BGR batch: ``dets (N, K, 5)``, ``labels (N, K)``.

        A graph of static batch size ``n`` gets the batch in chunks of ``n``, the last one
        filled up with copies of its last image (their rows are dropped).
        """
        size = self.batch_size
        if size is None or batch.shape[0] == size:
            dets, labels = self.session.run(None, {INPUT_NAMES[0]: batch})
            return dets, labels
        outputs = []
        for start in range(0, batch.shape[0], size):
            chunk = batch[start:start + size]
            real = chunk.shape[0]
            if real < size:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - real, axis=0)])
            dets, labels = self.session.run(None, {INPUT_NAMES[0]: chunk})
            outputs.append((dets[:real], labels[:real]))
        return (np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs]))

    def test_step(self, data: dict[str, Any]) -> list[DetSample]:
        """Detections of a test batch (mmengine's test loop, ``inference_detector``).

        Args:
            data: ``inputs``, B ``(3, Hi, Wi)`` uint8 tensors after the test pipeline;
                ``data_samples``, their :class:`DetSample` (``img_shape``, ``scale_factor``).

        Returns:
            The samples with ``pred`` set, boxes in original-image pixels.
        """
        images, samples = list(data['inputs']), list(data['data_samples'])
        dets, labels = self.run(self.pad(images))
        for index, sample in enumerate(samples):
            keep = labels[index] >= 0
            boxes = torch.from_numpy(dets[index, keep, :4].copy())
            height, width = (int(images[index].shape[1]), int(images[index].shape[2]))
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
            w_scale, h_scale = sample.scale_factor
            boxes = boxes / boxes.new_tensor([w_scale, h_scale, w_scale, h_scale])
            sample.pred = Detections(bboxes=boxes,
                                     scores=torch.from_numpy(dets[index, keep, 4].copy()),
                                     labels=torch.from_numpy(labels[index, keep].copy()))
        return samples

    def val_step(self, data: dict[str, Any]) -> list[DetSample]:
        """As :meth:`test_step` (mmengine's validation loop)."""
        return self.test_step(data)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError('OnnxDetector runs through test_step (tools/test.py, '
                        'inference_detector); it has no PyTorch forward')
