"""ONNX Runtime against this project's own CPU path, side by side in one run on one image.

    python scripts/onnx_vs_pytorch.py --model ESC_DIV2K_X4.pth --image photo.png
    python scripts/onnx_vs_pytorch.py --variant ESC --scale 4 --size 180x320      # random weights, HD output

The network (a checkpoint, or a named variant with random weights) is exported in memory as esc/commands/export.py
exports it (fp32, folded, checked against PyTorch) and loaded into an onnxruntime CPU session; the same LR
image (``--image``, else scikit-image's coffee, centre-cropped to ``--size``) then goes through the session and
through ``esc.load_model``'s path (``Upscaler.upscale_tensor``: row strips, the fused attention), both with
``--threads`` intra-op threads, alternating, after a warm-up each. Printed: the setup (CPU, threads, versions,
image, load average before and after), each engine's median and fastest time, their ratio and the largest
difference between the two outputs. Nothing is written.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import _checkout  # noqa: F401  (this checkout's esc on sys.path; before any esc import)
import torch
from torch import Tensor

from esc.archs import VARIANTS, build_variant
from esc.commands.convert_flashbias import photograph
from esc.commands.export import export
from esc.errors import ESCError
from esc.evaluation.benchmark import cpu_name, cpu_threads  # the CPU's name and thread setting, as the benchmark's
from esc.upscaler import Upscaler, load_model
from esc.utils.cli import run_command

DEFAULT_SIZE = '180x320'


def parse_size(text: str) -> List[int]:
    """'HxW' → [H, W] (positive)."""
    try:
        size = [int(side) for side in text.lower().split('x')]
    except ValueError:
        size = []
    if len(size) != 2 or min(size) < 1:
        raise ESCError(f'--size: {text!r} is not HxW (e.g. {DEFAULT_SIZE})')
    return size


def lr_image(path: Optional[str], size: Sequence[int]) -> Tensor:
    """The (1, 3, H, W) LR image: ``path`` or scikit-image's coffee, centre-cropped to ``size``; refused if smaller."""
    image = photograph(path, crop=0)
    height, width = image.shape[-2:]
    if height < size[0] or width < size[1]:
        raise ESCError(f'--size: {size[0]}x{size[1]} is larger than the image ({height}x{width})')
    top, left = (height - size[0]) // 2, (width - size[1]) // 2
    return image[..., top:top + size[0], left:left + size[1]].contiguous()


def onnx_session(data: bytes, threads: int) -> Callable[[Tensor], Tensor]:
    """An onnxruntime CPU session of ``data`` with ``threads`` intra-op threads: (1, 3, H, W) → output."""
    try:
        import onnxruntime
    except ImportError:
        raise ESCError('this comparison needs onnxruntime: pip install -e .[export]') from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(data, options, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def timed(run: Callable[[], Tensor]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = p.add_mutually_exclusive_group()
    source.add_argument('--model', help='checkpoint (.pth or .safetensors)')
    source.add_argument('--variant', default='ESC', help='with random weights, when no --model (default ESC)')
    p.add_argument('--scale', type=int, default=4, help='scale of --variant (default 4)')
    p.add_argument('--image', default=None, help="LR image (default: scikit-image's coffee)")
    p.add_argument('--size', default=DEFAULT_SIZE, help=f'LR crop HxW (default {DEFAULT_SIZE}: HD output at x4)')
    p.add_argument('--threads', type=int, default=None, help="intra-op threads of both (default: torch's, the cores)")
    p.add_argument('--repeats', type=int, default=3, help='timed runs of each, alternating (default 3)')
    return p


def run(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if args.repeats < 1:
        raise ESCError(f'--repeats: {args.repeats}; give 1 or more')
    if args.threads is not None and args.threads < 1:
        raise ESCError(f'--threads: {args.threads}; give 1 or more')
    with cpu_threads(args.threads) as threads:
        return compare(args, threads)


def compare(args: argparse.Namespace, threads: int) -> int:
    """Export, time both engines alternately and print the report; torch runs with ``threads`` intra-op threads."""
    x = lr_image(args.image, parse_size(args.size))
    if args.model:
        model = load_model(args.model, device='cpu')
    else:
        torch.manual_seed(0)
        net = build_variant(args.variant, args.scale).eval()
        model = Upscaler(net, {**VARIANTS[args.variant], 'upscaling_factor': args.scale}, torch.device('cpu'))
    load_before = os.getloadavg()
    start = time.perf_counter()
    data, check = export(model.net)
    exported = time.perf_counter() - start
    ort = onnx_session(data, threads)
    engines: Dict[str, Callable[[], Tensor]] = {
        'onnxruntime': lambda: ort(x).clamp(0, 1),
        'PyTorch (esc.load_model)': lambda: model.upscale_tensor(x),
    }
    outputs = {name: run_engine() for name, run_engine in engines.items()}  # warm-up, and the outputs compared
    times: Dict[str, List[float]] = {name: [] for name in engines}
    for _ in range(args.repeats):
        for name, run_engine in engines.items():
            times[name].append(timed(run_engine))
    load_after = os.getloadavg()
    import onnxruntime

    print(f'CPU: {cpu_name()}, {os.cpu_count()} logical CPUs, {threads} threads; torch {torch.__version__}, '
          f'onnxruntime {onnxruntime.__version__}; Python {platform.python_version()}')
    source = args.model or f'{args.variant} x{args.scale} (random weights)'
    print(f'{model.name} x{model.scale} from {source}; LR {x.shape[-2]}x{x.shape[-1]} of '
          f"{args.image or 'coffee'}; fp32; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(f'export: {exported:.1f} s ({len(data) / 1e6:.1f} MB, check {check:.2g})')
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f'{name}: median {medians[name]:.3f} s, fastest {min(values):.3f} s over {args.repeats} runs')
    onnx_name, torch_name = engines
    difference = (outputs[onnx_name] - outputs[torch_name]).abs().max().item()
    print(f'onnxruntime / PyTorch (medians): {medians[onnx_name] / medians[torch_name]:.2f}; '
          f'largest output difference {difference:.2g}')
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_command(run, argv)


if __name__ == '__main__':
    main()
