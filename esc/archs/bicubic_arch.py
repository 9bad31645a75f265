"""``Bicubic``: MATLAB-compatible bicubic upsampling as a network, so ``esc/test.py`` prints the
literature's bicubic baseline row with the same data, metrics and options as any ESC model — at the
integer scales of Table 2 (``forward``) and at any scale, non-integer ones included, for the
arbitrary-scale tables (``upscale``, used by ``ESCLTEModel``; paper Tables 5 and 6)."""
from __future__ import annotations

import functools
import math
from typing import Any, Optional, Tuple, Union

import torch
from basicsr.utils.matlab_functions import calculate_weights_indices, imresize
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from esc.archs.lte_arch import check_scale, output_size
from esc.errors import ESCError


@functools.lru_cache(maxsize=64)
def _resize_matrix(in_length: int, out_length: int) -> Tensor:
    """MATLAB's bicubic ``imresize`` along one axis as an (out, in) matrix, from basicsr's weights and indices
    (scale out/in, antialiased when shrinking; the symmetric padding folded back onto the image)."""
    weights, indices, pad_start, _ = calculate_weights_indices(in_length, out_length, out_length / in_length, 'cubic',
                                                               4, True)
    source = indices.long() - pad_start
    source = torch.where(source < 0, -source - 1, source)
    source = torch.where(source >= in_length, 2 * in_length - 1 - source, source).clamp(0, in_length - 1)
    matrix = torch.zeros(out_length, in_length, dtype=torch.float64)
    return matrix.scatter_add_(1, source, weights.double())


def imresize_to(image: Tensor, size: Tuple[int, int]) -> Tensor:
    """MATLAB-compatible bicubic resize of (..., H, W) to exactly ``size`` (scale = size / input per axis): equals
    basicsr's ``imresize`` where H·s and W·s are whole, and works on any device and batch (two matrix products)."""
    h, w = image.shape[-2:]
    if min(size) < 1:
        raise ESCError(f'size: cannot resize to {tuple(size)}')
    rows = _resize_matrix(h, int(size[0])).to(image.device, image.dtype)
    cols = _resize_matrix(w, int(size[1])).to(image.device, image.dtype)
    return rows @ image @ cols.T


@ARCH_REGISTRY.register()
class Bicubic(nn.Module):
    """Upsample by ``upscaling_factor`` with MATLAB's ``imresize`` bicubic kernel (a = −0.5).

    ``upscaling_factor``: a positive integer, or any finite number above 1 for arbitrary-scale tests
    (with ``model_type: ESCLTEModel``, which calls :meth:`upscale` with the ground truth's size).
    """

    def __init__(self, upscaling_factor: Optional[Union[int, float]] = None, **unknown: Any) -> None:
        super().__init__()
        if unknown:
            raise ESCError(f'network_g (Bicubic): unknown option(s) {", ".join(sorted(unknown))}')
        integer = isinstance(upscaling_factor, int) and not isinstance(upscaling_factor, bool) and upscaling_factor >= 1
        real = isinstance(upscaling_factor, float) and math.isfinite(upscaling_factor) and upscaling_factor > 1
        if not (integer or real):
            raise ESCError(f'network_g (Bicubic): upscaling_factor must be a positive integer or a number above 1, '
                           f'got {upscaling_factor!r}')
        self.upscaling_factor = upscaling_factor

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([imresize(image, self.upscaling_factor) for image in x])

    def upscale(self, x: Tensor, size: Optional[Tuple[int, int]] = None, scale: Optional[float] = None) -> Tensor:
        """Upsample (B, 3, h, w) to ``size``, or to round(h·s)×round(w·s) for ``scale`` (the LTE evaluation's sizes)."""
        if (size is None) == (scale is None):
            raise ESCError('upscale: give exactly one of size and scale')
        return imresize_to(x, size if size is not None else output_size(x.shape[-2:], check_scale(scale)))
