"""ESC — Emulating Self-attention with Convolution for efficient image super-resolution (ICCV 2025).

``import esc`` is light (torch only): the networks are ``esc.ESC``, ``esc.ESCFP``, ``esc.ESCReal`` and
``esc.build_variant``; ``esc.load_model(checkpoint).upscale(image)`` runs a trained one on a NumPy image. Training and testing go through basicsr; ``import esc.compat`` (esc/train.py and
esc/test.py do) makes basicsr importable on current torchvision and registers ESC's networks, models and
datasets with it, so it must come before any basicsr import.
"""
from esc.archs import ESC, ESCFP, ESCReal, build_variant
from esc.errors import ESCError
from esc.upscaler import Upscaler, load_model

__version__ = '0.1.0'
__all__ = ['ESC', 'ESCError', 'ESCFP', 'ESCReal', 'Upscaler', 'build_variant', 'load_model', '__version__']
