"""Reading a network's options off its state dict: the small key and shape helpers the networks' ``recognise``
classmethods share, and the walk over a registry that asks each network in turn.

Every network class in :data:`esc.archs.NETWORKS` offers ``recognise(state_dict)``, defined beside the class: the
constructor options that rebuild the network a state dict was saved from, or None where the state dict is not that
network's (its marker keys are absent). A state dict that bears a network's markers but whose tensors contradict
them (a key missing, a shape of the wrong rank) is that network's, damaged: ``recognise`` says so in a one-line
:class:`~esc.errors.ESCError` naming the key, rather than passing it on to another network. Options a state dict
cannot tell (dropout rates, the training patch size where no tensor is sized by it) are left to the constructor's
defaults. Recognisers never allocate: they read names and shapes only.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from torch import Tensor

from esc.errors import ESCError


def count_indices(state_dict: Mapping[str, Any], pattern: str) -> int:
    """How many distinct values the first group of ``pattern`` takes over the keys it matches from their start
    (``r'blocks\\.(\\d+)\\.'`` counts the blocks)."""
    return len({match.group(1) for key in state_dict for match in [re.match(pattern, key)] if match})


def group_depths(state_dict: Mapping[str, Any], group: str, member: str) -> List[int]:
    """How many ``member`` modules each of the numbered ``group`` modules holds, group by group: ``group`` and
    ``member`` are key prefixes with a '{}' where the index goes, e.g. ``'layers.{}.'`` and
    ``'residual_group.blocks.{}.'`` give SwinIR-style depths."""
    groups = count_indices(state_dict, re.escape(group).replace(r'\{\}', r'(\d+)'))
    inner = re.escape(member).replace(r'\{\}', r'(\d+)')
    return [count_indices(state_dict, re.escape(group.format(index)) + inner) for index in range(groups)]


def whole_ratio(numerator: int, denominator: int) -> float:
    """``numerator / denominator`` as an int where it is whole (mlp_ratio 2 reads back as 2, not 2.0)."""
    ratio = numerator / denominator
    return int(ratio) if ratio.is_integer() else ratio


def first_recognised(networks: Iterable[Tuple[str, type]], state_dict: Mapping[str, Tensor],
                     method: str = 'recognise') -> Optional[Dict[str, Any]]:
    """The options (``type`` first, then the constructor's) of the first of ``networks`` (name, class), in the order
    given, whose ``method`` claims ``state_dict``; None where none does. A network that claims it but finds it
    damaged ends the walk with its one-line error."""
    for name, network in networks:
        recognise = getattr(network, method, None)
        options = recognise(state_dict) if recognise is not None else None
        if options is not None:
            return {'type': name, **options}
    return None


def require(condition: bool, message: str) -> None:
    """A recogniser's consistency check: ``message`` (prefixed 'checkpoint: ') as a one-line ESCError unless
    ``condition`` holds."""
    if not condition:
        raise ESCError(f'checkpoint: {message}')
