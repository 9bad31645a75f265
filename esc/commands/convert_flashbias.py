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

The conversion and its measurement, as functions, are :mod:`esc.evaluation.flashbias_conversion`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

try:
    import esc  # noqa: F401
except ModuleNotFoundError as missing:  # run from a checkout that was never installed
    sys.exit('error: the esc package is not installed: run `pip install -e .` in the checkout first'
             if missing.name == 'esc' else f'error: {missing}')

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from esc.archs.attention import bias_ranks  # noqa: E402
from esc.errors import ESCError  # noqa: E402
from esc.evaluation.flashbias_conversion import describe_conversion, factorised_copy  # noqa: E402
from esc.io.checkpoint import atomic_torch_save  # noqa: E402
from esc.io.writing import check_output_file  # noqa: E402
from esc.upscaler import load_model  # noqa: E402
from esc.utils.cli import run_command  # noqa: E402

DEFAULT_PHOTO = 'coffee'
DEFAULT_CROP = 256


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
