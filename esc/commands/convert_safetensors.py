"""Convert an ESC checkpoint (.pth) to a safetensors file that records its network options and scale.

    python esc/commands/convert_safetensors.py --model ESC_DIV2K_X4.pth -o ESC_DIV2K_X4.safetensors
    python esc/commands/convert_safetensors.py --model net_g_latest.pth -o net_g_latest.safetensors --param-key params
    python esc/commands/convert_safetensors.py --model esc_lte.pth -o ESC_LTE.safetensors   # an official esc_arb file

The checkpoint is read and its network built and loaded as esc/commands/upscale.py does (the EMA weights,
``params_ema``, unless ``--param-key`` says otherwise, falling back to ``params``), so only a checkpoint that
runs is converted. The file written holds that one state dict, unpickled-safe and readable by any safetensors
reader (chaiNNer, spandrel, traiNNer-redux), with the metadata ``esc.network`` (the network options, JSON),
``esc.scale`` and ``esc.param_key`` that esc.load_model, esc/commands/upscale.py and esc/commands/export.py read
instead of detecting the network. It is written atomically and read back before the command reports success.
An official esc_arb ESC+LTE checkpoint (``{'model': {'name', 'args', 'sd'}}``) converts to this project's layout
(keys mapped, ``data_norm`` in ``esc.network``): the file this project's commands and option files read.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
import time
from typing import Optional, Sequence

try:
    import esc  # noqa: F401
except ModuleNotFoundError as missing:  # run from a checkout that was never installed
    sys.exit('error: the esc package is not installed: run `pip install -e .` in the checkout first'
             if missing.name == 'esc' else f'error: {missing}')

import torch  # noqa: E402

from esc.errors import ESCError  # noqa: E402
from esc.io.checkpoint import (SAFETENSORS_SUFFIX, read_checkpoint, weights_metadata,  # noqa: E402
                                  write_safetensors)
from esc.io.writing import check_output_file  # noqa: E402
from esc.upscaler import Upscaler, checkpoint_network, load_model  # noqa: E402
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
    check_output_file(args.output, {'--model': args.model}, suffix=SAFETENSORS_SUFFIX)
    start = time.perf_counter()
    state_dict, read = read_checkpoint(args.model, args.param_key, option='--model')
    taken = read.get('param_key')
    held = taken or ('esc_arb checkpoint' if read.get('container') else 'bare state dict')
    # ESC+LTE serves every scale and records none: any scale builds it
    source = f'--model: {args.model}'
    arbitrary = args.scale is None and checkpoint_network(state_dict, read, source=source)['type'] == 'ESCLTE'
    del state_dict
    model = load_model(args.model, scale=2 if arbitrary else args.scale, arch=args.arch, device='cpu',
                       param_key=args.param_key)
    count = convert_to_safetensors(model, args.output, taken)
    print(f'{model} from {args.model} [{held}] written to {args.output} ({count} tensors, '
          f'{osp.getsize(args.output) / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s)', flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_command(run, argv)


if __name__ == '__main__':
    main()
