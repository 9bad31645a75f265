"""Mixed precision, ``torch.compile`` and channels-last for training and evaluation: the options and what each
phase runs with (the training step applies them in :meth:`esc.models.esc_model.ESCModel.optimize_parameters`).

Four switches, under the names users of traiNNer-redux and neosr know, in the ``train`` section for the
training step and in ``val`` for evaluation (esc/test.py, and validation during training, where a key left
out of ``val`` takes its value from ``train``); all default to false:

- ``use_amp``: autocast the network's forward pass and the losses; the network's output comes back in fp32;
- ``amp_bf16``: bf16 instead of fp16 under ``use_amp``. bf16 runs on CPU and CUDA and needs no gradient
  scaling; fp16 is CUDA-only and trains with a gradient scaler whose state is part of the training state, so
  resumed runs stay exact;
- ``use_compile``: ``torch.compile`` of the whole network, in place (:class:`esc.acceleration.FastPath`:
  parameter names, checkpoints, EMA and resume are untouched). Training compiles for its fixed patch shape;
  evaluation marks the input's height and width dynamic (:func:`mark_dynamic_size`), so a test set of any
  image sizes compiles a bounded number of graphs, not one per size. A compiled evaluation runs the whole
  image at once (no row strips);
- ``use_channels_last``: the networks' 4-D weights and the inputs in channels-last memory format.

:class:`esc.models.esc_model.ESCModel` applies them.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, ContextManager, Dict, Iterator, Mapping

import torch
from torch import Tensor, nn

from esc.acceleration import FastPath
from esc.config.validation import BOOL, Types
from esc.upscaler import autocast, check_dtype

AMP_KEYS: Dict[str, Types] = {'use_amp': BOOL, 'amp_bf16': BOOL, 'use_compile': BOOL, 'use_channels_last': BOOL}
"""The option keys, in ``train`` and in ``val``."""


@dataclass(frozen=True)
class Acceleration:
    """What one phase (training or evaluation) runs with on ``device_type``: a precision and a fast path."""

    precision: str = 'fp32'
    """'fp32', or autocast to 'bf16' or 'fp16'."""
    fast: FastPath = field(default_factory=FastPath)
    device_type: str = 'cpu'

    @property
    def compiled(self) -> bool:
        return self.fast.compile is not None

    def autocast(self) -> ContextManager:
        """Autocast to :attr:`precision` (nothing for fp32)."""
        return autocast(self.device_type, self.precision)

    def __str__(self) -> str:
        precision = 'fp32' if self.precision == 'fp32' else f'{self.precision} autocast'
        return (f"{precision}, {'torch.compile' if self.compiled else 'eager'}, "
                f"{'channels-last' if self.fast.channels_last else 'contiguous'}")


def read_acceleration(opt: Mapping[str, Any], device: torch.device) -> Dict[str, Acceleration]:
    """The :class:`Acceleration` of training (``train``) and evaluation (``val``, each key defaulting to the
    ``train`` section's when training); fp16 off CUDA is a one-line ESCError naming the key."""
    train = dict(opt.get('train') or {}) if opt.get('is_train') else {}
    phases = {}
    for phase, section in (('train', train), ('val', {**train, **(opt.get('val') or {})})):
        precision = ('bf16' if section.get('amp_bf16', False) else 'fp16') if section.get('use_amp', False) else 'fp32'
        own = opt.get(phase) or {}
        where = phase if phase == 'train' or not train or {'use_amp', 'amp_bf16'} & set(own) else 'train'
        check_dtype(precision, device.type, option=f'{where}.amp_bf16: false under use_amp asks for fp16, but precision')
        fast = FastPath(compile='default' if section.get('use_compile', False) else None,
                        channels_last=bool(section.get('use_channels_last', False)))
        phases[phase] = Acceleration(precision, fast, device.type)
    return phases


def mark_dynamic_size(x: Tensor) -> Tensor:
    """Let a compiled network take ``x``'s height and width as symbols: one graph for every image size."""
    torch._dynamo.maybe_mark_dynamic(x, 2)
    torch._dynamo.maybe_mark_dynamic(x, 3)
    return x


def is_compiled(net: nn.Module) -> bool:
    """Whether ``net`` was compiled in place (``nn.Module.compile``)."""
    return getattr(net, '_compiled_call_impl', None) is not None


@contextlib.contextmanager
def uncompiled(net: nn.Module) -> Iterator[None]:
    """Run ``net``, compiled in place for the other phase, eagerly for a while (the trained network evaluated
    without EMA: ``train.use_compile`` and ``val.use_compile`` differ). What the network compiles on its own,
    such as FlexAttention, stays compiled (``torch.compiler.set_stance`` would switch that off too)."""
    compiled = getattr(net, '_compiled_call_impl', None)
    net._compiled_call_impl = None
    try:
        yield
    finally:
        net._compiled_call_impl = compiled
