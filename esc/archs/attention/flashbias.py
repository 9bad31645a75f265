"""``attn_type: flashbias`` (FlashBias, Wu et al., NeurIPS 2025): the position bias as a low-rank product, so that
plain, mask-free fused attention kernels compute the window attention.

Each head's dense bias B_h (N×N, N = ws²) is held as two factors, B_h = Φq_h·Φk_hᵀ with Φq_h, Φk_h of
N×R, and the factors join the queries and keys as R extra channels (:class:`FlashBiasBackend`):

    softmax(q·kᵀ/√d + Φq·Φkᵀ)·v = softmax([q/√d, Φq]·[k, Φk]ᵀ)·v

Here: the backend, the factors' ranks (the official ``flashbias_rank`` option and its synonym ``bias_rank``, one
rank for every layer or one per self-attention layer, :func:`network_bias_rank`; without a rank,
``attn_type: flashbias`` takes the official default, 256 − head dim, :func:`default_rank`), the factors' names in a
state dict (the official ``<layer>.flashbias_q`` and ``<layer>.flashbias_k``, each (heads, ws², R); this project's
earlier ``bias_factor_q``/``bias_factor_k``, :data:`EARLIER_FACTOR_NAMES`, are read too), and :func:`factorise`,
the best rank-R approximation of a dense bias (truncated SVD, Eckart–Young), by which a bias table loaded into a
factorised layer is converted on the way in.

The layer holding trainable factors is :class:`~esc.archs.attention.layer.FactorisedWindowAttention`; converting
a trained network and measuring what it costs is ``esc/commands/convert_flashbias.py``'s. Any backend runs a
factorised layer: ``flashbias`` reads the factors, ``sdpa`` and ``naive`` read the dense Φq·Φkᵀ (on the CPU,
``sdpa``'s bias-aware backward trains faster than the stock flash backward ``flashbias`` uses, so ``auto`` keeps
``sdpa``); ``flex`` reads the table only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from esc.archs.attention.base import AttentionBackend, register_backend
from esc.errors import ESCError

OFFICIAL_QK_WIDTH = 256
"""The official default rank is this minus the head dim: queries and keys widened to 256 channels, the widest
head the flash kernels take."""
FACTOR_NAMES = ('flashbias_q', 'flashbias_k')
"""The factors' parameter names, the official checkpoints' (Φq, Φk)."""
EARLIER_FACTOR_NAMES = {'bias_factor_q': 'flashbias_q', 'bias_factor_k': 'flashbias_k'}
"""Names this project gave the factors before it took the official ones: read, renamed, never written."""
KERNEL_WIDTH_MULTIPLE = 8
"""q, k and v widths are padded (with zero channels) to a multiple of this: CUDA's flash kernels need it and
all three equal; the CPU flash kernel needs them equal."""

BiasRank = Union[int, Sequence[int], None]


def flashbias_attention(q: Tensor, k: Tensor, v: Tensor, factor_q: Tensor, factor_k: Tensor) -> Tensor:
    """softmax(q·kᵀ/√d + Φq·Φkᵀ)·v as one mask-free ``scaled_dot_product_attention`` call (scale 1).

    ``q``: (windows, heads, Nq, d), the first Nq rows of each window; ``k``, ``v``: (windows, heads, N, d);
    ``factor_q``, ``factor_k``: (heads, N, R), broadcast over the windows. Queries become [q/√d, Φq, 0],
    keys [k, Φk, 0] and values [v, 0, 0] (zeros up to a width of a multiple of
    :data:`KERNEL_WIDTH_MULTIPLE`); the extra output channels are zero and are dropped.
    """
    windows, _, queried, head_dim = q.shape
    rank = factor_k.shape[-1]
    width = head_dim + rank
    width += -width % KERNEL_WIDTH_MULTIPLE

    def widen(x: Tensor, *extra: Tensor) -> Tensor:
        parts = [x, *(e.to(x.dtype).expand(windows, -1, -1, -1) for e in extra)]
        pad = width - sum(p.shape[-1] for p in parts)
        if pad:
            parts.append(x.new_zeros(()).expand(*x.shape[:-1], pad))
        return torch.cat(parts, dim=-1)

    out = F.scaled_dot_product_attention(widen(q * head_dim ** -0.5, factor_q[:, :queried]), widen(k, factor_k),
                                         widen(v), scale=1.0)
    return out[..., :head_dim]


@register_backend
class FlashBiasBackend(AttentionBackend):
    """``flashbias``: softmax(q·kᵀ/√d + Φq·Φkᵀ)·v = softmax([q/√d, Φq]·[k, Φk]ᵀ)·v, the layer's bias held as
    factors Φq, Φk (heads, N, R) and appended to the queries and keys, so one mask-free fused kernel computes
    it (flash on CUDA in fp16/bf16 and on the CPU; cuDNN/memory-efficient otherwise), with the stock backward.
    """

    name = 'flashbias'
    needs_dense_bias = False
    bias_forms = ('factors',)

    def __call__(self, layer, q, k, v, bias):
        return flashbias_attention(q, k, v, layer.flashbias_q, layer.flashbias_k)


def default_rank(head_dim: int, positions: int) -> int:
    """The official default rank, :data:`OFFICIAL_QK_WIDTH` − ``head_dim`` (240 for ESC's heads of 16 channels),
    capped at the window's ``positions`` (a rank beyond them adds nothing)."""
    return max(1, min(OFFICIAL_QK_WIDTH - head_dim, positions))


def check_rank(rank: Any, positions: int, option: str) -> int:
    """``rank`` if it is an integer from 1 to ``positions``, else a one-line ESCError naming ``option``."""
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= positions:
        raise ESCError(f'{option}: the rank must be an integer from 1 to the window\'s {positions} positions, '
                       f'got {rank!r}')
    return rank


def network_bias_rank(bias_rank: BiasRank, flashbias_rank: BiasRank, attn_type: str, head_dim: int,
                      window_size: int, where: str) -> Tuple[BiasRank, str]:
    """A network's rank and the option that gave it: ``flashbias_rank`` (the official name) or ``bias_rank``
    (this project's; giving both is an error unless they agree). Without either, ``attn_type`` 'flashbias'
    (normalised) takes :func:`default_rank`, as the official network does, and any other keeps the exact tables
    (None)."""
    if bias_rank is not None and flashbias_rank is not None and bias_rank != flashbias_rank:
        raise ESCError(f'{where}: flashbias_rank ({flashbias_rank!r}) and bias_rank ({bias_rank!r}) name one '
                       'option (the official name and this project\'s); give one')
    if flashbias_rank is not None:
        return flashbias_rank, 'flashbias_rank'
    if bias_rank is None and attn_type == 'flashbias':
        return default_rank(head_dim, window_size * window_size), 'flashbias_rank (default)'
    return bias_rank, 'bias_rank'


def layer_ranks(bias_rank: BiasRank, layers: int, window_size: int, where: str,
                option: str = 'bias_rank') -> List[Optional[int]]:
    """The rank option (``option`` names it in errors) spelled out per self-attention layer (None: exact layers).
    A one-line ESCError (prefixed by ``where``) for a rank outside 1..ws² or a list whose length is not the number
    of layers."""
    if bias_rank is None:
        return [None] * layers
    ranks = list(bias_rank) if isinstance(bias_rank, (list, tuple)) else [bias_rank] * layers
    if len(ranks) != layers:
        raise ESCError(f'{where}: {option} lists {len(ranks)} ranks for {layers} self-attention layers')
    return [check_rank(r, window_size * window_size, f'{where}: {option}') for r in ranks]


@dataclass
class Factors:
    """Φq, Φk (heads, N, R) and the share of the bias energy Σσ² that Φq·Φkᵀ keeps."""

    factor_q: Tensor
    factor_k: Tensor
    energy: float

    @property
    def rank(self) -> int:
        return self.factor_q.shape[-1]


SVD = Tuple[Tensor, Tensor, Tensor]
"""U, σ, Vᵀ of a (heads, N, N) bias (:func:`decompose`)."""


def decompose(bias: Tensor) -> SVD:
    """The SVD of every head of a (heads, N, N) bias, in float64."""
    return torch.linalg.svd(bias.detach().double(), full_matrices=False)


def factorise(bias: Tensor, rank: Optional[int] = None, energy: Optional[float] = None,
              svd: Optional[SVD] = None) -> Factors:
    """Factors whose product is the best rank-R approximation of every head of ``bias`` (heads, N, N) in the
    Frobenius norm: the truncated SVD U·Σ·Vᵀ split as Φq = U·√Σ, Φk = V·√Σ (Eckart–Young; the official
    conversion's U·√S and V·√S).

    R is ``rank``, or else the smallest rank (one for all heads) keeping the share ``energy`` of Σσ² over
    the heads. At R = N no decomposition is needed: Φq = B, Φk = I. Computed in float64; ``svd``: the
    decomposition of ``bias`` if already known (several ranks of one bias).
    """
    if (rank is None) == (energy is None):
        raise ESCError('factorise: give exactly one of rank and energy')
    positions = bias.shape[-1]
    if energy is not None and (isinstance(energy, bool) or not isinstance(energy, (int, float))
                               or not 0 < energy <= 1):
        raise ESCError(f'energy: the share of the bias energy to keep must be in (0, 1], got {energy!r}')
    if rank is not None and check_rank(rank, positions, 'rank') == positions:
        identity = torch.eye(positions, dtype=bias.dtype, device=bias.device).expand_as(bias)
        return Factors(bias.detach().clone(), identity.clone(), 1.0)
    u, sigma, vh = svd if svd is not None else decompose(bias)
    power = sigma.square().sum(0)  # per rank, summed over the heads
    kept = power.cumsum(0) / power.sum().clamp_min(torch.finfo(torch.float64).tiny)
    if rank is None:
        rank = min(int((kept < energy - 1e-12).sum()) + 1, positions)
    root = sigma[:, :rank].sqrt().unsqueeze(-2)
    return Factors((u[..., :rank] * root).to(bias.dtype), (vh[:, :rank].transpose(-2, -1) * root).to(bias.dtype),
                   float(kept[rank - 1]))


def query_factors(state_dict: Mapping[str, Tensor]) -> List[Tensor]:
    """Every layer's Φq (heads, ws², R) in a state dict, in order: official names or this project's earlier ones."""
    names = (FACTOR_NAMES[0], *(earlier for earlier, name in EARLIER_FACTOR_NAMES.items() if name == FACTOR_NAMES[0]))
    return [v for k, v in state_dict.items() if k.rpartition('.')[2] in names]


def bias_ranks(state_dict: Mapping[str, Tensor]) -> BiasRank:
    """The ``bias_rank`` a state dict was saved with: None (bias tables), one rank, or one per layer."""
    ranks = [v.shape[-1] for v in query_factors(state_dict)]
    if not ranks:
        return None
    return ranks[0] if len(set(ranks)) == 1 else ranks
