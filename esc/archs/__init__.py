"""Networks; importing this package registers ``ESC``, ``ESCFP``, ``ESCReal`` and ``Bicubic`` with basicsr."""
from esc.archs.bicubic_arch import Bicubic
from esc.archs.esc_arch import ESC, ESCFP, VARIANTS, ESCReal, build_variant

__all__ = ['Bicubic', 'ESC', 'ESCFP', 'ESCReal', 'VARIANTS', 'build_variant']
