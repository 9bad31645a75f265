"""Export a trained ESC checkpoint to ONNX for deployment, with dynamic height and width.

    python esc/export.py --model ESC_DIV2K_X4.pth -o esc_x4.onnx

The network is read off the checkpoint as ``esc/inference.py`` reads it, folded for inference
(:func:`fold_for_export`: the 8-symmetric large kernel and every window's relative position bias become
constants; with ``--attn-type flashbias`` the biases stay low-rank factors instead, factorised here with
``--bias-rank``/``--bias-energy`` unless the checkpoint already holds them) and traced once by ``torch.onnx.export(dynamo=True)`` with symbolic H and W. Before
anything is written, onnxruntime and the PyTorch network upscale an image of another size, whose
sides are no multiple of the attention window; a difference above ``--tolerance`` is an error and
nothing is written. The batch is fixed at 1: the dynamic kernels are a grouped convolution with
batch × channels groups, and ONNX wants a constant group count.

Other formats were tried and left out: a ``torch.export`` program keeps guards of its traced size
(say, sides that are no multiple of the window) and refuses other inputs; a TorchScript trace bakes
in the F.pad branch of the window padding and fails on sides shorter than the padding.
"""
from __future__ import annotations

import argparse
import copy
import functools
import os.path as osp
import re
import sys
import time
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple

if sys.path and osp.abspath(sys.path[0]) == osp.dirname(osp.abspath(__file__)):
    # run as a script: import the `esc` package, not the folder esc/ itself, first
    sys.path[0] = osp.dirname(osp.dirname(osp.abspath(__file__)))

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from esc.archs.attention import WindowAttention  # noqa: E402
from esc.archs.flashbias import describe_conversion, factorised_copy  # noqa: E402
from esc.errors import ESCError  # noqa: E402
from esc.upscaler import load_model  # noqa: E402
from esc.utils.checkpoint import write_atomic  # noqa: E402
from esc.utils.cli import run_command  # noqa: E402

if TYPE_CHECKING:
    import onnx

FORMATS = ('onnx',)
EXPORT_ATTN_TYPES = ('sdpa', 'naive', 'flashbias')
MIN_OPSET = 18


def _fold(module: nn.Module, method: str, value: Tensor) -> None:
    """Make ``module.<method>()`` return ``value``, held as the buffer ``folded_<method>``."""
    name = f'folded_{method}'
    module.register_buffer(name, value.detach().clone())
    setattr(module, method, functools.partial(getattr, module, name))  # an instance attribute shadows the method


def fold_for_export(net: nn.Module, attn_type: str = 'sdpa') -> nn.Module:
    """An inference-only copy of an ESC network whose forward computes the same output with fewer ops.

    The copy's ``large_kernel()`` returns the symmetric-averaged LK and each attention's ``bias()``
    its dense (heads, N, N) bias, as buffers (``folded_large_kernel``, ``folded_bias``) instead of
    recomputing them from ``plk_filter`` and the bias tables (or factors), which are dropped.
    Attention runs on ``attn_type`` ('sdpa' or 'naive'; flex reads the table; 'flashbias' keeps the
    factors of a factorised network and folds no dense bias), row-strip streaming is off and no
    parameter requires a gradient. ``net`` itself is not changed.
    """
    if attn_type not in EXPORT_ATTN_TYPES:
        raise ESCError(f"attn_type: {attn_type!r} cannot be exported; choose one of {', '.join(EXPORT_ATTN_TYPES)}")
    folded = copy.deepcopy(net).eval().requires_grad_(False)
    if hasattr(folded, 'streaming'):
        folded.streaming = 'off'
    large_kernel = folded.large_kernel()
    if isinstance(large_kernel, Tensor) and not isinstance(large_kernel, nn.Parameter):
        _fold(folded, 'large_kernel', large_kernel)
        if isinstance(getattr(folded, 'plk_filter', None), nn.Parameter):
            del folded.plk_filter
    for module in folded.modules():
        if isinstance(module, WindowAttention):
            module.attn_type = attn_type
            if attn_type == 'flashbias':
                if module.bias_form != 'factors':
                    raise ESCError("attn_type: 'flashbias' exports factorised position biases; this network holds "
                                   'bias tables (factorise it first: --bias-rank/--bias-energy, '
                                   'esc.archs.flashbias.factorise_network)')
                continue
            _fold(module, 'bias', module.bias())
            for name in module.bias_parameters:
                delattr(module, name)
    return folded


def example_input(window_size: int, extra: int = 0) -> Tensor:
    """A deterministic (1, 3, H, W) LR image in [0, 1] whose sides are no multiple of ``window_size``."""
    generator = torch.Generator().manual_seed(extra)
    h, w = window_size + 5 + extra, 2 * window_size + 3 + 2 * extra
    return torch.rand(1, 3, h, w, generator=generator)


def _dynamic_shapes() -> dict:
    return {'x': {2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}}


def _failed(step: str, exc: Exception) -> ESCError:
    first = (str(exc).strip().splitlines() or [''])[0]
    return ESCError(f'{step} failed: {type(exc).__name__}: {first}')


def check_options(fmt: str, opset: int, attn_type: str) -> None:
    """One line naming the option, for a format, opset or attention backend that cannot be exported."""
    if fmt not in FORMATS:
        raise ESCError(f'--format: {fmt!r} is not supported, only onnx (torch.export programs keep the traced '
                       'size class, TorchScript traces fail below half a window)')
    if opset < MIN_OPSET:
        raise ESCError(f'--opset: {opset} is too old; the exporter writes opset {MIN_OPSET} or newer')
    if attn_type not in EXPORT_ATTN_TYPES:
        raise ESCError(f"--attn-type: {attn_type!r} cannot be exported; choose one of {', '.join(EXPORT_ATTN_TYPES)}")


def _name_dims(model: 'onnx.ModelProto', names: Sequence[str]) -> None:
    """Call the input's symbolic H and W ``names`` everywhere the graph's shapes mention them."""
    dims = model.graph.input[0].type.tensor_type.shape.dim[2:]
    renames = {dim.dim_param: name for dim, name in zip(dims, names) if dim.dim_param}
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = re.sub(r'\b\w+\b', lambda m: renames.get(m.group(0), m.group(0)), dim.dim_param)


def export_onnx(folded: nn.Module, example: Tensor, opset: int = MIN_OPSET) -> bytes:
    """The ONNX model (bytes) of a folded network, input ``lr`` and output ``sr`` with dynamic H and W."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ESCError(f'--format onnx needs onnx and onnxscript ({exc.name} is missing): '
                       'pip install -e .[export]') from None
    try:
        program = torch.onnx.export(folded, (example,), dynamo=True, opset_version=opset, input_names=['lr'],
                                    output_names=['sr'], dynamic_shapes=_dynamic_shapes(), verbose=False)
    except Exception as exc:  # torch.export / ONNX translation: report the exporter's reason in one line
        raise _failed('ONNX export', exc) from None
    model = program.model_proto
    _name_dims(model, ('height', 'width'))
    return model.SerializeToString()


def onnx_runner(model: bytes) -> Callable[[Tensor], Tensor]:
    """Run an exported ONNX model on the CPU with onnxruntime: (1, 3, H, W) → (1, 3, rH, rW)."""
    try:
        import onnxruntime
    except ImportError:
        raise ESCError('verifying an ONNX export needs onnxruntime: pip install -e .[export]') from None
    session = onnxruntime.InferenceSession(model, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def max_difference(run: Callable[[Tensor], Tensor], net: nn.Module, x: Tensor) -> float:
    """Max abs difference between an exported model and the PyTorch network on ``x``."""
    with torch.no_grad():
        expected = net(x)
        got = run(x)
    if got.shape != expected.shape:
        raise ESCError(f'verification: the export returns {tuple(got.shape)} for a {tuple(x.shape)} input, '
                       f'PyTorch {tuple(expected.shape)}')
    return (got - expected).abs().max().item()


def export(net: nn.Module, opset: int = MIN_OPSET, attn_type: str = 'sdpa',
           tolerance: float = 1e-4) -> Tuple[bytes, float]:
    """Fold, export to ONNX with dynamic H and W, and check with onnxruntime on an input of another size:
    (the file's bytes, the max abs difference)."""
    check_options('onnx', opset, attn_type)
    window = getattr(net, 'window_size', 8)
    trace_input, check_input = example_input(window), example_input(window, extra=window // 2 + 1)
    data = export_onnx(fold_for_export(net, attn_type), trace_input, opset)
    difference = max_difference(onnx_runner(data), net, check_input)
    if not difference <= tolerance:
        raise ESCError(f'verification: the export differs from PyTorch by {difference:.3g} (> {tolerance:g}) '
                       f'on a {check_input.shape[-2]}×{check_input.shape[-1]} input; nothing was written')
    return data, difference


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', required=True,
                   help="checkpoint (.pth or .safetensors): official release file or this project's")
    p.add_argument('-o', '--output', required=True, help='file to write (.onnx)')
    p.add_argument('--format', default='onnx', help='onnx, the only one (see the module doc)')
    p.add_argument('--opset', type=int, default=MIN_OPSET, help=f'ONNX opset (default and minimum {MIN_OPSET})')
    p.add_argument('--scale', type=int, default=None, help="the checkpoint's scale (detected; checked if given)")
    p.add_argument('--arch', default=None, help='ESC, ESCFP or ESCReal (detected)')
    p.add_argument('--param-key', default='params_ema', help="state dict inside the checkpoint (falls back to 'params')")
    p.add_argument('--attn-type', default='sdpa', help=f"attention in the exported graph: {', '.join(EXPORT_ATTN_TYPES)}")
    p.add_argument('--tolerance', type=float, default=1e-4, help='largest max abs difference accepted (default 1e-4)')
    p.add_argument('--bias-rank', type=int, default=None,
                   help='with --attn-type flashbias: factorise every position bias at this rank first')
    p.add_argument('--bias-energy', type=float, default=None,
                   help='with --attn-type flashbias: factorise at the smallest rank keeping this share of the '
                        'bias energy (e.g. 0.999)')
    return p


def factorise_for_export(net: nn.Module, rank: Optional[int], energy: Optional[float]) -> Tuple[nn.Module, List[str]]:
    """``net`` with FlashBias factors for ``--attn-type flashbias``: factorised at ``rank``/``energy`` if given
    (a copy; ``net`` is the exact reference then), else as it is, which must hold factors already. Returns
    the network and one line per factorised layer, with its output difference on a test image."""
    if rank is None and energy is None:
        if not any(m.bias_form == 'factors' for m in net.modules() if isinstance(m, WindowAttention)):
            raise ESCError('--attn-type flashbias: the checkpoint holds bias tables; give --bias-rank or --bias-energy')
        return net, []
    if rank is not None and energy is not None:
        raise ESCError('--bias-rank, --bias-energy: give one of them, not both')
    window = getattr(net, 'window_size', 8)
    factorised, reports, comparison = factorised_copy(net, example_input(window, extra=window // 2 + 1), rank, energy)
    return factorised, describe_conversion(reports, comparison)


def run(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    check_options(args.format, args.opset, args.attn_type)
    if args.attn_type != 'flashbias' and (args.bias_rank is not None or args.bias_energy is not None):
        raise ESCError('--bias-rank/--bias-energy: they apply to --attn-type flashbias only')
    if not osp.isdir(osp.dirname(osp.abspath(args.output))):
        raise ESCError(f'-o: no such folder {osp.dirname(osp.abspath(args.output))}')
    model = load_model(args.model, scale=args.scale, arch=args.arch, device='cpu', param_key=args.param_key)
    print(f'{model} from {args.model}', flush=True)
    start = time.perf_counter()
    net = model.net
    if args.attn_type == 'flashbias':
        net, lines = factorise_for_export(net, args.bias_rank, args.bias_energy)
        for line in lines:
            print(line, flush=True)
    data, difference = export(net, args.opset, args.attn_type, args.tolerance)
    write_atomic(args.output, data)
    print(f'ONNX written to {args.output} ({len(data) / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s); '
          f'max abs difference to PyTorch {difference:.2g}', flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_command(run, argv)


if __name__ == '__main__':
    main()
