"""Small networks with random weights, quick enough for many per test, and the optional packages ONNX tests need."""
from __future__ import annotations

import pytest
import torch
from basicsr.utils.registry import ARCH_REGISTRY

import esc.compat  # noqa: F401  (registers the networks with basicsr's ARCH_REGISTRY)
from esc.archs import ESCLTE

SMALL = dict(dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=2, window_size=8, num_heads=2, exp_ratio=1.25)
"""The constructor arguments of a network small enough that a frame takes milliseconds (dim 16, one block, windows
of 8, two heads); :func:`small` adds the scale."""


def small(arch='ESC', scale=2, **overrides):
    """The registered network ``arch`` at :data:`SMALL`'s size and ``scale``, with its own initial weights, in eval
    mode."""
    return ARCH_REGISTRY.get(arch)(**{**SMALL, 'upscaling_factor': scale, **overrides}).eval()


def randomise(net):
    """Random weights everywhere (the dynamic-kernel generators start at zero)."""
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
    return net


def strong(net):
    """Random weights with position biases large enough that a poor factorisation shows in the output."""
    randomise(net)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith('relative_position_bias'):
                p.normal_(0, 1.0)
            elif name.endswith('to_qkv.weight'):
                p.normal_(0, 0.3)
    return net


def tiny_with_strong_biases(**overrides):
    """ESC ×2 at :data:`SMALL`'s size with one 5×5 convolution block and :func:`strong` weights: the network of the
    FlashBias factorisation tests."""
    return strong(small('ESC', 2, conv_blocks=1, kernel_size=5, **overrides))


TINY_LTE = dict(dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=1, window_size=8, num_heads=2, hidden_dim=32,
                mlp_dims=[32, 32])
"""The constructor arguments of a tiny ESC+LTE (arbitrary scale)."""


def tiny_lte() -> ESCLTE:
    """A :data:`TINY_LTE` ESC+LTE with its initial weights, in eval mode."""
    return ESCLTE(**TINY_LTE).eval()


def without_type(network: dict) -> dict:
    """A network_g section as constructor arguments."""
    return {k: v for k, v in network.items() if k != 'type'}


ONNXRUNTIME = 'onnxruntime (and onnx, onnxscript) are optional: pip install -e .[export]'


def onnx_modules():
    """The onnx module, or a skip naming the optional packages where onnxruntime, onnxscript or onnx is missing."""
    pytest.importorskip('onnxruntime', reason=ONNXRUNTIME)
    pytest.importorskip('onnxscript', reason=ONNXRUNTIME)
    return pytest.importorskip('onnx', reason=ONNXRUNTIME)
