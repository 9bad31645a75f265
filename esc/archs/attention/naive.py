"""``attn_type: naive``: the window attention equation written out, the reference the other backends are tested
against (to 1e-4) and the form fvcore counts FLOPs of."""
from __future__ import annotations

from torch import Tensor

from esc.archs.attention.base import AttentionBackend, register_backend


def naive_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """softmax(q·kᵀ/√d + bias)·v with every score matrix materialised."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5 + bias
    return scores.softmax(dim=-1) @ v


@register_backend
class NaiveBackend(AttentionBackend):
    """``naive``: S = q·kᵀ/√d + B materialised per window, then softmax(S)·v (the reference; fvcore counts it)."""

    name = 'naive'

    def __call__(self, layer, q, k, v, bias):
        return naive_attention(q, k, v, self.dense_bias(layer, q, bias))
