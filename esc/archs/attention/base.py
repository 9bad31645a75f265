"""Window self-attention with a relative position bias, and its interchangeable backends.

``attn_type`` picks how the softmax(q·kᵀ/√d + B)·v of every 32×32 window is computed; all give the
same numbers (tested to 1e-4). Each backend is a class in :data:`BACKENDS` whose docstring states how it
computes that equation:

- ``flex``:  FlexAttention, compiled once for every input size (:class:`FlexBackend`).
- ``sdpa``:  fused attention with B as an additive mask (:class:`SDPABackend`).
- ``naive``: explicit matmul + softmax + matmul, the reference (:class:`NaiveBackend`).
- ``flashbias``: B held as low-rank factors appended to q and k, mask-free fused attention
  (:mod:`esc.archs.flashbias`; layers built with the networks' ``bias_rank`` option).
- ``auto``:  the fastest backend that works where the network runs (:func:`choose_backend` says which and why):
  flex on CUDA where its kernel compiles (Triton present, head dim ≥ 16), otherwise sdpa.

The official spellings ``Flex``, ``SDPA``, ``Naive`` and ``FlashBias`` are accepted (:data:`OFFICIAL_ATTN_TYPES`). Other modules add backends with
:func:`register_backend` (e.g. :mod:`esc.archs.flashbias`).
"""
from __future__ import annotations

import functools
import importlib.util
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from esc.archs.layers import pad_to_multiple
from esc.errors import ESCError

BIAS_INIT_STD = 1e-3
"""Standard deviation of the relative-position bias at initialisation (the official N(0, 1)·0.001)."""

FLEX_MIN_HEAD_DIM_CUDA = 16
"""Inductor's CUDA FlexAttention kernel refuses smaller head dimensions ('NYI: embedding dimension ... at least 16')."""


class AttentionBackend:
    """One way to compute softmax(q·kᵀ/√d + B)·v for the windows of a :class:`WindowAttention` layer.

    ``q``: (windows, heads, Nq, d), the first Nq ≤ N rows of each window (row-strip inference asks no
    queries of padding rows); ``k``, ``v``: (windows, heads, N, d); ``bias``: the layer's (heads, N, N)
    B when the caller computed it beforehand (row-strip inference, once for every strip), else None.
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

    def __call__(self, layer: 'WindowAttention', q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor]) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def dense_bias(layer: 'WindowAttention', q: Tensor, bias: Optional[Tensor]) -> Tensor:
        """B for the queried rows (``bias`` if given, else the layer's)."""
        return (layer.bias() if bias is None else bias)[:, :q.shape[-2]]


BACKENDS: Dict[str, AttentionBackend] = {}
"""Attention backends by ``attn_type`` name."""


def register_backend(cls: type) -> type:
    """Class decorator: make an :class:`AttentionBackend` selectable as ``attn_type: <cls.name>``."""
    BACKENDS[cls.name] = cls()
    return cls


def attn_types() -> Tuple[str, ...]:
    """Every ``attn_type`` value: 'auto' and the registered backends."""
    return ('auto', *BACKENDS)


OFFICIAL_ATTN_TYPES: Dict[str, str] = {'Flex': 'flex', 'SDPA': 'sdpa', 'Naive': 'naive', 'FlashBias': 'flashbias'}
"""The official repository's ``attn_type`` values and the backends they are here (FlashBias: the position bias as
low-rank factors, :mod:`esc.archs.flashbias`)."""


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


def flex_attention_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def choose_backend(attn_type: str, device_type: str, head_dim: int, training: bool,
                   bias_form: str = 'table') -> Tuple[str, str]:
    """The backend ``attn_type`` runs on (name, and why, in words) for a ``device_type`` device, heads of
    ``head_dim`` channels, training or not, layers whose position bias is held as ``bias_form``
    (:attr:`WindowAttention.bias_form`). An explicit backend that cannot run there is an ESCError."""
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
def _backend_name(attn_type: str, device_type: str, head_dim: int, training: bool, bias_form: str) -> str:
    """:func:`choose_backend`'s name, a constant to ``torch.compile``: it is computed when a graph is traced
    (its checks, Triton's presence among them, are not traced into the graph)."""
    return choose_backend(attn_type, device_type, head_dim, training, bias_form)[0]


def resolve_attn_type(attn_type: str, device: torch.device, head_dim: int = 16, training: bool = False,
                      bias_form: str = 'table') -> str:
    """The concrete backend ``attn_type`` stands for on ``device`` (see :func:`choose_backend`)."""
    return choose_backend(normalize_attn_type(attn_type), torch.device(device).type, head_dim, training, bias_form)[0]


def describe_attention(net: nn.Module, device: torch.device, training: bool) -> List[str]:
    """One line per distinct attention configuration of ``net``: which backend it runs on ``device``, and why.

    Raises the one-line ESCError of :func:`choose_backend` where an explicit backend cannot run (call it
    before training or evaluation starts)."""
    seen: Dict[Tuple[str, int, str], str] = {}
    for layer in net.modules():
        key = (layer.attn_type, layer.head_dim, layer.bias_form) if isinstance(layer, WindowAttention) else None
        if key is not None and key not in seen:
            backend, why = choose_backend(layer.attn_type, torch.device(device).type, layer.head_dim, training,
                                          layer.bias_form)
            seen[key] = (f'attention: {backend} for attn_type {layer.attn_type} (head dim {layer.head_dim}'
                         f"{', bias as ' + layer.bias_form if layer.bias_form != 'table' else ''}): {why}")
    return list(seen.values())


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
        # the CPU flash kernel leaves part of its output unwritten for q, k, v whose last dimension is strided (as
        # the window split's views are): seen in torch 2.14.1 as NaN from whatever memory the output reused
        q, k, v = (t.contiguous() for t in (q, k, v))
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
    if (q.device.type == 'cpu' and needs_grad and _cpu_flash_kernels_available()
            and not torch.compiler.is_compiling()):  # compiled, inductor differentiates the math form itself
        return FusedBiasAttention.apply(q, k, v, bias)
    # a 4-D mask keeps the fused kernels eligible (a 3-D one drops CPU SDPA to its slow math path)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype).unsqueeze(0))


@functools.lru_cache(maxsize=None)
def _compiled_flex_attention() -> Callable:
    from torch.nn.attention.flex_attention import flex_attention
    # static but for the number of windows, which flex_attention marks dynamic: one kernel serves every image size,
    # and a network of other heads or windows gets its own static kernel (automatic dynamic shapes would make those
    # symbolic too, where inductor's CPU flex template fails to compile)
    return torch.compile(flex_attention, dynamic=False)


def flex_attention(q: Tensor, k: Tensor, v: Tensor, table: Tensor, window_size: int) -> Tensor:
    """FlexAttention whose score_mod adds ``table[head, index(key − query)]`` inside each window.

    The window count (dim 0) is dynamic: images of any size share one compiled kernel (one more for a
    single-window input, which dynamo specialises), so dynamo's recompile limit is never reached and the
    uncompiled flex path, which materialises every score matrix, never runs. Inside a compiled network
    the outer ``torch.compile`` traces it directly.
    """
    if not q.is_cuda and torch.is_grad_enabled() and (q.requires_grad or table.requires_grad):
        raise ESCError("attn_type 'flex' cannot train on CPU (FlexAttention has no CPU backward); "
                       "use attn_type 'auto' or 'sdpa'")
    span = 2 * window_size - 1

    def add_relative_bias(score, batch, head, q_idx, kv_idx):
        dy = kv_idx // window_size - q_idx // window_size + window_size - 1
        dx = kv_idx % window_size - q_idx % window_size + window_size - 1
        return score + table[head, dy * span + dx]

    if torch.compiler.is_compiling():
        from torch.nn.attention.flex_attention import flex_attention as traced_flex
        return traced_flex(q, k, v, score_mod=add_relative_bias)
    for t in (q, k, v):
        torch._dynamo.maybe_mark_dynamic(t, 0)
    return _compiled_flex_attention()(q, k, v, score_mod=add_relative_bias)


@register_backend
class NaiveBackend(AttentionBackend):
    """``naive``: S = q·kᵀ/√d + B materialised per window, then softmax(S)·v (the reference; fvcore counts it)."""

    name = 'naive'

    def __call__(self, layer, q, k, v, bias):
        return naive_attention(q, k, v, self.dense_bias(layer, q, bias))


@register_backend
class SDPABackend(AttentionBackend):
    """``sdpa``: softmax(q·kᵀ/√d + B)·v in one fused kernel, B an additive (1, heads, N, N) mask.

    CUDA: ``scaled_dot_product_attention`` (memory-efficient or cuDNN kernels take the mask). CPU: the fused
    flash forward, and for training :class:`FusedBiasAttention`'s backward, which also returns ∂B.
    """

    name = 'sdpa'

    def __call__(self, layer, q, k, v, bias):
        return sdpa_attention(q, k, v, self.dense_bias(layer, q, bias))


@register_backend
class FlexBackend(AttentionBackend):
    """``flex``: FlexAttention computing softmax(q·kᵀ/√d + T[h, key − query])·v with the bias table T read
    inside the kernel (``score_mod``): B is never materialised; compiled once for all input sizes."""

    name = 'flex'
    needs_dense_bias = False
    bias_forms = ('table',)

    def unavailable(self, device, head_dim, training):
        if not flex_attention_available():
            return f'torch {torch.__version__} has no FlexAttention'
        if device.type == 'cuda':
            if importlib.util.find_spec('triton') is None:
                return 'Triton is not installed (FlexAttention compiles to Triton kernels on CUDA)'
            if head_dim < FLEX_MIN_HEAD_DIM_CUDA:
                return (f'head dim {head_dim} < {FLEX_MIN_HEAD_DIM_CUDA} (inductor\'s CUDA FlexAttention kernel '
                        f'needs at least {FLEX_MIN_HEAD_DIM_CUDA})')
            major, _ = torch.cuda.get_device_capability(device) if torch.cuda.is_available() else (8, 0)
            if major < 7:
                return 'Triton needs a GPU of compute capability 7.0 or newer'
        elif device.type == 'cpu' and training:
            return 'FlexAttention has no CPU backward'
        return None

    def __call__(self, layer, q, k, v, bias):
        return flex_attention(q, k, v, layer.relative_position_bias.to(q.dtype), layer.window_size)


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
        return BACKENDS[_backend_name(self.attn_type, device.type, self.head_dim, training, self.bias_form)]

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
