"""ATD (Zhang et al., CVPR 2024: "Transcending the Limit of Local Window: Advanced Super-Resolution Transformer with
Adaptive Token Dictionary"), the ESC paper's baseline ATD-light ("ATD-lt", Tables 2, 4 and 6), in plain torch.

The network is a SwinIR-style residual transformer on tokens (B, H·W, C). Each of its layers mixes tokens three ways
and adds all three to the skip:

- **window attention** over ws×ws windows (every second layer shifted by ws/2, with Swin's mask), with a learned
  relative-position bias;
- **token-dictionary cross-attention** (``attn_atd``): every token attends to a group's M learned dictionary tokens
  through cosine similarity in a reduced dimension, sharpened per dictionary token by 1 + clamp(scale, 0, 1)·log M;
- **category attention** (``attn_aca``): tokens are sorted by the dictionary token they resemble most (the argmax of
  that similarity), the sorted sequence is cut into groups of ``category_size`` (the tail padded with its own
  mirror image) and each group attends within itself, its logits scaled by exp(min(logit_scale, log 100)); the
  result is put back into image order.

A ConvFFN (linear, GELU, a depthwise k×k conv + GELU added to its input, linear) follows, and every layer but a
group's last refines the dictionary from the image: an instance norm and a softmax over the pixels of each dictionary
token's similarity map give weights for a pooled image token, mixed into the dictionary by sigmoid(sigma).

The module and parameter names are the official ones (``esc/archs/atd_arch.py`` of the ESC repository, the ATD
authors' code), so its checkpoints load with ``strict=True``, and the constructor takes the official option names
and defaults, so official option files build it unchanged; ATD-light is ``embed_dim=48, depths=[6]*4,
num_heads=[4]*4, window_size=16, category_size=128, num_tokens=64, reducted_dim=8, convffn_kernel_size=7,
mlp_ratio=1, upsampler='pixelshuffledirect'`` (:data:`ATD_LIGHT`).

Like the official code, the category attention sorts with ``torch.sort(stable=False)``: where several pixels share a
category their order within it, and so which group a pixel at a group boundary falls in, is the sort kernel's
choice; CPU kernels keep ties in order. There is no other difference between training and evaluation.

``ATD.features`` gives the LR-resolution features F = conv(body(F0)) + F0, F0 = conv_first(x), without the mean shift
or any upsampler: the encoder of ATD-light+LTE (Table 6).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from esc.archs.attention import relative_position_index
from esc.archs.recognition import group_depths, whole_ratio
from esc.archs.srformer_arch import (DIV2K_RGB_MEAN, MASKED, RESIDUAL_CONVS, BaselineNetwork, from_windows,
                                     residual_conv, shift_regions, subpixel_upsampler, to_windows)
from esc.errors import ESCError
from esc.io.state_dict_checks import check_state_dict_fits, tensor_shape

UPSAMPLERS = ('pixelshuffledirect', 'pixelshuffle', 'nearest+conv')
UPSAMPLER_FEATURES = 64  # the official num_feat of the 'pixelshuffle' and 'nearest+conv' heads

ATD_LIGHT: Dict[str, Any] = dict(embed_dim=48, depths=[6, 6, 6, 6], num_heads=[4, 4, 4, 4], window_size=16,
                                 category_size=128, num_tokens=64, reducted_dim=8, convffn_kernel_size=7, mlp_ratio=1,
                                 upsampler='pixelshuffledirect', resi_connection='1conv')
"""ATD-light's options (the ESC repository's options/test/ATDLight files); add ``upscale``."""


# --- token layout ----------------------------------------------------------------------------------------------
def to_tokens(x: Tensor) -> Tensor:
    """(B, C, H, W) → (B, H·W, C)."""
    return x.flatten(2).transpose(1, 2)


def to_image(tokens: Tensor, size: Tuple[int, int]) -> Tensor:
    """(B, H·W, C) → (B, C, H, W)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *size)


def shifted_window_mask(h: int, w: int, window: int) -> Tensor:
    """(nW, ws², ws²): 0 where two positions of a window shifted by ws/2 came from one region of the image before
    the cyclic shift (:func:`~esc.archs.srformer_arch.shift_regions`), :data:`MASKED` where not."""
    regions = shift_regions(h, w, window, window // 2)[None, :, :, None]
    labels = to_windows(regions, window).reshape(-1, window * window)
    different = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(different.shape).masked_fill_(different, MASKED)


def symmetric_pad(x: Tensor, multiple: int) -> Tensor:
    """Pad the bottom and right of an NCHW tensor to multiples of ``multiple`` with its mirror image, the edge row
    repeated (the official padding: ``cat([x, flip(x)])`` cropped), mirrored again where one copy is not enough."""
    h, w = x.shape[-2:]
    target_h, target_w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    while x.shape[-2] < target_h:
        x = torch.cat([x, x.flip(-2)], dim=-2)
    while x.shape[-1] < target_w:
        x = torch.cat([x, x.flip(-1)], dim=-1)
    return x[..., :target_h, :target_w]


# --- the three token mixers ------------------------------------------------------------------------------------
class WindowAttention(nn.Module):
    """Multi-head self-attention in ws×ws windows with a relative-position bias table ((2ws−1)², heads), on
    queries, keys and values computed by the layer (``qkv``: (B·nW, ws², 3C))."""

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=.02)

    def forward(self, qkv: Tensor, position_index: Tensor, mask: Optional[Tensor]) -> Tensor:
        windows, n, _ = qkv.shape
        q, k, v = qkv.view(windows, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # each (B·nW, heads, n, d)
        scores = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        scores = scores + bias.unsqueeze(0)
        if mask is not None:
            per_image = mask.shape[0]
            scores = (scores.view(-1, per_image, self.num_heads, n, n) + mask[None, :, None]).view(windows, -1, n, n)
        out = scores.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(windows, n, -1))


class DictionaryCrossAttention(nn.Module):
    """Token-dictionary cross-attention (the official ``ATD_CA``): image tokens (queries) attend to the M
    dictionary tokens (keys and values); returns the attended tokens and the (B, N, M) attention map, which sorts
    the tokens for :class:`CategoryAttention` and refines the dictionary."""

    def __init__(self, dim: int, num_tokens: int, reducted_dim: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.log_tokens = math.log(num_tokens)
        self.wq = nn.Linear(dim, reducted_dim, bias=qkv_bias)
        self.wk = nn.Linear(dim, reducted_dim, bias=qkv_bias)
        self.wv = nn.Linear(dim, dim, bias=qkv_bias)
        self.scale = nn.Parameter(torch.full((num_tokens,), 0.5))

    def forward(self, x: Tensor, dictionary: Tensor) -> Tuple[Tensor, Tensor]:
        q, k, v = F.normalize(self.wq(x), dim=-1), F.normalize(self.wk(dictionary), dim=-1), self.wv(dictionary)
        similarity = q @ k.transpose(-2, -1)
        similarity = (similarity * (1 + self.scale.clamp(0, 1) * self.log_tokens)).softmax(dim=-1)
        return similarity @ v, similarity


class CategoryAttention(nn.Module):
    """Adaptive category-based attention (the official ``AC_MSA``): the tokens, sorted by their most similar
    dictionary token, attend within consecutive groups of ``category_size``."""

    def __init__(self, dim: int, num_heads: int, category_size: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads, self.category_size = num_heads, category_size
        self.logit_scale = nn.Parameter(torch.full((1, 1), math.log(10.0)))
        self.proj = nn.Linear(dim, dim, bias=qkv_bias)

    def forward(self, qkv: Tensor, similarity: Tensor) -> Tensor:
        b, n, c3 = qkv.shape
        group = min(n, self.category_size)
        groups = -(-n // group)
        tail = groups * group - n
        order = torch.sort(similarity.argmax(dim=-1), dim=-1, stable=False)[1]  # the official call: see the module
        restore = torch.empty_like(order).scatter_(-1, order, torch.arange(n, device=order.device).expand(b, n))
        qkv = qkv.gather(1, order.unsqueeze(-1).expand(b, n, c3))
        qkv = torch.cat([qkv, qkv[:, n - tail:].flip(1)], dim=1)  # the tail group filled with its own mirror image
        q, k, v = qkv.view(b, groups, group, 3, self.num_heads, -1).permute(3, 0, 1, 4, 2, 5)  # (B, G, heads, g, d)
        logit_scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        out = ((q @ k.transpose(-2, -1)) * logit_scale).softmax(dim=-1) @ v
        out = out.permute(0, 1, 3, 2, 4).reshape(b, groups * group, c3 // 3)[:, :n]
        return self.proj(out.gather(1, restore.unsqueeze(-1).expand_as(out)))


# --- layers and groups -----------------------------------------------------------------------------------------
class DepthwiseConv(nn.Module):
    """The ConvFFN's depthwise k×k conv + GELU, on tokens."""

    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__()
        self.depthwise_conv = nn.Sequential(nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim),
                                            nn.GELU())

    def forward(self, x: Tensor, size: Tuple[int, int]) -> Tensor:
        # contiguous NCHW in and tokens out, as the official code lays them out (a channels-last view would take
        # another conv kernel, whose rounding can flip a near-tie in the category sort)
        return to_tokens(self.depthwise_conv(to_image(x, size).contiguous())).contiguous()


class ConvFFN(nn.Module):
    """fc1, GELU, + depthwise conv of that, fc2."""

    def __init__(self, dim: int, hidden_dim: int, kernel_size: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.dwconv = DepthwiseConv(hidden_dim, kernel_size)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor, size: Tuple[int, int]) -> Tensor:
        x = self.act(self.fc1(x))
        return self.fc2(x + self.dwconv(x, size))


class ATDLayer(nn.Module):
    """One ATD transformer layer: the three token mixers on one LayerNorm, a ConvFFN, and (unless ``is_last``)
    the refined dictionary for the next layer."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, category_size: int,
                 num_tokens: int, reducted_dim: int, convffn_kernel_size: int, mlp_ratio: float, qkv_bias: bool,
                 is_last: bool) -> None:
        super().__init__()
        self.dim, self.window_size, self.shift_size, self.is_last = dim, window_size, shift_size, is_last
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        if not is_last:
            self.norm3 = nn.InstanceNorm1d(num_tokens, affine=True)
            self.sigma = nn.Parameter(torch.zeros(num_tokens, 1))
        self.wqkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_win = WindowAttention(dim, window_size, num_heads)
        self.attn_atd = DictionaryCrossAttention(dim, num_tokens, reducted_dim, qkv_bias)
        self.attn_aca = CategoryAttention(dim, num_heads, category_size, qkv_bias)
        self.convffn = ConvFFN(dim, int(dim * mlp_ratio), convffn_kernel_size)

    def window_attention(self, qkv: Tensor, size: Tuple[int, int], position_index: Tensor, mask: Tensor) -> Tensor:
        h, w = size
        qkv = qkv.view(qkv.shape[0], h, w, -1)
        shift = self.shift_size
        if shift:
            qkv = torch.roll(qkv, shifts=(-shift, -shift), dims=(1, 2))
        window = self.window_size
        out = self.attn_win(to_windows(qkv, window).reshape(-1, window * window, qkv.shape[-1]), position_index,
                            mask if shift else None)
        out = from_windows(out.view(-1, window, window, out.shape[-1]), window, h, w)
        if shift:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
        return out.reshape(out.shape[0], h * w, -1)

    def forward(self, x: Tensor, dictionary: Tensor, size: Tuple[int, int], position_index: Tensor,
                mask: Tensor) -> Tuple[Tensor, Tensor]:
        normed = self.norm1(x)
        qkv = self.wqkv(normed)
        attended, similarity = self.attn_atd(normed, dictionary)
        x = (x + self.window_attention(qkv, size, position_index, mask) + attended
             + self.attn_aca(qkv, similarity))
        x = x + self.convffn(self.norm2(x), size)
        if not self.is_last:
            weights = self.norm3(similarity.transpose(1, 2)).softmax(dim=-1)  # (B, M, N): over the pixels
            keep = torch.sigmoid(self.sigma)
            # the official einsum('btn,bnc->btc') as a matmul: the same product, whose FLOPs fvcore counts
            # exactly (its einsum count goes through numpy's einsum_path, rounded to four digits)
            dictionary = keep * dictionary + (1 - keep) * (weights @ x)
        return x, dictionary


class ATDLayers(nn.Module):
    """A group's layers and its learned token dictionary (``td``: M × C), refined from layer to layer.

    ``use_checkpoint`` recomputes each layer in the backward pass instead of storing its activations (same result,
    less memory while training)."""

    def __init__(self, depth: int, dim: int, num_tokens: int, use_checkpoint: bool, **layer_options: Any) -> None:
        super().__init__()
        self.use_checkpoint = use_checkpoint
        window = layer_options['window_size']
        self.layers = nn.ModuleList([
            ATDLayer(dim, shift_size=0 if i % 2 == 0 else window // 2, num_tokens=num_tokens, is_last=i == depth - 1,
                     **layer_options) for i in range(depth)])
        self.td = nn.Parameter(torch.randn(num_tokens, dim))

    def forward(self, x: Tensor, size: Tuple[int, int], position_index: Tensor, mask: Tensor) -> Tensor:
        dictionary = self.td.expand(x.shape[0], -1, -1)
        for layer in self.layers:
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                x, dictionary = checkpoint(layer, x, dictionary, size, position_index, mask, use_reentrant=False)
            else:
                x, dictionary = layer(x, dictionary, size, position_index, mask)
        return x


class ATDBlock(nn.Module):
    """A residual group (the official ``ATDB``): its layers, a conv, and the group's skip."""

    def __init__(self, dim: int, resi_connection: str, **layers: Any) -> None:
        super().__init__()
        self.residual_group = ATDLayers(dim=dim, **layers)
        self.conv = residual_conv(dim, resi_connection)

    def forward(self, x: Tensor, size: Tuple[int, int], position_index: Tensor, mask: Tensor) -> Tensor:
        return to_tokens(self.conv(to_image(self.residual_group(x, size, position_index, mask), size))) + x


class TokenEmbedding(nn.Module):
    """(B, C, H, W) → (B, H·W, C), LayerNorm'd where ``patch_norm`` (the official ``patch_embed``)."""

    def __init__(self, dim: int, patch_norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim) if patch_norm else None

    def forward(self, x: Tensor) -> Tensor:
        x = to_tokens(x)
        return x if self.norm is None else self.norm(x)


# --- the network -----------------------------------------------------------------------------------------------
class ATD(BaselineNetwork):
    """ATD with the official options and defaults (ATD-light: :data:`ATD_LIGHT`); ``forward`` maps an RGB image in
    [0, 1] of any size to its ×``upscale`` super-resolution (padded inside to whole windows, then cropped).

    ``upsampler``: 'pixelshuffledirect' (lightweight SR: one conv to 3·s² channels and a pixel shuffle),
    'pixelshuffle' (classical SR: conv + LeakyReLU to 64 channels, :func:`subpixel_upsampler`, conv) or
    'nearest+conv' (×4 only: two nearest ×2 steps with convs). ``img_size`` is accepted for the official files and
    changes nothing (the official code sizes only its unused absolute position embedding by it).
    """

    def __init__(self, img_size: int = 64, in_chans: int = 3, embed_dim: int = 90,
                 depths: Sequence[int] = (6, 6, 6, 6), num_heads: Sequence[int] = (6, 6, 6, 6), window_size: int = 8,
                 category_size: int = 128, num_tokens: int = 64, reducted_dim: int = 4, convffn_kernel_size: int = 5,
                 mlp_ratio: float = 2.0, qkv_bias: bool = True, patch_norm: bool = True, use_checkpoint: bool = False,
                 upscale: int = 2, img_range: float = 1.0, upsampler: str = 'pixelshuffledirect',
                 resi_connection: str = '1conv') -> None:
        super().__init__()
        self._check_options(in_chans, embed_dim, depths, num_heads, window_size, category_size, num_tokens,
                            reducted_dim, convffn_kernel_size, mlp_ratio, upscale, img_range, upsampler,
                            resi_connection)
        self.window_size, self.upscale, self.upsampler, self.img_range = window_size, upscale, upsampler, img_range
        self.embed_dim = embed_dim
        mean = torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1) if in_chans == 3 else torch.zeros(1, 1, 1, 1)
        self.register_buffer('mean', mean, persistent=False)  # not in the official checkpoints

        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, padding=1)
        self.patch_embed = TokenEmbedding(embed_dim, patch_norm)
        # ATD's table is indexed by query − key offsets, esc.archs.attention's by key − query: the transpose
        self.register_buffer('relative_position_index_SA', relative_position_index(window_size).t().contiguous())
        self.layers = nn.ModuleList([
            ATDBlock(embed_dim, resi_connection, depth=depth, num_heads=heads, window_size=window_size,
                     category_size=category_size, num_tokens=num_tokens, reducted_dim=reducted_dim,
                     convffn_kernel_size=convffn_kernel_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                     use_checkpoint=use_checkpoint)
            for depth, heads in zip(depths, num_heads)])
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = residual_conv(embed_dim, resi_connection)
        if upsampler == 'pixelshuffledirect':
            self.upsample = nn.Sequential(nn.Conv2d(embed_dim, upscale * upscale * in_chans, 3, padding=1),
                                          nn.PixelShuffle(upscale))
        else:
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, UPSAMPLER_FEATURES, 3, padding=1),
                                                      nn.LeakyReLU(inplace=True))
            if upsampler == 'pixelshuffle':
                self.upsample = subpixel_upsampler(upscale, UPSAMPLER_FEATURES)
            else:
                self.conv_up1, self.conv_up2, self.conv_hr = (
                    nn.Conv2d(UPSAMPLER_FEATURES, UPSAMPLER_FEATURES, 3, padding=1) for _ in range(3))
                self.lrelu = nn.LeakyReLU(0.2, inplace=True)
            self.conv_last = nn.Conv2d(UPSAMPLER_FEATURES, in_chans, 3, padding=1)
        self.apply(self._init_weights)

    @staticmethod
    def _check_options(in_chans, embed_dim, depths, num_heads, window_size, category_size, num_tokens, reducted_dim,
                       convffn_kernel_size, mlp_ratio, upscale, img_range, upsampler, resi_connection) -> None:
        where = 'network_g (ATD)'
        integers = dict(in_chans=in_chans, embed_dim=embed_dim, window_size=window_size, category_size=category_size,
                        num_tokens=num_tokens, reducted_dim=reducted_dim, convffn_kernel_size=convffn_kernel_size,
                        upscale=upscale)
        for key, value in integers.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ESCError(f'{where}: {key} must be a positive integer, got {value!r}')
        for key, value in (('depths', depths), ('num_heads', num_heads)):
            if (not isinstance(value, (list, tuple)) or not value
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
                raise ESCError(f'{where}: {key} must be a non-empty list of positive integers, got {value!r}')
        if len(depths) != len(num_heads):
            raise ESCError(f'{where}: depths has {len(depths)} groups but num_heads {len(num_heads)}')
        for heads in num_heads:
            if embed_dim % heads:
                raise ESCError(f'{where}: embed_dim ({embed_dim}) is not divisible by num_heads ({heads})')
        if window_size % 2:
            raise ESCError(f'{where}: window_size must be even (shifted windows move by half), got {window_size}')
        if convffn_kernel_size % 2 == 0:
            raise ESCError(f'{where}: convffn_kernel_size must be odd, got {convffn_kernel_size}')
        if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or int(embed_dim * mlp_ratio) < 1:
            raise ESCError(f'{where}: mlp_ratio must be a positive number, got {mlp_ratio!r}')
        if isinstance(img_range, bool) or not isinstance(img_range, (int, float)) or not img_range > 0:
            raise ESCError(f'{where}: img_range must be a positive number, got {img_range!r}')
        if upsampler not in UPSAMPLERS:
            raise ESCError(f'{where}: upsampler must be one of {", ".join(UPSAMPLERS)}, got {upsampler!r}')
        if resi_connection not in RESIDUAL_CONVS:
            raise ESCError(f'{where}: resi_connection must be one of {", ".join(RESIDUAL_CONVS)}, '
                           f'got {resi_connection!r}')
        if upsampler == 'pixelshuffle' and upscale & (upscale - 1) and upscale != 3:
            raise ESCError(f"{where}: upsampler 'pixelshuffle' takes upscale 2^n or 3, got {upscale}")
        if upsampler == 'nearest+conv' and upscale != 4:
            raise ESCError(f"{where}: upsampler 'nearest+conv' takes upscale 4 only, got {upscale}")

    @classmethod
    def recognise_body(cls, state_dict: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        """ATD's body where ``state_dict`` has a token dictionary (``residual_group.td``) after ``conv_first``
        (None otherwise): the groups' depths and heads, the window (from the (2ws − 1)² bias table), the
        dictionary's size and reduced width, the ConvFFN's kernel and ratio, ``qkv_bias``. ``category_size`` and
        ``img_size`` size no tensor: the defaults (ATD-light's 128 categories)."""
        if 'conv_first.weight' not in state_dict or 'layers.0.residual_group.td' not in state_dict:
            return None
        name = 'an ATD'
        options = cls.recognise_common(state_dict, name)
        depths = group_depths(state_dict, 'layers.{}.', 'residual_group.layers.{}.')
        layer = 'layers.0.residual_group.layers.0.'
        tables = [tensor_shape(state_dict, f'layers.{group}.residual_group.layers.0.attn_win.'
                               'relative_position_bias_table', 2, network=name) for group in range(len(depths))]
        heads, table = [table[1] for table in tables], tables[0]
        hidden = tensor_shape(state_dict, layer + 'convffn.fc1.weight', 2, network=name)[0]
        options.update(
            depths=depths, num_heads=heads, window_size=(math.isqrt(table[0]) + 1) // 2,
            num_tokens=tensor_shape(state_dict, 'layers.0.residual_group.td', 2, network=name)[0],
            reducted_dim=tensor_shape(state_dict, layer + 'attn_atd.wq.weight', 2, network=name)[0],
            convffn_kernel_size=tensor_shape(state_dict, layer + 'convffn.dwconv.depthwise_conv.0.weight', 4,
                                             network=name)[-1],
            mlp_ratio=whole_ratio(hidden, options['embed_dim']), qkv_bias=layer + 'wqkv.bias' in state_dict)
        return options

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """The official initialisation: linear weights truncated-normal (std 0.02) with zero biases, LayerNorms 1/0."""
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def padded_features(self, x: Tensor) -> Tensor:
        """F = conv_after_body(body(F0)) + F0, F0 = conv_first(x), for an input of whole windows."""
        size = (x.shape[-2], x.shape[-1])
        mask = shifted_window_mask(*size, self.window_size).to(x.device)
        f0 = self.conv_first(x)
        tokens = self.patch_embed(f0)
        for block in self.layers:
            tokens = block(tokens, size, self.relative_position_index_SA, mask)
        return self.conv_after_body(to_image(self.norm(tokens), size)) + f0

    def features(self, x: Tensor) -> Tensor:
        """The LR-resolution features F of ``x`` (B, C, H, W) as ``x`` is given (no mean shift): padded to whole
        windows as ``forward`` pads, cropped back to H × W. ATD-light+LTE's encoder."""
        h, w = x.shape[-2:]
        return self.padded_features(symmetric_pad(x, self.window_size))[..., :h, :w]

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        x = (symmetric_pad(x, self.window_size) - self.mean) * self.img_range
        feat = self.padded_features(x)
        if self.upsampler == 'pixelshuffledirect':
            out = self.upsample(feat)
        elif self.upsampler == 'pixelshuffle':
            out = self.conv_last(self.upsample(self.conv_before_upsample(feat)))
        else:
            out = self.conv_before_upsample(feat)
            out = self.lrelu(self.conv_up1(F.interpolate(out, scale_factor=2, mode='nearest')))
            out = self.lrelu(self.conv_up2(F.interpolate(out, scale_factor=2, mode='nearest')))
            out = self.conv_last(self.lrelu(self.conv_hr(out)))
        out = out / self.img_range + self.mean
        return out[..., :h * self.upscale, :w * self.upscale]

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load weights; with ``strict``, a checkpoint of another network or configuration is refused in one line
        naming the first key that does not fit."""
        if strict:
            check_state_dict_fits(type(self).__name__, self.state_dict(), state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
