"""Upscale images with a trained ESC checkpoint: ``esc.load_model(path).upscale(image)``.

The network and its options are read off the checkpoint's state dict (official release files with
``params``/``params_ema``, this project's own, or a bare state dict, as ``.pth`` or ``.safetensors``): which
variant (ESC, ESCFP, ESCReal, ESCLTE), its widths and depths, window size and heads, the Table 3 ablation
switches and the scale — except for ESC+LTE, which serves any scale (non-integer ones too) and is told the one
to use. Safetensors files written here record the options and scale in their metadata, which is read instead.
Images are NumPy arrays as people have them: H×W grayscale, H×W×2 grayscale and alpha, H×W×3 RGB or H×W×4
RGBA; uint8, uint16 or float in [0, 1]. Only torch is needed (no basicsr, no torchvision).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esc.acceleration import autocast, check_dtype
from esc.archs import recognise_network
from esc.archs.attention import describe_attention, network_layout
from esc.archs.esc_arch import NETWORKS, VARIANTS
from esc.archs.lte_arch import VARIANTS as LTE_VARIANTS, check_scale
from esc.errors import ESCError
from esc.io.checkpoint import read_checkpoint
from esc.io.memory_estimate import (ESTIMATED_TYPES, LTE_CHUNK, Workload, check_memory, parameter_count,
                                    window_workload)
from esc.io.state_dict_checks import check_against_network, check_weights
from esc.utils.tiling import DEFAULT_OVERLAP, tiled_forward

DEVICES = ('auto', 'cpu', 'cuda')


def resolve_device(name: str) -> str:
    """'auto' → 'cuda' where available, else 'cpu'; 'cuda' without a GPU is an ESCError."""
    if name not in DEVICES:
        raise ESCError(f"device {name!r} is unknown; choose one of {', '.join(DEVICES)}")
    if name == 'auto':
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    if name == 'cuda' and not torch.cuda.is_available():
        raise ESCError('device cuda: no CUDA device is available (use --device cpu or auto)')
    return name


def scale_option(network_type: str) -> Optional[str]:
    """The constructor option that holds a registered network's scale (``scale_option``: 'upscaling_factor' for the
    ESC family, 'upscale' for the baselines); None for a network that serves every scale (ESC+LTE, LTE)."""
    network = NETWORKS[network_type]
    return getattr(network, 'scale_option', 'upscaling_factor') if getattr(network, 'fixed_scale', True) else None


def network_scale(options: Mapping[str, Any]) -> Optional[float]:
    """The scale network options (``type`` included) build their network at; None where they leave it open."""
    option = scale_option(options['type'])
    return options.get(option) if option else None


def detect_network(state_dict: Mapping[str, Tensor], scale: Optional[float] = None) -> Dict[str, Any]:
    """The network options (``type`` plus constructor arguments) a state dict was trained with, as the registered
    networks read themselves (:func:`esc.archs.recognise_network`: each class's ``recognise``, most specific
    first); a FlashBias state dict (factorised position biases, :mod:`esc.archs.attention`) gives ``bias_rank``
    and ``attn_type``.

    ``scale`` is needed only where the checkpoint does not tell it; a one-line :class:`ESCError` lists
    the candidates then, and says what is missing when the state dict is no network known here.
    """
    opt = recognise_network(state_dict)
    if opt is None:
        raise ESCError('checkpoint is not an ESC network (no proj.weight / blocks.0.*)')
    if scale_option(opt['type']) is None:  # one network for every scale: it is the caller's
        if scale is not None:
            check_scale(scale)
        return opt
    if network_scale(opt) is None and scale is None:
        raise ESCError('checkpoint does not tell its scale (no to_img.weight); candidates: 2, 3, 4 — pass the scale')
    return _with_requested_scale(opt, scale)


def _with_requested_scale(opt: Dict[str, Any], scale: Optional[float]) -> Dict[str, Any]:
    """``opt`` with its scale option (``upscaling_factor``, a baseline's ``upscale``) set to ``scale`` where the
    checkpoint left it open; refused where it differs."""
    option = scale_option(opt['type'])
    if scale is not None and opt.setdefault(option, scale) != scale:
        raise ESCError(f'checkpoint is a x{opt[option]} {opt["type"]}; it cannot upscale x{scale}')
    return opt


def checkpoint_network(state_dict: Mapping[str, Tensor], metadata: Mapping[str, Any], scale: Optional[float] = None,
                       source: str = 'checkpoint') -> Dict[str, Any]:
    """The network options of a checkpoint: those its metadata records (``esc.network`` and ``esc.scale`` of a
    safetensors file this project wrote, :mod:`esc.io.checkpoint`), else :func:`detect_network`'s reading of
    the state dict. How the network ran where it was written (``attn_type``, ``streaming``) is left to where it
    runs now, except that factorised biases (``bias_rank``) run on FlashBias. ``source`` names the file in errors."""
    recorded = metadata.get('network')
    if recorded is None:
        try:
            return detect_network(state_dict, scale)
        except ESCError as exc:  # detection's messages name the tensors at fault, not the file
            raise ESCError(str(exc) if str(exc).startswith(source) else f'{source}: {exc}') from None
    if not isinstance(recorded, dict) or recorded.get('type') not in NETWORKS:
        kind = recorded.get('type') if isinstance(recorded, dict) else type(recorded).__name__
        raise ESCError(f"{source}: metadata esc.network names a {kind}, not one of {', '.join(NETWORKS)}")
    opt = {key: value for key, value in recorded.items() if key not in ('attn_type', 'streaming')}
    if opt.get('bias_rank') is not None:
        opt['attn_type'] = 'flashbias'
    if not getattr(NETWORKS[opt['type']], 'fixed_scale', True):  # ESC+LTE: the scale is the caller's
        if scale is not None:
            check_scale(scale)
        return opt
    recorded_scale, option = metadata.get('scale'), scale_option(opt['type'])
    if opt.get(option) is None:
        opt[option] = recorded_scale
    elif recorded_scale is not None and recorded_scale != opt[option]:
        raise ESCError(f"{source}: metadata disagrees with itself: esc.scale is {recorded_scale}, esc.network's "
                       f"{option} {opt[option]}")
    if opt[option] is None:
        opt[option] = network_scale(detect_network(state_dict, scale))
    return _with_requested_scale(opt, scale)


RUN_OPTIONS = ('attn_type', 'streaming', 'bias_rank', 'upscaling_factor', 'data_norm')
"""Network options that say how or at which scale a network runs, or the value range its weights expect (ESC+LTE's
``data_norm``), not which configuration it is."""


def variant_name(options: Mapping[str, Any]) -> str:
    """The name of a named configuration ('ESC-light', 'ESC-XL', ...) that ``options`` (detected or read off a
    checkpoint) are, or '<type> (custom)'. Every architecture option counts: a variant is its listed options over
    its class's defaults, so an ESC with, say, ``use_ln`` is no longer 'ESC'."""
    for name, config in {**VARIANTS, **LTE_VARIANTS}.items():
        if options.get('type') != config['type']:
            continue
        defaults = {key: parameter.default for key, parameter in
                    inspect.signature(NETWORKS[config['type']].__init__).parameters.items()
                    if parameter.default is not inspect.Parameter.empty}
        expected = {**defaults, **config}
        if all(_same_option(value, expected[key]) for key, value in options.items()
               if key in expected and key not in RUN_OPTIONS):
            return name
    return f"{options['type']} (custom)"


def _same_option(value: Any, expected: Any) -> bool:
    """Option equality where a list and a tuple of the same items agree (YAML and JSON give lists)."""
    if isinstance(value, (list, tuple)) and isinstance(expected, (list, tuple)):
        return list(value) == list(expected)
    return value == expected


NETWORK_BYTES_PER_PIXEL = 1024
"""The network's working memory per LR pixel when an image runs whole (measured: about 0.84 GB per megapixel)."""


class Upscaler:
    """A loaded network with how to run it: device, precision and optional tiling (see :func:`load_model`);
    ``progress`` shows a bar over the tiles of a tiled image. ``scale``: ESC+LTE's output scale (any number
    above 1); fixed-scale networks have their own."""

    def __init__(self, net: nn.Module, options: Mapping[str, Any], device: torch.device, precision: str = 'fp32',
                 tile: Optional[int] = None, tile_overlap: int = DEFAULT_OVERLAP, progress: bool = False,
                 scale: Optional[float] = None, source: Optional[str] = None) -> None:
        self.net, self.options, self.device = net, dict(options), device
        self.source = source
        """The checkpoint the weights came from (named when the output is not finite)."""
        self.arbitrary = not getattr(net, 'fixed_scale', True)
        if self.arbitrary and scale is None:
            raise ESCError(f'scale: {variant_name(options)} serves any scale above 1; say which (--scale 2.5)')
        self.scale: float = check_scale(scale) if self.arbitrary else network_scale(options)
        self.name = variant_name(options)
        self.precision, self.tile, self.tile_overlap = precision, tile, tile_overlap
        self.progress = progress
        self.attention: List[str] = describe_attention(net, device, training=False)
        """Which attention backend runs here, and why (one line per configuration)."""

    def __repr__(self) -> str:
        tiling = f', tile {self.tile}/{self.tile_overlap}' if self.tile else ''
        return f'Upscaler({self.name} x{self.scale:g}, {self.device}, {self.precision}{tiling})'

    def upscale_tensor(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) RGB in [0, 1] → (N, 3, r·H, r·W) (ESC+LTE: round(r·H) × round(r·W)), float32, clamped to
        [0, 1]."""
        tiled = self.tile and max(x.shape[-2:]) > self.tile
        height, width = (min(side, self.tile) for side in x.shape[-2:]) if tiled else x.shape[-2:]
        check_memory(self.options, Workload(height, width, x.shape[0], scale=self.scale,
                                            description=f"{'tiles of ' if tiled else 'a '}{width}×{height} image"),
                     f'model: {self.source}' if self.source else 'model', self.device, self.name)
        x = x.to(self.device, torch.float32)
        if tiled and self.arbitrary:
            raise ESCError(f'tile: ESC+LTE is not tiled (its decoder already runs {LTE_CHUNK} pixels at a time); '
                           f'this {x.shape[-1]}x{x.shape[-2]} image exceeds --tile {self.tile}: raise it or use 0')
        with torch.inference_mode(), autocast(self.device.type, self.precision):
            if self.arbitrary:  # esc_arb's evaluation: the image unpadded, the cell clipped beyond the training scales
                out = self.net.upscale(x, scale=self.scale, chunk=LTE_CHUNK, cell_scale_max=4)
            elif tiled:
                out = tiled_forward(self.net, x, self.scale, self.tile, self.tile_overlap, self.progress,
                                    align=getattr(self.net, 'window_size', 1))
            else:
                out = self.net(x)
            out = out.float()
            if not bool(torch.isfinite(out).all()):
                raise ESCError(self._non_finite_reason())
            return out.clamp_(0, 1)

    def _non_finite_reason(self) -> str:
        """Why an output holds NaN or infinity, in one line: the weights, or fp16's range."""
        weights = f'the checkpoint {self.source}' if self.source else 'the weights'
        overflow = ' or fp16 overflowing (try --precision bf16 or fp32)' if self.precision == 'fp16' else ''
        return f'the network output holds NaN or infinite values: {weights} is likely damaged{overflow}'

    def bytes_per_input_pixel(self, channels: int = 3, bytes_per_channel: int = 1) -> int:
        """Host memory one LR pixel costs while it is upscaled (an estimate that errs high): the decoded image and
        its float copy, the float output, the tile blending weights and the encoded result; without tiling, also
        the network's features (about 0.84 GB per LR megapixel on the CPU's row-strip path, rounded up)."""
        area = math.ceil(self.scale) ** 2
        per_pixel = channels * (bytes_per_channel + 4) + area * (4 * channels + 4 + 2 * channels * bytes_per_channel)
        return per_pixel + (0 if self.tile else NETWORK_BYTES_PER_PIXEL)

    def upscale(self, image: np.ndarray) -> np.ndarray:
        """Upscale an H×W, H×W×1 (grey), H×W×2 (grey and alpha), H×W×3 (RGB) or H×W×4 (RGBA) image; the result
        has its layout and dtype.

        uint8 and uint16 keep their range; float images are taken as [0, 1]. Grayscale goes through the
        network as three equal channels and comes back as their mean; alpha is upscaled bicubically on
        its own.
        """
        array = np.asarray(image)
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 2, 3, 4)):
            raise ESCError(f'image: expected H×W, H×W×1, H×W×2, H×W×3 or H×W×4, got shape {array.shape}')
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise ESCError(f'image: empty ({array.shape[0]}×{array.shape[1]})')
        if array.dtype == np.uint8 or array.dtype == np.uint16:
            peak = float(np.iinfo(array.dtype).max)
        elif np.issubdtype(array.dtype, np.floating):
            peak = 1.0
        else:
            raise ESCError(f'image: dtype {array.dtype} is not supported (uint8, uint16 or float in [0, 1])')
        planes = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32) / peak)
        planes = planes[..., None] if planes.ndim == 2 else planes
        channels = planes.shape[-1]
        chw = planes.permute(2, 0, 1)[None]
        colour = chw[:, :3] if channels >= 3 else chw[:, :1].expand(-1, 3, -1, -1)
        out = self.upscale_tensor(colour).cpu()
        if channels < 3:
            out = out.mean(dim=1, keepdim=True)
        if channels in (2, 4):
            alpha = F.interpolate(chw[:, -1:], size=out.shape[-2:], mode='bicubic', align_corners=False)
            out = torch.cat([out, alpha.clamp_(0, 1)], dim=1)
        if peak != 1.0:
            with torch.inference_mode():  # in place (no second full-size float copy) on an inference tensor
                out = out.mul_(peak).round_()
        result = out[0].permute(1, 2, 0).numpy()
        if array.ndim == 2:
            result = result[..., 0]
        return result.astype(array.dtype, copy=False)


@dataclass
class CheckedNetwork:
    """A state dict that passed :func:`check_network_state`: the network options it was read as (``type``
    included), the class and constructor options to build it with, and the state dict in that network's layout."""

    options: Dict[str, Any]
    network: type
    config: Dict[str, Any]
    state_dict: Dict[str, Any]
    description: str


DECLARED_VALUES_SHARE = 0.1
"""A file must hold at least this share of the parameters of the network it declares (position biases counted as
tables): fewer is no checkpoint of it, refused before the network's layout is built."""


def check_network_state(state_dict: Mapping[str, Any], metadata: Mapping[str, Any], source: str,
                        scale: Optional[float] = None, arch: Optional[str] = None,
                        overrides: Optional[Mapping[str, Any]] = None, workload: Optional[Workload] = None,
                        device: Any = 'cpu') -> CheckedNetwork:
    """The checks every surface runs on network weights before building their network, in this order, each a
    one-line ESCError naming ``source``: tensors with values of their own (no stride-0 or empty ones), finite
    floating-point weights, the network they are (metadata or detection; ``arch`` and ``scale`` checked,
    ``overrides`` applied), its options bounded and its estimated memory for ``workload`` (default: one attention
    window) within what ``device`` has (:func:`esc.io.memory_estimate.check_memory`), the file holding about
    as many values as that network has parameters, then every key and shape against the network built on the meta
    device (FlashBias tables factorised to the layout first)."""
    check_weights(state_dict, source, integer_tables=True)  # index tables: checked against the network below
    detected = checkpoint_network(state_dict, metadata, scale, source=source)
    scale_text = f' x{network_scale(detected)}' if network_scale(detected) else ''
    if arch is not None:
        if arch not in NETWORKS:
            raise ESCError(f"arch: {arch!r} is not one of {', '.join(NETWORKS)}")
        if arch != detected['type']:
            raise ESCError(f"arch: {source.partition(': ')[2] or source} is an {variant_name(detected)}{scale_text} "
                           f"checkpoint ({detected['type']}), not an {arch}")
    detected.update(overrides or {})
    description = f'{variant_name(detected)}{scale_text}'
    check_memory(detected, workload or window_workload(detected, scale=scale), source, device, description)
    _check_declared_size(detected, state_dict, source, description)
    config = dict(detected)
    network = NETWORKS[config.pop('type')]
    layout = network_layout(network, config, state_dict)  # FlashBias: earlier factor names, tables factorised
    check_against_network(network, config, layout, source, description)
    return CheckedNetwork(detected, network, config, layout, description)


def _check_declared_size(options: Mapping[str, Any], state_dict: Mapping[str, Tensor], source: str,
                         description: str) -> None:
    """Refuse a file holding far fewer values than the network it declares has parameters (a few tensors claiming
    thousands of blocks), before that network's layout is built."""
    if options.get('type') not in ESTIMATED_TYPES:
        return
    as_tables = {key: value for key, value in options.items() if key not in ('bias_rank', 'flashbias_rank',
                                                                             'attn_type')}
    try:
        needed = parameter_count(as_tables)
    except (TypeError, ValueError, KeyError, ZeroDivisionError):  # options the network's own checks refuse
        return
    held = sum(value.numel() for value in state_dict.values())
    if held < DECLARED_VALUES_SHARE * needed:
        raise ESCError(f'{source}: holds {held:,} values; the {description} network it declares has {needed:,} '
                       'parameters')


def load_model(path: str, scale: Optional[float] = None, arch: Optional[str] = None, device: str = 'auto',
               precision: str = 'fp32', tile: Optional[int] = None, tile_overlap: int = DEFAULT_OVERLAP,
               param_key: str = 'params_ema', workload: Optional[Workload] = None, **options: Any) -> Upscaler:
    """Read a checkpoint, build the network it was trained as and return an :class:`Upscaler`.

    ``arch`` (ESC, ESCFP, ESCReal, ESCLTE) and ``options`` (any network option, e.g. ``attn_type``) override
    what is detected; ``scale`` must be the checkpoint's, or for ESC+LTE any number above 1 (required).
    ``tile`` (LR pixels) bounds memory on large images. The file is opened by :func:`read_checkpoint` and checked
    by :func:`check_network_state` before the network is built; its memory is estimated for ``workload`` (default:
    a tile, or without tiling one attention window; each image is estimated again when it is upscaled).
    """
    target = torch.device(resolve_device(device))
    check_dtype(precision, target.type, option='precision')
    if tile is not None and (tile < 8 or not 0 <= tile_overlap < tile):
        raise ESCError(f'tile: need a tile of at least 8 pixels and 0 <= overlap < tile, got {tile} / {tile_overlap}')
    state_dict, metadata = read_checkpoint(path, param_key, option='model')
    source = f'model: {path}'
    if workload is None and tile is not None:
        workload = Workload(tile, tile, scale=scale, description=f'tiles of {tile}×{tile} LR pixels')
    checked = check_network_state(state_dict, metadata, source, scale, arch, options, workload, target)
    del state_dict
    try:
        net = checked.network(**checked.config)
    except TypeError as exc:
        raise ESCError(f'{source}: {exc}') from None
    try:
        net.load_state_dict(checked.state_dict, strict=True)
    except ESCError as exc:
        raise ESCError(f'{source}: {exc}') from None
    return Upscaler(net.eval().to(target), checked.options, target, precision, tile, tile_overlap, scale=scale,
                    source=path)
