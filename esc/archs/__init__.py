"""The networks, in plain torch: ``ESC`` (also ESC-light), ``ESCFP``, ``ESCReal``, ``ESCLTE`` (ESC+LTE,
arbitrary scale, :mod:`esc.archs.lte_arch`) and the paper's configurations (``build_variant``); the attention
backends (:mod:`esc.archs.attention`, FlashBias in :mod:`esc.archs.flashbias`).
``Bicubic`` (:mod:`esc.archs.bicubic_arch`) needs basicsr. The paper's baselines, for its comparisons:
``SRFormer`` (SRFormer-light, :mod:`esc.archs.srformer_arch`), ``HiT_SRF`` (HiT-SRF, :mod:`esc.archs.hitsrf_arch`),
``ATD`` (ATD-light, :mod:`esc.archs.atd_arch`).

Importing this package does not import basicsr or torchvision, so inference pays for neither;
:mod:`esc.compat` registers the networks with basicsr's ``ARCH_REGISTRY`` for training and testing.
"""
from esc.archs import flashbias  # noqa: F401  (registers attn_type 'flashbias')
from esc.archs.esc_arch import ESC, ESCFP, NETWORKS, VARIANTS, ESCReal, build_variant
from esc.archs.lte_arch import ESCLTE
from esc.archs.atd_arch import ATD
from esc.archs.hitsrf_arch import HiT_SRF
from esc.archs.srformer_arch import SRFormer

NETWORKS['ESCLTE'] = ESCLTE
NETWORKS['SRFormer'] = SRFormer
NETWORKS['HiT_SRF'] = HiT_SRF
NETWORKS['ATD'] = ATD

__all__ = ['ATD', 'ESC', 'ESCFP', 'ESCLTE', 'ESCReal', 'HiT_SRF', 'NETWORKS', 'SRFormer', 'VARIANTS', 'build_variant']
