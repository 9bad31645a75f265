"""#Params and #FLOPs the way the paper measures them (Sec. 4.2): fvcore, one HD output (1280×720).

fvcore cannot see inside fused attention kernels, so FLOPs are counted with ``attn_type='naive'``
(explicit matmul + softmax); it counts one FLOP per multiply-accumulate, as the literature does.
"""
from __future__ import annotations

import logging
from typing import Dict, Tuple

import torch
from torch import nn

from esc.utils.paper import TABLE2

HD_OUTPUT = (720, 1280)  # (H, W) of the super-resolved image

PAPER_TABLE2: Dict[Tuple[str, int], Tuple[int, float]] = {key: (row.params_k, row.flops_g) for key, row in TABLE2.items()}
"""Table 2 of the paper: (#Params in K, #FLOPs in G) per (variant, scale), HR output 1280×720."""


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def count_flops(net: nn.Module, scale: int, output_size: Tuple[int, int] = HD_OUTPUT) -> int:
    """fvcore's FLOP count of ``net`` on the LR input whose ×``scale`` output is ``output_size``."""
    from fvcore.nn import FlopCountAnalysis

    lr = torch.zeros(1, 3, output_size[0] // scale, output_size[1] // scale)
    analysis = FlopCountAnalysis(net.eval(), lr)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    fvcore_logger = logging.getLogger('fvcore')
    level = fvcore_logger.level
    fvcore_logger.setLevel(logging.ERROR)
    try:
        with torch.no_grad():
            return int(analysis.total())
    finally:
        fvcore_logger.setLevel(level)
