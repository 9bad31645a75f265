"""ESC in spandrel, the loader behind chaiNNer and ComfyUI: ``esc.spandrel.install()``, then
``spandrel.ModelLoader().load_from_file(path)`` opens ESC checkpoints like any other architecture.

spandrel hands an architecture nothing but the state dict (the file's ``params_ema``, else ``params``, else the
file itself; safetensors metadata is dropped), so the network is read off the parameter names and shapes as every
other entry point reads it: each registered network's ``recognise``, asked in turn by
:func:`esc.archs.recognise_network` (the official layouts of ESC, ESC-light, ESC-FP, ESC-Real, ESC-XL, ESC-Real-XL,
FlashBias, and this project's files, ``.pth`` or ``.safetensors``). The hook serves the ESC family
(:data:`SERVED`); the paper's baselines, which the registry recognises too, are left to spandrel's own
architectures (ATD) or to ``esc.load_model``. The descriptor runs the network as it is: its attention pads each
feature map to whole windows itself, so any image size is accepted as given (no size requirement) and the stored
official outputs are reproduced. ESC+LTE serves any scale, which a spandrel descriptor (one integer scale) cannot
express; it is refused in one line.

spandrel is an optional extra (``pip install -e .[spandrel]``); importing this module without it is a one-line
:class:`~esc.errors.ESCError`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from torch import nn

from esc.archs import NETWORKS, recognise_network
from esc.errors import ESCError
from esc.upscaler import check_network_state, detect_network, variant_name

try:
    from spandrel import (MAIN_REGISTRY, ArchRegistry, ArchSupport, Architecture, ImageModelDescriptor, ModelTiling,
                          SizeRequirements, StateDict)
except ImportError:
    raise ESCError('esc.spandrel needs spandrel (tested: 0.4.2): pip install -e .[spandrel]') from None

ARCH_ID = 'ESC'
SERVED = ('ESC', 'ESCFP', 'ESCReal', 'ESCLTE')
"""The registered networks this hook claims: the ESC family (ESC+LTE only to refuse it in one line)."""
SOURCE = 'spandrel: ESC state dict'
"""How errors name what they are about: spandrel passes no file name."""
SUPPORTS_HALF = True
"""fp16 weights and images: tested on the CPU against fp32 (tests/test_spandrel.py); not run on CUDA here."""
SUPPORTS_BFLOAT16 = True
"""bf16 weights and images: tested on the CPU against fp32 (tests/test_spandrel.py); not run on CUDA here."""


def is_esc_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """Whether ``state_dict`` is the network of the ESC family (:data:`SERVED`) that
    :func:`esc.archs.recognise_network` finds, or bears ESC's names with a tensor missing or damaged (which
    :meth:`ESCArch.load` then refuses in one line)."""
    try:
        found = recognise_network(state_dict)
    except ESCError:  # ESC's names with a tensor missing or damaged: loading it says which, in one line
        return 'proj.weight' in state_dict and any(key.startswith('blocks.0.convffns.') for key in state_dict)
    except (KeyError, IndexError, AttributeError):  # another architecture's names or shapes
        return False
    return found is not None and found['type'] in SERVED


def descriptor_tags(options: Mapping[str, Any]) -> List[str]:
    """spandrel tags for detected network options: the variant's name, width, depth, window and any FlashBias rank."""
    tags = [variant_name(options), f"{options['dim']}nf", f"{options['n_blocks']}nb"]
    if 'window_size' in options:  # the Table 3 ablations without self-attention have no window
        tags.append(f"w{options['window_size']}")
    rank = options.get('bias_rank')
    if rank is not None:
        ranks = sorted(set(rank)) if isinstance(rank, (list, tuple)) else [rank]
        tags.append('FlashBias r' + '/'.join(map(str, ranks)))
    return tags


class ESCArch(Architecture[nn.Module]):
    """ESC for spandrel's registry: detection and loading from a state dict alone."""

    def __init__(self) -> None:
        super().__init__(id=ARCH_ID, name='ESC', detect=is_esc_state_dict)

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[nn.Module]:
        """The network the state dict is, checked as ``esc.load_model`` checks a file
        (:func:`esc.upscaler.check_network_state`: tensors with storage of their own, finite floating-point weights,
        the memory the network needs for its smallest input, every key and shape) before it is built, in a spandrel
        descriptor."""
        try:
            options: Dict[str, Any] = dict(detect_network(state_dict))
        except ESCError as exc:
            raise ESCError(f'{SOURCE}: {exc}') from None
        if options['type'] not in SERVED:
            raise ESCError(f"{SOURCE}: a {options['type']}, not a network of the ESC family; esc.load_model opens it")
        if not getattr(NETWORKS[options['type']], 'fixed_scale', True):
            raise ESCError(f'{variant_name(options)} upscales to any scale, a spandrel model has one integer scale: '
                           "use esc.load_model(path, scale=...) or esc/commands/upscale.py --scale")
        checked = check_network_state(state_dict, {}, SOURCE)  # esc.load_model's checks, before any allocation
        try:
            net = checked.network(**checked.config)
        except TypeError as exc:
            raise ESCError(f'{SOURCE}: {exc}') from None
        options = checked.options
        return ImageModelDescriptor(
            net.eval(), checked.state_dict, architecture=self, purpose='SR', tags=descriptor_tags(options),
            supports_half=SUPPORTS_HALF, supports_bfloat16=SUPPORTS_BFLOAT16, scale=options['upscaling_factor'],
            input_channels=3, output_channels=3, size_requirements=SizeRequirements(), tiling=ModelTiling.SUPPORTED)


def install(registry: Optional[ArchRegistry] = None) -> ArchSupport:
    """Add ESC to ``registry`` (spandrel's ``MAIN_REGISTRY``, which ``ModelLoader()`` uses, by default) and return its
    entry; a registry that already holds ESC keeps the entry it has, so calling this twice is harmless."""
    registry = MAIN_REGISTRY if registry is None else registry
    if ARCH_ID not in registry:
        registry.add(ArchSupport.from_architecture(ESCArch()))
    return registry[ARCH_ID]
