"""Window self-attention with a relative position bias, and its interchangeable backends.

Every backend computes, inside each ws×ws window, softmax(q·kᵀ/√d + B)·v (:mod:`.base` states it with the
registry and the choice among backends); ``attn_type`` picks which, and all give the same numbers (tested to 1e-4):

- ``naive``: explicit matmul + softmax + matmul, the reference (:mod:`.naive`).
- ``sdpa``:  fused attention with B as an additive mask; on the CPU a bias-aware backward for training (:mod:`.sdpa`).
- ``flex``:  FlexAttention reading the bias table inside the kernel, compiled once for every input size (:mod:`.flex`).
- ``flashbias``: B held as low-rank factors appended to q and k, mask-free fused attention (:mod:`.flashbias`;
  layers built with the networks' ``flashbias_rank``/``bias_rank`` option).
- ``auto``:  the fastest backend that works where the network runs (:func:`choose_backend` says which and why):
  flex on CUDA where its kernel compiles (Triton present, head dim ≥ 16), otherwise sdpa.

The official spellings ``Flex``, ``SDPA``, ``Naive`` and ``FlashBias`` are accepted (:data:`OFFICIAL_ATTN_TYPES`).
The layers (:class:`WindowAttention`, :class:`FactorisedWindowAttention`) and the factory the networks build them with
(:func:`window_attention`) are in :mod:`.layer`. A new backend is a module beside these: subclass
:class:`AttentionBackend`, decorate it with :func:`register_backend`, and import the module here.

Modules import one way: ``base`` ← the backends ← ``layer`` ← this package, which imports every backend so that
the registry is complete whatever a caller imports.
"""
from esc.archs.attention.base import (BACKENDS, BIAS_INIT_STD, OFFICIAL_ATTN_TYPES, AttentionBackend, attn_types,
                                      bias_form_conflict, choose_backend, normalize_attn_type, register_backend,
                                      relative_position_bias, relative_position_index, resolve_attn_type)
from esc.archs.attention.naive import NaiveBackend, naive_attention
from esc.archs.attention.sdpa import FusedBiasAttention, SDPABackend, sdpa_attention
from esc.archs.attention.flex import FLEX_MIN_HEAD_DIM_CUDA, FlexBackend, flex_attention, flex_attention_available
from esc.archs.attention.flashbias import (EARLIER_FACTOR_NAMES, FACTOR_NAMES, SVD, BiasRank, Factors,
                                           FlashBiasBackend, bias_ranks, decompose, default_rank, factorise,
                                           flashbias_attention, layer_ranks, network_bias_rank, query_factors)
from esc.archs.attention.layer import (FactorisedWindowAttention, WindowAttention, adapt_state_dict,
                                       describe_attention, network_layout, window_attention)

__all__ = [
    'BACKENDS', 'BIAS_INIT_STD', 'EARLIER_FACTOR_NAMES', 'FACTOR_NAMES', 'FLEX_MIN_HEAD_DIM_CUDA',
    'OFFICIAL_ATTN_TYPES', 'SVD',
    'AttentionBackend', 'BiasRank', 'FactorisedWindowAttention', 'Factors', 'FlashBiasBackend', 'FlexBackend',
    'FusedBiasAttention', 'NaiveBackend', 'SDPABackend', 'WindowAttention', 'adapt_state_dict', 'attn_types',
    'bias_form_conflict', 'bias_ranks', 'choose_backend', 'decompose', 'default_rank', 'describe_attention',
    'factorise', 'flashbias_attention', 'flex_attention', 'flex_attention_available', 'layer_ranks',
    'naive_attention', 'network_bias_rank', 'network_layout', 'normalize_attn_type', 'query_factors',
    'register_backend', 'relative_position_bias', 'relative_position_index', 'resolve_attn_type', 'sdpa_attention',
    'window_attention',
]
