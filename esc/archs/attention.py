"""Window self-attention with a relative position bias, and its interchangeable backends.

``attn_type`` picks how the softmax(q·kᵀ/√d + bias)·v of every 32×32 window is computed; all give
the same numbers (tested to 1e-4):

- ``flex``:  FlexAttention, compiled, the bias applied as a score modification (the paper's fast
  CUDA path, never materialises the score matrix). It has no CPU backward.
- ``sdpa``:  fused attention with the bias as an additive mask. On CUDA it is
  ``scaled_dot_product_attention``; on CPU the fused flash kernel's forward, and for training
  :class:`FusedBiasAttention`'s window-by-window backward, which also returns the bias gradient
  (PyTorch's own CPU SDPA cannot, and falls back to a math path 5× slower).
- ``naive``: explicit matmul + softmax + matmul. fvcore counts its FLOPs, so complexity is measured
  on it; it is the reference every other backend is tested against.
- ``auto``:  flex on CUDA, sdpa on CPU.

The official spellings ``Flex``, ``SDPA`` and ``Naive`` are accepted.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from esc.archs.layers import pad_to_multiple
from esc.errors import ESCError

ATTN_TYPES = ('auto', 'flex', 'sdpa', 'naive')


def normalize_attn_type(attn_type: str) -> str:
    """Map an ``attn_type`` option (any case, e.g. the official 'Flex') to one of :data:`ATTN_TYPES`."""
    name = str(attn_type).lower()
    if name not in ATTN_TYPES:
        raise ESCError(f"attn_type: {attn_type!r} is not supported; choose one of {', '.join(ATTN_TYPES)} "
                       "(or the official 'Flex', 'SDPA', 'Naive')")
    return name


def flex_attention_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_attn_type(attn_type: str, device: torch.device) -> str:
    """The concrete backend ``auto`` stands for on ``device`` (the same for inference and training)."""
    if attn_type != 'auto':
        return attn_type
    if device.type == 'cuda' and flex_attention_available():
        return 'flex'
    return 'sdpa'


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


def naive_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5 + bias
    return scores.softmax(dim=-1) @ v


def _cpu_flash_kernels_available() -> bool:
    aten = torch.ops.aten
    return (hasattr(aten, '_scaled_dot_product_flash_attention_for_cpu')
            and hasattr(aten, '_scaled_dot_product_flash_attention_for_cpu_backward'))


class FusedBiasAttention(torch.autograd.Function):
    """softmax(q·kᵀ/√d + bias)·v on CPU: the fused flash forward, and a backward that returns the bias
    gradient too, holding one window's (heads, N, N) probabilities at a time.

    The backward is the flash-attention one (Dao et al.): P is recomputed from the saved log-sum-exp,
    dS = P ⊙ (dO·vᵀ − rowsum(dO ⊙ O)); the row terms ride along as one extra column of the GEMM
    operands, so each window costs five GEMMs and three passes over its scores.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, False, attn_mask=bias.to(q.dtype).unsqueeze(0))
        ctx.save_for_backward(q, k, v, bias, out, lse)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        q, k, v, bias, out, lse = ctx.saved_tensors
        dtype = torch.promote_types(q.dtype, torch.float32)
        q, k, v, out, grad_out = (t.to(dtype).contiguous() for t in (q, k, v, out, grad_out))
        scale = q.shape[-1] ** -0.5
        q_scaled, k_scaled = q * scale, k * scale
        ones = q.new_ones(q.shape[:-1] + (1,))
        # [q·scale, −lse]·[k, 1] = scores − lse;  [dO, −rowsum(dO ⊙ O)]·[v, 1] = dP − D
        q_lse = torch.cat([q_scaled, -lse.to(dtype).unsqueeze(-1)], dim=-1)
        k_one = torch.cat([k, ones], dim=-1)
        grad_d = torch.cat([grad_out, -(grad_out * out).sum(-1, keepdim=True)], dim=-1)
        v_one = torch.cat([v, ones], dim=-1)
        bias = bias.to(dtype)
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        grad_bias = torch.zeros_like(bias) if ctx.needs_input_grad[3] else None
        probs, grad_scores = torch.empty_like(bias), torch.empty_like(bias)
        for w in range(q.shape[0]):
            torch.baddbmm(bias, q_lse[w], k_one[w].transpose(-2, -1), out=probs).exp_()
            torch.bmm(probs.transpose(-2, -1), grad_out[w], out=grad_v[w])
            torch.bmm(grad_d[w], v_one[w].transpose(-2, -1), out=grad_scores).mul_(probs)
            if grad_bias is not None:
                grad_bias += grad_scores
            torch.bmm(grad_scores, k_scaled[w], out=grad_q[w])
            torch.bmm(grad_scores.transpose(-2, -1), q_scaled[w], out=grad_k[w])
        grads = (grad_q, grad_k, grad_v)
        grads = tuple(g.to(t.dtype) for g, t in zip(grads, ctx.saved_tensors[:3]))
        if grad_bias is not None:
            grad_bias = grad_bias.to(ctx.saved_tensors[3].dtype)
        return (*grads, grad_bias)


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """Fused softmax(q·kᵀ/√d + bias)·v with a (heads, N, N) bias: differentiable in all four on every device."""
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, bias))
    if q.device.type == 'cpu' and needs_grad and _cpu_flash_kernels_available():
        return FusedBiasAttention.apply(q, k, v, bias)
    # a 4-D mask keeps the fused kernels eligible (a 3-D one drops CPU SDPA to its slow math path)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype).unsqueeze(0))


@functools.lru_cache(maxsize=None)
def _compiled_flex_attention() -> Callable:
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention, dynamic=False)


def flex_attention(q: Tensor, k: Tensor, v: Tensor, table: Tensor, window_size: int) -> Tensor:
    """FlexAttention whose score_mod adds ``table[head, index(key − query)]`` inside each window."""
    if not q.is_cuda and torch.is_grad_enabled() and (q.requires_grad or table.requires_grad):
        raise ESCError("attn_type 'flex' cannot train on CPU (FlexAttention has no CPU backward); "
                       "use attn_type 'auto' or 'sdpa'")
    span = 2 * window_size - 1

    def add_relative_bias(score, batch, head, q_idx, kv_idx):
        dy = kv_idx // window_size - q_idx // window_size + window_size - 1
        dx = kv_idx % window_size - q_idx % window_size + window_size - 1
        return score + table[head, dy * span + dx]

    return _compiled_flex_attention()(q, k, v, score_mod=add_relative_bias)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside non-overlapping ws×ws windows, with relative position bias."""

    def __init__(self, dim: int, window_size: int, num_heads: int, attn_type: str = 'auto') -> None:
        super().__init__()
        if dim % num_heads:
            raise ESCError(f'num_heads: dim ({dim}) is not divisible by num_heads ({num_heads})')
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.attn_type = normalize_attn_type(attn_type)
        self.relative_position_bias = nn.Parameter(torch.randn(num_heads, (2 * window_size - 1) ** 2) * 1e-3)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.to_out = nn.Conv2d(dim, dim, 1)

    def bias(self) -> Tensor:
        """The (heads, N, N) bias every window adds to its scores."""
        return relative_position_bias(self.relative_position_bias, self.window_size)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor] = None) -> Tensor:
        """softmax(q·kᵀ/√d + bias)·v on (windows, heads, N, d) tensors with the configured backend; the
        queries may be the first rows of each window only."""
        backend = resolve_attn_type(self.attn_type, q.device)
        if backend == 'flex':
            return flex_attention(q, k, v, self.relative_position_bias.to(q.dtype), self.window_size)
        bias = (self.bias() if bias is None else bias)[:, :q.shape[-2]]
        return sdpa_attention(q, k, v, bias) if backend == 'sdpa' else naive_attention(q, k, v, bias)

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
        queried = rows if rows is not None and nh == 1 and rows < ws else ws  # padding rows ask nothing
        out = self.attend(q[:, :, :queried * ws], k, v, bias).view(b, nh, nw, heads, queried, ws, c // heads)
        if x.is_contiguous(memory_format=torch.channels_last):  # stay channels-last: one copy, not two
            out = out.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, nh * queried, nw * ws, c).permute(0, 3, 1, 2)
        else:
            out = out.permute(0, 3, 6, 1, 4, 2, 5).reshape(b, c, nh * queried, nw * ws)
        return self.to_out(out[:, :, :h, :w])
