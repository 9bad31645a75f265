"""Tiled super-resolution: bounded memory for large images, with feathered blending of the overlaps."""
from __future__ import annotations

from typing import Callable, List

import torch
from torch import Tensor

from esc.errors import ESCError


def tile_starts(size: int, tile: int, overlap: int) -> List[int]:
    """Start offsets of tiles of length ``tile`` covering ``size`` with at least ``overlap`` in common."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def _ramp(length: int, fade: int, fade_start: bool, fade_end: bool, device: torch.device) -> Tensor:
    """1-D blending weights: 1 inside, rising linearly over ``fade`` samples at edges shared with a neighbour."""
    weight = torch.ones(length, device=device)
    fade = min(fade, length // 2)
    if fade > 0:
        ramp = torch.arange(1, fade + 1, device=device, dtype=torch.float32) / (fade + 1)
        if fade_start:
            weight[:fade] = ramp
        if fade_end:
            weight[-fade:] = ramp.flip(0)
    return weight


def tiled_forward(upscale: Callable[[Tensor], Tensor], lq: Tensor, scale: int, tile: int, overlap: int) -> Tensor:
    """``upscale`` applied to overlapping ``tile``×``tile`` LR tiles of ``lq`` (N, C, H, W), blended into one
    (N, C', scale·H, scale·W) output; overlaps fade linearly from one tile to the next, so no seams show."""
    if tile <= 0 or overlap < 0 or overlap >= tile:
        raise ESCError(f'tile: need 0 <= overlap < tile size, got tile {tile} and overlap {overlap}')
    n, _, h, w = lq.shape
    rows, cols = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    output = weights = None
    for top in rows:
        for left in cols:
            patch = upscale(lq[..., top:top + tile, left:left + tile])
            if output is None:
                output = patch.new_zeros(n, patch.shape[1], h * scale, w * scale)
                weights = patch.new_zeros(1, 1, h * scale, w * scale)
            ph, pw = patch.shape[-2:]
            wy = _ramp(ph, overlap * scale, top > 0, top + tile < h, patch.device)
            wx = _ramp(pw, overlap * scale, left > 0, left + tile < w, patch.device)
            weight = (wy[:, None] * wx[None, :]).to(patch.dtype)
            ys, xs = slice(top * scale, top * scale + ph), slice(left * scale, left * scale + pw)
            output[..., ys, xs] += patch * weight
            weights[..., ys, xs] += weight
    return output / weights
