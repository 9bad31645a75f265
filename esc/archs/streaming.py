"""Exact inference in row strips: the whole network's output with a few feature maps of memory.

A plain forward pass keeps a dozen full-size feature maps alive at once (inputs, outputs and
temporaries of every layer, plus the attention bias and window copies), and a fresh allocation for
each costs page faults. :func:`streamed_forward` computes the same thing with three full-size
buffers: the block input ``S`` (which becomes the block output), the running features ``X`` and one
sub-layer input ``T``; every layer runs strip by strip of ``rows`` rows and writes into them, reading
as many extra rows around the strip as its receptive field needs (its *halo*). Nothing is
approximated, unlike tiling (:mod:`esc.utils.tiling`):

- convolutions see the same neighbourhood as on the whole image (zero padding at image borders is
  the strip's own padding there; inner strip edges read real rows);
- the dynamic kernels of ConvAttn and the attention bias are computed once, from the whole input
  of their layer, and handed to every strip; the shared 8-symmetric LK is row-folded once
  (:class:`esc.archs.layers.RowFoldedKernel`: the same convolution with 7/13 of the work);
- self-attention strips are whole rows of 32×32 windows; the reflect padding of the last window row
  is gathered from the full map;
- a sub-layer ``x = x + mixer(pre(x))`` first writes ``pre(x)`` for the whole image into ``T``, so the
  in-place update of ``x`` never changes rows another strip still has to read.

Buffers are channels-last, so a strip of rows is one contiguous block and 1×1 convolutions and the
window partition read contiguous channels.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence, Tuple

import torch
from torch import Tensor, nn

from esc.archs.attention import WindowAttention
from esc.archs.layers import ConvAttn, LargeKernel, RowFoldedKernel, _reflect_indices

STRIP_PIXELS = 1 << 15
"""Pixels per strip of the convolutional layers: 8 MB per 64-channel temporary, enough rows to keep the
recomputed halo small (the 13×13 kernel reads 12 extra rows per strip). Self-attention runs one row of
windows at a time. ESC ×4 HD on 2 cores: 2**14 pixels is 5% slower for 20 MB less peak memory."""

CONV_FFN_HALO = 1  # its 3×3 depthwise conv


def strip_rows(height: int, width: int, pixels: int = STRIP_PIXELS) -> int:
    """Rows per strip of the convolutional layers: about ``pixels / width`` (at least 16), evened out so
    that the last strip is not a sliver."""
    strips = -(-height // max(16, pixels // max(width, 1)))
    return -(-height // strips)


def _strips(height: int, rows: int) -> Iterator[Tuple[int, int]]:
    for top in range(0, height, rows):
        yield top, min(top + rows, height)


def _by_rows(fn: Callable[..., Tensor], sources: Sequence[Tensor], rows: int, halo: int, out: Tensor,
             accumulate: bool = False, scale: int = 1) -> None:
    """``out`` (rows × ``scale``) ← or += ``fn(*sources)``, computed strip by strip with ``halo`` context rows."""
    height = sources[0].shape[-2]
    for top, bottom in _strips(height, rows):
        lo, hi = max(top - halo, 0), min(bottom + halo, height)
        result = fn(*(source[:, :, lo:hi] for source in sources))
        result = result[:, :, (top - lo) * scale:(bottom - lo) * scale]
        target = out[:, :, top * scale:bottom * scale]
        if accumulate:
            target += result
        else:
            target.copy_(result)


def _attention_by_rows(attn: WindowAttention, t: Tensor, out: Tensor) -> None:
    """``out += attn(t)`` one row of windows at a time (no halo: windows are independent), the bias computed once."""
    ws, height = attn.window_size, t.shape[-2]
    padded = _reflect_indices(height, 0, (-height) % ws, t.device)  # rows of pad_to_multiple(t, ws)
    bias = attn.bias() if attn.backend(t.device, training=False).needs_dense_bias else None
    for top, bottom in _strips(height, ws):
        strip_end = min(top + -(-(bottom - top) // ws) * ws, len(padded))
        if strip_end <= height:
            strip = t[:, :, top:strip_end]
        else:
            strip = t.index_select(2, padded[top:strip_end]).contiguous(memory_format=torch.channels_last)
        out[:, :, top:bottom] += attn(strip, bias, rows=bottom - top)[:, :, :bottom - top]


def _residual(mixer: nn.Module, pre: Callable[[Tensor], Tensor], pre_halo: int, x: Tensor, t: Tensor,
              lk: LargeKernel, rows: int) -> None:
    """``x ← x + mixer(pre(x))`` in place; ``t`` receives ``pre(x)`` first."""
    _by_rows(pre, (x,), rows, pre_halo, t)
    if isinstance(mixer, ConvAttn):
        dk = mixer.dynamic_kernels(t.mean((2, 3), keepdim=True))  # its GAP of a 1×1 map is the identity
        halo = max(_large_kernel_size(mixer, lk) // 2, 1)
        _by_rows(lambda strip: mixer(strip, lk, dk), (t,), rows, halo, x, accumulate=True)
    else:
        _attention_by_rows(mixer, t, x)


def _large_kernel_size(mixer: ConvAttn, lk: LargeKernel) -> int:
    if hasattr(mixer.plk, 'lk'):
        return mixer.plk.lk.shape[-1]
    return (lk[1] if isinstance(lk, tuple) else lk).shape[-1]


def _block(block: nn.Module, s: Tensor, x: Tensor, t: Tensor, lk: LargeKernel, rows: int) -> None:
    """Eq. 3 for one ESC block, by strips: ``s`` (its input) becomes its output; ``x``, ``t`` are scratch."""
    _by_rows(lambda strip: block.proj(block.ln_proj(strip)), (s,), rows, CONV_FFN_HALO, x)
    _residual(block.attn, block.ln_attn, 0, x, t, lk, rows)
    for norm, ffn, mixer in zip(block.lns, block.convffns, block.pconvs):
        _residual(mixer, lambda strip, norm=norm, ffn=ffn: ffn(norm(strip)), CONV_FFN_HALO, x, t, lk, rows)
    _by_rows(lambda strip: block.conv_out(block.ln_out(strip)), (x,), rows, 1, s, accumulate=True)


def streamed_forward(net: nn.Module, image: Tensor, pixels: int = STRIP_PIXELS) -> Tensor:
    """``net(image)`` computed in strips of about ``pixels`` pixels, for an ESC variant (see the module doc)."""
    image = image.contiguous(memory_format=torch.channels_last)
    s = net.proj(image)
    x, t = torch.empty_like(s), torch.empty_like(s)
    rows = strip_rows(s.shape[-2], s.shape[-1], pixels)
    lk = net.large_kernel()
    if isinstance(lk, Tensor):  # 8-symmetric, so up-down symmetric
        lk = RowFoldedKernel(lk)
    for block in net.blocks:
        _block(block, s, x, t, lk, rows)
    del t
    _by_rows(lambda deep, lr: net.fuse(deep, net.proj(lr), lr), (s, image), rows, net.fuse_halo, x)
    del s
    r = net.upscaling_factor
    b, _, h, w = image.shape
    out = image.new_empty(b, 3, h * r, w * r)
    _by_rows(net.reconstruct, (x, image), rows, net.reconstruct_halo, out, scale=r)
    return out



M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def tune_glibc_malloc(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Let glibc keep freed large blocks for reuse instead of unmapping them (process-wide).

    By default glibc serves blocks above a dynamic threshold with fresh ``mmap`` pages and returns
    free heap tops to the kernel, so the strips' temporaries, freed and allocated again at every layer,
    are page-faulted and zeroed over and over (0.3-0.5 s per ESC ×4 HD image on 2 cores).
    This raises both thresholds — the same job as PyTorch's CPU performance guide's advice to preload
    jemalloc or tcmalloc. Peak RSS does not grow; freed memory stays mapped up to ``trim_threshold``.
    Returns False where the C library is not glibc.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
