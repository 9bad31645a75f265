"""Sanity checks on a checkpoint before a network is built from it.

A checkpoint is data from anywhere: a ``.pth`` may hold numbers or lists where tensors belong, a 0-d tensor where a
convolution weight belongs, or NaN; a safetensors file's metadata may declare a network far larger than the
tensors it carries (``dim: 20000`` would allocate gigabytes before ``load_state_dict`` says a word). Each check here
ends in a one-line :class:`~esc.errors.ESCError` naming the key at fault, and none allocates a network: the declared
network is built on PyTorch's ``meta`` device, which records shapes and holds no memory, after its options have
been bounded so that even that build stays quick.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Type

import torch
from torch import Tensor, nn

from esc.errors import ESCError

OPTION_LIMITS = {'dim': 2048, 'pdim': 2048, 'kernel_size': 63, 'n_blocks': 256, 'conv_blocks': 64, 'window_size': 256,
                 'num_heads': 256, 'upscaling_factor': 16, 'exp_ratio': 16, 'hidden_dim': 8192}
"""The largest value each network option may take: about ten times the largest released network's (ESC-XL: dim
192, window 48, 12 heads; ESC-Real-XL: 16 blocks); anything beyond is a damaged or hostile file, not a network."""
MLP_LIMITS = (64, 8192)
"""ESC+LTE's ``mlp_dims``: at most this many layers, each at most this wide."""


def check_tensors(state_dict: Mapping[Any, Any], source: str) -> None:
    """Every key of ``state_dict`` is a string and every value a tensor with values of its own
    (:func:`check_storage`); otherwise one line naming the key. Nothing here reads a tensor's values."""
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise ESCError(f'{source}: the state dict has a key {key!r} of type {type(key).__name__}, not a name')
        if not isinstance(value, Tensor):
            raise ESCError(f'{source}: {key} is not a tensor but {type(value).__name__}')
        check_storage(value, key, source)


def check_storage(tensor: Tensor, key: str, source: str) -> None:
    """``tensor`` holds at least one value and no more values than the bytes behind it: a file may rebuild a tensor
    of 40000×40000 elements from a 4-byte storage with stride 0, which costs nothing until a check or a copy reads
    it (6.4 GB then). Weights never share or repeat storage this way; refused in one line naming the key, before
    any value is read."""
    if tensor.numel() == 0:
        raise ESCError(f'{source}: {key} is empty (shape {tuple(tensor.shape)}); no network weight has zero values')
    if tensor.device.type == 'meta':
        return
    declared = tensor.numel() * tensor.element_size()
    held = tensor.untyped_storage().nbytes() - tensor.storage_offset() * tensor.element_size()
    if declared > held:
        raise ESCError(f'{source}: {key} declares {tensor.numel():,} values ({declared:,} bytes, shape '
                       f'{tuple(tensor.shape)}, stride {tuple(tensor.stride())}) over {max(held, 0):,} bytes of '
                       'storage; the checkpoint is damaged or hostile')


def check_weights(state_dict: Mapping[str, Any], source: str, integer_tables: bool = False) -> None:
    """The values a network's weights can be: tensors of floating point, with at least one dimension, all finite.

    Non-finite weights would make every output NaN (written as black images); a 0-d tensor or an integer one is no
    ESC parameter. ``integer_tables``: integer tensors are let through, as the index tables some networks hold
    (SRFormer's and ATD's position indices); the caller then holds them against the network's own
    (:func:`check_against_network` compares the kinds)."""
    check_tensors(state_dict, source)
    for key, value in state_dict.items():
        if integer_tables and not value.is_floating_point() and not value.is_complex() and value.dtype != torch.bool:
            continue
        if not value.is_floating_point():
            raise ESCError(f'{source}: {key} holds {str(value.dtype).replace("torch.", "")} values, not floating-point '
                           'weights')
        if value.dim() == 0:
            raise ESCError(f'{source}: {key} is a single number (a 0-d tensor), not a weight')
        if not bool(torch.isfinite(value).all()):
            raise ESCError(f'{source}: {key} holds NaN or infinite values; the checkpoint is damaged')


def tensor_shape(state_dict: Mapping[str, Tensor], key: str, rank: int,
                 network: str = 'an ESC network') -> Tuple[int, ...]:
    """The shape of ``state_dict[key]``, which must have ``rank`` dimensions (one line naming the key otherwise;
    ``network`` names the kind of network that has the key, for the networks' ``recognise``)."""
    value = state_dict.get(key)
    if value is None:
        raise ESCError(f'checkpoint: {key} is missing; {network} has it')
    if not isinstance(value, Tensor):
        raise ESCError(f'checkpoint: {key} is not a tensor but {type(value).__name__}')
    if value.dim() != rank:
        raise ESCError(f'checkpoint: {key} has shape {tuple(value.shape)}; {network}\'s has {rank} dimensions')
    if value.numel() == 0:
        raise ESCError(f'checkpoint: {key} is empty (shape {tuple(value.shape)})')
    return tuple(value.shape)


def check_option_bounds(options: Mapping[str, Any], source: str, per_group: Sequence[str] = ()) -> None:
    """Every size option in ``options`` (declared in metadata or read off the tensors) within :data:`OPTION_LIMITS`;
    those named in ``per_group`` (a baseline's ``num_heads``, one per group) may be a list, bounded item by item."""
    for key, limit in OPTION_LIMITS.items():
        value = options.get(key)
        if value is None:
            continue
        for item in (value if key in per_group and isinstance(value, (list, tuple)) and value else [value]):
            if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
                raise ESCError(f'{source}: network option {key} is {value!r}, not a number')
            if not 0 < item <= limit:
                raise ESCError(f'{source}: network option {key} is {value}; a sane ESC network has 0 < {key} <= '
                               f'{limit}')
    mlp = options.get('mlp_dims')
    if mlp is not None:
        layers, width = MLP_LIMITS
        if (not isinstance(mlp, (list, tuple)) or len(mlp) > layers
                or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= width for v in mlp)):
            raise ESCError(f'{source}: network option mlp_dims is {mlp!r}; a sane one is at most {layers} '
                           f'whole numbers from 1 to {width}')


@dataclass
class Misfits:
    """How a state dict differs from a network's own, key by key, in the network's order: ``problems`` holds each
    of the network's keys that does not fit once, as (key, 'missing' | 'shape' | 'kind'), a shape that differs
    being reported before a kind of value (floating point or integer) that does; ``unexpected`` the state dict's
    keys the network does not have, in the state dict's order."""

    problems: List[Tuple[str, str]] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)

    def of(self, *kinds: str) -> List[str]:
        """The keys with a problem of one of ``kinds``, in the network's order."""
        return [key for key, kind in self.problems if kind in kinds]

    def first(self, *kinds: str) -> Optional[Tuple[str, str]]:
        """The first (key, kind) of the problems of one of ``kinds``, or None."""
        return next(((key, kind) for key, kind in self.problems if kind in kinds), None)


def state_dict_misfits(own: Mapping[str, Tensor], state_dict: Mapping[str, Any]) -> Misfits:
    """Compare ``state_dict`` with a network's own state dict ``own`` (keys, shapes and kinds of value; a value
    without a shape counts as shape ()): the one comparison behind :func:`check_state_dict_fits` and
    :func:`check_against_network`, which word the first misfit each in their own way."""
    misfits = Misfits()
    for key, value in own.items():
        if key not in state_dict:
            misfits.problems.append((key, 'missing'))
        elif tuple(getattr(state_dict[key], 'shape', ())) != tuple(value.shape):
            misfits.problems.append((key, 'shape'))
        elif getattr(state_dict[key], 'is_floating_point', value.is_floating_point)() != value.is_floating_point():
            misfits.problems.append((key, 'kind'))
    misfits.unexpected = [key for key in state_dict if key not in own]
    return misfits


def check_state_dict_fits(network_name: str, own: Mapping[str, Tensor], state_dict: Mapping[str, Any]) -> None:
    """``state_dict`` holds exactly the keys of a network's own state dict ``own``, each of its shape; otherwise one
    line naming the first key that does not fit (what strict ``load_state_dict`` checks, said in one line)."""
    misfits = state_dict_misfits(own, state_dict)
    first = misfits.first('missing', 'shape')
    if first is not None:
        key, kind = first
        if kind == 'missing':
            raise ESCError(f'checkpoint does not fit {network_name}: key {key!r} is missing '
                           f"({len(misfits.of('missing'))} missing in all)")
        got = tuple(getattr(state_dict[key], 'shape', ()))
        raise ESCError(f'checkpoint does not fit {network_name}: {key!r} has shape {got} in the checkpoint '
                       f'but {tuple(own[key].shape)} in the network')
    if misfits.unexpected:
        raise ESCError(f'checkpoint does not fit {network_name}: unexpected key {misfits.unexpected[0]!r} '
                       f'({len(misfits.unexpected)} unexpected in all)')


def check_against_network(network: Type[nn.Module], config: Mapping[str, Any], state_dict: Mapping[str, Tensor],
                          source: str, description: str) -> None:
    """The tensors of ``state_dict`` are those of ``network(**config)``, key for key and shape for shape (and kind
    of value: an integer table where a weight belongs is refused), as :func:`state_dict_misfits` compares them: the
    network is built on the meta device (no memory), so a declaration that disagrees with the file costs nothing.
    ``description`` names the declared network in the message (e.g. 'ESC-light x2'); the options the network
    takes one per group (``per_group_options``) are bounded item by item."""
    check_option_bounds(config, source, getattr(network, 'per_group_options', ()))
    try:
        with torch.device('meta'):
            own = network(**config).state_dict()
    except TypeError as exc:
        raise ESCError(f'{source}: {exc}') from None
    misfits = state_dict_misfits(own, state_dict)
    first = misfits.first('shape', 'kind')  # in the network's order: the first layer that disagrees is named
    if first is not None:
        key, kind = first
        if kind == 'shape':
            raise ESCError(f'{source}: {key} is {tuple(state_dict[key].shape)} in the file; the {description} '
                           f'network it declares needs {tuple(own[key].shape)}')
        held = str(state_dict[key].dtype).replace('torch.', '')
        raise ESCError(f'{source}: {key} holds {held} values; the {description} network it declares holds '
                       f"{str(own[key].dtype).replace('torch.', '')} there")
    missing = misfits.of('missing')
    if missing:
        more = f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''
        raise ESCError(f'{source}: {missing[0]}{more} missing; the {description} network it declares has it')
    if misfits.unexpected:
        unexpected = misfits.unexpected
        more = f' (and {len(unexpected) - 1} more)' if len(unexpected) > 1 else ''
        raise ESCError(f'{source}: {unexpected[0]}{more} is no parameter of the {description} network it declares')
