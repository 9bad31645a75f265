"""HiT-SRF (Zhang, Zhang and Yu, ECCV 2024, "HiT-SR: Hierarchical transformer for efficient image
super-resolution"): SRFormer's network with its permuted self-attention replaced by spatial-channel correlation
(SCC) over hierarchical windows. The ESC paper's baseline "HiT-SRF" (Tables 2 and 4; with LTE, Tables 5 and 6).

The network (C = ``embed_dim``, windows ``base_win_size`` × ``hier_win_ratios``, 8×8 × 0.5 … 8 by default):

- shallow features F0 = conv3×3(I − mean) (``conv_first``); the DIV2K mean colour is subtracted from an RGB
  input and added back to the output, ``img_range`` scales in between;
- deep features: a LayerNorm over channels (``patch_embed.norm``), then groups (``layers``) of blocks, each
  group ending in a conv3×3 and a skip around the group, a final LayerNorm (``norm``), then
  ``conv_after_body`` and the skip from F0;
- block j of a group works in a window of ``int(base · ratio_j)`` pixels each way, the features reflect-padded
  at the bottom and right to whole windows (where a pad exceeds the map, the reflection continues back and
  forth): x ← x + LN₁(SCC(x)), x ← x + LN₂(ConvFFN(x)) (post-norm; no norm before either branch);
- SCC: a dual feature extraction (1×1 conv to C/5, LeakyReLU 0.2, 3×3 conv, LeakyReLU, 1×1 conv back to C,
  times a 1×1 conv of the same input) gives C channels, read per window as q (the first C/2) and v (the rest),
  each split into h heads of d = C/(2h) consecutive channels. Spatial correlation: the window's keys are
  cut into a grid of at most base × base cells and each cell's v pixels are mixed into one by a linear layer
  (``spatial_linear``), the scores q·vᵀ/d (no softmax) plus a position bias weight those cell values. Channel
  correlation: across all heads at once, the C/2 × C/2 map qᵀv / L (L pixels per window) mixes the channels
  of v. The two halves are concatenated (spatial first) and projected (``proj``);
- position bias: an MLP (``pos``: linear 2 → C/16, then three LayerNorm–ReLU–linear steps, the last to h)
  of every query-minus-key offset (dy, dx) in the window; a query's bias for a key cell is the mean over
  the cell's pixels, computed here as a box average of the offset table;
- ConvFFN: linear C → ``mlp_ratio``·C, GELU, plus a depthwise 5×5 conv + GELU of itself, linear back to C;
- upsampler ``pixelshuffledirect`` (the lightweight one, used by every released HiT-SRF): a 3×3 conv to
  3r² channels and a pixel shuffle; ``pixelshuffle``, ``nearest+conv`` and none are SwinIR's.

:meth:`HiT_SRF.features` is the body alone (F0 plus the deep features, at LR size, C channels) on an input as
given: what the upsampler takes, and what an LTE head reads (the official HiT-SRF+LTE encoder neither subtracts
the mean nor scales). Module names and shapes are the official implementation's, so its checkpoints load with
``strict=True``; the options are its constructor's. What HiT-SRF shares with SRFormer (the ConvFFN, the residual
groups, the token norm, the upsamplers, the initialisation) comes from :mod:`esc.archs.srformer_arch`. Only torch is
needed here.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esc.archs.layers import reflect_pad
from esc.archs.recognition import group_depths, require, whole_ratio
from esc.archs.srformer_arch import (DIV2K_RGB_MEAN, RESIDUAL_CONVS, UPSAMPLERS, BaselineNetwork, ConvFFN, PSAGroup,
                                     SRFormer, TokenNorm, drop_path, residual_conv, subpixel_upsampler)
from esc.errors import ESCError
from esc.io.state_dict_checks import check_state_dict_fits, tensor_shape

NAME = 'HiT_SRF'
WHERE = f'network_g ({NAME})'
UPSAMPLE_FEATURES = 64  # the width of the pixelshuffle and nearest+conv upsamplers


def _pair(value: Union[int, Sequence[int]], option: str) -> Tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise ESCError(f'{WHERE}: {option} must be a positive integer or a pair of them, got {value!r}')
    return pair  # type: ignore[return-value]


def _channels_first(x: Tensor) -> Tensor:
    return x.permute(0, 3, 1, 2)


def _channels_last(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1)


class DualFeatureExtraction(nn.Module):
    """HiT-SR's DFE (NCHW): a narrow conv branch (C/5 wide) gated by a 1×1 conv of the same input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        narrow = dim // 5
        self.conv = nn.Sequential(nn.Conv2d(dim, narrow, 1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(narrow, narrow, 3, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(narrow, dim, 1))
        self.linear = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) * self.linear(x)


class PositionMLP(nn.Module):
    """The dynamic position bias: (offset_y, offset_x) → one value per head, through three LayerNorm–ReLU–linear
    steps after a linear embedding (no residuals, as HiT-SRF builds it)."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.pos_proj = nn.Linear(2, width)
        self.pos1 = nn.Sequential(nn.LayerNorm(width), nn.ReLU(), nn.Linear(width, width))
        self.pos2 = nn.Sequential(nn.LayerNorm(width), nn.ReLU(), nn.Linear(width, width))
        self.pos3 = nn.Sequential(nn.LayerNorm(width), nn.ReLU(), nn.Linear(width, num_heads))

    def forward(self, offsets: Tensor) -> Tensor:
        return self.pos3(self.pos2(self.pos1(self.pos_proj(offsets))))


class SpatialChannelCorrelation(nn.Module):
    """SCC on whole windows of a channels-last map (B, H, W, C) whose H and W are multiples of the window."""

    def __init__(self, dim: int, num_heads: int, window_size: Tuple[int, int], base_win_size: Tuple[int, int],
                 value_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads, self.window_size = num_heads, window_size
        self.cells = (min(window_size[0], base_win_size[0]), min(window_size[1], base_win_size[1]))
        self.cell_size = (window_size[0] // self.cells[0], window_size[1] // self.cells[1])
        self.scale = dim // (2 * num_heads)  # the head width itself, not its square root
        self.qv = DualFeatureExtraction(dim)
        self.proj = nn.Linear(dim, dim)
        self.value_drop = nn.Dropout(value_drop)
        self.proj_drop = nn.Dropout(proj_drop)
        self.spatial_linear = nn.Linear(self.cell_size[0] * self.cell_size[1], 1)
        self.pos = PositionMLP(dim // 16, num_heads)
        self._index_bias_table()

    def _index_bias_table(self) -> None:
        """Offsets fed to the position MLP, and where each (query, key cell) reads the box-averaged table.

        The table holds every offset query − key, (2wh − 1)(2ww − 1) of them, dy major; a box average of
        the cell's size turns it into per-cell means, the query at (y, x) reading cell (a, b) at
        (y − a·ch + wh − ch, x − b·cw + ww − cw)."""
        (wh, ww), (ch, cw), (nh, nw) = self.window_size, self.cell_size, self.cells
        dy, dx = torch.meshgrid(torch.arange(1 - wh, wh), torch.arange(1 - ww, ww), indexing='ij')
        self.register_buffer('offsets', torch.stack([dy, dx], -1).reshape(-1, 2).float(), persistent=False)
        y, x = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing='ij')
        a, b = torch.meshgrid(torch.arange(nh), torch.arange(nw), indexing='ij')
        rows = y.reshape(-1, 1) - a.reshape(1, -1) * ch + wh - ch
        cols = x.reshape(-1, 1) - b.reshape(1, -1) * cw + ww - cw
        self.register_buffer('bias_index', rows * (2 * ww - cw) + cols, persistent=False)

    def position_bias(self) -> Tensor:
        """(heads, window pixels, key cells): the mean bias over each key cell's pixels."""
        (wh, ww), (ch, cw) = self.window_size, self.cell_size
        offsets = self.offsets.to(self.pos.pos_proj.weight.dtype)
        table = self.pos(offsets).t().reshape(self.num_heads, 2 * wh - 1, 2 * ww - 1)
        boxed = F.avg_pool2d(table, (ch, cw), stride=1) if ch * cw > 1 else table
        return boxed.flatten(1)[:, self.bias_index]

    def _cell_values(self, v: Tensor) -> Tensor:
        """(windows, heads, L, d) → (windows, heads, cells, d): each cell's pixels mixed by ``spatial_linear``."""
        (nh, nw), (ch, cw) = self.cells, self.cell_size
        n, heads, _, d = v.shape
        cells = v.reshape(n, heads, nh, ch, nw, cw, d).permute(0, 1, 2, 4, 6, 3, 5)
        return self.spatial_linear(cells.reshape(n, heads, nh * nw, d, ch * cw)).squeeze(-1)

    def _spatial(self, q: Tensor, v: Tensor) -> Tensor:
        cells = self._cell_values(v)
        scores = q @ cells.transpose(-2, -1) / self.scale + self.position_bias()
        n, _, length, _ = q.shape
        return (scores @ self.value_drop(cells)).transpose(1, 2).reshape(n, length, -1)

    def _channel(self, q: Tensor, v: Tensor) -> Tensor:
        n, _, length, _ = q.shape
        q, v = (t.transpose(1, 2).reshape(n, length, -1) for t in (q, v))  # all heads as one
        scores = q.transpose(-2, -1) @ v / length
        return (scores @ self.value_drop(v).transpose(-2, -1)).transpose(-2, -1)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        wh, ww = self.window_size
        qv = _channels_last(self.qv(_channels_first(x)))
        windows = qv.reshape(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, c)
        n, length = windows.shape[:2]
        q, v = windows.reshape(n, length, 2, self.num_heads, c // (2 * self.num_heads)).permute(2, 0, 3, 1, 4)
        mixed = torch.cat([self._spatial(q, v), self._channel(q, v)], -1)
        mixed = mixed.reshape(b, h // wh, w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        return self.proj_drop(self.proj(mixed))


class HierarchicalTransformerBlock(nn.Module):
    """SCC in one window size, then the ConvFFN, each added after its own LayerNorm (channels last)."""

    def __init__(self, dim: int, num_heads: int, window_size: Tuple[int, int], base_win_size: Tuple[int, int],
                 mlp_ratio: float, drop: float, value_drop: float, drop_path_rate: float) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim)
        self.correlation = SpatialChannelCorrelation(dim, num_heads, window_size, base_win_size, value_drop, drop)
        self.drop_path_rate = drop_path_rate
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[1:3]
        (wh, ww) = self.window_size
        padded = _channels_last(reflect_pad(_channels_first(x), 0, (-h) % wh, 0, (-w) % ww))
        x = x + drop_path(self.norm1(self.correlation(padded)[:, :h, :w]), self.drop_path_rate, self.training)
        return x + drop_path(self.norm2(self.mlp(x)), self.drop_path_rate, self.training)


class HiT_SRF(BaselineNetwork):
    """HiT-SRF with the official constructor's options (``HiT_SRF`` in option files).

    ``embed_dim`` C, ``depths`` and ``num_heads`` per group, windows ``base_win_size`` × ``hier_win_ratios``
    (one ratio per block of a group), ``mlp_ratio`` the ConvFFN's width, ``upscale`` r, ``upsampler`` one of
    :data:`UPSAMPLERS` (or None), ``resi_connection`` '1conv'/'3conv', ``img_range`` the scale the network works
    at. ``drop_rate``, ``value_drop_rate`` and ``drop_path_rate`` regularise training; ``ape`` adds a learnt
    position embedding for inputs of exactly ``img_size``/``patch_size`` pixels (the only use of those two: the
    network is fully convolutional otherwise); ``use_checkpoint`` recomputes blocks in backward.
    ``expansion_factor``: the official option files carry it, but the official network never reads it (the
    ConvFFN's width is ``mlp_ratio``); it is accepted where it equals ``mlp_ratio`` and refused otherwise, since
    it would change nothing.
    """

    fixed_scale = True

    def __init__(self, img_size: Union[int, Sequence[int]] = 64, patch_size: Union[int, Sequence[int]] = 1,
                 in_chans: int = 3, embed_dim: int = 60, depths: Sequence[int] = (6, 6, 6, 6),
                 num_heads: Sequence[int] = (6, 6, 6, 6), base_win_size: Sequence[int] = (8, 8),
                 mlp_ratio: float = 2.0, drop_rate: float = 0.0, value_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, ape: bool = False, patch_norm: bool = True, use_checkpoint: bool = False,
                 upscale: int = 4, img_range: float = 1.0, upsampler: Optional[str] = 'pixelshuffledirect',
                 resi_connection: str = '1conv', hier_win_ratios: Sequence[float] = (0.5, 1, 2, 4, 6, 8),
                 expansion_factor: Optional[float] = None) -> None:
        super().__init__()
        depths, num_heads, ratios = list(depths), list(num_heads), list(hier_win_ratios)
        base = _pair(base_win_size, 'base_win_size')
        windows = [(int(base[0] * r), int(base[1] * r)) for r in ratios]
        self._check_options(in_chans, embed_dim, depths, num_heads, base, windows, mlp_ratio, upscale, upsampler,
                            resi_connection, expansion_factor)
        self.in_chans, self.embed_dim, self.upscale, self.img_range = in_chans, embed_dim, upscale, img_range
        self.upsampler = upsampler or ''
        self.windows = windows
        mean = DIV2K_RGB_MEAN if in_chans == 3 else (0.0,)
        self.register_buffer('mean', torch.tensor(mean).view(1, -1, 1, 1), persistent=False)

        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, padding=1)
        self.patch_embed = TokenNorm(embed_dim, patch_norm)
        image, patch = _pair(img_size, 'img_size'), _pair(patch_size, 'patch_size')
        self.patches_resolution = (image[0] // patch[0], image[1] // patch[1])
        self.ape = ape
        if ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, math.prod(self.patches_resolution), embed_dim))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()  # stochastic depth
        self.layers = nn.ModuleList()
        for depth, heads in zip(depths, num_heads):
            blocks = [HierarchicalTransformerBlock(embed_dim, heads, windows[j], base, mlp_ratio, drop_rate,
                                                   value_drop_rate, rates.pop(0)) for j in range(depth)]
            # SRFormer's residual group (blocks, conv, skip), here around HiT-SRF's blocks
            self.layers.append(PSAGroup(blocks, use_checkpoint, embed_dim, resi_connection))
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = residual_conv(embed_dim, resi_connection)
        self._build_upsampler()
        self.apply(SRFormer._init_weights)  # the SwinIR family's: linear layers N(0, 0.02²) truncated, zero biases

    @staticmethod
    def _check_options(in_chans: Any, embed_dim: Any, depths: Sequence[Any], num_heads: Sequence[Any],
                       base: Tuple[int, int], windows: Sequence[Tuple[int, int]], mlp_ratio: Any, upscale: Any,
                       upsampler: Any, resi_connection: Any, expansion_factor: Any) -> None:
        def positive_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value > 0

        for option, value in (('in_chans', in_chans), ('embed_dim', embed_dim), ('upscale', upscale)):
            if not positive_int(value):
                raise ESCError(f'{WHERE}: {option} must be a positive integer, got {value!r}')
        if not depths or not all(positive_int(d) for d in depths):
            raise ESCError(f'{WHERE}: depths must be a list of positive integers, got {depths!r}')
        if len(num_heads) != len(depths) or not all(positive_int(h) for h in num_heads):
            raise ESCError(f'{WHERE}: num_heads must give a positive integer for each of the {len(depths)} groups '
                           f'of depths, got {num_heads!r}')
        for heads in num_heads:
            if embed_dim % (2 * heads):
                raise ESCError(f'{WHERE}: embed_dim ({embed_dim}) must be divisible by 2 × num_heads ({heads}): q and '
                               'v take half of it each')
        if embed_dim < 16:
            raise ESCError(f'{WHERE}: embed_dim must be at least 16 (the position bias is embed_dim/16 wide), '
                           f'got {embed_dim}')
        if len(windows) < max(depths):
            raise ESCError(f'{WHERE}: hier_win_ratios gives {len(windows)} windows, a group of depth {max(depths)} '
                           'needs one per block')
        for window in windows:
            if min(window) < 1:
                raise ESCError(f'{WHERE}: hier_win_ratios make a window of {window[0]}×{window[1]} from '
                               f'base_win_size {base[0]}×{base[1]}')
            for side, size, cell in zip(('height', 'width'), window, base):
                if size > cell and size % cell:
                    raise ESCError(f'{WHERE}: a window {side} of {size} is neither at most nor a multiple of the '
                                   f'base_win_size {cell}')
        if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or int(embed_dim * mlp_ratio) < 1:
            raise ESCError(f'{WHERE}: mlp_ratio must be a positive number, got {mlp_ratio!r}')
        if expansion_factor is not None and expansion_factor != mlp_ratio:
            raise ESCError(f'{WHERE}: expansion_factor ({expansion_factor}) differs from mlp_ratio ({mlp_ratio}); '
                           'HiT-SRF never reads expansion_factor: set mlp_ratio for the ConvFFN width')
        if (upsampler or '') not in UPSAMPLERS:
            raise ESCError(f"{WHERE}: upsampler must be one of {', '.join(u or 'none (~)' for u in UPSAMPLERS)}, "
                           f'got {upsampler!r}')
        if upsampler == 'pixelshuffle' and upscale & (upscale - 1) and upscale != 3:
            raise ESCError(f"{WHERE}: upsampler 'pixelshuffle' takes upscale 2^n or 3, got {upscale}")
        if upsampler == 'nearest+conv' and upscale != 4:
            raise ESCError(f"{WHERE}: upsampler 'nearest+conv' takes upscale 4 only, got {upscale}")
        if resi_connection not in RESIDUAL_CONVS:
            raise ESCError(f"{WHERE}: resi_connection must be one of {', '.join(RESIDUAL_CONVS)}, "
                           f'got {resi_connection!r}')

    @classmethod
    def recognise_body(cls, state_dict: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        """HiT-SRF's body where ``state_dict`` has its spatial-channel correlation after ``conv_first`` (None
        otherwise): the groups' depths and heads (the position MLP's outputs), the MLP ratio and, with ``ape``, the
        input size. The windows leave only each block's cell size (``spatial_linear``) in the weights, which cannot
        tell a ratio of 0.5 from 1: the official hierarchy (the constructor's ``base_win_size`` and
        ``hier_win_ratios``) is read back where every block's cell size is its, and any other is a one-line
        ESCError."""
        block = 'layers.0.residual_group.blocks.0.'
        if 'conv_first.weight' not in state_dict or block + 'correlation.spatial_linear.weight' not in state_dict:
            return None
        name = 'a HiT_SRF'
        options = cls.recognise_common(state_dict, name)
        depths = group_depths(state_dict, 'layers.{}.', 'residual_group.blocks.{}.')
        defaults = inspect.signature(cls.__init__).parameters
        base = list(defaults['base_win_size'].default)
        ratios = list(defaults['hier_win_ratios'].default)
        cells = [math.prod(size // min(size, side) for size, side in zip((int(b * r) for b in base), base))
                 for r in ratios]  # each block's pixels per cell, as SpatialChannelCorrelation cuts its window
        heads = []
        for group, depth in enumerate(depths):
            prefix = f'layers.{group}.residual_group.blocks.'
            heads.append(tensor_shape(state_dict, prefix + '0.correlation.pos.pos3.2.weight', 2, network=name)[0])
            for index in range(depth):
                key = f'{prefix}{index}.correlation.spatial_linear.weight'
                pixels = tensor_shape(state_dict, key, 2, network=name)[1]
                require(index < len(cells) and pixels == cells[index],
                        f'{key} mixes {pixels} pixels per cell, where the official window hierarchy (base '
                        f'{base[0]}×{base[1]}, ratios {ratios}) has {cells[index] if index < len(cells) else "none"}; '
                        'other windows cannot be read from the weights')
        hidden = tensor_shape(state_dict, block + 'mlp.fc1.weight', 2, network=name)[0]
        options.update(depths=depths, num_heads=heads, base_win_size=base, hier_win_ratios=ratios,
                       mlp_ratio=whole_ratio(hidden, options['embed_dim']), ape='absolute_pos_embed' in state_dict)
        if options['ape']:
            options['img_size'] = math.isqrt(tensor_shape(state_dict, 'absolute_pos_embed', 3, network=name)[1])
        return options

    def _build_upsampler(self) -> None:
        dim, r, out = self.embed_dim, self.upscale, self.in_chans
        if self.upsampler == 'pixelshuffledirect':
            self.upsample = nn.Sequential(nn.Conv2d(dim, r * r * out, 3, padding=1), nn.PixelShuffle(r))
            return
        if self.upsampler == '':
            self.conv_last = nn.Conv2d(dim, out, 3, padding=1)
            return
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(dim, UPSAMPLE_FEATURES, 3, padding=1), nn.LeakyReLU())
        if self.upsampler == 'pixelshuffle':
            self.upsample = subpixel_upsampler(r, UPSAMPLE_FEATURES)
        else:  # nearest+conv, ×4
            self.conv_up1 = nn.Conv2d(UPSAMPLE_FEATURES, UPSAMPLE_FEATURES, 3, padding=1)
            self.conv_up2 = nn.Conv2d(UPSAMPLE_FEATURES, UPSAMPLE_FEATURES, 3, padding=1)
            self.conv_hr = nn.Conv2d(UPSAMPLE_FEATURES, UPSAMPLE_FEATURES, 3, padding=1)
            self.lrelu = nn.LeakyReLU(0.2)
        self.conv_last = nn.Conv2d(UPSAMPLE_FEATURES, out, 3, padding=1)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ESCError(f'x: expected an N×{self.in_chans}×H×W image batch, got shape {tuple(x.shape)}')
        if self.ape and tuple(x.shape[-2:]) != self.patches_resolution:
            raise ESCError(f'x: a HiT_SRF with ape takes {self.patches_resolution[0]}×{self.patches_resolution[1]} '
                           f'inputs only (its img_size/patch_size), got {x.shape[-2]}×{x.shape[-1]}')

    def deep_features(self, f0: Tensor) -> Tensor:
        """The groups of blocks between the two LayerNorms, on F0 (NCHW in and out)."""
        x = self.patch_embed(f0)
        if self.ape:
            x = x + self.absolute_pos_embed.view(1, *self.patches_resolution, self.embed_dim)
        x = self.pos_drop(x)
        for layer in self.layers:
            x = layer(x)
        return _channels_first(self.norm(x))

    def features(self, x: Tensor) -> Tensor:
        """F0 + conv(deep features of F0), F0 = conv3×3(x): the body's output, (N, C, H, W) at the input's size,
        on ``x`` as given (no mean subtracted, no ``img_range``; :meth:`forward` does those)."""
        self._check_input(x)
        return self._body(x)

    def _body(self, x: Tensor) -> Tensor:
        f0 = self.conv_first(x)
        return self.conv_after_body(self.deep_features(f0)) + f0

    def forward(self, x: Tensor) -> Tensor:
        """The SR image of an N×C×H×W batch in [0, 1]: N×C×rH×rW (without an upsampler: N×C×H×W)."""
        self._check_input(x)
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        feat = self._body(x)
        if self.upsampler == 'pixelshuffledirect':
            out = self.upsample(feat)
        elif self.upsampler == 'pixelshuffle':
            out = self.conv_last(self.upsample(self.conv_before_upsample(feat)))
        elif self.upsampler == 'nearest+conv':
            out = self.conv_before_upsample(feat)
            out = self.lrelu(self.conv_up1(F.interpolate(out, scale_factor=2, mode='nearest')))
            out = self.lrelu(self.conv_up2(F.interpolate(out, scale_factor=2, mode='nearest')))
            out = self.conv_last(self.lrelu(self.conv_hr(out)))
        else:
            out = x + self.conv_last(feat)
        return out / self.img_range + mean

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load weights (the official layout); with ``strict``, a checkpoint of another network, configuration or
        scale is refused in one line naming the first key that does not fit."""
        if strict:
            check_state_dict_fits(NAME, self.state_dict(), state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
