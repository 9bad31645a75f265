"""Export a trained ESC checkpoint to ONNX for deployment: dynamic batch, height and width; fp32, fp16 or bf16.

    python esc/commands/export.py --model ESC_DIV2K_X4.pth -o esc_x4.onnx
    python esc/commands/export.py --model ESC_DIV2K_X4.pth -o esc_x4_fp16.onnx --precision fp16 --verify photo.png

The network is read off the checkpoint as ``esc/commands/upscale.py`` reads it, folded for inference
(:func:`fold_for_export`: the 8-symmetric large kernel and every window's relative position bias become
constants; with ``--attn-type flashbias`` the biases stay low-rank factors instead, factorised here with
``--bias-rank``/``--bias-energy`` unless the checkpoint already holds them), cast to ``--precision`` and traced
once by ``torch.onnx.export(dynamo=True)`` with symbolic batch, H and W. The per-sample dynamic kernels, a grouped
convolution with batch × channels groups in PyTorch (ONNX wants a constant group count), are one fixed convolution
that lays out each pixel's 3×3 neighbours, weighted and summed (:func:`per_sample_depthwise_3x3`). Before anything
is written, the exported graph and the PyTorch network in the same precision upscale a batch of two images of
another size, whose sides are no multiple of the attention window; a difference above ``--tolerance`` is an error
and nothing is written. The graph runs on onnxruntime; a bf16 graph, which its CPU
provider does not run, as its fp32 twin (:func:`fp32_twin`). ``--verify`` repeats the comparison
on a photograph and prints the largest difference, against fp32 PyTorch too.

Other formats were tried and left out: a ``torch.export`` program keeps guards of its traced size
(say, sides that are no multiple of the window) and refuses other inputs; a TorchScript trace bakes
in the F.pad branch of the window padding and fails on sides shorter than the padding.
"""
from __future__ import annotations

import argparse
import copy
import functools
import re
import sys
import time
import types
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

try:
    import esc  # noqa: F401
except ModuleNotFoundError as missing:  # `python esc/commands/export.py` in a checkout that was never installed
    sys.exit('error: the esc package is not installed: run `pip install -e .` in the checkout first'
             if missing.name == 'esc' else f'error: {missing}')

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from esc.acceleration import DTYPES  # noqa: E402
from esc.archs.attention import WindowAttention  # noqa: E402
from esc.archs.layers import DecomposedLargeKernelConv, SharedLargeKernelConv, symmetric_average  # noqa: E402
from esc.commands.convert_flashbias import DEFAULT_CROP, DEFAULT_PHOTO, photograph  # noqa: E402
from esc.errors import ESCError  # noqa: E402
from esc.evaluation.flashbias_conversion import describe_conversion, factorised_copy  # noqa: E402
from esc.io.checkpoint import write_atomic  # noqa: E402
from esc.io.memory_estimate import Workload, check_memory  # noqa: E402
from esc.io.writing import check_output_file  # noqa: E402
from esc.upscaler import load_model  # noqa: E402
from esc.utils.cli import run_command  # noqa: E402

if TYPE_CHECKING:
    import onnx

FORMATS = ('onnx',)
EXPORT_ATTN_TYPES = ('sdpa', 'naive', 'flashbias')
MIN_OPSET = 18
DEFAULT_TOLERANCE: Dict[str, float] = {'fp32': 1e-4, 'fp16': 2e-2, 'bf16': 5e-2}
"""Largest max abs difference accepted between the graph and PyTorch in the same precision (``--tolerance``)."""
CHECK_BATCH = 2
"""Images in the batch the export is traced and checked with (a batch of one would be fixed in the graph)."""


def _fold(module: nn.Module, method: str, value: Tensor) -> None:
    """Make ``module.<method>()`` return ``value``, held as the buffer ``folded_<method>``."""
    name = f'folded_{method}'
    module.register_buffer(name, value.detach().clone())
    setattr(module, method, functools.partial(getattr, module, name))  # an instance attribute shadows the method


def per_sample_depthwise_3x3(x: Tensor, kernels: Tensor) -> Tensor:
    """Depthwise 'same' 3×3 convolution of each sample of ``x`` (B, C, H, W) with its own ``kernels`` (B, C, 3, 3),
    with no shape fixed but the kernels': PyTorch's grouped convolution (``esc.archs.layers.depthwise_conv_per_sample``)
    has batch × channels groups, a constant in ONNX. One fixed convolution lays each pixel's nine 3×3 neighbours on
    nine channels (a one-hot kernel per tap, so the copies are exact); the kernels weight them and the nine are summed.
    Six ops where nine shifted products took seventy: the export's time goes with the graph's op count."""
    batch, channels, height, width = x.shape
    taps = torch.eye(9, dtype=x.dtype, device=x.device).view(9, 1, 3, 3)
    neighbours = F.conv2d(x.reshape(-1, 1, height, width), taps, padding=1).view(batch, channels, 9, height, width)
    return (neighbours * kernels.reshape(batch, channels, 9, 1, 1)).sum(2)


def _shared_large_kernel_conv(self: SharedLargeKernelConv, att: Tensor, lk: Optional[Tensor],
                              dk: Optional[Tensor] = None) -> Tensor:
    """``SharedLargeKernelConv.forward`` for export: the dynamic kernels through :func:`per_sample_depthwise_3x3`."""
    if hasattr(self, 'lk'):
        lk = symmetric_average(self.lk)
    out = F.conv2d(att, lk, padding=lk.shape[-1] // 2)
    dk = self.dynamic_kernels(att) if dk is None else dk
    return out if dk is None else out + per_sample_depthwise_3x3(att, dk)


def _decomposed_large_kernel_conv(self: DecomposedLargeKernelConv, att: Tensor, lk: Tuple[Tensor, Tensor],
                                  dk: Optional[Tensor] = None) -> Tensor:
    """``DecomposedLargeKernelConv.forward`` (ESC-FP) for export: its k×k kernel LK^s + ZP(DK) is applied as its two
    terms, LK^s as a depthwise convolution (one kernel for every sample) and DK through
    :func:`per_sample_depthwise_3x3` (convolving with a sum is the sum of the convolutions)."""
    lk_channel, lk_spatial = lk
    x = F.conv2d(att, lk_channel)
    dk = self.dynamic_kernels(att) if dk is None else dk
    k = lk_spatial.shape[-1]
    spatial = F.conv2d(x, lk_spatial.reshape(self.pdim, 1, k, k), padding=k // 2, groups=self.pdim)
    return spatial + per_sample_depthwise_3x3(x, dk)


BATCH_FREE_FORWARDS = {SharedLargeKernelConv: _shared_large_kernel_conv,
                       DecomposedLargeKernelConv: _decomposed_large_kernel_conv}


def fold_for_export(net: nn.Module, attn_type: str = 'sdpa') -> nn.Module:
    """An inference-only copy of an ESC network whose forward computes the same output with fewer ops.

    The copy's ``large_kernel()`` returns the symmetric-averaged LK and each attention's ``bias()``
    its dense (heads, N, N) bias, as buffers (``folded_large_kernel``, ``folded_bias``) instead of
    recomputing them from ``plk_filter`` and the bias tables (or factors), which are dropped.
    Attention runs on ``attn_type`` ('sdpa' or 'naive'; flex reads the table; 'flashbias' keeps the
    factors of a factorised network and folds no dense bias), row-strip streaming is off, the large-kernel
    convolutions apply their per-sample kernels without fixing the batch (:data:`BATCH_FREE_FORWARDS`) and no
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
        batch_free = BATCH_FREE_FORWARDS.get(type(module))
        if batch_free is not None:
            module.forward = types.MethodType(batch_free, module)  # an instance attribute shadows the method
        if isinstance(module, WindowAttention):
            module.attn_type = attn_type
            if attn_type == 'flashbias':
                if module.bias_form != 'factors':
                    raise ESCError("attn_type: 'flashbias' exports factorised position biases; this network holds "
                                   'bias tables (factorise it first: --bias-rank/--bias-energy, '
                                   'esc/commands/convert_flashbias.py)')
                continue
            _fold(module, 'bias', module.bias())
            for name in module.bias_parameters:
                delattr(module, name)
    return folded


def example_input(window_size: int, extra: int = 0, batch: int = 1) -> Tensor:
    """A deterministic (batch, 3, H, W) LR image in [0, 1] whose sides are no multiple of ``window_size``."""
    generator = torch.Generator().manual_seed(extra)
    h, w = window_size + 5 + extra, 2 * window_size + 3 + 2 * extra
    return torch.rand(batch, 3, h, w, generator=generator)


def export_workload(window_size: int) -> Workload:
    """What an export runs the network on: the check batch of :func:`export`, the larger of its two inputs, through
    graphs that compute every attention score (an ONNX graph materialises them, as ``naive`` does)."""
    check = example_input(window_size, extra=window_size // 2 + 1, batch=CHECK_BATCH)
    return Workload(check.shape[-2], check.shape[-1], CHECK_BATCH, attention='naive', streaming=False,
                    description=f'the export\'s check batch ({CHECK_BATCH} × {check.shape[-1]}×{check.shape[-2]}, '
                                'every attention score computed)')


def _dynamic_shapes() -> dict:
    return {'x': {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}}


def _failed(step: str, exc: Exception) -> ESCError:
    first = (str(exc).strip().splitlines() or [''])[0]
    return ESCError(f'{step} failed: {type(exc).__name__}: {first}')


def check_options(fmt: str, opset: int, attn_type: str, precision: str = 'fp32') -> None:
    """One line naming the option, for a format, opset, attention backend or precision that cannot be exported."""
    if fmt not in FORMATS:
        raise ESCError(f'--format: {fmt!r} is not supported, only onnx (torch.export programs keep the traced '
                       'size class, TorchScript traces fail below half a window)')
    if opset < MIN_OPSET:
        raise ESCError(f'--opset: {opset} is too old; the exporter writes opset {MIN_OPSET} or newer')
    if attn_type not in EXPORT_ATTN_TYPES:
        raise ESCError(f"--attn-type: {attn_type!r} cannot be exported; choose one of {', '.join(EXPORT_ATTN_TYPES)}")
    if precision not in DTYPES:
        raise ESCError(f"--precision: {precision!r} is not one of {', '.join(DTYPES)}")


def _name_dims(model: 'onnx.ModelProto', names: Dict[int, str]) -> None:
    """Call the input's symbolic dimensions ``names`` (by axis) everywhere the graph's shapes mention them."""
    input_dims = model.graph.input[0].type.tensor_type.shape.dim
    dims, names = [input_dims[axis] for axis in names], list(names.values())
    renames = {dim.dim_param: name for dim, name in zip(dims, names) if dim.dim_param}
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = re.sub(r'\b\w+\b', lambda m: renames.get(m.group(0), m.group(0)), dim.dim_param)


def export_onnx(folded: nn.Module, example: Tensor, opset: int = MIN_OPSET, optimize: bool = True) -> bytes:
    """The ONNX model (bytes) of a folded network, input ``lr`` and output ``sr`` with dynamic batch, H and W, in the
    network's precision (``example`` has its dtype). An example batch of one is traced as two identical images:
    torch.export fixes a dimension traced at size 1. ``optimize``: run onnxscript's graph optimizer on the
    translated graph (constant folding, dead-code removal); ``False`` (``--no-optimize``) exports the same
    computation in a little over half the time, as a larger graph."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ESCError(f'--format onnx needs onnx and onnxscript ({exc.name} is missing): '
                       'pip install -e .[export]') from None
    if example.shape[0] == 1:
        example = example.expand(CHECK_BATCH, -1, -1, -1)
    try:
        program = torch.onnx.export(folded, (example,), dynamo=True, opset_version=opset, input_names=['lr'],
                                    output_names=['sr'], dynamic_shapes=_dynamic_shapes(), optimize=optimize,
                                    verbose=False)
    except Exception as exc:  # torch.export / ONNX translation: report the exporter's reason in one line
        raise _failed('ONNX export', exc) from None
    model = program.model_proto
    _name_dims(model, {0: 'batch', 2: 'height', 3: 'width'})
    return model.SerializeToString()


def onnx_runner(model: bytes) -> Callable[[Tensor], Tensor]:
    """Run an exported ONNX model on the CPU with onnxruntime: (B, 3, H, W) → (B, 3, rH, rW) in the model's
    precision. A bf16 graph, which onnxruntime's CPU provider has no kernels for, runs as its fp32 twin
    (:func:`fp32_twin`: the same bf16-valued weights, fp32 arithmetic, as GPUs accumulate bf16 work), its output
    rounded to bf16."""
    import onnx

    if onnx.load_from_string(model).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.BFLOAT16:
        run_twin = onnx_runner(fp32_twin(model))
        return lambda x: run_twin(x.float()).to(torch.bfloat16)
    try:
        import onnxruntime
    except ImportError:
        raise ESCError('verifying an ONNX export needs onnxruntime: pip install -e .[export]') from None
    session = onnxruntime.InferenceSession(model, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def fp32_twin(model: bytes) -> bytes:
    """A bf16 ONNX model with every bf16 tensor made fp32: weights and constants (bf16 values are exact in fp32),
    casts, inputs and outputs. The graph is otherwise the same, so running the twin checks the bf16 file's graph and
    weights; onnx's own NumPy evaluator runs bf16 but rounds every sum to bf16, which no GPU does."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    bf16, fp32 = onnx.TensorProto.BFLOAT16, onnx.TensorProto.FLOAT
    proto = onnx.load_from_string(model)

    def widened(tensor: 'onnx.TensorProto') -> 'onnx.TensorProto':
        return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)

    graph = proto.graph
    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type == bf16:
            graph.initializer[index].CopyFrom(widened(tensor))
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.type.tensor_type.elem_type == bf16:
            value.type.tensor_type.elem_type = fp32
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == 'Cast' and attribute.name == 'to' and attribute.i == bf16:
                attribute.i = fp32
            elif attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == bf16:
                attribute.t.CopyFrom(widened(attribute.t))
    return proto.SerializeToString()


def max_difference(run: Callable[[Tensor], Tensor], net: nn.Module, x: Tensor) -> float:
    """Max abs difference between an exported model and the PyTorch network on ``x``, each in the dtype of ``x``
    (``net`` is run on a copy in that dtype; the comparison is in fp32)."""
    with torch.no_grad():
        expected = copy.deepcopy(net).to(x.dtype)(x)
        got = run(x)
    if got.shape != expected.shape:
        raise ESCError(f'verification: the export returns {tuple(got.shape)} for a {tuple(x.shape)} input, '
                       f'PyTorch {tuple(expected.shape)}')
    return (got.float() - expected.float()).abs().max().item()


def export(net: nn.Module, opset: int = MIN_OPSET, attn_type: str = 'sdpa', tolerance: Optional[float] = None,
           precision: str = 'fp32', optimize: bool = True) -> Tuple[bytes, float]:
    """Fold, cast to ``precision``, export to ONNX with dynamic batch, H and W, and check the graph against PyTorch
    in that precision on a batch of two inputs of another size: (the file's bytes, the max abs difference).
    ``tolerance``: :data:`DEFAULT_TOLERANCE` of the precision unless given; ``optimize``: see :func:`export_onnx`."""
    check_options('onnx', opset, attn_type, precision)
    tolerance = DEFAULT_TOLERANCE[precision] if tolerance is None else tolerance
    window, dtype = getattr(net, 'window_size', 8), DTYPES[precision]
    trace_input = example_input(window, batch=CHECK_BATCH).to(dtype)
    check_input = example_input(window, extra=window // 2 + 1, batch=CHECK_BATCH).to(dtype)
    data = export_onnx(fold_for_export(net, attn_type).to(dtype), trace_input, opset, optimize)
    difference = max_difference(onnx_runner(data), net, check_input)
    if not difference <= tolerance:
        raise ESCError(f'verification: the {precision} export differs from PyTorch by {difference:.3g} '
                       f'(> {tolerance:g}) on a {check_input.shape[0]}×{check_input.shape[-2]}×{check_input.shape[-1]} '
                       'input; nothing was written')
    return data, difference


def verify_on_photograph(data: bytes, net: nn.Module, image: Tensor, precision: str) -> Dict[str, float]:
    """``--verify``: the written graph against PyTorch on a photograph (1, 3, H, W): the largest difference to
    PyTorch in the export's precision (``same``) and to fp32 PyTorch (``fp32``), on outputs clamped to [0, 1]
    as an image is saved."""
    run = onnx_runner(data)
    x = image.to(DTYPES[precision])
    with torch.no_grad():
        got = run(x).float().clamp(0, 1)
        same = copy.deepcopy(net).to(x.dtype)(x).float().clamp(0, 1)
        exact = net(image.float()).clamp(0, 1)
    return {'same': (got - same).abs().max().item(), 'fp32': (got - exact).abs().max().item()}


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
    p.add_argument('--precision', default='fp32', help=f"weights, activations, input and output: {', '.join(DTYPES)}")
    p.add_argument('--tolerance', type=float, default=None,
                   help='largest max abs difference to PyTorch in the same precision accepted (default: '
                        + ', '.join(f'{value:g} for {name}' for name, value in DEFAULT_TOLERANCE.items()) + ')')
    p.add_argument('--verify', nargs='?', const='', default=None, metavar='IMAGE',
                   help="after writing, run the file on a photograph (default: scikit-image's coffee) against PyTorch "
                        'and print the largest difference')
    p.add_argument('--verify-crop', type=int, default=DEFAULT_CROP,
                   help='centre-crop the --verify photograph to at most this many pixels a side '
                        f'(default {DEFAULT_CROP}, 0: whole)')
    p.add_argument('--no-optimize', dest='optimize', action='store_false',
                   help="skip onnxscript's graph optimizer: the same computation as a larger graph, exported in a "
                        'little over half the time')
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
    check_options(args.format, args.opset, args.attn_type, args.precision)
    if args.attn_type != 'flashbias' and (args.bias_rank is not None or args.bias_energy is not None):
        raise ESCError('--bias-rank/--bias-energy: they apply to --attn-type flashbias only')
    check_output_file(args.output, {'--model': args.model, '--verify': args.verify})
    image = None
    if args.verify is not None:  # read first: a bad path fails before the export's work
        try:
            image = photograph(args.verify or None, args.verify_crop)
        except ESCError as exc:
            raise ESCError(f'--verify: {exc}') from None
    model = load_model(args.model, scale=args.scale, arch=args.arch, device='cpu', param_key=args.param_key)
    check_memory(model.options, export_workload(getattr(model.net, 'window_size', 8)), f'--model: {args.model}',
                 description=model.name)
    print(f'{model} from {args.model}', flush=True)
    start = time.perf_counter()
    net = model.net
    if args.attn_type == 'flashbias':
        net, lines = factorise_for_export(net, args.bias_rank, args.bias_energy)
        for line in lines:
            print(line, flush=True)
    data, difference = export(net, args.opset, args.attn_type, args.tolerance, args.precision, args.optimize)
    write_atomic(args.output, data)
    print(f'ONNX ({args.precision}, dynamic batch, height and width) written to {args.output} '
          f'({len(data) / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s); max abs difference to PyTorch '
          f'{difference:.2g}', flush=True)
    if image is not None:
        engine = "onnxruntime (the bf16 graph's fp32 twin)" if args.precision == 'bf16' else 'onnxruntime'
        differences = verify_on_photograph(data, net, image, args.precision)
        name = args.verify or f"scikit-image's {DEFAULT_PHOTO}"
        print(f'--verify: {engine} against PyTorch on {name} ({image.shape[-2]}×{image.shape[-1]}, clamped to [0, 1]): '
              f"largest difference {differences['same']:.2g} to PyTorch {args.precision}"
              + ('' if args.precision == 'fp32' else f", {differences['fp32']:.2g} to PyTorch fp32"), flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_command(run, argv)


if __name__ == '__main__':
    main()
