"""The networks, in plain torch: ``ESC`` (also ESC-light), ``ESCFP``, ``ESCReal``, ``ESCLTE`` (ESC+LTE,
arbitrary scale, :mod:`esc.archs.lte_arch`) and the paper's configurations (``build_variant``); the attention
backends (:mod:`esc.archs.attention`, FlashBias in :mod:`esc.archs.flashbias`).
``Bicubic`` (:mod:`esc.archs.bicubic_arch`) needs basicsr.

Importing this package does not import basicsr or torchvision, so inference pays for neither;
:mod:`esc.compat` registers the networks with basicsr's ``ARCH_REGISTRY`` for training and testing.
"""
from esc.archs import flashbias  # noqa: F401  (registers attn_type 'flashbias')
from esc.archs.esc_arch import ESC, ESCFP, NETWORKS, VARIANTS, ESCReal, build_variant
from esc.archs.lte_arch import ESCLTE

NETWORKS['ESCLTE'] = ESCLTE

__all__ = ['ESC', 'ESCFP', 'ESCLTE', 'ESCReal', 'NETWORKS', 'VARIANTS', 'build_variant']
