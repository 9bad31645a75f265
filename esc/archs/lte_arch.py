"""ESC+LTE (``ESCLTE``): the ESC backbone with LTE as the upsampler U, for arbitrary-scale SR (paper Sec. 4.3).

The backbone is ESC's (same blocks, C 64, N 5, M 5), built by :class:`esc.archs.esc_arch.ESC` itself:
F = conv3×3(H(F0)) + F0 at LR resolution. U is the local texture estimator of Lee & Jin (CVPR 2022) and
S a bilinear upsampling of the LR image (supplementary Sec. 6.2). The head follows the LTE paper:

- coefficient and frequency estimators: two 3×3 convs on F (C → 256 each); a phase estimator: a linear
  map without bias of the cell size (2 → 128), measured in latent-grid pixels;
- for each query and each of its four nearest latent codes (LIIF's local ensemble, shifted by
  ±half a latent pixel plus a small epsilon), the relative coordinate δ (in latent pixels) gives the
  128 phases ⟨freq_k, δ⟩ + phase(cell); cos(π·) and sin(π·) of them, times the coefficients, feed an
  MLP decoder (256 → 256 → 256 → 256 → 3, ReLU);
- the four predictions are blended with the areas of the diagonally opposite rectangles as weights.

The head is :class:`LTEHead`, one implementation for every encoder: :class:`ESCLTE` (ESC's backbone, its
parameters under ESC's own names) and :class:`LTE` (any registered network's feature body by configuration: the
paper's ATD-lt+LTE and HiT-SRF+LTE baselines, :data:`VARIANTS`). ``data_norm`` is LIIF/LTE's normalisation of input
and output, (0.5, 0.5) in the official esc_arb release, whose checkpoints (``{'model': {'name', 'args', 'sd'}}``)
:func:`read_official_container` maps to this layout (docs/official_files.md).

Only torch is needed here. Streaming (row-strip inference) is for fixed-scale forward passes and is
always off; use :meth:`ESCLTE.upscale` with ``chunk`` to bound the memory of large outputs.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esc.archs.esc_arch import ESC, NETWORKS, recognise_ablations
from esc.archs.layers import pad_to_multiple
from esc.archs.recognition import count_indices, first_recognised
from esc.io.state_dict_checks import tensor_shape
from esc.errors import ESCError


def make_coord(size: Tuple[int, int], device: Optional[torch.device] = None) -> Tensor:
    """Pixel-centre coordinates of an H×W grid in [−1, 1], as (H·W, 2) rows of (y, x) (LIIF's convention)."""
    axes = [(torch.arange(n, device=device, dtype=torch.float32) * 2 + 1) / n - 1 for n in size]
    return torch.stack(torch.meshgrid(*axes, indexing='ij'), dim=-1).reshape(-1, 2)


def output_size(size: Tuple[int, int], scale: float) -> Tuple[int, int]:
    """The SR size of an LR image at ``scale``: round(h·s) × round(w·s) (LIIF's HR crop of a ⌊H/s⌋ LR image)."""
    return round(size[0] * scale), round(size[1] * scale)


def check_scale(scale: Any, name: str = 'scale') -> float:
    """``scale`` as a float, or a one-line ESCError unless it is a finite number above 1."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 1:
        raise ESCError(f'{name}: must be a finite number above 1, got {scale!r}')
    return float(scale)


DataNorm = Optional[Sequence[float]]


def check_data_norm(value: Any, where: str) -> Optional[Tuple[float, float]]:
    """``data_norm`` as (sub, div), or None; a one-line ESCError unless it is two finite numbers with div ≠ 0."""
    if value is None:
        return None
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            or value[1] == 0):
        raise ESCError(f'{where}: data_norm must be [sub, div], two finite numbers with div not 0 (esc_arb: '
                       f'[0.5, 0.5]), got {value!r}')
    return float(value[0]), float(value[1])


class LTEHead:
    """LTE's head on any encoder, mixed into an ``nn.Module`` that defines :meth:`features` (LR-size features of
    ``feature_dim`` channels): the estimators and decoder (:meth:`build_lte_head`), the queries (:meth:`query`),
    ``forward(x, coord, cell)`` and whole-image :meth:`upscale`. One head for every encoder: ESC's
    (:class:`ESCLTE`) and those of the baselines (:class:`LTE`).

    ``data_norm`` (LIIF/LTE's ``data_norm``, the same for input and output): None, or (sub, div): the network sees
    (I_LR − sub) / div and its output is multiplied by div and shifted by sub. The official esc_arb runs use
    (0.5, 0.5), so their weights expect images in [−1, 1]; this project trains in [0, 1] (None).
    """

    fixed_scale = False
    upscaling_factor: Optional[int] = None  # one network for every scale
    coef: nn.Conv2d
    freq: nn.Conv2d
    phase: nn.Linear
    imnet: nn.Sequential

    def build_lte_head(self, feature_dim: int, hidden_dim: int, mlp_dims: Sequence[int], data_norm: DataNorm,
                       where: str) -> None:
        """Create the amplitude (coef), frequency and phase estimators and the MLP decoder (LTE, CVPR 2022)."""
        if not isinstance(hidden_dim, int) or isinstance(hidden_dim, bool) or hidden_dim < 2 or hidden_dim % 2:
            raise ESCError(f'{where}: hidden_dim must be a positive even integer, got {hidden_dim!r}')
        mlp_dims = list(mlp_dims) if isinstance(mlp_dims, (list, tuple)) else [mlp_dims]
        if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in mlp_dims):
            raise ESCError(f'{where}: mlp_dims must be positive integers, got {mlp_dims!r}')
        self.data_norm = check_data_norm(data_norm, where)
        self.hidden_dim = hidden_dim
        self.coef = nn.Conv2d(feature_dim, hidden_dim, 3, padding=1)
        self.freq = nn.Conv2d(feature_dim, hidden_dim, 3, padding=1)
        self.phase = nn.Linear(2, hidden_dim // 2, bias=False)
        layers: List[nn.Module] = []
        width = hidden_dim
        for out in mlp_dims:  # LTE's decoder: an MLP with ReLU, 256-256-256-256-3 in the paper's setting
            layers += [nn.Linear(width, out), nn.ReLU()]
            width = out
        layers.append(nn.Linear(width, 3))
        self.imnet = nn.Sequential(*layers)

    @staticmethod
    def recognise_head(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
        """LTE's head widths in a state dict: ``hidden_dim`` (the coefficient estimator's outputs) and ``mlp_dims``
        (every decoder layer's outputs but the last, RGB one). ``data_norm`` leaves no trace in the weights."""
        linears = count_indices(state_dict, r'imnet\.(\d+)\.weight')
        return dict(hidden_dim=tensor_shape(state_dict, 'coef.weight', 4)[0],
                    mlp_dims=[tensor_shape(state_dict, f'imnet.{2 * i}.weight', 2)[0] for i in range(linears - 1)])

    # --- encoder --------------------------------------------------------------------------------------------
    def features(self, x: Tensor, pad_multiple: Optional[int] = None) -> Tensor:
        """The encoder's LR-size features of a (normalised) LR batch; ``pad_multiple`` reflect-pads it first and
        the features are cropped back."""
        raise NotImplementedError

    def estimate(self, feat: Tensor) -> Tuple[Tensor, Tensor]:
        """LTE's amplitude and frequency maps of the latent codes, channels last: (B, h·w, 256) each."""
        return (self.coef(feat).flatten(2).transpose(1, 2).contiguous(),
                self.freq(feat).flatten(2).transpose(1, 2).contiguous())

    def normalize(self, x: Tensor) -> Tensor:
        """I_LR as the network sees it: (x − sub) / div under ``data_norm``, else x."""
        return x if self.data_norm is None else (x - self.data_norm[0]) / self.data_norm[1]

    def denormalize(self, out: Tensor) -> Tensor:
        """The network's output back in the image's range: out · div + sub under ``data_norm``, else out."""
        return out if self.data_norm is None else out * self.data_norm[1] + self.data_norm[0]

    # --- decoder --------------------------------------------------------------------------------------------
    def query(self, estimates: Tuple[Tensor, Tensor], feat_size: Tuple[int, int], x: Tensor, coord: Tensor,
              cell: Tensor) -> Tensor:
        """RGB at ``coord`` (B, Q, 2; (y, x) in [−1, 1]) for pixels of size ``cell`` (B, Q, 2): U + S, (B, Q, 3),
        in the normalised range of ``x``."""
        coef, freq = estimates
        b, q = coord.shape[:2]
        h, w = feat_size
        size = coord.new_tensor([h, w])
        batch = torch.arange(b, device=coord.device)[:, None]
        rel_cell = cell * size  # the cell in latent pixels: LTE's phase input
        phase = self.phase(rel_cell)
        preds, areas = [], []
        for vy in (-1, 1):  # LIIF/LTE local ensemble: the four latent codes around each query
            for vx in (-1, 1):
                shift = coord.new_tensor([vy / h, vx / w]) + 1e-6
                shifted = (coord + shift).clamp(-1 + 1e-6, 1 - 1e-6)
                index = ((shifted + 1) / 2 * size).floor().clamp_min(0).long().minimum((size - 1).long())
                latent = (index.to(coord.dtype) * 2 + 1) / size - 1  # the latent code's centre
                rel = (coord - latent) * size  # δ in latent pixels
                flat = index[..., 0] * w + index[..., 1]
                q_coef, q_freq = coef[batch, flat], freq[batch, flat]
                # LTE: pairs of frequencies dotted with δ, plus the phase of the cell; then cos/sin of π·
                angle = (q_freq.view(b, q, -1, 2) * rel.unsqueeze(-2)).sum(-1) + phase
                basis = torch.cat((torch.cos(math.pi * angle), torch.sin(math.pi * angle)), dim=-1)
                preds.append(self.imnet(q_coef * basis))
                areas.append((rel[..., 0] * rel[..., 1]).abs() + 1e-9)
        total = torch.stack(areas).sum(0)
        # each prediction is weighted by the area of the rectangle opposite to its latent code
        out = sum(p * (a / total).unsqueeze(-1) for p, a in zip(preds, reversed(areas)))
        skip = F.grid_sample(x, coord.flip(-1).unsqueeze(1), mode='bilinear', padding_mode='border',
                             align_corners=False)[:, :, 0].transpose(1, 2)  # S: bilinear I_LR at the queries
        return out + skip

    @staticmethod
    def check_queries(x: Tensor, coord: Tensor, cell: Tensor) -> None:
        """One-line ESCErrors for queries of the wrong shape, non-finite values or coordinates outside [−1, 1]."""
        for name, tensor in (('coord', coord), ('cell', cell)):
            if tensor.dim() != 3 or tensor.shape[0] != x.shape[0] or tensor.shape[2] != 2:
                raise ESCError(f'{name}: expected shape ({x.shape[0]}, Q, 2), got {tuple(tensor.shape)}')
            if not bool(torch.isfinite(tensor).all()):
                raise ESCError(f'{name}: holds non-finite values')
        if coord.shape[1] != cell.shape[1]:
            raise ESCError(f'cell: {cell.shape[1]} cells for {coord.shape[1]} coordinates')
        if coord.numel():
            low, high = torch.aminmax(coord)
            if low < -1 or high > 1:
                raise ESCError(f'coord: values must lie in [-1, 1] (pixel centres of the output), got '
                               f'[{low.item():.4g}, {high.item():.4g}]')
            if bool((cell <= 0).any()):
                raise ESCError('cell: sizes must be positive')

    def forward(self, x: Tensor, coord: Tensor, cell: Tensor) -> Tensor:
        """I_SR at the queries: LTE(F)(coord, cell) + bilinear(I_LR)(coord), shape (B, Q, 3)."""
        self.check_queries(x, coord, cell)
        x = self.normalize(x)
        feat = self.features(x)
        return self.denormalize(self.query(self.estimate(feat), feat.shape[-2:], x, coord, cell))

    def upscale(self, x: Tensor, size: Optional[Tuple[int, int]] = None, scale: Optional[float] = None,
                chunk: Optional[int] = None, cell_scale_max: Optional[float] = None,
                pad_multiple: Optional[int] = None) -> Tensor:
        """The whole SR image (B, 3, H, W) at ``size`` or ``scale`` (output round(h·s)×round(w·s)), queried
        ``chunk`` pixels at a time (None: all at once). ``cell_scale_max``: LTE's evaluation enlarges the cell by
        max(s / s_max, 1) beyond the largest training scale s_max (4 in the paper)."""
        h, w = x.shape[-2:]
        if (size is None) == (scale is None):
            raise ESCError('upscale: give exactly one of size and scale')
        if size is None:
            size = output_size((h, w), check_scale(scale))
        size = tuple(int(v) for v in size)
        if len(size) != 2 or min(size) < 1 or size[0] < h or size[1] < w:
            raise ESCError(f'size: {size} is smaller than the LR image ({h}, {w})')
        if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
            raise ESCError(f'chunk: must be a positive integer, got {chunk!r}')
        coord = make_coord(size, x.device).to(x.dtype)
        cell = coord.new_tensor([2 / size[0], 2 / size[1]])
        if cell_scale_max is not None:
            cell = cell * max(size[0] / h / check_scale(cell_scale_max, 'cell_scale_max'), 1.0)
        x = self.normalize(x)
        feat = self.features(x, pad_multiple)
        estimates = self.estimate(feat)
        b, n = x.shape[0], coord.shape[0]
        step = chunk or n
        out = torch.cat([
            self.query(estimates, feat.shape[-2:], x, coord[i:i + step].expand(b, -1, -1),
                       cell.expand(b, min(step, n - i), 2)) for i in range(0, n, step)
        ], dim=1)
        return self.denormalize(out.transpose(1, 2).reshape(b, 3, *size))


class ESCLTE(LTEHead, ESC):
    """ESC backbone + LTE upsampler + bilinear image skip: ``forward(x, coord, cell)`` → RGB at the queries.
    The backbone's parameters keep ESC's names (no ``encoder.`` prefix), as this project's checkpoints have them."""

    def __init__(self, dim: int = 64, pdim: int = 16, kernel_size: int = 13, n_blocks: int = 5, conv_blocks: int = 5,
                 window_size: int = 32, num_heads: int = 4, exp_ratio: float = 1.25, attn_type: str = 'auto',
                 use_ln: bool = False, share_lk: bool = True, dynamic_kernel: bool = True,
                 first_mixer: str = 'self_attn', inner_mixer: str = 'conv_attn', hidden_dim: int = 256,
                 mlp_dims: Sequence[int] = (256, 256, 256), data_norm: DataNorm = None, streaming: str = 'off',
                 **options: Any) -> None:
        if 'upscaling_factor' in options:
            raise ESCError('network_g (ESCLTE): upscaling_factor does not apply; ESCLTE serves every scale '
                           '(query it by coordinates and cells)')
        if streaming != 'off':
            raise ESCError(f"network_g (ESCLTE): streaming must be 'off' (row strips serve fixed-scale passes), "
                           f'got {streaming!r}')
        super().__init__(dim=dim, pdim=pdim, kernel_size=kernel_size, n_blocks=n_blocks, conv_blocks=conv_blocks,
                         window_size=window_size, num_heads=num_heads, upscaling_factor=None, exp_ratio=exp_ratio,
                         attn_type=attn_type, use_ln=use_ln, share_lk=share_lk, dynamic_kernel=dynamic_kernel,
                         first_mixer=first_mixer, inner_mixer=inner_mixer, streaming='off', **options)
        self.build_lte_head(dim, hidden_dim, mlp_dims, data_norm, 'network_g (ESCLTE)')

    @classmethod
    def _recognise_own(cls, state_dict: Mapping[str, Any], options: Dict[str, Any]) -> None:
        """ESC's ablation switches and LTE's head widths; no scale: one ESC+LTE serves every scale."""
        options.update(recognise_ablations(state_dict))
        options.update(cls.recognise_head(state_dict))

    def features(self, x: Tensor, pad_multiple: Optional[int] = None) -> Tensor:
        """F = conv3×3(H(F0)) + F0 at LR size (Eq. 1 without U and S); ``pad_multiple`` reflect-pads I_LR first
        and crops F back (the attention layers pad to whole windows by themselves, as the official ones do)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ESCError(f'x: expected an N×3×H×W LR image batch, got shape {tuple(x.shape)}')
        h, w = x.shape[-2:]
        padded = pad_to_multiple(x, pad_multiple) if pad_multiple else x
        f0 = self.proj(padded)
        return self.fuse(self.deep_features(f0), f0, padded)[..., :h, :w]


RECONSTRUCTION_MODULES = ('to_img', 'upsample', 'conv_before_upsample', 'conv_up1', 'conv_up2', 'conv_hr', 'conv_last',
                          'lrelu')
"""The parts of an SR network after its feature body (its upsampler U and last convs), which LTE replaces: an
:class:`LTE` encoder is built without them."""


class LTE(LTEHead, nn.Module):
    """LTE (with the bilinear image skip) on the feature body of any registered network: ``encoder`` holds that
    network's options (``type`` and constructor options, as in a ``network_g`` section), e.g. ATD-light or
    HiT-SRF for the paper's Table 5 and 6 baselines. The network must offer ``features(x)`` (its LR-size features,
    ``embed_dim`` channels, on ``x`` as given); its reconstruction modules (:data:`RECONSTRUCTION_MODULES`) are
    dropped. Parameters: ``encoder.*`` (the network's own names), then LTE's ``coef``, ``freq``, ``phase``,
    ``imnet.N``: esc_arb's layout but for the decoder's ``imnet.layers.N``. ESC's own encoder is
    :class:`ESCLTE` (its parameters without the ``encoder.`` prefix)."""

    def __init__(self, encoder: Mapping[str, Any], hidden_dim: int = 256, mlp_dims: Sequence[int] = (256, 256, 256),
                 data_norm: DataNorm = None) -> None:
        super().__init__()
        where = 'network_g (LTE)'
        if not isinstance(encoder, Mapping) or not isinstance(encoder.get('type'), str):
            raise ESCError(f"{where}: encoder must be a network's options with its type, got {encoder!r}")
        network = NETWORKS.get(encoder['type'])
        if network is None or encoder['type'] not in encoder_networks():
            usable = sorted(encoder_networks())
            raise ESCError(f"{where}: encoder.type {encoder['type']!r} is not a network with a feature body; "
                           f"choose one of {', '.join(usable)} (ESC's is ESCLTE)")
        try:
            self.encoder = network(**{k: v for k, v in encoder.items() if k != 'type'})
        except TypeError as exc:
            raise ESCError(f'{where}: encoder: {exc}') from None
        for name in RECONSTRUCTION_MODULES:
            if isinstance(getattr(self.encoder, name, None), nn.Module):
                delattr(self.encoder, name)
        self.window_size = getattr(self.encoder, 'window_size', None)
        self.build_lte_head(self.encoder.embed_dim, hidden_dim, mlp_dims, data_norm, where)

    @classmethod
    def recognise(cls, state_dict: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
        """An LTE's options where ``state_dict`` holds LTE's head (``coef``, ``imnet.0``) on ``encoder.*`` weights
        (None otherwise): the encoder's as its network reads them (``recognise_body``: its feature body, without
        the reconstruction modules LTE drops) and the head's widths. An LTE head on an encoder no network here
        reads is a one-line ESCError."""
        if 'coef.weight' not in state_dict or 'imnet.0.weight' not in state_dict:
            return None
        body = {key[len('encoder.'):]: value for key, value in state_dict.items() if key.startswith('encoder.')}
        if not body:
            return None
        encoder = first_recognised(encoder_networks().items(), body, method='recognise_body')
        if encoder is None:
            raise ESCError(f"checkpoint: an LTE head on encoder.* weights that are none of "
                           f"{', '.join(sorted(encoder_networks()))}")
        return dict(encoder=encoder, **cls.recognise_head(state_dict))

    def features(self, x: Tensor, pad_multiple: Optional[int] = None) -> Tensor:
        """The encoder's features of ``x`` at LR size; ``pad_multiple`` reflect-pads ``x`` first, cropped back."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ESCError(f'x: expected an N×3×H×W LR image batch, got shape {tuple(x.shape)}')
        h, w = x.shape[-2:]
        padded = pad_to_multiple(x, pad_multiple) if pad_multiple else x
        return self.encoder.features(padded)[..., :h, :w]


NETWORKS['LTE'] = LTE  # the package registers the others; LTE lives here with the head it shares


def encoder_networks() -> Dict[str, type]:
    """The registered networks an :class:`LTE` can take as its encoder, by name: those with a feature body
    (``features``) that are no LTE themselves."""
    return {name: network for name, network in NETWORKS.items()
            if callable(getattr(network, 'features', None)) and not issubclass(network, LTEHead)}


VARIANTS = {
    'ESC+LTE': dict(type='ESCLTE', dim=64, pdim=16, kernel_size=13, n_blocks=5, conv_blocks=5, window_size=32,
                    num_heads=4, exp_ratio=1.25, hidden_dim=256, mlp_dims=[256, 256, 256]),
}
ATD_LIGHT_ENCODER: Dict[str, Any] = dict(
    type='ATD', img_size=64, in_chans=3, embed_dim=48, depths=[6, 6, 6, 6], num_heads=[4, 4, 4, 4], window_size=16,
    category_size=128, num_tokens=64, reducted_dim=8, convffn_kernel_size=7, img_range=1.0, mlp_ratio=1,
    upscale=1, resi_connection='1conv')
"""ATD-light as esc_arb's ``ATDLight`` encoder builds it (no upscaling; its upsampler is dropped)."""
HITSRF_ENCODER: Dict[str, Any] = dict(
    type='HiT_SRF', img_size=64, in_chans=3, embed_dim=60, depths=[6, 6, 6, 6], num_heads=[6, 6, 6, 6],
    base_win_size=[8, 8], mlp_ratio=2.0, upscale=4, img_range=1.0, upsampler=None, resi_connection='1conv',
    hier_win_ratios=[0.5, 1, 2, 4, 6, 8])
"""HiT-SRF as esc_arb's ``HiTSRF`` encoder builds it (the constructor's defaults; no upsampler)."""
VARIANTS['ATD-lt+LTE'] = dict(type='LTE', encoder=ATD_LIGHT_ENCODER, hidden_dim=256, mlp_dims=[256, 256, 256])
VARIANTS['HiT-SRF+LTE'] = dict(type='LTE', encoder=HITSRF_ENCODER, hidden_dim=256, mlp_dims=[256, 256, 256])
"""The paper's arbitrary-scale configurations (supplementary Sec. 6.2: ESC's C 64, N 5, M 5 with LTE as U; the
Table 5 and 6 baselines ATD-lt+LTE and HiT-SRF+LTE with the same head). Kept apart from
:data:`esc.archs.esc_arch.VARIANTS`, whose entries are built at a fixed scale."""


# --- the official esc_arb checkpoints -------------------------------------------------------------------------
OFFICIAL_DATA_NORM = [0.5, 0.5]
"""The ``data_norm`` (sub, div) of every official esc_arb training and test configuration, for input and output
alike; the checkpoint itself does not record it."""
OFFICIAL_ENCODERS: Dict[str, Dict[str, Any]] = {
    name: {key: value for key, value in VARIANTS[variant].items() if key not in ('hidden_dim', 'mlp_dims')}
    for name, variant in (('esc', 'ESC+LTE'), ('ATDLight', 'ATD-lt+LTE'), ('HiTSRF', 'HiT-SRF+LTE'))
}
"""The esc_arb encoder names this project reads, with the network options (less LTE's head) they stand for. The
official encoders take no size options: each constructor always builds the paper's configuration."""
OFFICIAL_ENCODER_ARGS = {'esc': ('no_upsampling', 'deployment'), 'ATDLight': ('no_upsampling',),
                         'HiTSRF': ('no_upsampling',)}
"""The arguments each official encoder accepts; none of them changes the weights."""


def is_official_container(checkpoint: Any) -> bool:
    """Whether a loaded checkpoint is an esc_arb (LIIF/LTE code) file: ``{'model': {'name', 'args', 'sd'}, ...}``
    (training files add ``optimizer`` and ``epoch``)."""
    return (isinstance(checkpoint, dict) and isinstance(checkpoint.get('model'), dict)
            and 'sd' in checkpoint['model'])


def _spec(value: Any, where: str, source: str) -> Tuple[str, Dict[str, Any]]:
    """A LIIF-style ``{'name', 'args'}`` spec as (name, args), or one line naming what is wrong with it."""
    if not isinstance(value, dict) or not isinstance(value.get('name'), str):
        raise ESCError(f"{source}: {where} must be a {{'name', 'args'}} spec, got {type(value).__name__}")
    args = value.get('args') or {}
    if not isinstance(args, dict):
        raise ESCError(f'{source}: {where}.args must be a mapping, got {type(args).__name__}')
    return value['name'], args


def official_network(model: Mapping[str, Any], source: str = 'checkpoint') -> Dict[str, Any]:
    """The network options (``type`` ESCLTE or LTE, and constructor options) of an esc_arb ``model`` spec: LTE
    (``name: lte``) with ``hidden_dim``, an ``mlp`` decoder (``hidden_list``, ``out_dim`` 3) and an encoder
    named in :data:`OFFICIAL_ENCODERS`; ``data_norm`` is the official one. ``source`` names the file in errors."""
    name, args = _spec(model, "'model'", source)
    if name != 'lte':
        raise ESCError(f"{source}: an esc_arb '{name}' model; this project reads LTE models ('lte') only")
    unknown = sorted(set(args) - {'encoder_spec', 'imnet_spec', 'hidden_dim'})
    if unknown:
        raise ESCError(f"{source}: model.args has unknown key(s) {', '.join(unknown)} (LTE takes encoder_spec, "
                       'imnet_spec, hidden_dim)')
    encoder, encoder_args = _spec(args.get('encoder_spec'), 'model.args.encoder_spec', source)
    if encoder not in OFFICIAL_ENCODERS:
        raise ESCError(f"{source}: encoder '{encoder}' is not one of {', '.join(OFFICIAL_ENCODERS)}")
    extra = sorted(set(encoder_args) - set(OFFICIAL_ENCODER_ARGS[encoder]))
    if extra:
        raise ESCError(f"{source}: encoder '{encoder}' has unknown argument(s) {', '.join(extra)}")
    imnet, imnet_args = _spec(args.get('imnet_spec'), 'model.args.imnet_spec', source)
    if imnet != 'mlp' or imnet_args.get('out_dim') != 3 or not isinstance(imnet_args.get('hidden_list'), list):
        raise ESCError(f"{source}: the decoder must be an 'mlp' with out_dim 3 and a hidden_list, got '{imnet}' "
                       f'{imnet_args}')
    return {**OFFICIAL_ENCODERS[encoder], 'hidden_dim': args.get('hidden_dim', 256),
            'mlp_dims': list(imnet_args['hidden_list']), 'data_norm': list(OFFICIAL_DATA_NORM)}


def from_official_layout(state_dict: Mapping[str, Any], network: Mapping[str, Any],
                         source: str = 'checkpoint') -> Dict[str, Any]:
    """An esc_arb state dict in this project's layout for ``network``: the decoder's ``imnet.layers.N`` are
    ``imnet.N``; ESCLTE's backbone drops the ``encoder.`` prefix; an :class:`LTE` keeps it, less the encoder's
    reconstruction modules (the official ATD and HiT-SRF encoders build an unused ``conv_last``). Every other key
    (``coef``, ``freq``, ``phase``) is the same."""
    prefix = 'encoder.' if network.get('type') == 'ESCLTE' else ''
    unused = tuple(f'encoder.{name}.' for name in RECONSTRUCTION_MODULES) if not prefix else ()
    mapped: Dict[str, Any] = {}
    for key, value in state_dict.items():
        if unused and key.startswith(unused):
            continue
        if key.startswith('imnet.layers.'):
            mapped['imnet.' + key[len('imnet.layers.'):]] = value
        elif prefix and key.startswith(prefix):
            mapped[key[len(prefix):]] = value
        elif key.split('.')[0] in ('coef', 'freq', 'phase', 'encoder'):
            mapped[key] = value
        else:
            raise ESCError(f"{source}: key {key!r} is not part of an esc_arb LTE model (encoder.*, coef, freq, "
                           'phase, imnet.layers.*)')
    return mapped


def read_official_container(checkpoint: Mapping[str, Any],
                            source: str = 'checkpoint') -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """An esc_arb checkpoint (:func:`is_official_container`) as (state dict in this project's layout, network
    options): what esc_arb's ``models.make(checkpoint['model'], load_sd=True)`` builds."""
    model = checkpoint['model']
    network = official_network(model, source)
    if not isinstance(model['sd'], dict):
        raise ESCError(f"{source}: model.sd must be a state dict, got {type(model['sd']).__name__}")
    return from_official_layout(model['sd'], network, source), network
