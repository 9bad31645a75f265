"""Convert an ESC checkpoint (.pth) to a safetensors file that records its network options and scale.

    python esc/convert_safetensors.py --model ESC_DIV2K_X4.pth -o ESC_DIV2K_X4.safetensors
    python esc/convert_safetensors.py --model net_g_latest.pth -o net_g_latest.safetensors --param-key params

The checkpoint is read and its network built and loaded as esc/inference.py does (the EMA weights,
``params_ema``, unless ``--param-key`` says otherwise, falling back to ``params``), so only a checkpoint that
runs is converted. The file written holds that one state dict, unpickled-safe and readable by any safetensors
reader (chaiNNer, spandrel, traiNNer-redux), with the metadata ``esc.network`` (the network options, JSON),
``esc.scale`` and ``esc.param_key`` that esc.load_model, esc/inference.py and esc/export.py read instead of
detecting the network. It is written atomically and read back before the command reports success.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
import time
from typing import Optional, Sequence

try:
    import esc  # noqa: F401
except ModuleNotFoundError as missing:  # `python esc/convert_safetensors.py` in a checkout that was never installed
    sys.exit('error: the esc package is not installed: run `pip install -e .` in the checkout first'
             if missing.name == 'esc' else f'error: {missing}')

import torch  # noqa: E402

from esc.errors import ESCError  # noqa: E402
from esc.upscaler import Upscaler, load_model  # noqa: E402
from esc.utils.checkpoint import (SAFETENSORS_SUFFIX, read_checkpoint, weights_metadata,  # noqa: E402
                                  write_safetensors)
from esc.utils.cli import run_command  # noqa: E402


def convert_to_safetensors(model: Upscaler, output: str, param_key: Optional[str] = 'params_ema') -> int:
    """Write a loaded model's weights to ``output`` (safetensors) with its options, scale and ``param_key`` (which
    weights they are; None: not known) as metadata, read the file back and check every tensor; returns the number
    of tensors."""
    state_dict = model.net.state_dict()
    scale = model.options.get('upscaling_factor')
    write_safetensors(state_dict, output, weights_metadata(model.options, scale, param_key))
    written, metadata = read_checkpoint(output, param_key, option='-o')
    if written.keys() != state_dict.keys() or not all(torch.equal(written[k], v.cpu()) for k, v in state_dict.items()):
        raise ESCError(f'-o: {output} does not read back as the weights written')
    if metadata.get('network') != model.options:
        raise ESCError(f'-o: {output} does not read back with the network options written')
    return len(written)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', required=True, help="checkpoint (.pth): official release file or this project's")
    p.add_argument('-o', '--output', required=True, help='file to write (.safetensors)')
    p.add_argument('--param-key', default='params_ema',
                   help="state dict inside the checkpoint (default params_ema, falling back to 'params')")
    p.add_argument('--scale', type=int, default=None, help="the checkpoint's scale (detected; checked if given)")
    p.add_argument('--arch', default=None, help='ESC, ESCFP, ESCReal or ESCLTE (detected; checked if given)')
    return p


def run(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if not args.output.endswith(SAFETENSORS_SUFFIX):
        raise ESCError(f'-o: {args.output} does not end in {SAFETENSORS_SUFFIX}')
    if not osp.isdir(osp.dirname(osp.abspath(args.output))):
        raise ESCError(f'-o: no such folder {osp.dirname(osp.abspath(args.output))}')
    if osp.abspath(args.output) == osp.abspath(args.model):
        raise ESCError('-o: would replace --model; choose another file')
    start = time.perf_counter()
    taken = read_checkpoint(args.model, args.param_key, option='--model')[1].get('param_key')
    model = load_model(args.model, scale=args.scale, arch=args.arch, device='cpu', param_key=args.param_key)
    count = convert_to_safetensors(model, args.output, taken)
    print(f'{model} from {args.model} [{taken or "bare state dict"}] written to {args.output} ({count} tensors, '
          f'{osp.getsize(args.output) / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s)', flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_command(run, argv)


if __name__ == '__main__':
    main()
