"""What every attention backend shares: the equation, the registry of backends, the choice among them, and the
relative position bias.

A window attention layer computes, inside every ws×ws window (N = ws² positions, ``heads`` heads of d channels),

    out = softmax(q·kᵀ/√d + B)·v

with B the layer's (heads, N, N) position bias. A backend (:class:`AttentionBackend`) is one way to compute it;
``attn_type`` names the backend, :func:`register_backend` makes one selectable, and :func:`choose_backend` says which
one ``attn_type`` runs on a device (and why). The backends themselves are the sibling modules (``naive``, ``sdpa``,
``flex``, ``flashbias``); the layers that call them are in :mod:`esc.archs.attention.layer`.
"""
from __future__ import annotations

import functools
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from esc.errors import ESCError

BIAS_INIT_STD = 1e-3
"""Standard deviation of the relative-position bias at initialisation (the official N(0, 1)·0.001)."""


class AttentionBackend:
    """One way to compute the window attention softmax(q·kᵀ/√d + B)·v of a :class:`WindowAttention` layer.

    ``q``: (windows, heads, Nq, d), the first Nq ≤ N rows of each window (row-strip inference asks no
    queries of padding rows); ``k``, ``v``: (windows, heads, N, d); ``bias``: the layer's (heads, N, N)
    B when the caller computed it beforehand (row-strip inference, once for every strip), else None; ``layer``:
    the :class:`~esc.archs.attention.layer.WindowAttention` asking (its bias, window size and factors), typed
    as a module here so that this module imports no layer. Each subclass's docstring states how it computes the
    equation.
    """

    name = ''
    needs_dense_bias = True
    """Whether the backend reads the dense (heads, N, N) B; callers compute it once beforehand only then."""
    bias_forms: Optional[Tuple[str, ...]] = None
    """The forms of a layer's position bias (:attr:`WindowAttention.bias_form`) the backend reads itself;
    None: any, since it reads the dense ``layer.bias()``."""

    def unavailable(self, device: torch.device, head_dim: int, training: bool) -> Optional[str]:
        """Why this backend cannot run here (None: it can)."""
        return None

    def __call__(self, layer: nn.Module, q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor]) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def dense_bias(layer: nn.Module, q: Tensor, bias: Optional[Tensor]) -> Tensor:
        """B for the queried rows (``bias`` if given, else the layer's)."""
        return (layer.bias() if bias is None else bias)[:, :q.shape[-2]]


BACKENDS: Dict[str, AttentionBackend] = {}
"""Attention backends by ``attn_type`` name (complete once :mod:`esc.archs.attention` is imported)."""


def register_backend(cls: type) -> type:
    """Class decorator: make an :class:`AttentionBackend` selectable as ``attn_type: <cls.name>``."""
    BACKENDS[cls.name] = cls()
    return cls


def attn_types() -> Tuple[str, ...]:
    """Every ``attn_type`` value: 'auto' and the registered backends."""
    return ('auto', *BACKENDS)


OFFICIAL_ATTN_TYPES: Dict[str, str] = {'Flex': 'flex', 'SDPA': 'sdpa', 'Naive': 'naive', 'FlashBias': 'flashbias'}
"""The official repository's ``attn_type`` values and the backends they are here (FlashBias: the position bias as
low-rank factors, :mod:`esc.archs.attention.flashbias`)."""


def normalize_attn_type(attn_type: str) -> str:
    """Map an ``attn_type`` option (any case, e.g. the official 'Flex' or 'FlashBias') to one of :func:`attn_types`."""
    name = OFFICIAL_ATTN_TYPES.get(attn_type, str(attn_type).lower())
    if name not in attn_types():
        raise ESCError(f"attn_type: {attn_type!r} is not supported; choose one of {', '.join(attn_types())} "
                       f"(or the official {', '.join(map(repr, OFFICIAL_ATTN_TYPES))})")
    return name


def bias_form_conflict(attn_type: str, bias_form: str) -> Optional[str]:
    """Why backend ``attn_type`` cannot read a position bias held as ``bias_form`` (None: it can; 'auto' can)."""
    forms = BACKENDS[attn_type].bias_forms if attn_type != 'auto' else None
    if forms is None or bias_form in forms:
        return None
    return f"it reads the position bias as {' or '.join(forms)}, the layer holds it as {bias_form}"


@functools.lru_cache(maxsize=None)
def choose_backend(attn_type: str, device_type: str, head_dim: int, training: bool,
                   bias_form: str = 'table') -> Tuple[str, str]:
    """The backend ``attn_type`` runs on (name, and why, in words) for a ``device_type`` device, heads of
    ``head_dim`` channels, training or not, layers whose position bias is held as ``bias_form``
    (:attr:`WindowAttention.bias_form`). An explicit backend that cannot run there is an ESCError.

    'auto' is the fastest backend that works there: flex on CUDA where its kernel compiles (Triton present,
    head dim ≥ 16), otherwise sdpa."""
    device = torch.device(device_type)
    if attn_type != 'auto':
        reason = (bias_form_conflict(attn_type, bias_form)
                  or BACKENDS[attn_type].unavailable(device, head_dim, training))
        if reason:
            raise ESCError(f'attn_type {attn_type!r} cannot run here: {reason}; use attn_type auto or sdpa')
        return attn_type, 'as configured'
    if device.type == 'cuda':
        reason = bias_form_conflict('flex', bias_form) or BACKENDS['flex'].unavailable(device, head_dim, training)
        if reason is None:
            return 'flex', f'auto on CUDA: FlexAttention compiles here (Triton, head dim {head_dim})'
        return 'sdpa', f'auto on CUDA: not flex, {reason}'
    return 'sdpa', (f'auto on {device.type}: fused SDPA (flash forward{", bias-aware backward" if training else ""}; '
                    'FlexAttention is no faster on the CPU and cannot train there)')


@torch.compiler.assume_constant_result
def backend_name(attn_type: str, device_type: str, head_dim: int, training: bool, bias_form: str) -> str:
    """:func:`choose_backend`'s name, a constant to ``torch.compile``: it is computed when a graph is traced
    (its checks, Triton's presence among them, are not traced into the graph)."""
    return choose_backend(attn_type, device_type, head_dim, training, bias_form)[0]


def resolve_attn_type(attn_type: str, device: torch.device, head_dim: int = 16, training: bool = False,
                      bias_form: str = 'table') -> str:
    """The concrete backend ``attn_type`` stands for on ``device`` (see :func:`choose_backend`)."""
    return choose_backend(normalize_attn_type(attn_type), torch.device(device).type, head_dim, training, bias_form)[0]


def relative_position_index(window_size: int) -> Tensor:
    """(N, N) index into a ((2ws−1)²)-long bias table for key-minus-query offsets, N = ws², row-major."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing='ij'))
    coords = coords.flatten(1)  # (2, N)
    rel = coords[:, None, :] - coords[:, :, None] + window_size - 1  # key − query, shifted to >= 0
    return rel[0] * (2 * window_size - 1) + rel[1]


def relative_position_bias(table: Tensor, window_size: int) -> Tensor:
    """The (heads, N, N) bias ``table[h, index(key − query)]`` (see :func:`relative_position_index`),
    read as sliding ws×ws crops of the (2ws−1)×(2ws−1) table: no N²-sized index is built or stored."""
    heads, span = table.shape[0], 2 * window_size - 1
    # crops[h, a, b] = table[h, a:a+ws, b:b+ws]; query (y, x) needs the crop at (ws−1−y, ws−1−x)
    crops = table.view(heads, span, span).unfold(1, window_size, 1).unfold(2, window_size, 1)
    n = window_size * window_size
    bias = table.new_empty(heads, window_size, window_size, window_size, window_size)
    return bias.copy_(crops.flip(1, 2)).view(heads, n, n)  # one copy (a reshape of the flip would be a second)
