"""Tiled super-resolution: bounded memory for large images, with feathered blending of the overlaps."""
from __future__ import annotations

from typing import Callable, List

import torch
from torch import Tensor
from tqdm import tqdm

from esc.errors import ESCError

DEFAULT_OVERLAP = 64
"""LR pixels neighbouring tiles share unless told otherwise: with trained ESC weights this keeps tiled results
within 1/255 of whole-image ones (tests/test_tiling.py); 32 does not."""


def tile_starts(size: int, tile: int, overlap: int, align: int = 1) -> List[int]:
    """Start offsets, multiples of ``align``, of tiles of length ``tile`` covering ``size`` with at least
    ``overlap`` in common; the last tile ends at ``size`` and may be shorter.

    ESC aligns to its window size: a tile's attention windows are then the whole image's windows.
    """
    if size <= tile:
        return [0]
    stride = max(align, (tile - overlap) // align * align)
    return list(range(0, size - overlap, stride))


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


def tiled_forward(upscale: Callable[[Tensor], Tensor], lq: Tensor, scale: int, tile: int, overlap: int,
                  progress: bool = False, align: int = 1) -> Tensor:
    """``upscale`` applied to overlapping ``tile``×``tile`` LR tiles of ``lq`` (N, C, H, W), blended into one
    (N, C', scale·H, scale·W) output; overlaps fade linearly from one tile to the next, so no seams show.
    Tiles start at multiples of ``align`` (see :func:`tile_starts`), so consecutive tiles are at least ``align``
    apart and keep ``overlap`` in common only if ``tile - overlap >= align``, which is required; ``progress``
    shows a bar over them."""
    if tile <= 0 or overlap < 0 or overlap >= tile or tile - overlap < align:
        raise ESCError(f'tile: need 0 <= overlap < tile size and tiles that advance by at least one {align}-pixel '
                       f'window (tile - overlap >= {align}), got tile {tile} and overlap {overlap}')
    n, _, h, w = lq.shape
    rows, cols = tile_starts(h, tile, overlap, align), tile_starts(w, tile, overlap, align)
    output = weights = None
    bar = tqdm(total=len(rows) * len(cols), desc='tiles', unit='tile', disable=not progress, leave=False)
    for top in rows:
        for left in cols:
            patch = upscale(lq[..., top:top + tile, left:left + tile])
            bar.update()
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
    bar.close()
    return output.div_(weights)  # in place: the full-size output is the largest tensor of a tiled run
