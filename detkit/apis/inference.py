"""Run a trained detector on images: ``init_detector`` builds it, ``inference_detector`` runs it.

    >>> from detkit.apis import init_detector, inference_detector
    >>> model = init_detector('configs/retinanet_r50_shapes.py', 'epoch_5.pth')  # doctest: +SKIP
    >>> result = inference_detector(model, 'demo.jpg')  # doctest: +SKIP
    >>> result.bboxes.shape, result.class_names  # doctest: +SKIP
    (torch.Size([12, 4]), ('circle', 'square', 'triangle', 'star', 'cross'))

Images go through the config's test pipeline (``test_dataloader.dataset.pipeline`` without the
annotation loading), the model's data preprocessor and ``predict``, as in ``tools/test.py``; the
boxes come back in pixels of the image as given.
"""
from __future__ import annotations

import contextlib
import os
import os.path as osp
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, cast

import numpy as np
import torch
from mmengine.config import Config
from torch import Tensor

from detkit.engine.amp import (
    autocast_dtype,
    compile_inference_model,
    enable_amp,
    prepare_inference_model,
)
from detkit.engine.checkpoint_fit import check_state_fits, read_checkpoint
from detkit.engine.config_checks import load_config
from detkit.engine.own_data import apply_own_data
from detkit.registry import MODELS, TRANSFORMS, check_config_types
from detkit.structures import Detections, DetSample

# Transforms that read ground truth: a test pipeline has them for evaluation, inference has no
# annotations to read.
_ANNOTATION_TRANSFORMS = ('LoadAnnotations',)
_LOADER = 'LoadImageFromFile'

# One pipeline step: the results dict (``img``, ``img_path``, shapes, ...) in, updated out.
_Transform = Callable[[dict[str, Any]], dict[str, Any]]


class _Detector(Protocol):
    """What inference reads from a model that ``init_detector`` built.

    ``nn.Module.__getattr__`` types every attribute it does not know as ``Tensor | Module``;
    this names the real types of the attributes ``init_detector`` and the detector add.
    """

    cfg: Config
    dataset_meta: dict[str, Any]
    amp_dtype: torch.dtype | None
    _detkit_test_pipeline: tuple[_Transform, list[_Transform]]

    def test_step(self, data: dict[str, Any]) -> list[DetSample]:
        ...


@dataclass
class DetResult:
    """The detections of one image.

    Attributes:
        bboxes: ``(N, 4)`` float32, xyxy in pixels of the image as it was given.
        scores: ``(N,)`` float32 confidences, highest first.
        labels: ``(N,)`` int64 class indices into ``class_names``.
        class_names: the model's classes, in label order.
        img_path: the file the image was read from (``''`` for an array).
        img_shape: ``(height, width)`` of the image as given.
    """

    bboxes: Tensor
    scores: Tensor
    labels: Tensor
    class_names: tuple[str, ...]
    img_path: str = ''
    img_shape: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def label_names(self) -> list[str]:
        """The class name of every detection (``'class_<i>'`` for a label without a name)."""
        return [self.class_names[i] if 0 <= i < len(self.class_names) else f'class_{i}'
                for i in self.labels.tolist()]

    def above(self, score_thr: float) -> 'DetResult':
        """The detections scoring at least ``score_thr``."""
        keep = self.scores >= score_thr
        return DetResult(self.bboxes[keep], self.scores[keep], self.labels[keep],
                         self.class_names, self.img_path, self.img_shape)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``detections`` = ``[{bbox: [x1, y1, x2, y2], score, label,
        class_name}]`` with the image's path and size."""
        names = self.label_names()
        detections = [dict(bbox=[round(float(v), 2) for v in box], score=round(float(score), 5),
                           label=int(label), class_name=name)
                      for box, score, label, name in zip(self.bboxes.tolist(),
                                                         self.scores.tolist(),
                                                         self.labels.tolist(), names)]
        return dict(img_path=self.img_path, height=int(self.img_shape[0]),
                    width=int(self.img_shape[1]), detections=detections)


def init_detector(config: str | os.PathLike[str] | Config,
                  checkpoint: str | os.PathLike[str] | None = None,
                  device: str | torch.device = 'cpu',
                  cfg_options: dict[str, Any] | None = None,
                  amp: bool = False, compile: bool = False) -> torch.nn.Module:
    """Build the detector of a config, load a checkpoint into it and put it in eval mode.

    The class names come from the checkpoint's ``meta['dataset_meta']['classes']`` (what
    ``tools/train.py`` and the torchvision converter write), else from the config's test data
    set ``metainfo.classes``; they are stored as ``model.dataset_meta['classes']``. The config is
    kept as ``model.cfg``; ``inference_detector`` reads its test pipeline.

    Args:
        config: a config file or a loaded ``Config``.
        checkpoint: a detkit checkpoint (``.pth``); an exported ``.onnx`` file (an
            :class:`~detkit.deploy.OnnxDetector` run by onnxruntime on the CPU is returned,
            with the config's test pipeline); ``None`` keeps random weights (with a warning)
            and skips pretrained backbone loading.
        device: where the model runs, e.g. ``'cpu'`` or ``'cuda:0'``.
        cfg_options: config overrides, as ``--cfg-options`` gives them (``{'a.b': value}``).
        amp: the fast path of ``--amp`` (:func:`detkit.engine.enable_amp`): on a CPU with
            native bfloat16, channels-last weights and batches and bfloat16 autocast in
            :func:`inference_detector`; on CUDA float16 autocast; elsewhere float32, with a
            warning. With bfloat16 or float16 the model is made inference-only
            (:func:`~detkit.engine.amp.prepare_inference_model`: batch norms folded into
            the convolutions, their weights stored in that dtype; its state dict differs
            from the checkpoint's and it refuses ``train()``).
        compile: ``torch.compile`` the backbone, neck and dense head with inductor's freezing
            (:func:`~detkit.engine.amp.compile_inference_model`): a few percent faster after
            some seconds of compilation per input size; for long runs at one size (a video).

    Returns:
        The detector, in eval mode on ``device``.

    Raises:
        FileNotFoundError: the config or checkpoint file does not exist.
        ValueError: the checkpoint's weights do not fit the config's model (another
            architecture or class count); the message lists the mismatching keys.
    """
    cfg = _load_config(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    apply_own_data(cfg)
    if 'model' not in cfg:
        raise KeyError(f'init_detector: config {_config_name(config)} has no `model` key')
    check_config_types(cfg)
    if checkpoint is not None and os.fspath(checkpoint).endswith('.onnx'):
        if compile:
            raise ValueError(f'init_detector: compile=True compiles PyTorch modules; '
                             f'{os.fspath(checkpoint)!r} runs on onnxruntime')
        return _init_onnx_detector(cfg, checkpoint, device, amp)
    amp_dtype = autocast_dtype(enable_amp(cfg, train=False, device=device)) if amp else None
    model_cfg = cfg.model.copy()
    model_cfg.setdefault('init_cfg', None)
    if checkpoint is not None:
        # The checkpoint has every weight: no pretrained backbone file is needed or read.
        backbone = model_cfg.get('backbone')
        if isinstance(backbone, dict) and backbone.get('init_cfg') is not None:
            model_cfg.backbone = dict(backbone, init_cfg=None)
    model: torch.nn.Module = MODELS.build(model_cfg)
    meta: dict[str, Any] = {}
    if checkpoint is None:
        import warnings
        warnings.warn(f'init_detector: no checkpoint given for {_config_name(config)}; the '
                      'model has random weights', stacklevel=2)
    else:
        meta = _load_weights(model, checkpoint, _config_name(config))
    classes = _class_names(meta, cfg)
    detector = cast(_Detector, model)
    detector.dataset_meta = dict(classes=classes)
    detector.cfg = cfg
    detector.amp_dtype = amp_dtype
    model = model.to(device).eval()
    if amp_dtype is not None:
        prepare_inference_model(model, amp_dtype)  # norms folded, weights in amp_dtype
    if compile:
        compile_inference_model(model)
    return model


def _init_onnx_detector(cfg: Config, checkpoint: str | os.PathLike[str],
                        device: str | torch.device, amp: bool) -> torch.nn.Module:
    """``init_detector`` for an ``.onnx`` file: onnxruntime on the CPU, float32 as exported."""
    if torch.device(device).type != 'cpu' or amp:
        raise ValueError(f'init_detector: {os.fspath(checkpoint)!r} runs on onnxruntime\'s CPU '
                         f'provider in the precision it was exported in; got device={device!r}, '
                         f'amp={amp}')
    from detkit.deploy import OnnxDetector
    onnx_model = OnnxDetector(checkpoint)
    detector = cast(_Detector, onnx_model)
    detector.dataset_meta = dict(classes=onnx_model.classes or _class_names({}, cfg))
    detector.cfg = cfg
    detector.amp_dtype = None
    return onnx_model


def inference_detector(model: torch.nn.Module,
                       images: str | os.PathLike[str] | np.ndarray | Sequence[Any],
                       batch_size: int = 4, slice_size: int | None = None,
                       slice_overlap: float = 0.2, slice_iou: float = 0.5,
                       slice_max_detections: int = 300) -> DetResult | list[DetResult]:
    """Detect objects in one image or a list of images.

    Args:
        model: a detector from :func:`init_detector`.
        images: an image file, an ``(H, W, 3)`` uint8 BGR array (as ``cv2.imread`` returns), or
            a list of them.
        batch_size: how many images go through the model at once.
        slice_size: sliced inference for small objects (:mod:`detkit.apis.slicing`): each
            image also runs as overlapping tiles of this many pixels, each resized by the test
            pipeline, and the detections are merged by class-aware NMS. None: whole images.
        slice_overlap: the share of a tile that neighbouring tiles overlap.
        slice_iou: the NMS threshold that merges the tiles' and the whole image's detections.
        slice_max_detections: detections kept per sliced image.

    Returns:
        A :class:`DetResult` for a single image, a list of them (input order) for a list.

    Raises:
        FileNotFoundError: an image file does not exist.
        TypeError / ValueError: an input is neither a path nor an ``(H, W, 3)`` uint8 array.
    """
    if not hasattr(model, 'cfg'):
        raise TypeError('inference_detector: the model has no config; build it with '
                        'detkit.apis.init_detector(config, checkpoint)')
    single = not isinstance(images, (list, tuple))
    inputs: list[Any] = list(images) if isinstance(images, (list, tuple)) else [images]
    if batch_size < 1:
        raise ValueError(f'inference_detector: batch_size must be >= 1, got {batch_size}')
    if slice_size is not None:
        from detkit.apis.slicing import sliced_result
        from detkit.datasets.transforms.loading import decode_image
        sliced = []
        for index, image in enumerate(inputs):
            path = os.fspath(image) if isinstance(image, (str, os.PathLike)) else ''
            if path and not osp.isfile(path):
                raise FileNotFoundError(f'inference_detector: image file {path!r} (input '
                                        f'{index}) does not exist')
            array = decode_image(path) if path else image
            sliced.append(sliced_result(model, array, path, slice_size=slice_size,
                                        slice_overlap=slice_overlap, iou_threshold=slice_iou,
                                        max_detections=slice_max_detections,
                                        batch_size=batch_size))
        return sliced[0] if single else sliced
    loader, transforms = _test_pipeline(model)
    classes = tuple(getattr(model, 'dataset_meta', {}).get('classes', ()))
    results: list[DetResult] = []
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start:start + batch_size]
        packed = [_run_pipeline(image, start + i, loader, transforms)
                  for i, image in enumerate(chunk)]
        data = dict(inputs=[p['inputs'] for p in packed],
                    data_samples=[p['data_samples'] for p in packed])
        with torch.no_grad(), _autocast(model):
            samples = cast(_Detector, model).test_step(data)
        for sample in samples:
            # ``predict`` sets every sample's ``pred`` (a model that does not fails here with
            # an AttributeError on None).
            pred = cast(Detections, sample.pred).to('cpu')
            height, width = sample.ori_shape
            results.append(DetResult(pred.bboxes.float(), pred.scores.float(),
                                     pred.labels.long(), classes, sample.img_path,
                                     (int(height), int(width))))
    return results[0] if single else results


def _autocast(model: torch.nn.Module) -> contextlib.AbstractContextManager[Any]:
    """Autocast to the dtype ``init_detector(amp=True)`` chose, else nothing."""
    dtype = getattr(model, 'amp_dtype', None)
    if dtype is None:
        return contextlib.nullcontext()
    device = next(model.parameters()).device.type
    return torch.autocast(device, dtype=dtype)


def _load_config(config: str | os.PathLike[str] | Config) -> Config:
    if isinstance(config, Config):
        return config.copy()
    if not isinstance(config, (str, os.PathLike)):
        raise TypeError(f'init_detector: config must be a file path or an mmengine Config, got '
                        f'{type(config).__name__}')
    try:
        return load_config(os.fspath(config))
    except (FileNotFoundError, ValueError) as error:
        raise type(error)(f'init_detector: {error}') from None


def _config_name(config: Any) -> str:
    if isinstance(config, Config):
        return repr(config.filename) if config.filename else 'the given Config'
    return repr(os.fspath(config))


def _load_weights(model: torch.nn.Module, checkpoint: str | os.PathLike[str],
                  config_name: str) -> dict[str, Any]:
    """Load ``checkpoint`` strictly into ``model`` (safe unpickling); return its ``meta``."""
    path = os.fspath(checkpoint)
    try:
        state, meta = read_checkpoint(path)
        check_state_fits(model, state, path, config_name, exact=True)
    except (FileNotFoundError, ValueError) as error:
        raise type(error)(f'init_detector: {error}') from None
    model.load_state_dict(state, strict=True)
    return meta


def _class_names(meta: dict[str, Any], cfg: Config) -> tuple[str, ...]:
    dataset_meta = meta.get('dataset_meta') or {}
    if dataset_meta.get('classes'):
        return tuple(str(c) for c in dataset_meta['classes'])
    dataset = cfg.get('test_dataloader', {}).get('dataset', {})
    classes = (dataset.get('metainfo') or {}).get('classes')
    if classes:
        return tuple(str(c) for c in classes)
    return ()


def _test_pipeline(model: torch.nn.Module) -> tuple[_Transform, list[_Transform]]:
    """The model's test pipeline as (image loader, the transforms after it)."""
    cached: tuple[_Transform, list[_Transform]] | None = getattr(
        model, '_detkit_test_pipeline', None)
    if cached is not None:
        return cached
    detector = cast(_Detector, model)
    cfg = detector.cfg
    try:
        steps = list(cfg.test_dataloader.dataset.pipeline)
    except (AttributeError, KeyError):
        raise KeyError('inference_detector: the config has no test_dataloader.dataset.pipeline; '
                       'it says how images are resized for the model') from None
    steps = [s for s in steps if s.get('type') not in _ANNOTATION_TRANSFORMS]
    if not steps or steps[0].get('type') != _LOADER:
        raise ValueError('inference_detector: test_dataloader.dataset.pipeline must start with '
                         f"dict(type='{_LOADER}'), got {[s.get('type') for s in steps]}")
    built: list[_Transform] = [TRANSFORMS.build(dict(step)) for step in steps]
    pipeline = (built[0], built[1:])
    detector._detkit_test_pipeline = pipeline
    return pipeline


def _run_pipeline(image: Any, index: int, loader: _Transform,
                  transforms: list[_Transform]) -> dict[str, Any]:
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not osp.isfile(path):
            raise FileNotFoundError(f'inference_detector: image file {path!r} (input {index}) '
                                    'does not exist')
        results = loader(dict(img_path=path))
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f'inference_detector: input {index} is an array of shape '
                             f'{image.shape} and dtype {image.dtype}; expected (H, W, 3) uint8 '
                             'BGR, as cv2.imread returns')
        if min(image.shape[:2]) < 1:
            raise ValueError(f'inference_detector: input {index} is an empty image of shape '
                             f'{image.shape}')
        height, width = image.shape[:2]
        results = dict(img_path='', img=np.ascontiguousarray(image), ori_shape=(height, width),
                       img_shape=(height, width), scale_factor=(1.0, 1.0), flip=False)
    else:
        raise TypeError(f'inference_detector: input {index} is a {type(image).__name__}; '
                        'expected an image path or an (H, W, 3) uint8 BGR numpy array')
    for transform in transforms:
        results = transform(results)
    return results
