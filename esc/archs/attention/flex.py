"""``attn_type: flex``: FlexAttention with the relative position bias added inside the kernel (``score_mod``), compiled
once for every input size; the fastest backend on CUDA where Triton compiles it ('auto' picks it there)."""
from __future__ import annotations

import functools
import importlib.util
from typing import Callable

import torch
from torch import Tensor

from esc.archs.attention.base import AttentionBackend, register_backend
from esc.errors import ESCError

FLEX_MIN_HEAD_DIM_CUDA = 16
"""Inductor's CUDA FlexAttention kernel refuses smaller head dimensions ('NYI: embedding dimension ... at least 16')."""


def flex_attention_available() -> bool:
    """Whether this torch has FlexAttention."""
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


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
