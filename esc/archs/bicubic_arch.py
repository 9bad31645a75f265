"""``Bicubic``: MATLAB-compatible bicubic upsampling as a network, so ``esc/test.py`` prints the
literature's bicubic baseline row with the same data, metrics and options as any ESC model."""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from esc import compat  # noqa: F401  (before basicsr)
from esc.errors import ESCError
from basicsr.utils.matlab_functions import imresize  # noqa: E402  (isort: after compat)
from basicsr.utils.registry import ARCH_REGISTRY  # noqa: E402


@ARCH_REGISTRY.register()
class Bicubic(nn.Module):
    """Upsample by ``upscaling_factor`` with MATLAB's ``imresize`` bicubic kernel (a = −0.5)."""

    def __init__(self, upscaling_factor: Optional[int] = None, **unknown: Any) -> None:
        super().__init__()
        if unknown:
            raise ESCError(f'network_g (Bicubic): unknown option(s) {", ".join(sorted(unknown))}')
        if not isinstance(upscaling_factor, int) or upscaling_factor < 1:
            raise ESCError(f'network_g (Bicubic): upscaling_factor must be a positive integer, '
                           f'got {upscaling_factor!r}')
        self.upscaling_factor = upscaling_factor

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([imresize(image, self.upscaling_factor) for image in x])
