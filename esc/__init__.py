"""ESC — Emulating Self-attention with Convolution for efficient image super-resolution (ICCV 2025).

``import esc`` is light (torch only): the networks are ``esc.ESC``, ``esc.ESCFP``, ``esc.ESCReal`` and
``esc.build_variant``; ``esc.load_model(checkpoint).upscale(image)`` runs a trained one on a NumPy image.

Training and testing go through basicsr. Importing ``esc`` lets basicsr 1.4.2 import on current torchvision
(:mod:`esc.torchvision_alias`, nothing imported until basicsr asks); ``import esc.compat`` (esc/train.py and
esc/test.py do) registers ESC's networks, models, datasets and metrics with basicsr and applies its patches.
"""
from esc import torchvision_alias

torchvision_alias.install()

from esc.archs import ESC, ESCFP, ESCReal, build_variant  # noqa: E402  (after the alias: see the docstring)
from esc.errors import ESCError  # noqa: E402
from esc.upscaler import Upscaler, load_model  # noqa: E402

__version__ = '0.1.0'
__all__ = ['ESC', 'ESCError', 'ESCFP', 'ESCReal', 'Upscaler', 'build_variant', 'load_model', '__version__']
