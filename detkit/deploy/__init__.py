"""Deployment: the detector as one ONNX graph (normalisation, decoding and NMS inside) and an
onnxruntime model behind detkit's interface. onnx and onnxruntime are the ``[deploy]`` extra;
they are imported only when an export or a session is made."""
from .graph import INPUT_NAMES, OUTPUT_NAMES, ExportableDetector
from .onnx_export import (
    OnnxContractError,
    OnnxExportError,
    ParityReport,
    check_contract,
    check_input_shape,
    compare_detections,
    default_input_shape,
    export_onnx,
)
from .onnx_runtime import OnnxDetector

__all__ = ['INPUT_NAMES', 'OUTPUT_NAMES', 'ExportableDetector', 'OnnxContractError',
           'OnnxDetector', 'OnnxExportError', 'ParityReport', 'check_contract',
           'check_input_shape', 'compare_detections', 'default_input_shape', 'export_onnx']
