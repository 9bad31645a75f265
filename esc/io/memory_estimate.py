"""What an ESC network costs in memory, estimated from its options before anything is allocated.

A checkpoint or an option file declares a network by its options, and the memory that network takes grows much
faster than any one option: the dense position bias of a window attention layer is heads × ws² × ws² numbers
(window 128: 4.3 GB for four heads), a naive attention holds that many scores for every window it computes at
once, and ``dim: 200000`` or ``n_blocks: 100000`` is terabytes of weights. Bounding the options one by one
(:func:`esc.io.state_dict_checks.check_option_bounds`) keeps the arithmetic here quick; :func:`check_memory`
then compares an estimate of the whole cost — weights, and the peak of the activations for the input size, batch,
tiling and attention backend the network will run with (:class:`Workload`) — with the memory the device has free,
and refuses in one line before a tensor is allocated.

The estimate is arithmetic on the options, not a measurement, and errs high: the parameters are counted
analytically (:func:`parameter_count`, exact for the ESC family: ``ESC``, ``ESCFP``, ``ESCReal``, ``ESCLTE``;
tests/test_hostile_checkpoints.py checks it against built networks); the activations count the feature maps each
execution path keeps alive at once (row-strip streaming on the CPU keeps three, a plain pass about a dozen,
training every layer's inputs for the backward pass), the dense bias where the backend reads one, and the scores
where the backend materialises them (``naive``, and the ONNX graphs of :mod:`esc.commands.export`). Other networks
(the baselines) are not estimated.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

import torch

from esc.archs.streaming import STRIP_PIXELS
from esc.errors import ESCError
from esc.io.state_dict_checks import check_option_bounds

FLOAT_BYTES = 4
"""Every figure is for float32 (autocast halves some activations; the estimate does not count on it)."""
ESTIMATED_TYPES = ('ESC', 'ESCFP', 'ESCReal', 'ESCLTE')
LTE_CHUNK = 30000
"""ESC+LTE: output pixels queried per pass (LTE's evaluation setting, which :class:`esc.upscaler.Upscaler` runs),
which bounds the decoder's memory."""
LTE_EVALUATION_SCALE = 4
"""The output scale ESC+LTE is estimated at where the workload does not say (the largest it was trained for)."""


@dataclass(frozen=True)
class Workload:
    """What the network will be run on: ``batch`` LR images of ``height`` × ``width`` (a tile's size where the
    image is tiled), for ``training`` or inference. ``attention`` forces the attention backend (the ONNX graphs of
    an export compute every score, as ``naive``); ``streaming`` False rules out row-strip streaming (None: as the
    network would choose). ``description`` names it in messages ('a 32×32 image', 'training patches of 64×64')."""

    height: int
    width: int
    batch: int = 1
    training: bool = False
    attention: Optional[str] = None
    streaming: Optional[bool] = None
    description: str = ''
    scale: Optional[float] = None
    """ESC+LTE's output scale (fixed-scale networks have their own)."""

    @property
    def text(self) -> str:
        if self.description:
            return self.description
        batch = f'{self.batch} × ' if self.batch != 1 else ''
        return f"{'training on ' if self.training else ''}{batch}{self.width}×{self.height} LR pixels"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a network takes for a :class:`Workload`: its weights (with their copies: the checkpoint read and the
    network; for training also gradients, optimizer moments and the EMA copy) and its activations' peak."""

    parameters: int
    weights: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.activations


def format_bytes(count: float) -> str:
    for unit, size in (('TB', 1e12), ('GB', 1e9), ('MB', 1e6)):
        if count >= size:
            return f'{count / size:.1f} {unit}'
    return f'{count / 1e3:.0f} KB'


def _options_with_defaults(options: Mapping[str, Any]) -> Dict[str, Any]:
    from esc.archs import NETWORKS

    network = NETWORKS[options['type']]
    defaults = {key: parameter.default for key, parameter in inspect.signature(network.__init__).parameters.items()
                if parameter.default is not inspect.Parameter.empty}
    return {**defaults, **{key: value for key, value in options.items() if value is not None or key not in defaults}}


def _layer_ranks(opt: Mapping[str, Any], layers: int, head_dim: int) -> List[Optional[int]]:
    """Each self-attention layer's FlashBias rank (None: a bias table), as the network reads its options."""
    from esc.archs.attention import default_rank, normalize_attn_type

    rank = opt.get('flashbias_rank')
    rank = opt.get('bias_rank') if rank is None else rank
    if rank is None:
        try:
            flashbias = normalize_attn_type(opt.get('attn_type', 'auto')) == 'flashbias'
        except ESCError:
            flashbias = False
        rank = default_rank(head_dim, opt['window_size'] ** 2) if flashbias else None
    if isinstance(rank, (list, tuple)):
        ranks = [int(r) if isinstance(r, (int, float)) else None for r in rank]
        return (ranks + [max((r for r in ranks if r), default=None)] * layers)[:layers]
    return [int(rank) if isinstance(rank, (int, float)) else None] * layers


class _Shape:
    """The sizes :func:`parameter_count` and :func:`estimate_memory` read off a network's options."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        opt = _options_with_defaults(options)
        kind = opt['type']
        self.kind = kind
        self.dim, self.pdim, self.kernel = int(opt['dim']), int(opt['pdim']), int(opt['kernel_size'])
        self.blocks, self.conv_blocks = int(opt['n_blocks']), int(opt['conv_blocks'])
        self.window, self.heads = int(opt['window_size']), int(opt['num_heads'])
        self.exp_ratio = float(opt['exp_ratio'])
        self.scale = opt.get('upscaling_factor')
        self.first_ratio = 1.5 if kind == 'ESCFP' else 2.0
        self.norm_before_ffns = kind in ('ESCFP', 'ESCReal') or bool(opt.get('use_ln', False))
        self.first_mixer = opt.get('first_mixer', 'self_attn')
        self.inner_mixer = opt.get('inner_mixer', 'conv_attn')
        self.share_lk = bool(opt.get('share_lk', True))
        self.dynamic = bool(opt.get('dynamic_kernel', True))
        self.attn_type = opt.get('attn_type', 'auto')
        self.streaming = opt.get('streaming', 'auto')
        self.hidden = int(self.dim * self.exp_ratio)
        self.first_hidden = int(self.dim * self.first_ratio)
        per_block = (self.first_mixer == 'self_attn') + self.conv_blocks * (self.inner_mixer == 'self_attn')
        self.attention_layers = self.blocks * per_block
        self.conv_attn_layers = self.blocks * ((self.first_mixer == 'conv_attn')
                                               + self.conv_blocks * (self.inner_mixer == 'conv_attn'))
        self.head_dim = max(1, self.dim // max(self.heads, 1))
        self.ranks = _layer_ranks(opt, self.attention_layers, self.head_dim)
        self.lte_hidden = int(opt.get('hidden_dim') or 0)
        self.mlp_dims = [int(v) for v in (opt.get('mlp_dims') or [])]


def _ffn(dim: int, hidden: int) -> int:
    return dim * hidden + hidden + 9 * hidden + hidden + hidden * dim + dim  # 1×1, 3×3 depthwise, 1×1


def _kernel_generator(pdim: int, hidden: int) -> int:
    return pdim * hidden + hidden + hidden * 9 * pdim + 9 * pdim


def parameter_count(options: Mapping[str, Any]) -> int:
    """The number of parameters of the ESC-family network ``options`` declare (``type`` and constructor options),
    counted from the options alone (no network is built)."""
    s = _Shape(options)
    d, p, k = s.dim, s.pdim, s.kernel
    ranks = iter(s.ranks)

    def self_attn() -> int:
        rank = next(ranks, None)
        bias = s.heads * (2 * s.window - 1) ** 2 if rank is None else 2 * s.heads * s.window ** 2 * rank
        return 4 * d * d + 4 * d + bias

    def conv_attn() -> int:
        if s.kind == 'ESCFP':
            large_kernel = _kernel_generator(p, p // 4)
        else:
            large_kernel = (_kernel_generator(p, p // 2) if s.dynamic else 0) + (0 if s.share_lk else p * p * k * k)
        return d * d + d + large_kernel

    mixers = {'self_attn': self_attn, 'conv_attn': conv_attn}
    total = 27 * d + d + 9 * d * d + d  # proj, last
    for _ in range(s.blocks):
        total += 2 * d + _ffn(d, s.first_hidden) + 2 * d + mixers[s.first_mixer]()
        for _ in range(s.conv_blocks):
            total += 2 * d * s.norm_before_ffns + _ffn(d, s.hidden) + mixers[s.inner_mixer]()
        total += 2 * d + 9 * d * d + d
    uses_conv_attn = 'conv_attn' in (s.first_mixer, s.inner_mixer)
    to_img = 9 * d * 3 * (s.scale or 1) ** 2 + 3 * (s.scale or 1) ** 2
    if s.kind in ('ESC', 'ESCLTE'):
        total += p * p * k * k * (s.share_lk and uses_conv_attn)
        if s.kind == 'ESC':
            total += to_img
        else:
            hidden = s.lte_hidden
            total += 2 * (9 * d * hidden + hidden) + hidden  # coef, freq, phase (2 → hidden/2, no bias)
            width = hidden
            for out in [*s.mlp_dims, 3]:
                total += width * out + out
                width = out
    elif s.kind == 'ESCFP':
        total += p * p + p * k * k + 2 * d + to_img
    else:  # ESCReal
        total += 3 * 2 * d + 2 * d + 2 * d * 49 + 2 * d + 2 * d * d + d  # skip
        stages = 2 if s.scale == 4 else 1
        total += p * p * k * k + stages * (9 * d * d + d) + 9 * d * d + d + 9 * d * 3 + 3
    return total


def _backend(shape: _Shape, workload: Workload, device: torch.device, rank: Optional[int]) -> str:
    """The attention backend a layer runs for ``workload`` on ``device`` (the conservative 'naive' where unsure)."""
    if workload.attention is not None:
        return workload.attention
    from esc.archs.attention import choose_backend, normalize_attn_type

    try:
        return choose_backend(normalize_attn_type(shape.attn_type), device.type, shape.head_dim, workload.training,
                              'table' if rank is None else 'factors')[0]
    except ESCError:
        return 'naive'


def estimate_memory(options: Mapping[str, Any], workload: Workload, device: Any = 'cpu') -> MemoryEstimate:
    """Bytes the ESC-family network ``options`` declare takes to run ``workload`` on ``device`` (see the module
    doc); the options must be bounded first (:func:`check_memory` does)."""
    s = _Shape(options)
    device = torch.device(device)
    parameters = parameter_count(options)
    weight_copies = 5 if workload.training else 2  # training: weights, gradients, two Adam moments, the EMA copy
    window = s.window if s.attention_layers else 1
    padded_h, padded_w = -(-workload.height // window) * window, -(-workload.width // window) * window
    pixels = workload.batch * padded_h * padded_w
    d, maps = s.dim, FLOAT_BYTES * workload.batch * padded_h * padded_w
    scale = s.scale or workload.scale or LTE_EVALUATION_SCALE
    output = FLOAT_BYTES * workload.batch * 3 * math.ceil(workload.height * scale) * math.ceil(workload.width * scale)
    streamed = (not workload.training and device.type == 'cpu' and s.kind != 'ESCLTE'
                and s.streaming != 'off' and workload.streaming is not False)
    backends = {_backend(s, workload, device, rank) for rank in s.ranks} if s.attention_layers else set()
    positions = window * window
    bias = FLOAT_BYTES * s.heads * positions * positions if backends & {'sdpa', 'naive'} else 0
    windows_total = workload.batch * (padded_h // window) * (padded_w // window)
    at_once = workload.batch * (padded_w // window) if streamed else windows_total
    scores = FLOAT_BYTES * s.heads * positions * positions * at_once * 2 if 'naive' in backends else 0
    if workload.training:
        per_conv_block = (d + 3 * s.hidden) + (2 * d + s.pdim) + d * s.norm_before_ffns
        per_block = (d + 3 * s.first_hidden) + 4 * d + s.conv_blocks * per_conv_block
        saved = maps * (s.blocks * per_block + 4 * d + 2 * s.attention_layers * 3 * d)
        if 'naive' in backends:
            scores = scores * s.attention_layers  # every layer's scores are kept for the backward pass
        elif backends:
            scores = 2 * FLOAT_BYTES * s.heads * positions * positions  # one window's probabilities at a time
        activations = saved + 2 * maps * (2 * d + 3 * max(s.hidden, s.first_hidden)) + 3 * output + bias + scores
    elif streamed:
        strip = FLOAT_BYTES * min(pixels, workload.batch * STRIP_PIXELS) * (2 * d + 3 * max(s.hidden, s.first_hidden))
        row = FLOAT_BYTES * workload.batch * window * padded_w * 5 * d  # one row of windows: qkv and output
        activations = 3 * d * maps + strip + row + output + bias + scores
    else:
        activations = maps * (6 * d + 3 * max(s.hidden, s.first_hidden) + 4 * d) + output + bias + scores
        if s.kind == 'ESCLTE':  # the decoder's queries, a chunk at a time: four ensembles of its widest layer
            widest = max([s.lte_hidden, *s.mlp_dims, 1])
            activations += FLOAT_BYTES * workload.batch * LTE_CHUNK * widest * 4 * 3 + 2 * maps // d * s.lte_hidden
    return MemoryEstimate(parameters, FLOAT_BYTES * parameters * weight_copies, int(activations))


def memory_limit(device: Any = 'cpu') -> int:
    """Bytes a network may take on ``device``: :data:`~esc.io.images.MEMORY_SHARE` of the memory available
    now (host memory, :func:`~esc.io.images.available_memory`; a CUDA device's free memory)."""
    from esc.io.images import FALLBACK_MEMORY, MEMORY_SHARE  # imported here: esc.io.images needs OpenCV

    device = torch.device(device)
    if device.type == 'cuda' and torch.cuda.is_available():
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = available_memory() or FALLBACK_MEMORY
    return int(free * MEMORY_SHARE)


def available_memory() -> Optional[int]:
    """:func:`esc.io.images.available_memory` (imported when asked: esc.io.images needs OpenCV, which the networks
    and the spandrel hook do not)."""
    from esc.io import images

    return images.available_memory()


def check_memory(options: Mapping[str, Any], workload: Workload, source: str, device: Any = 'cpu',
                 description: Optional[str] = None) -> Optional[MemoryEstimate]:
    """Refuse, in one line naming ``source``, the estimate and the limit, a network whose estimated memory for
    ``workload`` exceeds :func:`memory_limit`; the options are bounded first (one line naming the option). Returns
    the estimate (None for a network outside the ESC family, which is neither bounded nor estimated: the bounds
    are ESC's, and a baseline's options, e.g. SRFormer's per-group ``num_heads`` list, mean other things)."""
    if options.get('type') not in ESTIMATED_TYPES:
        return None
    check_option_bounds(options, source)
    try:
        estimate = estimate_memory(options, workload, device)
    except (TypeError, ValueError, KeyError, ZeroDivisionError) as exc:  # options the network itself refuses
        if isinstance(exc, ESCError):
            raise
        return None
    limit = memory_limit(device)
    if estimate.total > limit:
        name = description or options['type']
        raise ESCError(f'{source}: the {name} network it declares needs about {format_bytes(estimate.total)} for '
                       f'{workload.text} ({estimate.parameters:,} parameters: {format_bytes(estimate.weights)}; '
                       f'activations {format_bytes(estimate.activations)}), more than the '
                       f'{format_bytes(limit)} this machine can give; nothing was allocated')
    return estimate


def window_workload(options: Mapping[str, Any], batch: int = 1, scale: Optional[float] = None) -> Workload:
    """The smallest input a network runs: one attention window (every image is padded to whole windows), where
    the input size is not known yet."""
    window = options.get('window_size')
    side = int(window) if isinstance(window, int) and not isinstance(window, bool) and window > 0 else 32
    return Workload(side, side, batch, scale=scale, description=f'its smallest input (one {side}×{side} window)')

