"""ESC, ESC-light, ESC-XL (``ESC``), ESC-FP (``ESCFP``), ESC-Real and ESC-Real-XL (``ESCReal``).

All three are the same network (Eq. 1–3) composed from :mod:`esc.archs.layers` and
:mod:`esc.archs.attention`; they differ only in configuration: which large kernel ConvAttn uses,
where LayerNorms sit, and the image skip S and upsampler U. Parameter names match the official
checkpoints, so released weights load with ``strict=True``. Only torch is needed here; basicsr
finds these classes once :mod:`esc.compat` has registered them.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esc.archs.attention import (BiasRank, FactorisedWindowAttention, adapt_state_dict, bias_form_conflict, bias_ranks,
                                 layer_ranks, network_bias_rank, normalize_attn_type, query_factors, window_attention)
from esc.archs.layers import (ConvAttn, ConvFFN, DecomposedLargeKernelConv, LargeKernel, LayerNorm2d, ReflectConv2d,
                              SharedLargeKernelConv, symmetric_average)
from esc.archs.recognition import count_indices
from esc.archs.streaming import streamed_forward
from esc.errors import ESCError
from esc.io.state_dict_checks import check_state_dict_fits, tensor_shape


MIXERS = ('self_attn', 'conv_attn')
STREAMING = ('auto', 'on', 'off')


class ESCBlock(nn.Module):
    """One self-attention followed by M ConvFFN + ConvAttn pairs, inside a long residual (Eq. 3).

    ``first_mixer``/``inner_mixer`` swap which token mixer sits where, for the Table 3 ablations
    ('only self-attentions': inner_mixer='self_attn'; 'only ConvAttns': first_mixer='conv_attn').
    """

    def __init__(self, dim: int, conv_blocks: int, exp_ratio: float, first_ffn_ratio: float, norm_before_ffns: bool,
                 make_self_attn: Callable[[], nn.Module], make_conv_attn: Callable[[], nn.Module],
                 first_mixer: str = 'self_attn', inner_mixer: str = 'conv_attn') -> None:
        super().__init__()
        make = {'self_attn': make_self_attn, 'conv_attn': make_conv_attn}
        self.ln_proj = LayerNorm2d(dim)
        self.proj = ConvFFN(dim, int(dim * first_ffn_ratio))
        self.ln_attn = LayerNorm2d(dim)
        self.attn = make[first_mixer]()
        self.lns = nn.ModuleList(
            [LayerNorm2d(dim) if norm_before_ffns else nn.Identity() for _ in range(conv_blocks)])
        self.convffns = nn.ModuleList([ConvFFN(dim, int(dim * exp_ratio)) for _ in range(conv_blocks)])
        self.pconvs = nn.ModuleList([make[inner_mixer]() for _ in range(conv_blocks)])
        self.ln_out = LayerNorm2d(dim)
        self.conv_out = nn.Conv2d(dim, dim, 3, padding=1)

    @staticmethod
    def _mix(mixer: nn.Module, x: Tensor, lk: LargeKernel) -> Tensor:
        return mixer(x, lk) if isinstance(mixer, ConvAttn) else mixer(x)

    def forward(self, x: Tensor, lk: LargeKernel) -> Tensor:
        """Eq. 3: ConvFFN, window self-attention, M × (ConvFFN_j → ConvAttn_j), then LN + conv3×3 + skip."""
        skip = x
        x = self.proj(self.ln_proj(x))
        x = x + self._mix(self.attn, self.ln_attn(x), lk)
        for norm, ffn, mixer in zip(self.lns, self.convffns, self.pconvs):
            x = x + self._mix(mixer, ffn(norm(x)), lk)
        return skip + self.conv_out(self.ln_out(x))


def esc_family_member(state_dict: Mapping[str, Any]) -> Optional[str]:
    """Which network of the ESC family a state dict's names say it is ('ESC', 'ESCFP', 'ESCReal' or 'ESCLTE'), or
    None where it has no ``proj.weight`` and ``blocks.0.*`` (no ESC network at all). Every member shares ESC's
    names; the markers of the others decide, most specific first: ESC-FP's decomposed large kernel
    (``lk_channel``), ESC-Real's conv image skip (``skip.0.weight``), ESC+LTE's head (``coef.weight`` with
    ``imnet.0.weight``); ESC is the rest."""
    if 'proj.weight' not in state_dict or not any(key.startswith('blocks.0.') for key in state_dict):
        return None
    if 'lk_channel' in state_dict:
        return 'ESCFP'
    if 'skip.0.weight' in state_dict:
        return 'ESCReal'
    return 'ESCLTE' if 'coef.weight' in state_dict and 'imnet.0.weight' in state_dict else 'ESC'


def recognise_ablations(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """The Table 3 ablation switches an ESC (or ESC+LTE) state dict was trained with, read off its names: LayerNorms
    before the ConvFFNs, one shared large kernel, the dynamic kernel, and which mixer sits where."""
    return dict(use_ln='blocks.0.lns.0.weight' in state_dict, share_lk='plk_filter' in state_dict,
                dynamic_kernel=any('.plk.dwc_proj.' in key for key in state_dict),
                first_mixer='self_attn' if 'blocks.0.attn.to_qkv.weight' in state_dict else 'conv_attn',
                inner_mixer='self_attn' if 'blocks.0.pconvs.0.to_qkv.weight' in state_dict else 'conv_attn')


def resample_subpixel_conv(weight: Tensor, bias: Optional[Tensor], scale: int):
    """Resize a sub-pixel conv (3·s² outputs) to ``scale``: every tap's 3×s×s grid bilinearly to 3×r×r."""
    out_channels, in_channels, kh, kw = weight.shape
    old = math.isqrt(out_channels // 3)
    if 3 * old * old != out_channels:
        raise ESCError(f'to_img.weight: {out_channels} output channels are not 3·r² for any r')

    def resize(grid: Tensor) -> Tensor:  # (N, 3, s, s) → (N, 3, r, r)
        return F.interpolate(grid.float(), size=(scale, scale), mode='bilinear', align_corners=False).to(grid.dtype)

    taps = weight.reshape(3, old, old, -1).permute(3, 0, 1, 2)
    new_weight = resize(taps).permute(1, 2, 3, 0).reshape(3 * scale * scale, in_channels, kh, kw)
    new_bias = None if bias is None else resize(bias.reshape(1, 3, old, old)).reshape(-1)
    return new_weight, new_bias


class _ESCNetwork(nn.Module):
    """What the variants share: F0 = conv3×3(I), N ESC blocks with one large kernel, the forward pass
    (whole-image or in exact row strips, :mod:`esc.archs.streaming`), option checks and checkpoint
    loading (one-line errors, ×2 → ×r sub-pixel resampling). Subclasses add S and U: ``fuse`` and
    ``reconstruct``, with the rows of context each needs around a strip (``fuse_halo``, ``reconstruct_halo``).

    ``streaming``: 'auto' computes in row strips on CPU when no gradient is needed (same output, a
    fraction of the memory, faster), 'on' always when no gradient is needed, 'off' never.
    ``flashbias_rank`` (the official option) or its synonym ``bias_rank``: None (the default) holds each
    attention layer's position bias as the relative-position table, except that ``attn_type: flashbias`` (the
    official ``FlashBias``) then takes the official default rank 256 − head dim; a rank R (or one per
    self-attention layer, in order) holds it as trainable low-rank factors (FlashBias, :mod:`esc.archs.attention`).
    ``deployment``: the official early option files' switch between their naive attention (training) and
    FlexAttention (deployment); every backend here computes the same attention, so it is accepted and changes
    nothing: ``attn_type`` chooses the backend.
    """

    large_kernel_conv: type = SharedLargeKernelConv
    first_ffn_ratio = 2.0
    fixed_scale = True  # False: no ``upscaling_factor``, U is queried at any scale (ESCLTE, esc/archs/lte_arch.py)
    scale_option = 'upscaling_factor'  # the constructor option that holds the scale
    fuse_halo = 1
    reconstruct_halo = 1

    def __init__(self, dim: int, pdim: int, kernel_size: int, n_blocks: int, conv_blocks: int, window_size: int,
                 num_heads: int, upscaling_factor: Optional[int], exp_ratio: float, attn_type: str,
                 norm_before_ffns: bool, unknown: Mapping[str, Any], large_kernel_options: Optional[Mapping[str, Any]] = None,
                 first_mixer: str = 'self_attn', inner_mixer: str = 'conv_attn', streaming: str = 'auto',
                 bias_rank: BiasRank = None, flashbias_rank: BiasRank = None, deployment: Optional[bool] = None) -> None:
        super().__init__()
        self._check_options(dim, pdim, kernel_size, n_blocks, conv_blocks, window_size, num_heads, upscaling_factor,
                            exp_ratio, unknown)
        for key, value, allowed in (('first_mixer', first_mixer, MIXERS), ('inner_mixer', inner_mixer, MIXERS),
                                    ('streaming', streaming, STREAMING)):
            if value not in allowed:
                raise ESCError(f'network_g ({type(self).__name__}): {key} must be one of {", ".join(allowed)}, '
                               f'got {value!r}')
        self.streaming = streaming
        self.dim, self.pdim, self.kernel_size = dim, pdim, kernel_size
        self.window_size, self.upscaling_factor = window_size, upscaling_factor
        self.attn_type = normalize_attn_type(attn_type)
        self.uses_conv_attn = 'conv_attn' in (first_mixer, inner_mixer)
        where = f'network_g ({type(self).__name__})'
        if deployment is not None and not isinstance(deployment, bool):
            raise ESCError(f'{where}: deployment must be true or false, got {deployment!r}')
        bias_rank, rank_option = network_bias_rank(bias_rank, flashbias_rank, self.attn_type, dim // num_heads,
                                                   window_size, where)
        conflict = bias_form_conflict(self.attn_type, FactorisedWindowAttention.bias_form if bias_rank is not None
                                      else 'table')
        if conflict:
            hint = 'set flashbias_rank to factorise it' if bias_rank is None else f'leave {rank_option} unset'
            raise ESCError(f'{where}: attn_type {attn_type!r}: {conflict} ({hint})')
        attention_layers = n_blocks * ((first_mixer == 'self_attn') + conv_blocks * (inner_mixer == 'self_attn'))
        ranks = iter(layer_ranks(bias_rank, attention_layers, window_size, where, rank_option))

        def make_self_attn() -> nn.Module:
            return window_attention(dim, window_size, num_heads, self.attn_type, next(ranks))

        def make_conv_attn() -> nn.Module:
            return ConvAttn(dim, pdim, self.large_kernel_conv(pdim, **(large_kernel_options or {})))

        self.proj = nn.Conv2d(3, dim, 3, padding=1)
        self.blocks = nn.ModuleList([
            ESCBlock(dim, conv_blocks, exp_ratio, self.first_ffn_ratio, norm_before_ffns, make_self_attn,
                     make_conv_attn, first_mixer, inner_mixer) for _ in range(n_blocks)
        ])
        self.last = nn.Conv2d(dim, dim, 3, padding=1)

    def _check_options(self, dim, pdim, kernel_size, n_blocks, conv_blocks, window_size, num_heads, upscaling_factor,
                       exp_ratio, unknown) -> None:
        name = type(self).__name__
        if unknown:
            raise ESCError(f'network_g ({name}): unknown option(s) {", ".join(sorted(unknown))}')
        if upscaling_factor is None and self.fixed_scale:
            raise ESCError(f'network_g ({name}): missing option upscaling_factor')
        integers = dict(dim=dim, pdim=pdim, kernel_size=kernel_size, n_blocks=n_blocks, conv_blocks=conv_blocks,
                        window_size=window_size, num_heads=num_heads)
        if self.fixed_scale:
            integers['upscaling_factor'] = upscaling_factor
        for key, value in integers.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ESCError(f'network_g ({name}): {key} must be a positive integer, got {value!r}')
        if pdim > dim:
            raise ESCError(f'network_g ({name}): pdim ({pdim}) must not exceed dim ({dim})')
        if pdim < self.large_kernel_conv.min_pdim:
            raise ESCError(f'network_g ({name}): pdim must be at least {self.large_kernel_conv.min_pdim}, got {pdim}')
        if dim % num_heads:
            raise ESCError(f'network_g ({name}): dim ({dim}) is not divisible by num_heads ({num_heads})')
        if kernel_size % 2 == 0 or kernel_size < 3:
            raise ESCError(f'network_g ({name}): kernel_size must be odd and at least 3, got {kernel_size}')
        if not isinstance(exp_ratio, (int, float)) or int(dim * exp_ratio) < 1:
            raise ESCError(f'network_g ({name}): exp_ratio must be a positive number, got {exp_ratio!r}')

    def large_kernel(self) -> LargeKernel:
        """The large kernel every ConvAttn of this forward pass shares."""
        raise NotImplementedError

    def fuse(self, deep: Tensor, f0: Tensor, x: Tensor) -> Tensor:
        """H's last layers and the long skip: the features U upsamples, from the blocks' output, F0 and I_LR."""
        raise NotImplementedError

    def reconstruct(self, feat: Tensor, x: Tensor) -> Tensor:
        """U(feat) + S(I_LR): the SR image."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Eq. 1: I_SR = U(H(F0) + F0) + S(I_LR), F0 = conv3×3(I_LR); the variant's H ends in ``fuse``."""
        if self.streams(x):
            return streamed_forward(self, x)
        f0 = self.proj(x)
        return self.reconstruct(self.fuse(self.deep_features(f0), f0, x), x)

    def streams(self, x: Tensor) -> bool:
        """Whether ``forward(x)`` runs in row strips (see ``streaming``); never when compiled, where the strip loop
        would make every image height a graph of its own."""
        if self.streaming == 'off' or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return False
        return self.streaming == 'on' or x.device.type == 'cpu'

    def deep_features(self, x: Tensor) -> Tensor:
        """The N ESC blocks of H (Eq. 2) applied to F0 with this pass's shared LK; H's final conv is the caller's."""
        lk = self.large_kernel()
        for block in self.blocks:
            x = block(x, lk)
        return x

    # --- checkpoints -------------------------------------------------------------------------------------------
    @classmethod
    def recognise(cls, state_dict: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        """The constructor options of the network ``state_dict`` was saved from, where :func:`esc_family_member`
        says it is this class's (None otherwise): width, blocks and ConvAttns per block, the ConvFFN ratio, heads
        and window (from the position-bias tables, or FlashBias's factors with their ranks), the large kernel's
        size, then the variant's own (:meth:`_recognise_own`): ``upscaling_factor`` where the weights tell it.
        This network's names with a tensor missing or of another rank are a one-line ESCError naming it."""
        if esc_family_member(state_dict) != cls.__name__:
            return None
        sd = state_dict
        dim = tensor_shape(sd, 'proj.weight', 4)[0]
        options: Dict[str, Any] = dict(dim=dim, n_blocks=count_indices(sd, r'blocks\.(\d+)\.'),
                                       conv_blocks=count_indices(sd, r'blocks\.0\.convffns\.(\d+)\.'))
        if options['conv_blocks'] == 0:
            raise ESCError('checkpoint is not an ESC network (its blocks have no convffns)')
        options['exp_ratio'] = tensor_shape(sd, 'blocks.0.convffns.0.proj.weight', 4)[0] / dim
        tables = [tensor_shape(sd, key, 2) for key in sd if key.endswith('relative_position_bias')]
        factors = query_factors(sd)  # FlashBias: (heads, ws², R) per layer
        if tables:
            options['num_heads'] = tables[0][0]
            options['window_size'] = (math.isqrt(tables[0][1]) + 1) // 2
        elif factors:
            if factors[0].dim() != 3:
                raise ESCError(f'checkpoint: a FlashBias query factor has shape {tuple(factors[0].shape)}; an ESC '
                               'network\'s has 3 dimensions (heads, ws², rank)')
            options.update(num_heads=factors[0].shape[0], window_size=math.isqrt(factors[0].shape[1]),
                           bias_rank=bias_ranks(sd), attn_type='flashbias')
        kernel = next((tensor_shape(sd, key, 4) for key in ('plk_filter', 'lk_spatial', 'blocks.0.pconvs.0.plk.lk')
                       if key in sd), None)
        if kernel is not None:
            options['pdim'], options['kernel_size'] = kernel[0], kernel[-1]
        cls._recognise_own(sd, options)
        return options

    @classmethod
    def _recognise_own(cls, state_dict: Mapping[str, Any], options: Dict[str, Any]) -> None:
        """Add what only this variant's weights tell to ``options``: here the sub-pixel upsampler's scale
        (``to_img.weight``: 3·r² outputs), where the state dict has it."""
        if 'to_img.weight' in state_dict:
            channels = tensor_shape(state_dict, 'to_img.weight', 4)[0]
            scale = math.isqrt(channels // 3)
            if 3 * scale * scale != channels:
                raise ESCError(f'checkpoint is not an ESC network: to_img.weight has {channels} outputs, not 3·r²')
            options['upscaling_factor'] = scale

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load weights; a checkpoint of another scale has its sub-pixel conv resampled, a checkpoint of
        another architecture is refused with one line naming the first key that does not fit."""
        state_dict = adapt_state_dict(self, state_dict)  # factorised attention layers take a table or earlier names
        own = self.state_dict()
        weight = state_dict.get('to_img.weight')
        if (weight is not None and 'to_img.weight' in own and weight.shape != own['to_img.weight'].shape
                and weight.shape[1:] == own['to_img.weight'].shape[1:]):
            state_dict['to_img.weight'], state_dict['to_img.bias'] = resample_subpixel_conv(
                weight, state_dict.get('to_img.bias'), self.upscaling_factor)
        if strict:
            check_state_dict_fits(type(self).__name__, own, state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


class ESC(_ESCNetwork):
    """ESC and ESC-light: shared 8-symmetric LK, repeat-interleave image skip before the pixel shuffle.

    Beyond the official options, the Table 3 ablations: ``share_lk=False`` gives every ConvAttn its
    own LK, ``dynamic_kernel=False`` drops DK, ``first_mixer``/``inner_mixer`` swap self-attention
    and ConvAttn (see :class:`ESCBlock`); ``kernel_size`` and ``window_size`` vary as usual.
    """

    def __init__(self, dim: int = 64, pdim: int = 16, kernel_size: int = 13, n_blocks: int = 5, conv_blocks: int = 5,
                 window_size: int = 32, num_heads: int = 4, upscaling_factor: Optional[int] = None,
                 exp_ratio: float = 1.25, attn_type: str = 'auto', use_ln: bool = False, share_lk: bool = True,
                 dynamic_kernel: bool = True, first_mixer: str = 'self_attn', inner_mixer: str = 'conv_attn',
                 streaming: str = 'auto', bias_rank: BiasRank = None, flashbias_rank: BiasRank = None,
                 deployment: Optional[bool] = None, **unknown: Any) -> None:
        large_kernel_options = dict(own_kernel_size=None if share_lk else kernel_size, dynamic=bool(dynamic_kernel))
        super().__init__(dim, pdim, kernel_size, n_blocks, conv_blocks, window_size, num_heads, upscaling_factor,
                         exp_ratio, attn_type, bool(use_ln), unknown, large_kernel_options, first_mixer, inner_mixer,
                         streaming, bias_rank, flashbias_rank, deployment)
        if share_lk and self.uses_conv_attn:
            self.plk_filter = nn.Parameter(torch.empty(pdim, pdim, kernel_size, kernel_size))
            nn.init.orthogonal_(self.plk_filter)
        if self.fixed_scale:
            self.to_img = nn.Conv2d(dim, 3 * upscaling_factor ** 2, 3, padding=1)

    @classmethod
    def _recognise_own(cls, state_dict: Mapping[str, Any], options: Dict[str, Any]) -> None:
        """The ablation switches (:func:`recognise_ablations`), then the sub-pixel upsampler's scale."""
        options.update(recognise_ablations(state_dict))
        super()._recognise_own(state_dict, options)

    def large_kernel(self) -> Optional[Tensor]:
        return symmetric_average(self.plk_filter) if hasattr(self, 'plk_filter') else None

    def fuse(self, deep: Tensor, f0: Tensor, x: Tensor) -> Tensor:
        return self.last(deep) + f0

    def reconstruct(self, feat: Tensor, x: Tensor) -> Tensor:
        """Sub-pixel conv of the features plus the LR image repeated r² times, shuffled."""
        r = self.upscaling_factor
        return F.pixel_shuffle(self.to_img(feat) + x.repeat_interleave(r * r, dim=1), r)


class ESCFP(_ESCNetwork):
    """ESC-FP: decomposed LK (Eq. 5), LayerNorm before every ConvFFN, bicubic image skip after the shuffle."""

    large_kernel_conv = DecomposedLargeKernelConv
    first_ffn_ratio = 1.5
    reconstruct_halo = 2  # bicubic: 4 taps

    def __init__(self, dim: int = 48, pdim: int = 16, kernel_size: int = 13, n_blocks: int = 5, conv_blocks: int = 5,
                 window_size: int = 32, num_heads: int = 3, upscaling_factor: Optional[int] = None,
                 exp_ratio: float = 1.25, attn_type: str = 'auto', streaming: str = 'auto', bias_rank: BiasRank = None,
                 flashbias_rank: BiasRank = None, deployment: Optional[bool] = None, **unknown: Any) -> None:
        super().__init__(dim, pdim, kernel_size, n_blocks, conv_blocks, window_size, num_heads, upscaling_factor,
                         exp_ratio, attn_type, True, unknown, streaming=streaming, bias_rank=bias_rank,
                         flashbias_rank=flashbias_rank, deployment=deployment)
        self.lk_channel = nn.Parameter(torch.randn(pdim, pdim, 1, 1))
        self.lk_spatial = nn.Parameter(torch.empty(pdim, 1, kernel_size, kernel_size))
        nn.init.orthogonal_(self.lk_spatial)
        self.ln_last = LayerNorm2d(dim)
        self.to_img = nn.Conv2d(dim, 3 * upscaling_factor ** 2, 3, padding=1)

    def large_kernel(self):
        return self.lk_channel, self.lk_spatial

    def fuse(self, deep: Tensor, f0: Tensor, x: Tensor) -> Tensor:
        return self.last(self.ln_last(deep)) + f0

    def reconstruct(self, feat: Tensor, x: Tensor) -> Tensor:
        """Sub-pixel conv of the features plus the bicubic-upsampled LR image."""
        r = self.upscaling_factor
        upsampled = F.interpolate(x, scale_factor=r, mode='bicubic', align_corners=False)
        return F.pixel_shuffle(self.to_img(feat), r) + upsampled


class ESCReal(_ESCNetwork):
    """ESC-Real: ESC with LayerNorm before every ConvFFN, a conv skip S added to F, and RealESRGAN's
    nearest-neighbour upsampler without an image-level residual.

    ×4 (the paper's, and the official checkpoint's layout): nearest ×2 → conv → LeakyReLU → nearest ×2 →
    conv → LeakyReLU → conv → LeakyReLU → conv C→3. ×2 drops the second upsampling stage (its nearest ×2,
    conv and LeakyReLU), so the final two convolutions are ``to_img.3`` and ``to_img.5`` instead of
    ``to_img.6`` and ``to_img.8`` and a ×2 state dict can be told from a ×4 one by its keys.
    """

    fuse_halo = 3  # the skip's 7×7 depthwise conv
    reconstruct_halo = 2  # ×4: one 3×3 conv at 2× and three at 4×; ×2: three at 2×; both reach 2 LR rows
    SCALES = (2, 4)

    def __init__(self, dim: int = 64, pdim: int = 16, kernel_size: int = 13, n_blocks: int = 10, conv_blocks: int = 5,
                 window_size: int = 32, num_heads: int = 4, upscaling_factor: Optional[int] = 4,
                 exp_ratio: float = 2.0, attn_type: str = 'auto', streaming: str = 'auto', bias_rank: BiasRank = None,
                 flashbias_rank: BiasRank = None, deployment: Optional[bool] = None, **unknown: Any) -> None:
        super().__init__(dim, pdim, kernel_size, n_blocks, conv_blocks, window_size, num_heads, upscaling_factor,
                         exp_ratio, attn_type, True, unknown, streaming=streaming, bias_rank=bias_rank,
                         flashbias_rank=flashbias_rank, deployment=deployment)
        if upscaling_factor not in self.SCALES:
            raise ESCError(f'network_g (ESCReal): upscaling_factor must be 2 or 4, got {upscaling_factor}')
        self.plk_filter = nn.Parameter(torch.empty(pdim, pdim, kernel_size, kernel_size))
        nn.init.orthogonal_(self.plk_filter)
        self.skip = nn.Sequential(
            nn.Conv2d(3, dim * 2, 1),
            ReflectConv2d(dim * 2, dim * 2, 7, groups=dim * 2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(dim * 2, dim, 1),
        )
        stages = [nn.Upsample(scale_factor=2, mode='nearest'), nn.Conv2d(dim, dim, 3, padding=1), nn.LeakyReLU(0.2)]
        if upscaling_factor == 4:
            stages += [nn.Upsample(scale_factor=2, mode='nearest'), nn.Conv2d(dim, dim, 3, padding=1),
                       nn.LeakyReLU(0.2)]
        self.to_img = nn.Sequential(
            *stages,
            nn.Conv2d(dim, dim, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(dim, 3, 3, padding=1),
        )

    @classmethod
    def _recognise_own(cls, state_dict: Mapping[str, Any], options: Dict[str, Any]) -> None:
        """The scale, from the upsampler's keys: the ×4 one ends in ``to_img.8``, the ×2 one in ``to_img.5``."""
        scales = [scale for scale, last in ((4, 'to_img.8.weight'), (2, 'to_img.5.weight')) if last in state_dict]
        if not scales:
            raise ESCError('checkpoint is not an ESC-Real network: its upsampler ends in neither to_img.8 (x4) '
                           'nor to_img.5 (x2)')
        options['upscaling_factor'] = scales[0]

    def large_kernel(self) -> Tensor:
        return symmetric_average(self.plk_filter)

    def fuse(self, deep: Tensor, f0: Tensor, x: Tensor) -> Tensor:
        return self.last(deep) + f0 + self.skip(x)

    def reconstruct(self, feat: Tensor, x: Tensor) -> Tensor:
        return self.to_img(feat)


NETWORKS: Dict[str, type] = {'ESC': ESC, 'ESCFP': ESCFP, 'ESCReal': ESCReal}
"""The network classes by the ``type`` name option files use."""

VARIANTS: Dict[str, Dict[str, Any]] = {
    'ESC': dict(type='ESC', dim=64, pdim=16, kernel_size=13, n_blocks=5, conv_blocks=5, window_size=32, num_heads=4,
                exp_ratio=1.25),
    'ESC-light': dict(type='ESC', dim=64, pdim=16, kernel_size=13, n_blocks=3, conv_blocks=5, window_size=32,
                      num_heads=4, exp_ratio=1.25),
    'ESC-FP': dict(type='ESCFP', dim=48, pdim=16, kernel_size=13, n_blocks=5, conv_blocks=5, window_size=32,
                   num_heads=3, exp_ratio=1.25),
    'ESC-Real': dict(type='ESCReal', dim=64, pdim=16, kernel_size=13, n_blocks=10, conv_blocks=5, window_size=32,
                     num_heads=4, exp_ratio=2.0),
    'ESC-XL': dict(type='ESC', dim=192, pdim=48, kernel_size=13, n_blocks=8, conv_blocks=5, window_size=48,
                   num_heads=12, exp_ratio=1.25, use_ln=True),
    'ESC-Real-XL': dict(type='ESCReal', dim=128, pdim=32, kernel_size=13, n_blocks=16, conv_blocks=5, window_size=32,
                        num_heads=8, exp_ratio=2.0),
}
"""The paper's configurations (supplementary Sec. 6): ``build_variant('ESC-light', 4)``; and the larger ones the
official repository released after the paper: ESC-XL (its DF2K ×2 option files and weights) and ESC-Real-XL
(its ×4 real-world weights, configuration as its author gave it in the official issue tracker). A variant lists
the options that differ from its class's defaults; every other option keeps the default."""


def build_variant(name: str, upscaling_factor: int, **overrides: Any) -> nn.Module:
    """Build a named paper configuration at scale ``upscaling_factor``; ``overrides`` change any option."""
    if name not in VARIANTS:
        raise ESCError(f'variant {name!r} is unknown; choose one of {", ".join(VARIANTS)}')
    opt = {**VARIANTS[name], 'upscaling_factor': upscaling_factor, **overrides}
    return NETWORKS[opt.pop('type')](**opt)
