"""#Params and #FLOPs the way the paper measures them (Sec. 4.2): fvcore, one HD output (1280×720).

fvcore cannot see inside fused attention kernels, so FLOPs are counted with ``attn_type='naive'``
(explicit matmul + softmax); it counts one FLOP per multiply-accumulate, as the literature does.
"""
from __future__ import annotations

import logging
from fractions import Fraction
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from esc.evaluation.paper import TABLE2

HD_OUTPUT = (720, 1280)  # (H, W) of the super-resolved image
SMALLEST_TRACED_SIDE = 16
"""The shortest side :func:`count_flops` traces (a 13×13 kernel's 6-pixel reflect padding needs more)."""

PAPER_TABLE2: Dict[Tuple[str, int], Tuple[int, float]] = {key: (row.params_k, row.flops_g) for key, row in TABLE2.items()}
"""Table 2 of the paper: (#Params in K, #FLOPs in G) per (variant, scale), HR output 1280×720."""


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def count_flops(net: nn.Module, scale: int, output_size: Tuple[int, int] = HD_OUTPUT, direct: bool = False) -> int:
    """fvcore's FLOP count of ``net`` on the LR input whose ×``scale`` output is ``output_size``.

    Tracing the full-size input takes minutes (×2: a 360×640 LR image through explicit attention).
    Every op's count is instead linear in three terms — the pixels of the features padded to the
    window size (window attention pads them), the unpadded pixels (everything else) and a constant
    (the dynamic-kernel generators after pooling) — so three small traces fix the coefficients and
    give the full-size count exactly; a fourth small trace checks the model, and where it fails
    (a network built otherwise) or ``direct`` is set the full-size input is traced instead.
    """
    height, width = output_size[0] // scale, output_size[1] // scale
    window = getattr(net, 'window_size', None)
    if direct or not isinstance(window, int) or height * width <= 8 * window * window:
        return _traced_flops(net, height, width)

    def terms(h: int, w: int) -> Tuple[int, int, int]:
        return -(-h // window) * window * -(-w // window) * window, h * w, 1

    half_window = window // 2 >= SMALLEST_TRACED_SIDE  # else too short a side for the convolutions' padding
    samples = [(window, window), (window, window + window // 2),
               (window, window // 2) if half_window else (2 * window, 2 * window)]  # one or two windows, or four
    check = ((window - window // 4, window + window // 4) if half_window else
             (window + window // 4, 2 * window + window // 2))
    coefficients = _solve_exactly([terms(*size) for size in samples], [_traced_flops(net, *size) for size in samples])
    if _dot(coefficients, terms(*check)) != _traced_flops(net, *check):
        return _traced_flops(net, height, width)
    return int(_dot(coefficients, terms(height, width)))


def _traced_flops(net: nn.Module, height: int, width: int) -> int:
    """fvcore's count for one (1, 3, ``height``, ``width``) input."""
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(net.eval(), torch.zeros(1, 3, height, width))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    fvcore_logger = logging.getLogger('fvcore')
    level = fvcore_logger.level
    fvcore_logger.setLevel(logging.ERROR)
    streaming = getattr(net, 'streaming', None)
    if streaming is not None:
        net.streaming = 'off'  # count the whole-image pass the paper counts, not the row-strip schedule
    try:
        with torch.no_grad():
            return int(analysis.total())
    finally:
        fvcore_logger.setLevel(level)
        if streaming is not None:
            net.streaming = streaming


def _dot(a: Sequence[Fraction], b: Sequence[int]) -> Fraction:
    return sum((x * y for x, y in zip(a, b)), Fraction(0))


def _solve_exactly(rows: List[Tuple[int, int, int]], values: List[int]) -> List[Fraction]:
    """The x of ``rows · x = values`` (3×3) in exact rational arithmetic (Cramer's rule)."""
    def det(m: Sequence[Sequence[Fraction]]) -> Fraction:
        return (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
                + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))

    matrix = [[Fraction(v) for v in row] for row in rows]
    whole = det(matrix)
    return [det([row[:i] + [Fraction(v)] + row[i + 1:] for row, v in zip(matrix, values)]) / whole for i in range(3)]
