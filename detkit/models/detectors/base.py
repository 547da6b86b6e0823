"""What every detkit detector shares: preprocessor, backbone, neck and mmengine's mode switch."""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import torch
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from torch import Tensor

from detkit.registry import MODELS, build_if_config
from detkit.structures import Detections, DetSample

MODES = ('loss', 'predict', 'tensor')
NONFINITE_POLICIES = ('stop', 'skip')


class BaseDetector(BaseModel):
    """A data preprocessor, a backbone and an optional neck; subclasses add the heads.

    ``forward(inputs, data_samples, mode)`` follows mmengine's ``BaseModel`` contract and calls
    the subclass's ``loss`` (``mode='loss'``: a dict of scalar losses), ``predict``
    (``mode='predict'``: the samples with ``pred`` set, boxes in original-image pixels) or
    ``_forward_tensor`` (``mode='tensor'``: the heads' raw outputs).

    Args:
        backbone: the backbone module or its config (e.g. ``dict(type='ResNet', depth=50)``).
        neck: the neck or its config (``None``: the heads read the backbone outputs directly).
        data_preprocessor: normalisation and padding (default ``DetDataPreprocessor()``).
        init_cfg: mmengine init config of the whole detector.
        nonfinite_loss: what a training step does when a loss term is NaN or infinite:
            ``'stop'`` raises ``FloatingPointError`` naming the iteration and the term (the run
            ends; checkpoints already written stay as they are); ``'skip'`` warns with the same
            names and back-propagates an exact zero instead, so the batch changes no gradient
            (momentum and weight decay still apply for that step); skips are logged as
            ``nonfinite_skips``.

    Attributes:
        inference_only: set by :func:`detkit.engine.amp.prepare_inference_model` (``--amp``
            inference, ``init_detector(amp=True)``), which folds batch norms into convolutions
            and stores weights in bfloat16: such a model refuses ``train()`` and
            ``mode='loss'`` instead of training a changed network.
    """

    inference_only = False

    def __init__(self, backbone: Any, neck: Any = None, data_preprocessor: Any = None,
                 init_cfg: dict | None = None, nonfinite_loss: str = 'stop') -> None:
        if nonfinite_loss not in NONFINITE_POLICIES:
            raise ValueError(f"{type(self).__name__}: model.nonfinite_loss={nonfinite_loss!r}; "
                             "expected 'stop' or 'skip'")
        self.nonfinite_loss = nonfinite_loss
        self.nonfinite_skips = 0
        if data_preprocessor is None:
            data_preprocessor = dict(type='DetDataPreprocessor')
        super().__init__(data_preprocessor=build_if_config(data_preprocessor, MODELS),
                         init_cfg=init_cfg)
        self.backbone = build_if_config(backbone, MODELS)
        self.neck = build_if_config(neck, MODELS) if neck is not None else None

    def adopt_memory_format(self) -> None:
        """Hold the 4-D weights channels-last when the data preprocessor emits channels-last
        batches, so that no convolution converts a layout on the way.

        Subclasses call it at the end of their constructor: before an optimizer or
        ``DistributedDataParallel`` sees the parameters (both keep the layout they find).
        Later in-place initialisation and checkpoint loading keep the layout.
        """
        if getattr(self.data_preprocessor, 'channels_last', False):
            self.to(memory_format=torch.channels_last)

    def extract_feat(self, inputs: Tensor) -> tuple[Tensor, ...]:
        """Backbone (and neck) features.

        Args:
            inputs: ``(B, 3, H, W)`` normalised, padded batch.

        Returns:
            The feature maps the heads read, e.g. P3-P7 ``(B, 256, H/s, W/s)``.
        """
        feats = self.backbone(inputs)
        return tuple(self.neck(feats)) if self.neck is not None else tuple(feats)

    def forward(self, inputs: Tensor, data_samples: Sequence[DetSample] | None = None,
                mode: str = 'tensor') -> Any:
        """Dispatch on ``mode`` (see the class docstring).

        Args:
            inputs: ``(B, 3, H, W)`` batch from the data preprocessor.
            data_samples: B samples; required for ``'loss'`` and ``'predict'``.
            mode: ``'loss'``, ``'predict'`` or ``'tensor'``.

        Returns:
            A loss dict, the samples with detections, or the heads' raw outputs.
        """
        name = type(self).__name__
        if mode not in MODES:
            raise ValueError(f"{name}.forward: mode={mode!r}; expected 'loss', 'predict' or "
                             "'tensor'")
        if mode == 'tensor':
            return self._forward_tensor(inputs, data_samples)
        if data_samples is None:
            raise ValueError(f'{name}.forward(mode={mode!r}) needs data_samples')
        if mode == 'loss':
            self._refuse_training_if_inference_only()
            return self.loss(inputs, data_samples)
        return self.predict(inputs, data_samples)

    def train(self, mode: bool = True) -> BaseDetector:
        """``nn.Module.train``, refused on an inference-only model (``mode=True``)."""
        if mode:
            self._refuse_training_if_inference_only()
        return super().train(mode)

    def _refuse_training_if_inference_only(self) -> None:
        if self.inference_only:
            raise RuntimeError(
                f'{type(self).__name__} is inference-only: --amp inference '
                '(prepare_inference_model, init_detector(amp=True)) folded its batch norms '
                'into the convolutions and stored its weights in low precision; build it '
                'again without amp to train it')

    @staticmethod
    def attach_detections(data_samples: Sequence[DetSample],
                          detections: Sequence[Detections]) -> list[DetSample]:
        """Write each image's detections into its sample's ``pred``; return the samples."""
        for sample, dets in zip(data_samples, detections):
            sample.pred = dets
        return list(data_samples)

    def parse_losses(self, losses: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Sum the loss terms (mmengine's rule: keys containing ``loss``), applying
        ``nonfinite_loss`` when the sum is not finite.

        mmengine calls this from ``train_step``, also under its DistributedDataParallel wrapper.

        Returns:
            The total loss to back-propagate and the values to log.

        Raises:
            FloatingPointError: with ``nonfinite_loss='stop'``, naming the iteration (1-based)
                and every non-finite term.
        """
        loss, log_vars = super().parse_losses(losses)
        if bool(torch.isfinite(loss)):
            return loss, log_vars
        values = {name: float(value.detach()) for name, value in log_vars.items()
                  if torch.is_tensor(value) and value.numel() == 1}
        bad_terms = [f'{name}={value:.4g}' for name, value in values.items()
                     if name != 'loss' and not math.isfinite(value)]
        iteration = MessageHub.get_current_instance().get_info('iter')
        where = f'iteration {iteration + 1}' if iteration is not None else 'this step'
        message = (f'{type(self).__name__}: non-finite loss at {where}: '
                   f'{", ".join(bad_terms) or f"loss={float(loss.detach()):.4g}"}')
        if self.nonfinite_loss == 'stop':
            raise FloatingPointError(
                message + '. Training stops here; the checkpoints written so far are intact. '
                "Lower the learning rate, check the data, or set model.nonfinite_loss='skip'.")
        self.nonfinite_skips += 1
        warnings.warn(message + f'; the batch is skipped (skip {self.nonfinite_skips})',
                      stacklevel=2)
        # Zero, but connected to every trainable weight: all gradients are exactly 0 and
        # DistributedDataParallel still sees a gradient for each parameter on every rank.
        zero = sum((p.sum() * 0.0 for p in self.parameters() if p.requires_grad),
                   torch.zeros((), device=loss.device))
        log_vars = {name: torch.nan_to_num(value.detach()) if torch.is_tensor(value) else value
                    for name, value in log_vars.items()}
        log_vars['loss'] = zero.detach()
        log_vars['nonfinite_skips'] = torch.tensor(float(self.nonfinite_skips))
        return zero, log_vars

    def loss(self, inputs: Tensor, data_samples: Sequence[DetSample]) -> dict[str, Tensor]:
        raise NotImplementedError

    def predict(self, inputs: Tensor, data_samples: Sequence[DetSample],
                rescale: bool = True) -> list[DetSample]:
        raise NotImplementedError

    def _forward_tensor(self, inputs: Tensor,
                        data_samples: Sequence[DetSample] | None) -> Any:
        raise NotImplementedError
