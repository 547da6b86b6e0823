"""int8 static quantization of an exported detector with onnxruntime's quantizer.

Only the convolutions are quantized (QDQ format: int8 weights per output channel, uint8
activations with ranges calibrated on real images); box decoding, top-k and NMS stay float32,
so the graph's contract does not change. Calibration images go through what the graph expects:
resized to fit its input with the aspect ratio kept (as the test pipeline's ``Resize`` does)
and padded with the mean colour.
"""
from __future__ import annotations

import glob
import json
import os
import os.path as osp
import tempfile
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

from detkit.deploy.graph import INPUT_NAMES
from detkit.deploy.onnx_export import OnnxContractError, check_contract, load_onnx
from detkit.engine.checkpoint_hook import replace_as_new_file

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')
CALIBRATION_METHODS = ('minmax', 'entropy', 'percentile')


def calibration_files(folder: str, limit: int) -> list[str]:
    """The first ``limit`` images of ``folder`` (sorted by name, not recursive).

    Raises:
        FileNotFoundError: the folder does not exist or holds no image.
    """
    if not osp.isdir(folder):
        raise FileNotFoundError(f'quantize_onnx: --calib-images {folder!r} is not a folder')
    files = sorted(f for f in glob.glob(osp.join(folder, '*'))
                   if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise FileNotFoundError(f'quantize_onnx: --calib-images {folder!r} holds no image '
                                f'({", ".join(IMAGE_EXTENSIONS)})')
    return files[:limit]


def fit_and_pad(image: np.ndarray, shape: tuple[int, int], pad_bgr: Sequence[float]) -> np.ndarray:
    """A BGR ``(h, w, 3)`` uint8 image -> ``(3, H, W)`` float32: resized to fit ``shape`` with its
    aspect ratio, then padded at the bottom and right with ``pad_bgr``."""
    height, width = shape
    scale = min(height / image.shape[0], width / image.shape[1])
    new_w = max(1, min(width, int(image.shape[1] * scale + 0.5)))
    new_h = max(1, min(height, int(image.shape[0] * scale + 0.5)))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    out = np.empty((3, height, width), np.float32)
    out[:] = np.asarray(pad_bgr, np.float32)[:, None, None]
    out[:, :new_h, :new_w] = resized.transpose(2, 0, 1)
    return out


def model_input_info(model: Any, path: str) -> tuple[int | None, tuple[int, int], list[float]]:
    """(static batch size or None, the input (H, W) to calibrate at, the BGR padding colour) of
    an exported model, from its input shape and ``detkit.*`` metadata.

    Raises:
        OnnxContractError: the model is not a detkit export.
    """
    check_contract(model, path)
    props = {p.key: p.value for p in model.metadata_props}
    if 'detkit.mean' not in props or 'detkit.input_shape' not in props:
        raise OnnxContractError(f'{path}: no detkit.mean / detkit.input_shape metadata; export '
                                'the model with tools/deployment/export_onnx.py')
    mean = json.loads(props['detkit.mean'])
    pad_bgr = mean[::-1] if json.loads(props.get('detkit.bgr_to_rgb', 'true')) else mean
    dims = [d.dim_value if d.HasField('dim_value') else None
            for d in model.graph.input[0].type.tensor_type.shape.dim]
    height, width = json.loads(props['detkit.input_shape'])
    return dims[0], (int(height), int(width)), pad_bgr


class _Calibration:
    """onnxruntime's ``CalibrationDataReader`` over a list of images (one batch at a time)."""

    def __init__(self, files: list[str], batch: int, shape: tuple[int, int],
                 pad_bgr: Sequence[float]) -> None:
        self.files, self.batch, self.shape, self.pad_bgr = files, batch, shape, pad_bgr
        self._batches: Iterator[dict[str, np.ndarray]] = iter(self._all())

    def _all(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self.files), self.batch):
            chunk = self.files[start:start + self.batch]
            images = []
            for path in chunk:
                image = cv2.imread(path, cv2.IMREAD_COLOR)
                if image is None:
                    raise ValueError(f'quantize_onnx: cannot read calibration image {path!r}')
                images.append(fit_and_pad(image, self.shape, self.pad_bgr))
            while len(images) < self.batch:
                images.append(images[-1])
            yield {INPUT_NAMES[0]: np.stack(images)}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:
        self._batches = iter(self._all())


def quantize_onnx(model_path: str, out: str, calib_folder: str, *, num_images: int = 64,
                  method: str = 'minmax') -> int:
    """Write an int8 copy of an exported detector, calibrated on images of ``calib_folder``.

    Args:
        model_path: a float32 ``.onnx`` file of ``export_onnx``.
        out: the int8 ``.onnx`` to write (written whole or not at all).
        calib_folder: a folder of images of the data set.
        num_images: how many of them calibrate the activation ranges.
        method: ``'minmax'``, ``'entropy'`` or ``'percentile'`` (onnxruntime's calibrators).

    Returns:
        The number of convolutions quantized.

    Raises:
        FileNotFoundError, OnnxContractError, ValueError: naming the file or option.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ValueError(f'quantize_onnx: --method {method!r}; expected one of '
                         f'{CALIBRATION_METHODS}')
    model = load_onnx(model_path)
    batch, shape, pad_bgr = model_input_info(model, model_path)
    files = calibration_files(calib_folder, num_images)
    reader = _Calibration(files, batch or 1, shape, pad_bgr)
    directory = osp.dirname(osp.abspath(out))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix='.onnx.partial', dir=directory)
    os.close(handle)
    prepared = temporary[:-len('.onnx.partial')] + '.prepared.onnx'
    calibration = {'minmax': CalibrationMethod.MinMax, 'entropy': CalibrationMethod.Entropy,
                   'percentile': CalibrationMethod.Percentile}[method]
    try:
        # shape inference and onnxruntime's graph optimisations first (fewer, fused nodes),
        # as onnxruntime's quantizer asks
        quant_pre_process(model_path, prepared)
        quantize_static(prepared, temporary, reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=['Conv'], per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=calibration)
        quantized = onnx.load(temporary)
        check_contract(quantized, out)
        if not quantized.metadata_props:  # the quantizer may drop them: detkit needs them
            onnx.helper.set_model_props(
                quantized, {p.key: p.value for p in model.metadata_props})
            onnx.save(quantized, temporary)
        replace_as_new_file(temporary, out)
    finally:
        for path in (temporary, prepared):
            if osp.exists(path):
                os.remove(path)
    convs = sum(1 for node in quantized.graph.node if node.op_type == 'Conv')
    return convs
