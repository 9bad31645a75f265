"""Networks; importing this package registers ``ESC``, ``ESCFP``, ``ESCReal`` and ``Bicubic`` in basicsr's ARCH_REGISTRY."""
from esc.archs.bicubic_arch import Bicubic
from esc.archs.esc_arch import ESC, ESCFP, VARIANTS, ESCReal, build_variant

__all__ = ['Bicubic', 'ESC', 'ESCFP', 'ESCReal', 'VARIANTS', 'build_variant']
