"""The window attention layers and the factory that builds them.

:class:`WindowAttention` holds its position bias as the relative-position table; :class:`FactorisedWindowAttention`
holds it as trainable FlashBias factors (the official FlashBias layer's names and shapes). Both compute
softmax(q·kᵀ/√d + B)·v per window on the backend their ``attn_type`` chooses (:mod:`esc.archs.attention.base`);
:func:`window_attention` builds the one a network's options ask for. :func:`adapt_state_dict` and
:func:`network_layout` bring a checkpoint to a network's FlashBias layout (factors under their official names, a
table factorised at the layer's rank).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from esc.archs.attention.base import (BACKENDS, BIAS_INIT_STD, AttentionBackend, backend_name, choose_backend,
                                      normalize_attn_type, relative_position_bias)
from esc.archs.attention.flashbias import EARLIER_FACTOR_NAMES, FACTOR_NAMES, check_rank, factorise
from esc.archs.layers import pad_to_multiple
from esc.errors import ESCError


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping ws×ws windows, with relative position bias."""

    bias_form = 'table'
    """How the position bias is held: 'table', the (heads, (2ws−1)²) table (subclasses hold other forms)."""
    bias_parameters: Tuple[str, ...] = ('relative_position_bias',)
    """The parameters :meth:`bias` is computed from."""

    def __init__(self, dim: int, window_size: int, num_heads: int, attn_type: str = 'auto') -> None:
        super().__init__()
        if dim % num_heads:
            raise ESCError(f'num_heads: dim ({dim}) is not divisible by num_heads ({num_heads})')
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.head_dim = dim // num_heads
        self.attn_type = normalize_attn_type(attn_type)
        self.relative_position_bias = nn.Parameter(torch.randn(num_heads, (2 * window_size - 1) ** 2) * BIAS_INIT_STD)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.to_out = nn.Conv2d(dim, dim, 1)

    def bias(self) -> Tensor:
        """The (heads, N, N) bias every window adds to its scores."""
        return relative_position_bias(self.relative_position_bias, self.window_size)

    def backend(self, device: torch.device, training: Optional[bool] = None) -> AttentionBackend:
        """The backend this layer's ``attn_type`` runs on ``device`` (training: whether gradients are recorded)."""
        training = torch.is_grad_enabled() if training is None else training
        return BACKENDS[backend_name(self.attn_type, device.type, self.head_dim, training, self.bias_form)]

    def attend(self, q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor] = None) -> Tensor:
        """softmax(q·kᵀ/√d + B)·v on (windows, heads, N, d) tensors with the configured backend; the
        queries may be the first rows of each window only."""
        return self.backend(q.device)(self, q, k, v, bias)

    def forward(self, x: Tensor, bias: Optional[Tensor] = None, rows: Optional[int] = None) -> Tensor:
        """``bias``: :meth:`bias` computed beforehand (row-strip inference reuses it for every strip);
        ``rows``: only the first rows of ``x`` (one row of windows) are wanted, the rest pads it."""
        b, c, h, w = x.shape
        ws, heads = self.window_size, self.num_heads
        qkv = self.to_qkv(pad_to_multiple(x, ws))
        nh, nw = qkv.shape[-2] // ws, qkv.shape[-1] // ws
        # channel = group·C + head·(C/heads) + c  →  (3, B·windows, heads, ws², C/heads)
        qkv = qkv.view(b, 3, heads, c // heads, nh, ws, nw, ws).permute(1, 0, 4, 6, 2, 5, 7, 3)
        q, k, v = qkv.reshape(3, b * nh * nw, heads, ws * ws, c // heads).unbind(0)
        backend = self.backend(q.device)
        # padding rows ask nothing; flex keeps whole windows (a fixed query length: no recompile per image height)
        queried = rows if rows is not None and nh == 1 and rows < ws and backend.needs_dense_bias else ws
        out = backend(self, q[:, :, :queried * ws], k, v, bias).view(b, nh, nw, heads, queried, ws, c // heads)
        if x.is_contiguous(memory_format=torch.channels_last):  # stay channels-last: one copy, not two
            out = out.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, nh * queried, nw * ws, c).permute(0, 3, 1, 2)
        else:
            out = out.permute(0, 3, 6, 1, 4, 2, 5).reshape(b, c, nh * queried, nw * ws)
        return self.to_out(out[:, :, :h, :w])


class FactorisedWindowAttention(WindowAttention):
    """:class:`WindowAttention` whose (heads, N, N) position bias is Φq·Φkᵀ, with trainable factors
    ``flashbias_q`` and ``flashbias_k`` of (heads, N, ``rank``) instead of the relative-position table (the
    official FlashBias layer's names and shapes; :mod:`esc.archs.attention.flashbias`). A network trained with it
    is exact by construction; a table found in a state dict loaded into it is factorised on the way in."""

    bias_form = 'factors'
    bias_parameters = FACTOR_NAMES

    def __init__(self, dim: int, window_size: int, num_heads: int, rank: int, attn_type: str = 'auto') -> None:
        super().__init__(dim, window_size, num_heads, attn_type)
        positions = window_size * window_size
        check_rank(rank, positions, 'bias_rank')
        del self.relative_position_bias
        # each entry of Φq·Φkᵀ starts with the table's spread: R products of two N(0, s²) draws, s⁴·R = std²
        # (the official layer starts both at zero, where neither gets a gradient: it is fine-tuned, never trained anew)
        std = (BIAS_INIT_STD / math.sqrt(rank)) ** 0.5
        self.flashbias_q = nn.Parameter(torch.randn(num_heads, positions, rank) * std)
        self.flashbias_k = nn.Parameter(torch.randn(num_heads, positions, rank) * std)

    @property
    def rank(self) -> int:
        return self.flashbias_q.shape[-1]

    def bias(self) -> Tensor:
        """The dense (heads, N, N) bias Φq·Φkᵀ (for the backends that read it)."""
        return self.flashbias_q @ self.flashbias_k.transpose(-2, -1)

    def adapt_state_dict(self, state_dict: Dict[str, Any], prefix: str) -> None:
        """Bring ``state_dict`` to this layer's layout: factors under this project's earlier names are renamed, and
        a relative-position table (an exact layer's) is replaced by its factors at this layer's rank."""
        for earlier, name in EARLIER_FACTOR_NAMES.items():
            if prefix + earlier in state_dict and prefix + name not in state_dict:
                state_dict[prefix + name] = state_dict.pop(prefix + earlier)
        key = prefix + 'relative_position_bias'
        if key not in state_dict or prefix + FACTOR_NAMES[0] in state_dict:
            return
        table = state_dict.pop(key)
        expected = (self.num_heads, (2 * self.window_size - 1) ** 2)
        if tuple(table.shape) != expected:
            raise ESCError(f'checkpoint does not fit: {key!r} has shape {tuple(table.shape)}, expected {expected}')
        factors = factorise(relative_position_bias(table.float(), self.window_size), rank=self.rank)
        state_dict[prefix + 'flashbias_q'] = factors.factor_q.to(table.dtype)
        state_dict[prefix + 'flashbias_k'] = factors.factor_k.to(table.dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.adapt_state_dict(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def window_attention(dim: int, window_size: int, num_heads: int, attn_type: str = 'auto',
                     bias_rank: Optional[int] = None) -> WindowAttention:
    """A window attention layer: the exact one (a bias table) or, with ``bias_rank``, a factorised one."""
    if bias_rank is None:
        return WindowAttention(dim, window_size, num_heads, attn_type)
    return FactorisedWindowAttention(dim, window_size, num_heads, bias_rank, attn_type)


def describe_attention(net: nn.Module, device: torch.device, training: bool) -> List[str]:
    """One line per distinct attention configuration of ``net``: which backend it runs on ``device``, and why.

    Raises the one-line ESCError of :func:`~esc.archs.attention.base.choose_backend` where an explicit backend
    cannot run (call it before training or evaluation starts)."""
    seen: Dict[Tuple[str, int, str], str] = {}
    for layer in net.modules():
        key = (layer.attn_type, layer.head_dim, layer.bias_form) if isinstance(layer, WindowAttention) else None
        if key is not None and key not in seen:
            backend, why = choose_backend(layer.attn_type, torch.device(device).type, layer.head_dim, training,
                                          layer.bias_form)
            seen[key] = (f'attention: {backend} for attn_type {layer.attn_type} (head dim {layer.head_dim}'
                         f"{', bias as ' + layer.bias_form if layer.bias_form != 'table' else ''}): {why}")
    return list(seen.values())


def adapt_state_dict(net: nn.Module, state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """A copy of ``state_dict`` in ``net``'s FlashBias layout: every layer that holds its bias as factors takes
    factors under this project's earlier names renamed, and a table factorised at its rank (see
    :meth:`FactorisedWindowAttention.adapt_state_dict`); other layers' entries are left as they are."""
    adapted = dict(state_dict)
    for name, module in net.named_modules():
        if isinstance(module, FactorisedWindowAttention):
            module.adapt_state_dict(adapted, f'{name}.' if name else '')
    return adapted


def network_layout(network: type, config: Mapping[str, Any], state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """:func:`adapt_state_dict` for the network ``network(**config)`` without allocating it (built on the meta
    device: only its layers' ranks and sizes are read), so that a checkpoint can be checked key for key against the
    network before it is built; options the network refuses leave ``state_dict`` as it is (the build reports them)."""
    try:
        with torch.device('meta'):
            layout = network(**config)
    except (TypeError, ValueError, ESCError):
        return dict(state_dict)
    return adapt_state_dict(layout, state_dict)
