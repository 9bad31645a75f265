"""ESC — Emulating Self-attention with Convolution for efficient image super-resolution (ICCV 2025).

Importing ``esc`` makes basicsr importable on current torchvision (see :mod:`esc.compat`) and
registers everything ESC adds to basicsr: networks, models and datasets.
"""
from esc import compat  # noqa: F401  (must precede every basicsr import)
from esc import archs, data, models  # noqa: F401,E402  (registration)
from esc.errors import ESCError  # noqa: E402

__version__ = '0.1.0'
__all__ = ['ESCError', '__version__']
