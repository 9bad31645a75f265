"""Convert a trained ESC checkpoint to the FlashBias form: every attention layer's position bias as low-rank factors.

    python esc/commands/convert_flashbias.py --model ESC_DIV2K_X2.pth -o ESC_X2_flashbias_r32.pth --rank 32
    python esc/commands/convert_flashbias.py --model net_g_latest.pth -o fb.pth --energy 0.999 --image photo.png

Each layer's dense (heads, ws², ws²) bias is factorised once by SVD (esc.archs.attention.factorise), at
``--rank`` or at the smallest rank keeping the share ``--energy`` of its energy. The command prints per
layer the rank, the energy kept and the difference of the layer's output against the exact layer on a
real photograph (``--image``, by default scikit-image's ``coffee``), then the whole network's difference
(max abs, PSNR). The file written holds ``params`` and ``params_ema`` in the official FlashBias layout
(``flashbias_q``/``flashbias_k`` per layer, as the official ``ESC_DIV2K_FB_R48_X2.pth``), which esc.load_model,
esc/commands/upscale.py, esc/commands/export.py and the official code read; it runs with
``attn_type: flashbias`` (the official ``FlashBias``) and ``flashbias_rank`` set to the rank printed.

The conversion and its measurement are also here as functions, for esc/commands/export.py (``--bias-rank``) and the
benchmark's rank sweep: :func:`factorise_network` converts every attention layer of a network in place and reports
per layer the rank and the energy kept; :func:`compare_on_image` adds the output differences against the exact
network on an image; :func:`factorised_copy` does both on a copy; :func:`describe_conversion` puts it in words.
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

try:
    import esc  # noqa: F401
except ModuleNotFoundError as missing:  # run from a checkout that was never installed
    sys.exit('error: the esc package is not installed: run `pip install -e .` in the checkout first'
             if missing.name == 'esc' else f'error: {missing}')

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from esc.archs.attention import (SVD, FactorisedWindowAttention, WindowAttention, bias_ranks, decompose,  # noqa: E402
                                 factorise)
from esc.errors import ESCError  # noqa: E402
from esc.io.checkpoint import atomic_torch_save  # noqa: E402
from esc.io.writing import check_output_file  # noqa: E402
from esc.upscaler import load_model  # noqa: E402
from esc.utils.cli import run_command  # noqa: E402

DEFAULT_PHOTO = 'coffee'
DEFAULT_CROP = 256


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


def photograph(path: Optional[str], crop: int = DEFAULT_CROP, sample: str = DEFAULT_PHOTO) -> Tensor:
    """A (1, 3, H, W) RGB image in [0, 1]: the file at ``path``, or else scikit-image's photograph ``sample``,
    centre-cropped to at most ``crop`` pixels a side (0: whole)."""
    if path is not None:
        from esc.io.images import colour_of, read_image

        image = colour_of(read_image(Path(path)))
        image = image.astype(np.float32) / float(np.iinfo(image.dtype).max)
    else:
        try:
            from esc.data.sample_image_dataset import load_sample_image
        except ImportError as exc:
            raise ESCError(f'--image: give a photograph (scikit-image\'s {sample} needs {exc.name})') from None
        image = load_sample_image(sample)
    height, width = image.shape[:2]
    if crop:
        top, left = max(height - crop, 0) // 2, max(width - crop, 0) // 2
        image = image[top:top + crop, left:left + crop]
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', required=True,
                   help="checkpoint (.pth or .safetensors): official release file or this project's")
    p.add_argument('-o', '--output', required=True, help='checkpoint to write (.pth)')
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument('--rank', type=int, help='rank of every factorised bias (1 .. ws²)')
    group.add_argument('--energy', type=float, help='per layer, the smallest rank keeping this share of the bias '
                       'energy Σσ² (e.g. 0.999)')
    p.add_argument('--image', default=None, help=f'photograph to compare on (default: scikit-image\'s {DEFAULT_PHOTO})')
    p.add_argument('--crop', type=int, default=DEFAULT_CROP,
                   help=f'centre-crop the photograph to at most this many pixels a side (default {DEFAULT_CROP}, 0: whole)')
    p.add_argument('--scale', type=int, default=None, help="the checkpoint's scale (detected; checked if given)")
    p.add_argument('--arch', default=None, help='ESC, ESCFP or ESCReal (detected)')
    p.add_argument('--param-key', default='params_ema', help="state dict inside the checkpoint (falls back to 'params')")
    return p


def run(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    check_output_file(args.output, {'--model': args.model, '--image': args.image})
    if args.crop < 0:
        raise ESCError(f'--crop: must be 0 or more, got {args.crop}')
    model = load_model(args.model, scale=args.scale, arch=args.arch, device='cpu', param_key=args.param_key)
    image = photograph(args.image, args.crop)
    print(f'{model} from {args.model}; comparing on a {image.shape[-2]}x{image.shape[-1]} photograph', flush=True)
    start = time.perf_counter()
    factorised, reports, comparison = factorised_copy(model.net, image, args.rank, args.energy)
    for line in describe_conversion(reports, comparison):
        print(line, flush=True)
    state_dict = factorised.state_dict()
    atomic_torch_save({'params': state_dict, 'params_ema': state_dict}, args.output)
    print(f'written to {args.output} ({time.perf_counter() - start:.1f} s; attn_type flashbias, flashbias_rank '
          f'{bias_ranks(state_dict)})', flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_command(run, argv)


if __name__ == '__main__':
    main()
