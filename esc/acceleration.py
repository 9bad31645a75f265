"""The fast path of an ESC network on a GPU: whole-network compilation, channels-last memory and TF32.

At the sizes ESC runs at (an HD output is a 180×320 to 640×360 LR input), a plain forward pass is mostly
kernel launches and memory-bound elementwise work — LayerNorm between permutes, GELU, residual adds,
window partition copies — not arithmetic. The means here attack exactly that:

- ``compile``: ``torch.compile`` of the whole network, so inductor fuses the elementwise work into the
  surrounding kernels and FlexAttention is traced in place; the modes are torch.compile's
  ('default'; 'reduce-overhead' replays the compiled pass as CUDA graphs, one launch per pass, for
  fixed shapes; 'max-autotune' also searches kernel configurations). ``dynamic=True`` for evaluation on
  images of every size (one compile, not one per size), False for training on fixed patches.
  Compiled in place (``nn.Module.compile``): parameter names, and so checkpoints and EMA, are unchanged.
- ``channels_last``: NHWC weights and activations, the layout cuDNN's tensor-core convolutions and the
  window partition want (the network code keeps channels-last through attention).
- ``tf32``: float32 matmuls (the attention's q·kᵀ and p·v, linear layers) on TF32 tensor cores, as
  PyTorch already does for cuDNN convolutions by default. Process-wide (``torch.backends``).

Mixed precision (bf16/fp16 autocast) is the caller's (:func:`esc.upscaler.autocast`, the training options).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from esc.errors import ESCError

COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs')


@dataclass(frozen=True)
class FastPath:
    """How to run a network: ``compile`` (None or one of :data:`COMPILE_MODES`), ``channels_last``, ``tf32``."""

    compile: Optional[str] = None
    channels_last: bool = False
    tf32: bool = False

    def __post_init__(self) -> None:
        if self.compile is not None and self.compile not in COMPILE_MODES:
            raise ESCError(f"compile: {self.compile!r} is not a torch.compile mode; choose one of "
                           f"{', '.join(COMPILE_MODES)} (or none)")

    @property
    def plain(self) -> bool:
        """Nothing switched on: the network runs as built (eager, NCHW, strict fp32 matmuls)."""
        return self.compile is None and not self.channels_last and not self.tf32

    def __str__(self) -> str:
        parts = ([f'compile {self.compile}'] if self.compile else []) + (['channels-last'] if self.channels_last else [])
        return ', '.join(parts + (['TF32 matmuls'] if self.tf32 else [])) or 'plain'

    def apply(self, net: nn.Module, dynamic: Optional[bool]) -> nn.Module:
        """Switch the fast path on for ``net`` (in place; returned for chaining). ``dynamic``: torch.compile's
        (True: every input size shares one compile, for evaluation; False: fixed shapes, for training)."""
        if self.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        if self.compile is not None:
            net.compile(mode=None if self.compile == 'default' else self.compile, dynamic=dynamic)
        return net

    def input(self, x: Tensor) -> Tensor:
        """``x`` in the memory layout the network expects."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


FAST = FastPath(compile='reduce-overhead', channels_last=True, tf32=True)
"""The fast path the device check measures against the plain one (fixed shapes: CUDA graphs replay each pass)."""
