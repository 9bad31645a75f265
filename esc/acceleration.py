"""How a network runs fast: precision (fp32, or bf16/fp16 autocast), ``torch.compile``, channels-last memory and
TF32 matmuls — for training and evaluation (the option file's switches, read by :func:`read_acceleration` for
:class:`esc.models.esc_model.ESCModel`) and for inference (:class:`esc.upscaler.Upscaler`, export, the benchmark).

**Precision.** :data:`DTYPES` names the three; :func:`check_dtype` refuses an unknown name and fp16 off CUDA in one
line naming the option; :func:`autocast` is the context the network runs under (nothing for fp32). The weights stay
fp32 under autocast and the network's output is read back as fp32.

**The fast path** (:class:`FastPath`). At the sizes ESC runs at (an HD output is a 180×320 to 640×360 LR input), a
plain forward pass is mostly kernel launches and memory-bound elementwise work — LayerNorm between permutes, GELU,
residual adds, window partition copies — not arithmetic. The means here attack exactly that:

- ``compile``: ``torch.compile`` of the whole network, so inductor fuses the elementwise work into the surrounding
  kernels and FlexAttention is traced in place; the modes are torch.compile's (:data:`COMPILE_MODES`: 'default';
  'reduce-overhead' replays the compiled pass as CUDA graphs, one launch per pass, for fixed shapes;
  'max-autotune' also searches kernel configurations). ``dynamic=True`` for evaluation on images of every size
  (one compile, not one per size), False for training on fixed patches. The compiled network is a wrapper kept
  *beside* the plain one and sharing its parameters: the plain network is what is saved, EMA-averaged, loaded and
  run uncompiled, so parameter names and checkpoints are unchanged, and nothing of torch's is switched on or off to
  run it either way;
- ``channels_last``: NHWC weights and activations, the layout cuDNN's tensor-core convolutions and the window
  partition want (the network code keeps channels-last through attention);
- ``tf32``: float32 matmuls (the attention's q·kᵀ and p·v, linear layers) on TF32 tensor cores, as PyTorch already
  does for cuDNN convolutions by default. Process-wide (``torch.backends``).

**Training and evaluation options.** Four switches, under the names users of traiNNer-redux and neosr know, in the
``train`` section for the training step and in ``val`` for evaluation (esc/test.py, and validation during training,
where a key left out of ``val`` takes its value from ``train``); all default to false (:data:`AMP_KEYS`):

- ``use_amp``: autocast the network's forward pass and the losses; the network's output comes back in fp32;
- ``amp_bf16``: bf16 instead of fp16 under ``use_amp``. bf16 runs on CPU and CUDA and needs no gradient scaling;
  fp16 is CUDA-only and trains with a gradient scaler whose state is part of the training state, so resumed runs
  stay exact;
- ``use_compile``: ``torch.compile`` of the whole network ('default' mode), as a wrapper beside the plain network
  (:class:`CompiledNetworks`). Training compiles for its fixed patch shape; evaluation marks the input's height and
  width dynamic (:func:`mark_dynamic_size`), so a test set of any image sizes compiles a bounded number of graphs,
  not one per size. A compiled evaluation runs the whole image at once (no row strips);
- ``use_channels_last``: the networks' 4-D weights and the inputs in channels-last memory format.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, ContextManager, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from esc.config.validation import BOOL, Types
from esc.errors import ESCError

# --- precision -------------------------------------------------------------------------------------------------

DTYPES: Dict[str, torch.dtype] = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
"""Precisions by name: fp32, or autocast to fp16 (CUDA only) or bf16."""


def check_dtype(name: str, device: str, option: str = 'dtype') -> torch.dtype:
    """The torch dtype for ``name`` ('fp32', 'fp16', 'bf16'); fp16 autocast is refused on CPU."""
    if name not in DTYPES:
        raise ESCError(f"{option} {name!r} is unknown; choose one of {', '.join(DTYPES)}")
    if name == 'fp16' and device != 'cuda':
        raise ESCError(f'{option} fp16 is only supported on CUDA (use fp32 or bf16 on CPU)')
    return DTYPES[name]


def autocast(device: str, name: str) -> contextlib.AbstractContextManager:
    """Autocast to precision ``name`` on ``device`` (nothing for fp32)."""
    if name == 'fp32':
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=DTYPES[name])


# --- the fast path: compile, channels-last, TF32 -----------------------------------------------------------------

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
        parts = [f'compile {self.compile}'] if self.compile else []
        parts += ['channels-last'] if self.channels_last else []
        parts += ['TF32 matmuls'] if self.tf32 else []
        return ', '.join(parts) or 'plain'

    def prepare(self, net: nn.Module) -> nn.Module:
        """TF32 matmuls (process-wide) and ``net``'s weights channels-last (in place), as asked; ``net`` returned."""
        if self.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        return net

    def compiled(self, net: nn.Module, dynamic: Optional[bool]) -> nn.Module:
        """What runs ``net`` on this path: ``net`` itself, or with ``compile`` a compiled wrapper of it that shares
        its parameters (save, average and load ``net``, never the wrapper, whose state dict prefixes every key).
        ``dynamic``: torch.compile's (True: every input size shares one compile, for evaluation; False: fixed
        shapes, for training; None: static first, dynamic once a size changes)."""
        if self.compile is None:
            return net
        return torch.compile(net, mode=None if self.compile == 'default' else self.compile, dynamic=dynamic)

    def apply(self, net: nn.Module, dynamic: Optional[bool]) -> nn.Module:
        """:meth:`prepare` ``net``, then return what runs it (:meth:`compiled`)."""
        return self.compiled(self.prepare(net), dynamic)

    def input(self, x: Tensor) -> Tensor:
        """``x`` in the memory layout the network expects."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


FAST = FastPath(compile='reduce-overhead', channels_last=True, tf32=True)
"""The fast path the device check measures against the plain one (fixed shapes: CUDA graphs replay each pass)."""


def mark_dynamic_size(x: Tensor) -> Tensor:
    """Let a compiled network take ``x``'s height and width as symbols: one graph for every image size."""
    torch._dynamo.maybe_mark_dynamic(x, 2)
    torch._dynamo.maybe_mark_dynamic(x, 3)
    return x


class CompiledNetworks:
    """The compiled wrappers of a model's networks, one per phase, kept beside the plain networks they run.

    A wrapper is built on first use and reused while its phase asks for the same network, compile mode and
    ``dynamic`` (a new wrapper would compile afresh), so a network compiled for one phase runs plainly in the other
    by being called directly: no compiled state is switched on or off."""

    def __init__(self) -> None:
        self._built: Dict[str, Tuple[nn.Module, FastPath, Optional[bool], nn.Module]] = {}

    def runner(self, phase: str, net: nn.Module, fast: FastPath, dynamic: Optional[bool]) -> nn.Module:
        """What runs ``net`` in ``phase`` on ``fast``'s compile mode: ``net`` itself, or its compiled wrapper."""
        if fast.compile is None:
            return net
        built = self._built.get(phase)
        if built is None or built[0] is not net or built[1].compile != fast.compile or built[2] != dynamic:
            built = (net, fast, dynamic, fast.compiled(net, dynamic))
            self._built[phase] = built
        return built[3]


# --- the option file's switches (ESCModel) ------------------------------------------------------------------------

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
        check_dtype(precision, device.type,
                    option=f'{where}.amp_bf16: false under use_amp asks for fp16, but precision')
        fast = FastPath(compile='default' if section.get('use_compile', False) else None,
                        channels_last=bool(section.get('use_channels_last', False)))
        phases[phase] = Acceleration(precision, fast, device.type)
    return phases
