"""SRFormer (Zhou et al., ICCV 2023): the ESC paper's "SRFormer-lt" baseline of Tables 2 and 4, in plain torch.

SRFormer is SwinIR with its window self-attention replaced by permuted self-attention (PSA): every window of
ws×ws tokens attends to (ws/2)×(ws/2) keys and values, each made from a 2×2 patch of tokens whose channels were
first projected to a quarter of the width and then laid side by side (the "permutation" of spatial into channel
positions). Queries keep full resolution, so the attention map of a window is ws² × ws²/4, and a position bias is
indexed by where the query's 2×2 patch sits relative to the key's. Feed-forward layers carry a 5×5 depthwise
convolution (ConvFFN). The network: conv3×3 → groups of PSA blocks (every second one on windows shifted by ws/2,
masked as in Swin), each group closed by a conv3×3 and a skip → LayerNorm → conv3×3 + skip → upsampler.

SRFormer-light, the configuration the ESC paper compares with (``options/test/SRFormerLight``): 4 groups of 6
blocks, 60 channels, 6 heads, window 16, MLP ratio 2, ``upsampler: pixelshuffledirect`` (one conv3×3 to 3·r²
channels and a pixel shuffle); 853K/861K/873K parameters at ×2/×3/×4.

The constructor takes the official class's option names and the parameters and buffers keep its state-dict keys
(the relative-position index and, at ``img_size``, the shifted blocks' attention masks included), so the
official option files' ``network_g`` sections build it and the released checkpoints load with ``strict=True``.
``norm_layer`` (a class, which no option file can name) is not an option here: the norm is LayerNorm.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from esc.archs.layers import pad_to_multiple
from esc.archs.recognition import count_indices, group_depths, require, whole_ratio
from esc.errors import ESCError
from esc.io.state_dict_checks import check_state_dict_fits, tensor_shape

UPSAMPLERS = ('pixelshuffle', 'pixelshuffledirect', 'nearest+conv', '')
RESIDUAL_CONVS = ('1conv', '3conv')
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
"""The mean SRFormer (as SwinIR) subtracts from RGB inputs before the first convolution."""
MASKED = -100.0
"""The score added where a query and a key come from different regions of a shifted window (Swin's value)."""


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth: in training, zero whole samples of a residual branch with probability ``rate`` and scale
    the rest by 1 / (1 − rate); the identity in evaluation."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


def to_windows(x: Tensor, window: int) -> Tensor:
    """(B, H, W, C) → (B·nW, window, window, C), windows in row-major order; H and W are multiples of ``window``."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c)


def from_windows(windows: Tensor, window: int, h: int, w: int) -> Tensor:
    """The inverse of :func:`to_windows`: (B·nW, window, window, C) → (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def shift_regions(h: int, w: int, window: int, shift: int) -> Tensor:
    """(H, W) labels of the nine regions a cyclic shift by ``shift`` brings together: rows (and columns) before
    ``H − window``, from there to ``H − shift``, and the last ``shift``, numbered 3·row region + column region."""
    def bands(size: int) -> Tensor:
        index = torch.arange(size)
        return (index >= size - window).long() + (index >= size - shift).long()

    return bands(h)[:, None] * 3 + bands(w)[None, :]


def permuted_attention_mask(h: int, w: int, window: int, shift: int) -> Tensor:
    """The additive mask of the shifted permuted windows of an (H, W) feature map: (nW, ws², ws²/4), 0 where the
    query and the key come from one region, :data:`MASKED` elsewhere.

    A key stands for a 2×2 patch, so its region is read on the half-resolution grid, whose bands end ws/2 and
    ⌈shift/2⌉ before its edge (for an odd shift, as the official code does, not exactly half of the full grid's).
    """
    half = window // 2
    queries = to_windows(shift_regions(h, w, window, shift)[None, :, :, None], window).reshape(-1, window * window)
    key_regions = shift_regions(h // 2, w // 2, half, -(-shift // 2))
    keys = to_windows(key_regions[None, :, :, None], half).reshape(-1, half * half)
    differ = queries[:, :, None] != keys[:, None, :]
    return torch.zeros(differ.shape).masked_fill(differ, MASKED)


def aligned_position_index(window: int) -> Tensor:
    """(ws², ws²/4) indices into the (ws − 1)² position-bias table: query token (r, c) of a window against key
    (i, j) of its (ws/2)×(ws/2) grid of 2×2 patches, by the offset of the query's patch (r // 2, c // 2) from the
    key."""
    half = window // 2
    query_rows = torch.arange(window).repeat_interleave(window) // 2
    query_cols = torch.arange(window).repeat(window) // 2
    key_rows = torch.arange(half).repeat_interleave(half)
    key_cols = torch.arange(half).repeat(half)
    rows = query_rows[:, None] - key_rows[None, :] + half - 1
    cols = query_cols[:, None] - key_cols[None, :] + half - 1
    return rows * (2 * half - 1) + cols


class PermutedSelfAttention(nn.Module):
    """PSA on (B·nW, ws, ws, C) windows: full-resolution queries against the window's 2×2 patches as keys/values.

    ``kv`` projects each token to C/2 channels, C/4 for the key and C/4 for the value; the four tokens of a patch
    put their quarters side by side (row-major within the patch) to make one C-channel key and one value.
    """

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        half = window_size // 2
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * half - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer('aligned_relative_position_index', aligned_position_index(window_size))
        self.kv = nn.Linear(dim, dim // 2, bias=qkv_bias)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """``x``: (B·nW, ws, ws, C); ``mask``: (nW, ws², ws²/4) or None. Returns (B·nW, ws², C)."""
        windows, ws, _, c = x.shape
        half, heads = ws // 2, self.num_heads
        kv = self.kv(x).view(windows, half, 2, half, 2, 2, c // 4)  # (row patch, in-patch row, col patch, ...)
        kv = kv.permute(5, 0, 1, 3, 2, 4, 6).reshape(2, windows, half * half, heads, c // heads).transpose(2, 3)
        keys, values = kv[0], kv[1]
        queries = self.q(x).view(windows, ws * ws, heads, c // heads).transpose(1, 2) * self.scale
        scores = queries @ keys.transpose(-2, -1)  # (B·nW, heads, ws², ws²/4)
        bias = self.relative_position_bias_table[self.aligned_relative_position_index.view(-1)]
        scores = scores + bias.view(ws * ws, half * half, heads).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            n_windows = mask.shape[0]
            scores = scores.view(windows // n_windows, n_windows, heads, ws * ws, half * half) + mask[None, :, None]
            scores = scores.view(windows, heads, ws * ws, half * half)
        out = self.attn_drop(scores.softmax(dim=-1)) @ values
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(windows, ws * ws, c)))


class DepthwiseConv(nn.Module):
    """The ConvFFN's spatial mixing: a 5×5 depthwise convolution and GELU on (B, H, W, C) tokens."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.depthwise_conv = nn.Sequential(nn.Conv2d(hidden, hidden, 5, padding=2, groups=hidden), nn.GELU())

    def forward(self, x: Tensor) -> Tensor:
        return self.depthwise_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class ConvFFN(nn.Module):
    """Linear → GELU → (+ depthwise 5×5 conv, GELU) → linear, on (B, H, W, C) tokens."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.dwconv = DepthwiseConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.fc1(x))
        return self.drop(self.fc2(self.drop(x + self.dwconv(x))))


class PSABlock(nn.Module):
    """x + PSA(LN(x)) on (shifted) windows, then x + ConvFFN(LN(x)), on (B, H, W, C) tokens.

    A shifted block keeps the mask of ``input_resolution`` (the training patch size) as the buffer ``attn_mask``,
    as the official checkpoints do; any other size gets its mask computed on the way.
    """

    def __init__(self, dim: int, input_resolution: Tuple[int, int], num_heads: int, window_size: int, shift_size: int,
                 mlp_ratio: float, qkv_bias: bool, qk_scale: Optional[float], drop: float, attn_drop: float,
                 drop_path_rate: float) -> None:
        super().__init__()
        self.window_size, self.shift_size, self.input_resolution = window_size, shift_size, input_resolution
        self.drop_path_rate = drop_path_rate
        self.norm1 = nn.LayerNorm(dim)
        self.attn = PermutedSelfAttention(dim, window_size, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio), drop)
        mask = permuted_attention_mask(*input_resolution, window_size, shift_size) if shift_size else None
        self.register_buffer('attn_mask', mask)

    def mask(self, h: int, w: int) -> Optional[Tensor]:
        if not self.shift_size:
            return None
        if (h, w) == tuple(self.input_resolution):
            return self.attn_mask
        return permuted_attention_mask(h, w, self.window_size, self.shift_size).to(self.attn_mask)

    def forward(self, x: Tensor) -> Tensor:
        _, h, w, c = x.shape
        shifted = self.norm1(x)
        if self.shift_size:
            shifted = torch.roll(shifted, (-self.shift_size, -self.shift_size), dims=(1, 2))
        attended = self.attn(to_windows(shifted, self.window_size), self.mask(h, w))
        attended = from_windows(attended.view(-1, self.window_size, self.window_size, c), self.window_size, h, w)
        if self.shift_size:
            attended = torch.roll(attended, (self.shift_size, self.shift_size), dims=(1, 2))
        x = x + drop_path(attended, self.drop_path_rate, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path_rate, self.training)


class BlockSequence(nn.Module):
    """A group's PSA blocks, unshifted and shifted in turn, optionally with gradient checkpointing."""

    def __init__(self, blocks: Sequence[PSABlock], use_checkpoint: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.use_checkpoint = use_checkpoint

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if self.use_checkpoint and self.training else block(x)
        return x


def residual_conv(dim: int, kind: str) -> nn.Module:
    """The convolution closing a group and the body: '1conv' a conv3×3; '3conv' a bottleneck of a quarter width
    (conv3×3, LeakyReLU, conv1×1, LeakyReLU, conv3×3)."""
    if kind == '1conv':
        return nn.Conv2d(dim, dim, 3, padding=1)
    narrow = dim // 4
    return nn.Sequential(nn.Conv2d(dim, narrow, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
                         nn.Conv2d(narrow, narrow, 1), nn.LeakyReLU(0.2, inplace=True),
                         nn.Conv2d(narrow, dim, 3, padding=1))


class PSAGroup(nn.Module):
    """Residual group: PSA blocks, then a residual conv on the image layout, plus the group's input."""

    def __init__(self, blocks: Sequence[PSABlock], use_checkpoint: bool, dim: int, resi_connection: str) -> None:
        super().__init__()
        self.residual_group = BlockSequence(blocks, use_checkpoint)
        self.conv = residual_conv(dim, resi_connection)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: (B, H, W, C) tokens."""
        mixed = self.residual_group(x).permute(0, 3, 1, 2)
        return self.conv(mixed).permute(0, 2, 3, 1) + x


class TokenNorm(nn.Module):
    """The body's entry: pixels as tokens, LayerNorm-ed where ``patch_norm`` asks (official key ``patch_embed``)."""

    def __init__(self, dim: int, normalise: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim) if normalise else None

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) → (B, H, W, C)."""
        x = x.permute(0, 2, 3, 1)
        return x if self.norm is None else self.norm(x)


def subpixel_upsampler(scale: int, dim: int) -> nn.Sequential:
    """Classical SR's upsampler: conv3×3 to 4·dim and a ×2 pixel shuffle per octave, or to 9·dim and ×3."""
    layers = []
    if scale & (scale - 1) == 0:
        for _ in range(int(math.log2(scale))):
            layers += [nn.Conv2d(dim, 4 * dim, 3, padding=1), nn.PixelShuffle(2)]
    else:
        layers += [nn.Conv2d(dim, 9 * dim, 3, padding=1), nn.PixelShuffle(3)]
    return nn.Sequential(*layers)


class BaselineNetwork(nn.Module):
    """What the paper's baselines (SRFormer-light, ATD-light, HiT-SRF) share beyond their layers: the official option
    ``upscale`` is their scale, read by the framework under ESC's name ``upscaling_factor`` (the test loop, the option
    checks and the benchmark ask any network for it)."""

    upscale: int
    scale_option = 'upscale'  # the constructor option that holds the scale
    per_group_options = ('depths', 'num_heads')  # options given one per residual group (checkpoint checks)

    @property
    def upscaling_factor(self) -> int:
        return self.upscale

    @classmethod
    def recognise(cls, state_dict: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        """The constructor options of the network ``state_dict`` was saved from, where it is this network's (None
        otherwise): its feature body's (:meth:`recognise_body`) and its upsampler's (:meth:`recognise_upsampler`).
        This network's body without an upsampler is a one-line ESCError: only an LTE encoder drops it."""
        body = cls.recognise_body(state_dict)
        if body is None:
            return None
        reconstruction = cls.recognise_upsampler(state_dict, body['in_chans'], cls.__name__)
        require(bool(reconstruction), f'{cls.__name__} weights without an upsampler (no upsample.0 or conv_last); '
                                      'only an LTE encoder leaves it out')
        return {**body, **reconstruction}

    @classmethod
    def recognise_body(cls, state_dict: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        """The options of this network's feature body (everything but ``upscale`` and ``upsampler``) where
        ``state_dict`` bears its marker keys, else None; a damaged one is a one-line ESCError."""
        raise NotImplementedError

    @staticmethod
    def recognise_upsampler(state_dict: Mapping[str, Any], channels: int, network: str) -> Dict[str, Any]:
        """``upsampler`` and ``upscale`` read off the SwinIR family's reconstruction modules (the baselines share
        them, :meth:`SRFormer._build_upsampler`): ``conv_up1`` is 'nearest+conv' (×4); ``conv_before_upsample`` with
        ``upsample.N`` convs is 'pixelshuffle' (each conv ×2 at 4·64 outputs or ×3 at 9·64); ``upsample.0`` alone
        'pixelshuffledirect' (3·r² outputs); ``conv_last`` alone none ('', ×1). Empty where none is there (an LTE
        encoder's body)."""
        if 'conv_up1.weight' in state_dict:
            return dict(upscale=4, upsampler='nearest+conv')
        if 'conv_before_upsample.0.weight' in state_dict:
            features = tensor_shape(state_dict, 'conv_before_upsample.0.weight', 4, network=f'a {network}')[0]
            scale = 1
            for index in range(count_indices(state_dict, r'upsample\.(\d+)\.weight')):
                outputs = tensor_shape(state_dict, f'upsample.{2 * index}.weight', 4, network=f'a {network}')[0]
                factor = math.isqrt(outputs // features)
                require(factor in (2, 3) and factor * factor * features == outputs,
                        f'upsample.{2 * index}.weight has {outputs} outputs, not 4 or 9 × {features}')
                scale *= factor
            return dict(upscale=scale, upsampler='pixelshuffle')
        if 'upsample.0.weight' in state_dict:
            outputs = tensor_shape(state_dict, 'upsample.0.weight', 4, network=f'a {network}')[0]
            scale = math.isqrt(outputs // channels)
            require(scale > 0 and scale * scale * channels == outputs,
                    f'upsample.0.weight has {outputs} outputs, not {channels}·r²')
            return dict(upscale=scale, upsampler='pixelshuffledirect')
        if 'conv_last.weight' in state_dict:
            return dict(upscale=1, upsampler='')
        return {}

    @staticmethod
    def recognise_common(state_dict: Mapping[str, Any], network: str) -> Dict[str, Any]:
        """What the baselines' bodies share, read off their keys: input channels and width (``conv_first``),
        ``patch_norm`` and ``resi_connection``."""
        channels = tensor_shape(state_dict, 'conv_first.weight', 4, network=network)
        return dict(in_chans=channels[1], embed_dim=channels[0], patch_norm='patch_embed.norm.weight' in state_dict,
                    resi_connection='3conv' if 'conv_after_body.0.weight' in state_dict else '1conv')


class SRFormer(BaselineNetwork):
    """SRFormer with the official options (see the module's docstring); SRFormer-light is
    ``embed_dim=60, depths=[6]*4, num_heads=[6]*4, window_size=16, mlp_ratio=2, upsampler='pixelshuffledirect'``.

    ``img_size``: the training patch side (rounded up to whole windows; one integer, as every official file gives
    it); it sizes the shifted blocks' stored
    masks and ``absolute_pos_embed``, and no input size is tied to it (but with ``ape``, which needs it exactly).
    As in the official code, an ``img_size`` of one window or less turns every block's shift off.
    ``upsampler``: 'pixelshuffledirect' (lightweight SR), 'pixelshuffle' (classical SR, 64 features), 'nearest+conv'
    (real-world ×4) or '' (restoration at ×1: the output is the input plus a residual).
    ``use_checkpoint`` recomputes each block's activations in the backward pass (training memory).
    Inputs are reflect-padded to whole windows and the output cropped back.
    """

    def __init__(self, img_size: int = 64, patch_size: int = 1, in_chans: int = 3,
                 embed_dim: int = 96, depths: Sequence[int] = (6, 6, 6, 6), num_heads: Sequence[int] = (6, 6, 6, 6),
                 window_size: int = 7, mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1, ape: bool = False,
                 patch_norm: bool = True, use_checkpoint: bool = False, upscale: int = 2, img_range: float = 1.0,
                 upsampler: str = '', resi_connection: str = '1conv') -> None:
        super().__init__()
        resolution = self._check_options(img_size, patch_size, in_chans, embed_dim, depths, num_heads, window_size,
                                         mlp_ratio, upscale, upsampler, resi_connection)
        self.window_size, self.upscale, self.img_range, self.upsampler = window_size, upscale, img_range, upsampler
        self.embed_dim, self.patches_resolution = embed_dim, resolution
        mean = DIV2K_RGB_MEAN if in_chans == 3 else (0.0,) * in_chans
        self.register_buffer('mean', torch.tensor(mean).view(1, in_chans, 1, 1), persistent=False)

        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, padding=1)
        self.patch_embed = TokenNorm(embed_dim, patch_norm)
        if ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, resolution[0] * resolution[1], embed_dim))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        else:
            self.absolute_pos_embed = None
        self.pos_drop = nn.Dropout(drop_rate)
        shifts = min(resolution) > window_size  # the official rule: no shifted windows when a window covers it all
        rates = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        self.layers = nn.ModuleList()
        for group, (depth, heads) in enumerate(zip(depths, num_heads)):
            first = sum(depths[:group])
            blocks = [PSABlock(embed_dim, resolution, heads, window_size,
                               window_size // 2 if shifts and i % 2 else 0, mlp_ratio, qkv_bias, qk_scale, drop_rate,
                               attn_drop_rate, rates[first + i]) for i in range(depth)]
            self.layers.append(PSAGroup(blocks, use_checkpoint, embed_dim, resi_connection))
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = residual_conv(embed_dim, resi_connection)
        self._build_upsampler(embed_dim, in_chans, upscale, upsampler)
        self.apply(self._init_weights)

    @staticmethod
    def _check_options(img_size, patch_size, in_chans, embed_dim, depths, num_heads, window_size, mlp_ratio, upscale,
                       upsampler, resi_connection) -> Tuple[int, int]:
        """One line naming the first option that cannot build an SRFormer; the token grid ``img_size`` rounds up to."""
        def positive(name: str, value: Any) -> None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ESCError(f'network_g (SRFormer): {name} must be a positive integer, got {value!r}')

        for name, value in (('patch_size', patch_size), ('in_chans', in_chans), ('embed_dim', embed_dim),
                            ('window_size', window_size), ('upscale', upscale)):
            positive(name, value)
        if patch_size != 1:
            raise ESCError(f'network_g (SRFormer): patch_size must be 1 (SRFormer embeds single pixels), '
                           f'got {patch_size}')
        positive('img_size', img_size)
        if window_size % 2:
            raise ESCError(f'network_g (SRFormer): window_size must be even (keys are 2×2 patches), got {window_size}')
        if embed_dim % 4:
            raise ESCError(f'network_g (SRFormer): embed_dim must be a multiple of 4 (a key is four quarter-width '
                           f'tokens), got {embed_dim}')
        if not isinstance(depths, (list, tuple)) or not depths:
            raise ESCError(f'network_g (SRFormer): depths must be a list of block counts, got {depths!r}')
        if not isinstance(num_heads, (list, tuple)) or len(num_heads) != len(depths):
            raise ESCError(f'network_g (SRFormer): num_heads must give one head count per group of depths '
                           f'({len(depths)}), got {num_heads!r}')
        for depth in depths:
            positive('depths', depth)
        for heads in num_heads:
            positive('num_heads', heads)
            if embed_dim % heads:
                raise ESCError(f'network_g (SRFormer): embed_dim ({embed_dim}) is not divisible by num_heads ({heads})')
        if not isinstance(mlp_ratio, (int, float)) or isinstance(mlp_ratio, bool) or int(embed_dim * mlp_ratio) < 1:
            raise ESCError(f'network_g (SRFormer): mlp_ratio must be a positive number, got {mlp_ratio!r}')
        if upsampler not in UPSAMPLERS:
            raise ESCError(f'network_g (SRFormer): upsampler must be one of {", ".join(map(repr, UPSAMPLERS))}, '
                           f'got {upsampler!r}')
        if resi_connection not in RESIDUAL_CONVS:
            raise ESCError(f'network_g (SRFormer): resi_connection must be one of {", ".join(RESIDUAL_CONVS)}, '
                           f'got {resi_connection!r}')
        if upsampler == 'pixelshuffle' and upscale & (upscale - 1) and upscale != 3:
            raise ESCError(f"network_g (SRFormer): upsampler 'pixelshuffle' scales by a power of 2 or by 3, "
                           f'not {upscale}')
        if upsampler == 'nearest+conv' and upscale != 4:
            raise ESCError(f"network_g (SRFormer): upsampler 'nearest+conv' scales by 4 only, not {upscale}")
        size = -(-img_size // window_size) * window_size
        return size, size

    @classmethod
    def recognise_body(cls, state_dict: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        """SRFormer's body where ``state_dict`` has its permuted attention (``attn.kv``) after ``conv_first``: the
        groups' depths and heads, the window (from the (ws − 1)² position-bias table), the MLP ratio, ``qkv_bias``
        and ``img_size`` (the token grid the shifted blocks' masks or ``absolute_pos_embed`` were sized for; one
        window where no block is shifted). Dropout rates and ``img_range`` leave no trace: the defaults."""
        block = 'layers.0.residual_group.blocks.0.'
        if 'conv_first.weight' not in state_dict or block + 'attn.kv.weight' not in state_dict:
            return None
        name = 'an SRFormer'
        options = cls.recognise_common(state_dict, name)
        dim = options['embed_dim']
        depths = group_depths(state_dict, 'layers.{}.', 'residual_group.blocks.{}.')
        heads, windows = [], []
        for group in range(len(depths)):
            table = tensor_shape(state_dict, f'layers.{group}.residual_group.blocks.0.attn.'
                                 'relative_position_bias_table', 2, network=name)
            heads.append(table[1])
            windows.append(2 * ((math.isqrt(table[0]) + 1) // 2))
        require(len(set(windows)) == 1, f'the groups of this SRFormer have windows {windows}; one network has one')
        window = windows[0]
        hidden = tensor_shape(state_dict, block + 'mlp.fc1.weight', 2, network=name)[0]
        options.update(depths=depths, num_heads=heads, window_size=window, mlp_ratio=whole_ratio(hidden, dim),
                       qkv_bias=block + 'attn.q.bias' in state_dict, ape='absolute_pos_embed' in state_dict,
                       img_size=window)
        masks = [key for key in state_dict if key.endswith('.attn_mask')]
        if options['ape']:
            positions = tensor_shape(state_dict, 'absolute_pos_embed', 3, network=name)[1]
            options['img_size'] = math.isqrt(positions)
        elif masks:
            options['img_size'] = window * math.isqrt(tensor_shape(state_dict, masks[0], 3, network=name)[0])
        return options

    def _build_upsampler(self, dim: int, channels: int, scale: int, upsampler: str) -> None:
        features = 64
        if upsampler == 'pixelshuffledirect':
            self.upsample = nn.Sequential(nn.Conv2d(dim, scale * scale * channels, 3, padding=1),
                                          nn.PixelShuffle(scale))
            return
        if upsampler in ('pixelshuffle', 'nearest+conv'):
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(dim, features, 3, padding=1),
                                                      nn.LeakyReLU(inplace=True))
        if upsampler == 'pixelshuffle':
            self.upsample = subpixel_upsampler(scale, features)
        elif upsampler == 'nearest+conv':
            self.conv_up1 = nn.Conv2d(features, features, 3, padding=1)
            self.conv_up2 = nn.Conv2d(features, features, 3, padding=1)
            self.conv_hr = nn.Conv2d(features, features, 3, padding=1)
            self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        self.conv_last = nn.Conv2d(features if upsampler else dim, channels, 3, padding=1)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def deep_features(self, x: Tensor) -> Tensor:
        """The body: PSA groups between the token norms, (B, C, H, W) → (B, C, H, W), H and W whole windows."""
        tokens = self.patch_embed(x)
        if self.absolute_pos_embed is not None:
            if tuple(x.shape[-2:]) != tuple(self.patches_resolution):
                raise ESCError(f'SRFormer: ape holds positions for {self.patches_resolution[0]}x'
                               f'{self.patches_resolution[1]} inputs (img_size); got {x.shape[-2]}x{x.shape[-1]} '
                               'after padding to whole windows')
            tokens = tokens + self.absolute_pos_embed.view(1, *self.patches_resolution, -1)
        tokens = self.pos_drop(tokens)
        for group in self.layers:
            tokens = group(tokens)
        return self.norm(tokens).permute(0, 3, 1, 2)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_chans, H, W) → (B, in_chans, H·upscale, W·upscale)."""
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.window_size)
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        features = self.conv_first(x)
        features = self.conv_after_body(self.deep_features(features)) + features
        if self.upsampler == 'pixelshuffledirect':
            out = self.upsample(features)
        elif self.upsampler == 'pixelshuffle':
            out = self.conv_last(self.upsample(self.conv_before_upsample(features)))
        elif self.upsampler == 'nearest+conv':
            out = self.conv_before_upsample(features)
            out = self.lrelu(self.conv_up1(F.interpolate(out, scale_factor=2, mode='nearest')))
            out = self.lrelu(self.conv_up2(F.interpolate(out, scale_factor=2, mode='nearest')))
            out = self.conv_last(self.lrelu(self.conv_hr(out)))
        else:
            out = x + self.conv_last(features)
        out = out / self.img_range + mean
        return out[..., :h * self.upscale, :w * self.upscale]

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load weights (the official layout); with ``strict``, a checkpoint of another network or configuration
        is refused in one line naming the first key that does not fit."""
        if strict:
            check_state_dict_fits(type(self).__name__, self.state_dict(), state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
