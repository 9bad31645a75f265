"""Converting a trained network to FlashBias factors, and measuring what the conversion costs.

:func:`factorise_network` replaces every window attention layer of a network (in place) by a factorised one whose
factors are the truncated SVD of the layer's dense bias (:func:`esc.archs.attention.factorise`), and reports per
layer the rank and the share of the bias energy kept; :func:`compare_on_image` adds the differences of each layer's
output, and of the network's, against the exact network on an image; :func:`factorised_copy` does both on a copy,
and :func:`describe_conversion` puts the result in words. Used by esc/commands/convert_flashbias.py (which writes the
converted checkpoint), esc/commands/export.py (``--bias-rank``/``--bias-energy``) and the benchmark's accuracy
sweep over ranks (:func:`esc.evaluation.benchmark.flashbias_accuracy`).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from esc.archs.attention import SVD, FactorisedWindowAttention, WindowAttention, decompose, factorise


@dataclass
class LayerReport:
    """One converted attention layer: its name, rank and energy kept, and (after :func:`compare_on_image`)
    the largest absolute and the relative RMS difference of its output against the exact layer's."""

    name: str
    rank: int
    energy: float
    max_difference: Optional[float] = None
    relative_rms: Optional[float] = None


def attention_layers(net: nn.Module) -> Iterator[Tuple[str, WindowAttention]]:
    """(name, layer) of every window attention layer of ``net``, in order."""
    return ((name, m) for name, m in net.named_modules() if isinstance(m, WindowAttention))


def factorise_network(net: nn.Module, rank: Optional[int] = None, energy: Optional[float] = None,
                      attn_type: str = 'flashbias', svds: Optional[Dict[str, SVD]] = None) -> List[LayerReport]:
    """Replace every window attention layer of ``net`` (in place) by a :class:`FactorisedWindowAttention` whose
    factors :func:`factorise` the layer's dense bias at ``rank``, or at the smallest rank keeping the share
    ``energy`` of its energy; the new layers run on ``attn_type``. Returns one report per layer.

    ``svds``: a dict kept by the caller to convert copies of one network at several ranks: each layer's SVD
    (by name) is computed once and read from there afterwards."""
    reports = []
    for name, layer in list(attention_layers(net)):
        with torch.no_grad():
            bias = layer.bias().float()
            positions = bias.shape[-1]
            if svds is not None and name not in svds and rank != positions:
                svds[name] = decompose(bias)
            factors = factorise(bias, rank=rank, energy=energy, svd=None if svds is None else svds.get(name))
        new = FactorisedWindowAttention(layer.dim, layer.window_size, layer.num_heads, factors.rank, attn_type)
        parameter = next(layer.parameters())
        new.to(parameter.device, parameter.dtype).train(layer.training)
        new.to_qkv.load_state_dict(layer.to_qkv.state_dict())
        new.to_out.load_state_dict(layer.to_out.state_dict())
        with torch.no_grad():
            new.flashbias_q.copy_(factors.factor_q)
            new.flashbias_k.copy_(factors.factor_k)
        new.requires_grad_(parameter.requires_grad)
        parent, _, child = name.rpartition('.')
        setattr(net.get_submodule(parent) if parent else net, child, new)
        reports.append(LayerReport(name, factors.rank, factors.energy))
    return reports


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR (dB) of two images in [0, 1] after clamping (inf where they are equal)."""
    mse = (a.float().clamp(0, 1) - b.float().clamp(0, 1)).square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def compare_on_image(exact: nn.Module, factorised: nn.Module, image: Tensor,
                     reports: Sequence[LayerReport] = ()) -> Dict[str, float]:
    """Run both networks on ``image`` (1, 3, H, W): each factorised layer also sees the exact layer's input, and
    the reports (matched by layer name) get the layers' output differences. Returns the networks' max abs
    output difference and PSNR (dB, outputs clamped to [0, 1]) of the factorised against the exact output."""
    twins = dict(attention_layers(factorised))
    differences: Dict[str, List[float]] = {}

    def hook(name: str):
        def compare(layer: nn.Module, args: tuple, kwargs: dict, output: Tensor) -> None:
            twin_out = twins[name](args[0], None, *args[2:], **kwargs)  # row strips: the rows asked for, or more
            delta = twin_out[..., :output.shape[-2], :].float() - output.float()
            stats = differences.setdefault(name, [0.0, 0.0, 0.0])
            stats[0] = max(stats[0], delta.abs().max().item())
            stats[1] += delta.square().sum().item()
            stats[2] += output.float().square().sum().item()
        return compare

    handles = [layer.register_forward_hook(hook(name), with_kwargs=True)
               for name, layer in attention_layers(exact) if name in twins]
    try:
        with torch.no_grad():
            expected = exact(image)
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        got = factorised(image)
    for report in reports:
        if report.name in differences:
            largest, error, signal = differences[report.name]
            report.max_difference, report.relative_rms = largest, math.sqrt(error / max(signal, 1e-30))
    return dict(max_difference=(got - expected).abs().max().item(), psnr=psnr(got, expected))


def factorised_copy(net: nn.Module, image: Tensor, rank: Optional[int] = None, energy: Optional[float] = None,
                    attn_type: str = 'flashbias') -> Tuple[nn.Module, List[LayerReport], Dict[str, float]]:
    """A copy of ``net`` converted by :func:`factorise_network` (``net`` is not changed), its per-layer reports
    and the comparison of :func:`compare_on_image` on ``image`` against ``net``."""
    factorised = copy.deepcopy(net)
    reports = factorise_network(factorised, rank=rank, energy=energy, attn_type=attn_type)
    return factorised, reports, compare_on_image(net, factorised, image, reports)


def describe_conversion(reports: Sequence[LayerReport], comparison: Mapping[str, float]) -> List[str]:
    """One line per converted layer (rank, energy kept, output difference), then the network's output difference."""
    lines = []
    for r in reports:
        measured = '' if r.max_difference is None else (f', output max abs difference {r.max_difference:.3g}, '
                                                        f'relative RMS {r.relative_rms:.3g}')
        lines.append(f'{r.name}: rank {r.rank}, energy kept {r.energy:.6f}{measured}')
    lines.append(f"network output against the exact one: max abs difference {comparison['max_difference']:.3g}, "
                 f"PSNR {comparison['psnr']:.2f} dB")
    return lines
