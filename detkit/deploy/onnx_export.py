"""Export a detector to one ONNX file that plain onnxruntime runs, checked before it is written.

:func:`export_onnx` traces :class:`~detkit.deploy.graph.ExportableDetector` with
``torch.onnx.export(dynamo=False)`` into a temporary file beside the output, checks that the
graph uses standard ONNX operators only and follows the contract (:func:`check_contract`), runs
onnxruntime on a test batch, compares its detections with PyTorch's (:class:`ParityReport`)
and only then moves the file into place. What a deployment needs besides the weights (class
names, normalisation, the size divisor) is stored in the model's ``metadata_props`` under
``detkit.*`` keys (:data:`METADATA_KEYS`).
"""
from __future__ import annotations

import json
import math
import os
import os.path as osp
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from detkit.deploy.graph import INPUT_NAMES, OUTPUT_NAMES, ExportableDetector
from detkit.engine.checkpoint_hook import replace_as_new_file
from detkit.errors import InputError

# what the file stores besides the graph: read back by detkit.deploy.onnx_runtime
METADATA_KEYS = ('detkit.classes', 'detkit.mean', 'detkit.std', 'detkit.bgr_to_rgb',
                 'detkit.pad_size_divisor', 'detkit.max_per_img', 'detkit.input_shape')

# the largest differences the export accepts between onnxruntime and PyTorch
BOX_TOLERANCE_PX = 1e-3
SCORE_TOLERANCE = 1e-4


class OnnxExportError(RuntimeError):
    """The model cannot be exported, or its export does not reproduce PyTorch."""


class OnnxContractError(InputError):
    """An ``.onnx`` file's inputs or outputs do not follow detkit's graph contract."""


@dataclass
class ParityReport:
    """How onnxruntime's detections compare with PyTorch's on one batch.

    Attributes:
        counts: per image, ``(PyTorch, onnxruntime)`` numbers of detections.
        max_box_diff: largest coordinate difference, pixels (over the detections both have).
        max_score_diff: largest score difference.
        labels_equal: every compared label equal.
        sorted_by_score: both sides list each image's detections by decreasing score.
    """

    counts: list[tuple[int, int]]
    max_box_diff: float
    max_score_diff: float
    labels_equal: bool
    sorted_by_score: bool = True

    @property
    def ok(self) -> bool:
        """Same counts and labels, sorted by score, boxes within 1e-3 px and scores within
        1e-4."""
        return (all(a == b for a, b in self.counts) and self.labels_equal
                and self.sorted_by_score
                and self.max_box_diff <= BOX_TOLERANCE_PX
                and self.max_score_diff <= SCORE_TOLERANCE)

    def __str__(self) -> str:
        counts = ', '.join(f'{a}/{b}' for a, b in self.counts)
        return (f'detections per image (PyTorch/onnxruntime) {counts}; largest box difference '
                f'{self.max_box_diff:.3g} px, score difference {self.max_score_diff:.3g}, '
                f'labels {"equal" if self.labels_equal else "DIFFERENT"}'
                f'{"" if self.sorted_by_score else "; NOT sorted by score"}')


def compare_detections(expected: tuple[Tensor, Tensor],
                       actual: tuple[Tensor, Tensor]) -> ParityReport:
    """Compare two ``(dets (N, K, 5), labels (N, K))`` pairs of the graph contract.

    Each image's detections are compared as sets: both sides are put in one canonical order
    (by label, then x1, y1, x2, y2) first, because two detections with exactly the same score
    may come in either order (a top-k over tied values keeps no particular order) and rounding
    can swap two that nearly tie. ``sorted_by_score`` says whether both sides list each image's
    detections by decreasing score, as the contract wants.
    """
    (dets_a, labels_a), (dets_b, labels_b) = expected, actual
    counts, box_diff, score_diff, same, ordered = [], 0.0, 0.0, True, True
    for i in range(dets_a.shape[0]):
        count_a, count_b = int((labels_a[i] >= 0).sum()), int((labels_b[i] >= 0).sum())
        counts.append((count_a, count_b))
        for dets, count in ((dets_a[i], count_a), (dets_b[i], count_b)):
            if count > 1:
                ordered = ordered and bool((dets[1:count, 4] <= dets[:count - 1, 4]).all())
        n = min(count_a, count_b)
        if n:
            rows_a = _canonical(dets_a[i, :n].double(), labels_a[i, :n])
            rows_b = _canonical(dets_b[i, :n].double(), labels_b[i, :n])
            box_diff = max(box_diff, _largest(rows_a[:, 1:5] - rows_b[:, 1:5]))
            score_diff = max(score_diff, _largest(rows_a[:, 5] - rows_b[:, 5]))
            same = same and bool((rows_a[:, 0] == rows_b[:, 0]).all())
    return ParityReport(counts, box_diff, score_diff, same, ordered)


def _largest(difference: Tensor) -> float:
    """The largest absolute difference; a NaN counts as infinitely large."""
    return float(difference.abs().nan_to_num(nan=math.inf).max())


def _canonical(dets: Tensor, labels: Tensor) -> Tensor:
    """Rows ``(label, x1, y1, x2, y2, score)`` sorted by label, then x1, y1, x2, y2."""
    rows = torch.cat([labels[:, None].to(dets.dtype), dets], dim=1)
    for column in (4, 3, 2, 1, 0):   # stable sorts, least significant key first
        rows = rows[torch.sort(rows[:, column], stable=True).indices]
    return rows


def default_input_shape(cfg: Any) -> tuple[int, int]:
    """``(H, W)`` of the config's test input: its test ``Resize`` scale (the landscape
    orientation when the ratio is kept), padded up to the preprocessor's size divisor.

    Raises:
        OnnxExportError: the test pipeline has no ``Resize`` with a ``scale``.
    """
    pipeline = cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline', [])
    resize = next((step for step in pipeline if step.get('type') == 'Resize'), None)
    if resize is None or 'scale' not in resize:
        raise OnnxExportError('export_onnx: the config\'s test pipeline has no Resize with a '
                              'scale, so there is no default input size; give --shape H W')
    first, second = (int(v) for v in resize['scale'])
    if resize.get('keep_ratio', True):
        height, width = min(first, second), max(first, second)
    else:
        width, height = first, second
    divisor = int(cfg.model.get('data_preprocessor', {}).get('pad_size_divisor', 32))
    return (math.ceil(height / divisor) * divisor, math.ceil(width / divisor) * divisor)


def check_input_shape(shape: Sequence[int], divisor: int) -> tuple[int, int]:
    """A ``--shape H W`` the detector can take: two positive multiples of the size divisor.

    Raises:
        ValueError: naming the shape and the nearest valid one.
    """
    if len(shape) != 2 or not all(isinstance(v, int) and v > 0 for v in shape):
        raise ValueError(f'--shape must be two positive integers H W, got {list(shape)}')
    height, width = shape
    if height % divisor or width % divisor:
        fixed = (math.ceil(height / divisor) * divisor, math.ceil(width / divisor) * divisor)
        raise ValueError(f'--shape {height} {width}: the model pads its input to multiples of '
                         f'{divisor} (data_preprocessor.pad_size_divisor); use --shape '
                         f'{fixed[0]} {fixed[1]}')
    return height, width


def check_contract(model: Any, path: str = 'the model') -> None:
    """Check an ONNX model's inputs and outputs against the graph contract.

    One input ``images`` float ``(N, 3, H, W)``; outputs ``dets`` float ``(N, K, 5)`` and
    ``labels`` int64 ``(N, K)``.

    Args:
        model: an ``onnx.ModelProto``.
        path: the file, for messages.

    Raises:
        OnnxContractError: naming the first input or output that differs.
    """
    import onnx

    def describe(value: Any) -> tuple[int, list[Any]]:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField('dim_value') else d.dim_param
                for d in tensor.shape.dim]
        return tensor.elem_type, dims

    inputs = [i for i in model.graph.input
              if i.name not in {init.name for init in model.graph.initializer}]
    expected = [('input', INPUT_NAMES[0], onnx.TensorProto.FLOAT, 4, 1, 3),
                ('output', OUTPUT_NAMES[0], onnx.TensorProto.FLOAT, 3, 2, 5),
                ('output', OUTPUT_NAMES[1], onnx.TensorProto.INT64, 2, None, None)]
    found = {'input': inputs, 'output': list(model.graph.output)}
    for kind in ('input', 'output'):
        names = [v.name for v in found[kind]]
        wanted = [e[1] for e in expected if e[0] == kind]
        if names != wanted:
            raise OnnxContractError(f'{path}: {kind}s are {names}; detkit expects {wanted} '
                                    '(export with tools/deployment/export_onnx.py)')
    values = {v.name: v for v in inputs + list(model.graph.output)}
    for kind, name, elem_type, rank, axis, size in expected:
        got_type, dims = describe(values[name])
        type_name = onnx.TensorProto.DataType.Name
        if got_type != elem_type or len(dims) != rank:
            raise OnnxContractError(
                f'{path}: {kind} {name!r} is {type_name(got_type)} of rank {len(dims)}; '
                f'expected {type_name(elem_type)} of rank {rank}')
        if axis is not None and dims[axis] != size:
            raise OnnxContractError(f'{path}: {kind} {name!r} has {dims[axis]!r} at axis '
                                    f'{axis}; expected {size}')


def load_onnx(path: str, load_external_data: bool = True) -> Any:
    """``onnx.load`` with errors that name the file.

    Raises:
        FileNotFoundError: the file does not exist.
        OnnxContractError: it is not an ONNX model.
    """
    import onnx

    if not osp.isfile(path):
        raise FileNotFoundError(f'{path!r} does not exist')
    try:
        return onnx.load(path, load_external_data=load_external_data)
    except Exception as error:  # protobuf's DecodeError and friends
        raise OnnxContractError(f'{path}: not an ONNX model ({type(error).__name__}: '
                                f'{error})') from None


def nonstandard_operators(model: Any) -> list[str]:
    """The ``domain::op_type`` of every node outside the standard ONNX domain."""
    return sorted({f'{node.domain}::{node.op_type}' for node in model.graph.node
                   if node.domain not in ('', 'ai.onnx')})


def export_onnx(detector: nn.Module, out: str, *, shape: tuple[int, int], batch: int = 1,
                dynamic: bool = False, opset: int = 17, classes: Sequence[str] = (),
                check_images: Tensor | None = None) -> ParityReport:
    """Export ``detector`` to ``out`` after checking the export against PyTorch.

    Args:
        detector: a detkit detector (float32, eval mode, on the CPU).
        out: the ``.onnx`` file to write (replaced only when the check passes).
        shape: ``(H, W)`` of the example input (with ``dynamic``) or of the graph's input.
        batch: ``N`` of the example input (of the graph's input unless ``dynamic``).
        dynamic: make N, H and W dynamic.
        opset: the ONNX opset (16 or newer: RoIAlign's half-pixel mode).
        classes: the class names, stored in the file's metadata.
        check_images: ``(N, 3, H, W)`` raw BGR float images for the check (default: random
            pixels, seed 0).

    Returns:
        The :class:`ParityReport` of the check.

    Raises:
        OnnxExportError: the detector cannot be exported, the graph holds non-standard
            operators, or onnxruntime's detections differ from PyTorch's beyond 1e-3 px /
            1e-4 (the report says by how much); nothing is written then.
    """
    import onnx
    import onnxruntime

    if opset < 16:
        raise OnnxExportError(f'export_onnx: opset {opset} is too old; RoIAlign needs 16 or '
                              'newer (its half-pixel mode)')
    try:
        wrapper = ExportableDetector(detector.float().eval().cpu()).eval()
    except TypeError as error:
        raise OnnxExportError(str(error)) from None
    pad_value = float(getattr(wrapper.detector.data_preprocessor, 'pad_value', 0.0))
    if pad_value != 0:
        raise OnnxExportError(f'export_onnx: data_preprocessor.pad_value={pad_value}; the graph '
                              'contract pads raw images with the mean colour, which normalises '
                              'to 0 only (pad_value=0, the default)')
    height, width = shape
    example = torch.randint(0, 256, (batch, 3, height, width),
                            generator=torch.Generator().manual_seed(0)).float()
    images = example if check_images is None else check_images.float()
    if images.dim() != 4 or images.shape[1] != 3 or (
            not dynamic and tuple(images.shape) != tuple(example.shape)):
        wanted = 'N, 3, H, W' if dynamic else f'{batch}, 3, {height}, {width}'
        raise OnnxExportError(f'export_onnx: check_images has shape {tuple(images.shape)}; '
                              f'expected ({wanted})')
    axes = {'images': {0: 'N', 2: 'H', 3: 'W'}, 'dets': {0: 'N'}, 'labels': {0: 'N'}}
    directory = osp.dirname(osp.abspath(out))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix='.onnx.partial', dir=directory)
    os.close(handle)
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter (dynamo=False): torch 2.14 calls it deprecated, but it
            # exports the heads' data-dependent top-k and NMS as they are. Its TracerWarnings
            # come from argument checks (x.dim() != 4, ...) that are constant for every input
            # the contract allows; the parity check below and the tests with other sizes prove
            # the graph general.
            warnings.simplefilter('ignore', DeprecationWarning)
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            try:
                torch.onnx.export(wrapper, (example,), temporary, dynamo=False,
                                  opset_version=opset, input_names=list(INPUT_NAMES),
                                  output_names=list(OUTPUT_NAMES),
                                  dynamic_axes=axes if dynamic else None)
            except Exception as error:  # the exporter's errors name the operator
                raise OnnxExportError(f'export_onnx: torch.onnx.export failed for '
                                      f'{type(detector).__name__}: {type(error).__name__}: '
                                      f'{error}') from error
        model = onnx.load(temporary)
        foreign = nonstandard_operators(model)
        if foreign:
            raise OnnxExportError(f'export_onnx: the graph holds non-standard operators '
                                  f'{foreign}; plain onnxruntime could not run it')
        check_contract(model, out)
        pre: Any = wrapper.detector.data_preprocessor
        head_cfg = getattr(getattr(detector, 'roi_head', None) or getattr(detector, 'bbox_head'),
                           'test_cfg')
        metadata = {'detkit.classes': json.dumps(list(classes)),
                    'detkit.mean': json.dumps([float(v) for v in pre.mean.flatten()]),
                    'detkit.std': json.dumps([float(v) for v in pre.std.flatten()]),
                    'detkit.bgr_to_rgb': json.dumps(bool(pre.bgr_to_rgb)),
                    'detkit.pad_size_divisor': str(int(pre.pad_size_divisor)),
                    'detkit.max_per_img': str(int(head_cfg.max_per_img)),
                    # the input the export was made (and, if dynamic, is best calibrated) at
                    'detkit.input_shape': json.dumps([int(height), int(width)])}
        # K is fixed (the top-K of best_per_image); the tracer names it symbolically
        for output in model.graph.output:
            output.type.tensor_type.shape.dim[1].dim_value = int(head_cfg.max_per_img)
        onnx.helper.set_model_props(model, metadata)
        onnx.save(model, temporary)
        with torch.no_grad():
            expected = wrapper(images)
        try:
            session = onnxruntime.InferenceSession(temporary,
                                                   providers=['CPUExecutionProvider'])
            dets, labels = session.run(None, {INPUT_NAMES[0]: images.numpy()})
        except Exception as error:  # onnxruntime's errors name the node
            raise OnnxExportError(f'export_onnx: onnxruntime cannot run the exported graph: '
                                  f'{type(error).__name__}: {error}') from error
        report = compare_detections(expected, (torch.from_numpy(dets), torch.from_numpy(labels)))
        if not report.ok:
            raise OnnxExportError(f'export_onnx: onnxruntime does not reproduce PyTorch on the '
                                  f'check images: {report}; {out} was not written')
        replace_as_new_file(temporary, out)
        return report
    finally:
        if osp.exists(temporary):
            os.remove(temporary)
