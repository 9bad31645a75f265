"""FlashBias (Wu et al., NeurIPS 2025): window attention whose position bias is a low-rank product, so that
plain, mask-free fused attention kernels compute it.

Each head's dense bias B_h (N×N, N = ws²) is held as two factors, B_h = Φq_h·Φk_hᵀ with Φq_h, Φk_h of
N×R, and the factors join the queries and keys as R extra channels (:class:`FlashBiasBackend`). The
pieces:

- :class:`FactorisedWindowAttention`: a :class:`~esc.archs.attention.WindowAttention` holding trainable
  factors instead of the bias table. The networks build it with ``attn_type: flashbias`` (the official
  ``FlashBias``) or a rank: ``flashbias_rank`` (the official option) or its synonym ``bias_rank``, one rank
  for every layer or one per self-attention layer (:func:`network_bias_rank`); without a rank,
  ``attn_type: flashbias`` takes the official default, 256 − head dim (:func:`default_rank`). A network
  trained with it is exact by construction.
  State-dict layout: the official one, ``<layer>.flashbias_q`` and ``<layer>.flashbias_k``, each
  (heads, ws², R), in place of ``<layer>.relative_position_bias``; files of this project's earlier layout
  (``bias_factor_q``/``bias_factor_k``, :data:`EARLIER_FACTOR_NAMES`) load too, and a table found in a state
  dict loaded into it is factorised on the way in (:func:`factorise`, the official U·√S and V·√S).
- :func:`factorise`: the best rank-R approximation of a dense bias (truncated SVD, Eckart–Young), at a
  given rank or at the smallest rank keeping a given share of the bias energy Σσ².
- :func:`factorise_network`: converts every attention layer of a trained network in place and reports
  per layer the rank and the energy kept; :func:`compare_on_image` adds the output differences against
  the exact network on an image; :func:`factorised_copy` does both on a copy (``esc/commands/convert_flashbias.py``).

Any backend runs a factorised layer: ``flashbias`` reads the factors, ``sdpa`` and ``naive`` read the
dense Φq·Φkᵀ (on the CPU, ``sdpa``'s bias-aware backward trains faster than the stock flash backward
``flashbias`` uses, so ``auto`` keeps ``sdpa``); ``flex`` reads the table only.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esc.archs.attention import (BIAS_INIT_STD, AttentionBackend, WindowAttention, register_backend,
                                 relative_position_bias)
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


def _check_rank(rank: Any, positions: int, option: str) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= positions:
        raise ESCError(f'{option}: the rank must be an integer from 1 to the window\'s {positions} positions, '
                       f'got {rank!r}')
    return rank


class FactorisedWindowAttention(WindowAttention):
    """:class:`WindowAttention` whose (heads, N, N) position bias is Φq·Φkᵀ, with trainable factors
    ``flashbias_q`` and ``flashbias_k`` of (heads, N, ``rank``) instead of the relative-position table (the
    official FlashBias layer's names and shapes)."""

    bias_form = 'factors'
    bias_parameters = FACTOR_NAMES

    def __init__(self, dim: int, window_size: int, num_heads: int, rank: int, attn_type: str = 'auto') -> None:
        super().__init__(dim, window_size, num_heads, attn_type)
        positions = window_size * window_size
        _check_rank(rank, positions, 'bias_rank')
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


def window_attention(dim: int, window_size: int, num_heads: int, attn_type: str = 'auto',
                     bias_rank: Optional[int] = None) -> WindowAttention:
    """A window attention layer: the exact one (a bias table) or, with ``bias_rank``, a factorised one."""
    if bias_rank is None:
        return WindowAttention(dim, window_size, num_heads, attn_type)
    return FactorisedWindowAttention(dim, window_size, num_heads, bias_rank, attn_type)


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
    return [_check_rank(r, window_size * window_size, f'{where}: {option}') for r in ranks]


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
    Frobenius norm: the truncated SVD U·Σ·Vᵀ split as Φq = U·√Σ, Φk = V·√Σ (Eckart–Young).

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
    if rank is not None and _check_rank(rank, positions, 'rank') == positions:
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


@dataclass
class LayerReport:
    """One converted attention layer: its name, rank and energy kept, and (after :func:`compare_on_image`)
    the largest absolute and the relative RMS difference of its output against the exact layer's."""

    name: str
    rank: int
    energy: float
    max_difference: Optional[float] = None
    relative_rms: Optional[float] = None


def attention_layers(net: nn.Module) -> Iterator[Tuple[str, WindowAttention]]:
    """(name, layer) of every window attention layer of ``net``, in order."""
    return ((name, m) for name, m in net.named_modules() if isinstance(m, WindowAttention))


def factorise_network(net: nn.Module, rank: Optional[int] = None, energy: Optional[float] = None,
                      attn_type: str = 'flashbias', svds: Optional[Dict[str, SVD]] = None) -> List[LayerReport]:
    """Replace every window attention layer of ``net`` (in place) by a :class:`FactorisedWindowAttention` whose
    factors :func:`factorise` the layer's dense bias at ``rank``, or at the smallest rank keeping the share
    ``energy`` of its energy; the new layers run on ``attn_type``. Returns one report per layer.

    ``svds``: a dict kept by the caller to convert copies of one network at several ranks: each layer's SVD
    (by name) is computed once and read from there afterwards."""
    reports = []
    for name, layer in list(attention_layers(net)):
        with torch.no_grad():
            bias = layer.bias().float()
            positions = bias.shape[-1]
            if svds is not None and name not in svds and rank != positions:
                svds[name] = decompose(bias)
            factors = factorise(bias, rank=rank, energy=energy, svd=None if svds is None else svds.get(name))
        new = FactorisedWindowAttention(layer.dim, layer.window_size, layer.num_heads, factors.rank, attn_type)
        parameter = next(layer.parameters())
        new.to(parameter.device, parameter.dtype).train(layer.training)
        new.to_qkv.load_state_dict(layer.to_qkv.state_dict())
        new.to_out.load_state_dict(layer.to_out.state_dict())
        with torch.no_grad():
            new.flashbias_q.copy_(factors.factor_q)
            new.flashbias_k.copy_(factors.factor_k)
        new.requires_grad_(parameter.requires_grad)
        parent, _, child = name.rpartition('.')
        setattr(net.get_submodule(parent) if parent else net, child, new)
        reports.append(LayerReport(name, factors.rank, factors.energy))
    return reports


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR (dB) of two images in [0, 1] after clamping (inf where they are equal)."""
    mse = (a.float().clamp(0, 1) - b.float().clamp(0, 1)).square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def compare_on_image(exact: nn.Module, factorised: nn.Module, image: Tensor,
                     reports: Sequence[LayerReport] = ()) -> Dict[str, float]:
    """Run both networks on ``image`` (1, 3, H, W): each factorised layer also sees the exact layer's input, and
    the reports (matched by layer name) get the layers' output differences. Returns the networks' max abs
    output difference and PSNR (dB, outputs clamped to [0, 1]) of the factorised against the exact output."""
    twins = dict(attention_layers(factorised))
    differences: Dict[str, List[float]] = {}

    def hook(name: str):
        def compare(layer: nn.Module, args: tuple, kwargs: dict, output: Tensor) -> None:
            twin_out = twins[name](args[0], None, *args[2:], **kwargs)  # row strips: the rows asked for, or more
            delta = twin_out[..., :output.shape[-2], :].float() - output.float()
            stats = differences.setdefault(name, [0.0, 0.0, 0.0])
            stats[0] = max(stats[0], delta.abs().max().item())
            stats[1] += delta.square().sum().item()
            stats[2] += output.float().square().sum().item()
        return compare

    handles = [layer.register_forward_hook(hook(name), with_kwargs=True)
               for name, layer in attention_layers(exact) if name in twins]
    try:
        with torch.no_grad():
            expected = exact(image)
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        got = factorised(image)
    for report in reports:
        if report.name in differences:
            largest, error, signal = differences[report.name]
            report.max_difference, report.relative_rms = largest, math.sqrt(error / max(signal, 1e-30))
    return dict(max_difference=(got - expected).abs().max().item(), psnr=psnr(got, expected))


def factorised_copy(net: nn.Module, image: Tensor, rank: Optional[int] = None, energy: Optional[float] = None,
                    attn_type: str = 'flashbias') -> Tuple[nn.Module, List[LayerReport], Dict[str, float]]:
    """A copy of ``net`` converted by :func:`factorise_network` (``net`` is not changed), its per-layer reports
    and the comparison of :func:`compare_on_image` on ``image`` against ``net``."""
    factorised = copy.deepcopy(net)
    reports = factorise_network(factorised, rank=rank, energy=energy, attn_type=attn_type)
    return factorised, reports, compare_on_image(net, factorised, image, reports)


def describe_conversion(reports: Sequence[LayerReport], comparison: Mapping[str, float]) -> List[str]:
    """One line per converted layer (rank, energy kept, output difference), then the network's output difference."""
    lines = []
    for r in reports:
        measured = '' if r.max_difference is None else (f', output max abs difference {r.max_difference:.3g}, '
                                                        f'relative RMS {r.relative_rms:.3g}')
        lines.append(f'{r.name}: rank {r.rank}, energy kept {r.energy:.6f}{measured}')
    lines.append(f"network output against the exact one: max abs difference {comparison['max_difference']:.3g}, "
                 f"PSNR {comparison['psnr']:.2f} dB")
    return lines


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
