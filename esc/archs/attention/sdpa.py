"""``attn_type: sdpa``: torch's fused scaled-dot-product attention with the position bias as an additive mask, and
on the CPU a training path of its own (:class:`FusedBiasAttention`) whose backward returns the bias gradient."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from esc.archs.attention.base import AttentionBackend, register_backend


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


@register_backend
class SDPABackend(AttentionBackend):
    """``sdpa``: softmax(q·kᵀ/√d + B)·v in one fused kernel, B an additive (1, heads, N, N) mask.

    CUDA: ``scaled_dot_product_attention`` (memory-efficient or cuDNN kernels take the mask). CPU: the fused
    flash forward, and for training :class:`FusedBiasAttention`'s backward, which also returns ∂B.
    """

    name = 'sdpa'

    def __call__(self, layer, q, k, v, bias):
        return sdpa_attention(q, k, v, self.dense_bias(layer, q, bias))
