"""The networks, in plain torch: ``ESC`` (also ESC-light), ``ESCFP``, ``ESCReal`` and the paper's
configurations (``build_variant``). ``Bicubic`` (:mod:`esc.archs.bicubic_arch`) needs basicsr.

Importing this package does not import basicsr or torchvision, so inference pays for neither;
:mod:`esc.compat` registers the networks with basicsr's ``ARCH_REGISTRY`` for training and testing.
"""
from esc.archs.esc_arch import ESC, ESCFP, NETWORKS, VARIANTS, ESCReal, build_variant

__all__ = ['ESC', 'ESCFP', 'ESCReal', 'NETWORKS', 'VARIANTS', 'build_variant']
