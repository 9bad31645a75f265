"""The building blocks every ESC variant is composed of (paper Sec. 3.3; docs/architecture.md).

Each idea lives here once: channels-first LayerNorm, ConvFFN, reflect padding that works for any
size, the 8-symmetry average of the shared large kernel, the dynamic-kernel generator, the two
large-kernel convolutions (shared LK, Eq. 4 line 3; decomposed LK, Eq. 5) and ConvAttn (Eq. 4).
Attribute names follow the official checkpoints so released weights load with ``strict=True``.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

class RowFoldedKernel:
    """An up-down symmetric k×k kernel, ready to convolve with half the multiply-adds.

    Where ``K[dy] = K[−dy]`` (every 8-symmetric LK), ``Σ_dy K[dy] ⊗ x(· + dy)`` equals
    ``Σ_{dy ≥ 0} K[dy] ⊗ (x(· + dy) + x(· − dy))``: the (k+1)/2 row-folded copies of the input, stacked on
    the channels, meet one 1×k convolution, (k+1)/(2k) of the direct conv's work (7/13 for 13×13).
    Inference only: fvcore counts the direct convolution the paper counts.
    """

    def __init__(self, kernel: Tensor) -> None:
        k = kernel.shape[-1]
        self.size, self.half = k, k // 2
        rows = [kernel[:, :, self.half + dy:self.half + dy + 1, :] for dy in range(self.half + 1)]
        self.weight = torch.cat(rows, dim=1).contiguous(memory_format=torch.channels_last)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.weight.shape[0], self.weight.shape[1] // (self.half + 1), self.size, self.size))

    def conv2d(self, x: Tensor) -> Tensor:
        """``F.conv2d(x, kernel, padding=k // 2)``."""
        b, c, h, w = x.shape
        p = self.half
        padded = F.pad(x, (0, 0, p, p))
        folded = torch.empty(b, (p + 1) * c, h, w, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        folded[:, :c] = x
        for dy in range(1, p + 1):
            torch.add(padded[:, :, p - dy:p - dy + h], padded[:, :, p + dy:p + dy + h], out=folded[:, dy * c:(dy + 1) * c])
        return F.conv2d(folded, self.weight, padding=(0, p))


LargeKernel = Union[None, Tensor, RowFoldedKernel, Tuple[Tensor, Tensor]]
"""What a ConvAttn receives from the network: the shared LK (as a tensor, or row-folded for inference),
ESC-FP's (channel, spatial) pair, or None where every ConvAttn keeps its own (the 'LK not shared' ablation)."""


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW tensor, at every pixel (eps 1e-6, affine).

    It runs ``F.layer_norm`` on a channels-last view: fast, and counted by fvcore (5 FLOPs per
    element) the way the paper's complexity figures count it.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def _gelu(x: Tensor) -> Tensor:
    """GELU of a fresh tensor; in place when no graph is recorded (one hidden map less at inference)."""
    return F.gelu(x) if torch.is_grad_enabled() else torch.ops.aten.gelu_(x)


class ConvFFN(nn.Module):
    """Feed-forward network with a depthwise conv on its hidden features (SRFormer's ConvFFN)."""

    def __init__(self, dim: int, hidden_dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim, hidden_dim, 1)
        self.dwc = nn.Conv2d(hidden_dim, hidden_dim, kernel_size, padding=kernel_size // 2, groups=hidden_dim)
        self.aggr = nn.Conv2d(hidden_dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        hidden = _gelu(self.proj(x))
        return self.aggr(_gelu(self.dwc(hidden)).add_(hidden))  # GELU saves its input: adding to its output is safe


def _reflect_indices(size: int, before: int, after: int, device: torch.device) -> Tensor:
    """Indices of a reflect padding of any width: the signal mirrored about its end samples, repeated.

    No branch on ``size`` (a 1-sample signal has period 1: all zeros), so a traced graph keeps it symbolic; under
    ``torch.jit.trace`` (fvcore's FLOP counts) ``size`` comes as a tensor."""
    period = (2 * (size - 1)).clamp(min=1) if isinstance(size, Tensor) else torch.sym_max(2 * (size - 1), 1)
    idx = torch.arange(-before, size + after, device=device)
    idx = idx.remainder(idx.new_full((), period))  # a tensor divisor: ONNX has no Mod by a symbolic scalar
    return torch.where(idx < size, idx, period - idx)


def reflect_pad(x: Tensor, top: int, bottom: int, left: int, right: int) -> Tensor:
    """Reflect-pad the last two dims; unlike ``F.pad`` it accepts pads as wide as or wider than the input.

    Where ``F.pad(mode='reflect')`` applies (every pad smaller than its dimension) the result is
    identical to it; wider pads keep reflecting back and forth, so a 1×1 input is replicated. Traced
    (``torch.export``, ``torch.compile``) it always gathers, which holds for every size: H and W stay symbolic.
    """
    h, w = x.shape[-2:]
    if not torch.compiler.is_compiling() and max(top, bottom) < h and max(left, right) < w:
        return F.pad(x, (left, right, top, bottom), mode='reflect') if top or bottom or left or right else x
    rows = _reflect_indices(h, top, bottom, x.device)
    cols = _reflect_indices(w, left, right, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Reflect-pad the bottom and right of an NCHW tensor so that H and W are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    return reflect_pad(x, 0, (-h) % multiple, 0, (-w) % multiple)


class ReflectConv2d(nn.Conv2d):
    """A 'same' convolution with reflect padding that also works on inputs smaller than the kernel."""

    def forward(self, x: Tensor) -> Tensor:
        ph, pw = self.kernel_size[0] // 2, self.kernel_size[1] // 2
        return F.conv2d(reflect_pad(x, ph, ph, pw, pw), self.weight, self.bias, self.stride, 0, self.dilation,
                        self.groups)


def symmetric_average(kernel: Tensor) -> Tensor:
    """Average a (..., k, k) kernel over the 8 symmetries of the square (flips, rotations, transposes)."""
    def flips(k: Tensor) -> Tensor:
        return k + k.flip(-1) + k.flip(-2) + k.flip(-2, -1)

    return (flips(kernel) + flips(kernel.transpose(-2, -1))) / 8


def depthwise_conv_per_sample(x: Tensor, kernels: Tensor) -> Tensor:
    """Depthwise 'same' conv of each sample of x (B, C, H, W) with its own kernels (B, C, k, k)."""
    b, c, h, w = x.shape
    k = kernels.shape[-1]
    out = F.conv2d(x.reshape(1, b * c, h, w), kernels.reshape(b * c, 1, k, k), padding=k // 2, groups=b * c)
    return out.view(b, c, h, w)


def dynamic_kernel_generator(pdim: int, hidden_dim: int, zero_init: bool) -> nn.Sequential:
    """GAP → conv1x1 → GELU → conv1x1 giving one 3×3 depthwise kernel per channel and sample (9·P values)."""
    generator = nn.Sequential(
        nn.AdaptiveAvgPool2d(1),
        nn.Conv2d(pdim, hidden_dim, 1),
        nn.GELU(),
        nn.Conv2d(hidden_dim, pdim * 9, 1),
    )
    if zero_init:
        nn.init.zeros_(generator[3].weight)
        nn.init.zeros_(generator[3].bias)
    return generator


class SharedLargeKernelConv(nn.Module):
    """Eq. 4, line 3: ``att ⊗ DK + att ⊗ LK`` with the network-wide LK and this layer's dynamic DK.

    The Table 3 ablations switch parts off: ``own_kernel_size`` gives this layer a private LK (not
    shared, still 8-symmetric) of that size; ``dynamic=False`` drops DK and its generator.
    """

    min_pdim = 2  # the kernel generator's hidden width is pdim // 2

    def __init__(self, pdim: int, own_kernel_size: Optional[int] = None, dynamic: bool = True) -> None:
        super().__init__()
        self.pdim = pdim
        if dynamic:
            self.dwc_proj = dynamic_kernel_generator(pdim, pdim // 2, zero_init=True)
        if own_kernel_size:
            self.lk = nn.Parameter(torch.empty(pdim, pdim, own_kernel_size, own_kernel_size))
            nn.init.orthogonal_(self.lk)

    def dynamic_kernels(self, att: Tensor) -> Optional[Tensor]:
        """DK: a 3×3 kernel per channel and sample, from the whole of ``att`` (None without DK)."""
        if not hasattr(self, 'dwc_proj'):
            return None
        return self.dwc_proj(att).view(att.shape[0], self.pdim, 3, 3)

    def forward(self, att: Tensor, lk: Union[None, Tensor, RowFoldedKernel], dk: Optional[Tensor] = None) -> Tensor:
        """``dk``: DK computed beforehand (row-strip inference: from the whole image, not the strip)."""
        if hasattr(self, 'lk'):
            lk = symmetric_average(self.lk)
        out = lk.conv2d(att) if isinstance(lk, RowFoldedKernel) else F.conv2d(att, lk, padding=lk.shape[-1] // 2)
        dk = self.dynamic_kernels(att) if dk is None else dk
        if dk is not None:
            out = out + depthwise_conv_per_sample(att, dk)
        return out


class DecomposedLargeKernelConv(nn.Module):
    """Eq. 5 (ESC-FP): ``(att ⊗ LK^c) ⊗ (ZP(DK) + LK^s)`` with a depthwise-separable shared LK."""

    min_pdim = 4  # the kernel generator's hidden width is pdim // 4

    def __init__(self, pdim: int) -> None:
        super().__init__()
        self.pdim = pdim
        self.proj = dynamic_kernel_generator(pdim, pdim // 4, zero_init=False)

    def dynamic_kernels(self, att: Tensor) -> Tensor:
        """DK: a 3×3 kernel per channel and sample, from the whole of ``att``."""
        return self.proj(att).view(att.shape[0], self.pdim, 3, 3)

    def forward(self, att: Tensor, lk: Tuple[Tensor, Tensor], dk: Optional[Tensor] = None) -> Tensor:
        """``dk``: DK computed beforehand (row-strip inference: from the whole image, not the strip)."""
        lk_channel, lk_spatial = lk
        k = lk_spatial.shape[-1]
        dk = self.dynamic_kernels(att) if dk is None else dk
        kernels = lk_spatial.view(1, self.pdim, k, k) + F.pad(dk, [(k - 3) // 2] * 4)
        return depthwise_conv_per_sample(F.conv2d(att, lk_channel), kernels)


class ConvAttn(nn.Module):
    """Convolutional attention on the first ``pdim`` channels, fused with the rest by a 1×1 conv."""

    def __init__(self, dim: int, pdim: int, large_kernel_conv: nn.Module) -> None:
        super().__init__()
        self.pdim = pdim
        self.plk = large_kernel_conv
        self.aggr = nn.Conv2d(dim, dim, 1)

    def dynamic_kernels(self, x: Tensor) -> Optional[Tensor]:
        """The per-sample DK of this layer's input ``x`` (see ``forward``'s ``dk``)."""
        return self.plk.dynamic_kernels(x[:, :self.pdim])

    def forward(self, x: Tensor, lk: LargeKernel, dk: Optional[Tensor] = None) -> Tensor:
        """Eq. 4: split, LK + DK convolution of ``att``, concat with ``idt``, 1×1 fuse."""
        att, idt = x.split([self.pdim, x.shape[1] - self.pdim], dim=1)
        # both convolutions want dense input: one copy of the slice here instead of one inside each
        att = att.contiguous(memory_format=torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
                             else torch.contiguous_format)
        return self.aggr(torch.cat([self.plk(att, lk, dk), idt], dim=1))
