"""Deployment export (esc/commands/export.py): folding, ONNX with dynamic batch, height and width in fp32, fp16 and
bf16, checked with onnxruntime (a bf16 graph as its fp32 twin), FlashBias factors kept, the command line."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from esc.acceleration import DTYPES
from esc.archs import NETWORKS
from esc.archs.attention import relative_position_bias
from esc.archs.layers import depthwise_conv_per_sample, symmetric_average
from esc.commands.export import (DEFAULT_TOLERANCE, example_input, export, export_onnx, fold_for_export, fp32_twin,
                                 main, onnx_runner, per_sample_depthwise_3x3)
from esc.errors import ESCError
from tests.helpers.networks import onnx_modules, randomise, small
from tests.helpers.paths import load_script, shared_path
from tests.helpers.runs import run_in_process

TINY = dict(conv_blocks=1, kernel_size=13)  # with tests.helpers.networks.SMALL: dim 16, 1 block, window 8, 2 heads
SCALES = {'ESC': 2, 'ESCFP': 4, 'ESCReal': 4}


def tiny(arch: str, **overrides):
    return randomise(small(arch, SCALES[arch], **{**TINY, **overrides}))


@pytest.mark.parametrize('arch,overrides', [('ESC', {}), ('ESCFP', {}), ('ESCReal', {}),
                                            ('ESC', dict(inner_mixer='self_attn'))])
@pytest.mark.parametrize('attn_type', ['sdpa', 'naive'])
def test_folding_keeps_the_output_and_the_original(arch, overrides, attn_type):
    net = tiny(arch, **overrides)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = fold_for_export(net, attn_type)
    names = [name for name, _ in folded.named_parameters()]
    assert not any(n.endswith(('plk_filter', 'relative_position_bias')) for n in names)
    assert not any(p.requires_grad for p in folded.parameters()) and folded.streaming == 'off'
    for size in ((13, 19), (16, 24)):
        x = torch.rand(1, 3, *size)
        with torch.no_grad():
            assert (folded(x) - net(x)).abs().max() <= 1e-6
    assert net.state_dict().keys() == before.keys() and all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    with pytest.raises(ESCError, match="attn_type: 'flex' cannot be exported"):
        fold_for_export(net, 'flex')


def test_per_sample_kernels_without_a_fixed_batch_equal_the_grouped_convolution():
    x, kernels = torch.randn(3, 5, 7, 4), torch.randn(3, 5, 3, 3)
    assert (per_sample_depthwise_3x3(x, kernels) - depthwise_conv_per_sample(x, kernels)).abs().max() <= 1e-5


@pytest.mark.parametrize('arch', ['ESCFP', 'ESCReal'])  # ESC: test_cli_writes_a_verified_onnx_file's file
def test_onnx_matches_pytorch_with_dynamic_batch_height_and_width(arch):
    net = tiny(arch)
    check_dynamic_folded_graph(export_onnx(fold_for_export(net), example_input(net.window_size)), net)


def check_dynamic_folded_graph(data: bytes, net) -> None:
    """The fp32 graph ``data`` exported from ``net``: input and output dims named batch, height and width, each image
    of a batch upscaled as ``net`` upscales it alone at sizes below, at and off the window, constants folded."""
    onnx = onnx_modules()
    model = onnx.load_from_string(data)
    inputs, outputs = model.graph.input[0].type.tensor_type.shape.dim, model.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in inputs] == ['batch', 3, 'height', 'width']
    r = net.upscaling_factor
    assert [d.dim_param or d.dim_value for d in outputs] == ['batch', 3, f'{r}*height', f'{r}*width']
    assert model.opset_import[0].version >= 17
    run_onnx = onnx_runner(model.SerializeToString())
    for size in ((1, 16, 24), (3, 11, 30), (2, 5, 3)):  # window multiples, not, smaller than a window; traced: 2×13×19
        x = torch.rand(3, *size[1:])[None].repeat(size[0], 1, 1, 1) + torch.rand(size[0], 1, 1, 1) * 0.1
        with torch.no_grad():
            singles = torch.cat([net(x[i:i + 1]) for i in range(size[0])])  # each image on its own: no batch mixing
        assert (run_onnx(x) - singles).abs().max() <= 1e-4, size

    # folded: constants in the graph, no table or raw LK to gather from or average
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    assert not any(n.endswith(('plk_filter', 'relative_position_bias')) for n in initializers)
    table = net.blocks[0].attn.relative_position_bias.detach()
    dense = relative_position_bias(table, net.window_size).numpy()
    assert any(v.size == dense.size and np.array_equal(v.reshape(dense.shape), dense) for v in initializers.values())
    if hasattr(net, 'plk_filter'):  # ESC-FP has no shared kernel
        assert np.array_equal(initializers['folded_large_kernel'], symmetric_average(net.plk_filter.detach()).numpy())


@pytest.mark.parametrize('arch,precision,elem_type', [('ESC', 'fp16', 'FLOAT16'), ('ESCFP', 'bf16', 'BFLOAT16')])
def test_half_precision_exports(arch, precision, elem_type):
    """fp16 and bf16 files: weights, input and output in that precision, checked before they are returned against
    PyTorch in the same precision (onnxruntime; bf16 as its fp32 twin), with a dynamic batch."""
    onnx = onnx_modules()
    net = tiny(arch)
    data, difference = export(net, precision=precision)
    model = onnx.load_from_string(data)
    dtype = getattr(onnx.TensorProto, elem_type)
    assert model.graph.input[0].type.tensor_type.elem_type == dtype == model.graph.output[0].type.tensor_type.elem_type
    others = {i.name for i in model.graph.initializer if i.data_type not in (dtype, onnx.TensorProto.INT64)}
    resize_scales = {node.input[2] for node in model.graph.node if node.op_type == 'Resize'}  # fp32 in ONNX's spec
    assert others <= resize_scales and any(i.data_type == dtype for i in model.graph.initializer)
    assert 0 < difference <= DEFAULT_TOLERANCE[precision]
    if precision == 'bf16':  # checked as its fp32 twin: the same graph and bf16 weights, widened
        twin = onnx.load_from_string(fp32_twin(data))
        assert [n.op_type for n in twin.graph.node] == [n.op_type for n in model.graph.node]
        assert twin.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        widened = {i.name: onnx.numpy_helper.to_array(i) for i in twin.graph.initializer}
        for tensor in model.graph.initializer:
            assert np.array_equal(onnx.numpy_helper.to_array(tensor).astype(np.float32), widened[tensor.name])
        assert dtype not in {i.data_type for i in twin.graph.initializer}
    x = torch.rand(3, 3, 9, 14)
    got = onnx_runner(data)(x.to(DTYPES[precision]))
    with torch.no_grad():
        to_fp32 = (got.float() - net(x)).abs().max()
    assert got.dtype == DTYPES[precision] and to_fp32 <= {'fp16': 3e-3, 'bf16': 3e-2}[precision]


def test_flashbias_form_is_kept(precision='fp16'):
    """A FlashBias network exports its factors (heads, ws², R), no dense ws²×ws² bias, with a dynamic batch."""
    onnx = onnx_modules()
    net = tiny('ESC', attn_type='flashbias', bias_rank=5)
    data, difference = export(net, attn_type='flashbias', precision=precision)
    assert difference <= DEFAULT_TOLERANCE[precision]
    shapes = [tuple(i.dims) for i in onnx.load_from_string(data).graph.initializer]
    positions = net.window_size ** 2
    assert shapes.count((2, positions, 5)) == 2 and (2, positions, positions) not in shapes
    x = torch.rand(2, 3, 10, 21)
    with torch.no_grad():
        expected = net.to(DTYPES[precision])(x.to(DTYPES[precision])).float()
    assert (onnx_runner(data)(x.to(DTYPES[precision])).float() - expected).abs().max() <= DEFAULT_TOLERANCE[precision]


def _run_cli(*args):
    """``esc-export args`` in this process (the console script's entry point, its exit status and output)."""
    return run_in_process('esc.commands.export', [str(arg) for arg in args], Path.cwd())


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """A tiny random ESC ×2 saved as a basicsr training checkpoint."""
    torch.manual_seed(0)
    net = tiny('ESC').eval()
    path = tmp_path_factory.mktemp('ckpt') / 'tiny_x2.pth'
    torch.save({'params': net.state_dict(), 'params_ema': net.state_dict()}, path)
    return path, net


def test_cli_writes_a_verified_onnx_file(checkpoint, tmp_path):
    onnx_modules()
    path, net = checkpoint
    out = tmp_path / 'tiny.onnx'
    proc = _run_cli('--model', path, '-o', out, '--verify', '--verify-crop', '24')
    assert proc.returncode == 0, proc.stderr
    assert f'ONNX (fp32, dynamic batch, height and width) written to {out}' in proc.stdout
    assert 'max abs difference to PyTorch' in proc.stdout
    verified = proc.stdout.strip().splitlines()[-1]  # the default photograph; fp32 has one difference to print
    assert verified.startswith("--verify: onnxruntime against PyTorch on scikit-image's coffee (24×24, clamped to "
                               '[0, 1]): largest difference ') and verified.endswith(' to PyTorch fp32')
    assert float(verified.split('largest difference ')[1].split(' ')[0]) <= 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ['tiny.onnx']  # no temporary left beside it
    check_dynamic_folded_graph(out.read_bytes(), net)


def test_verify_runs_the_file_on_a_photograph(checkpoint, tmp_path, capsys, precision='fp16'):
    """--verify IMAGE: the written fp16 file against PyTorch on a real photograph (Set5's butterfly, cropped), the
    largest difference to PyTorch fp16 printed and equal to what the file gives, then the one to fp32."""
    onnx_modules()
    from esc.commands.convert_flashbias import photograph

    photo = shared_path('datasets', 'Set5', 'butterfly.png')
    path, net = checkpoint
    out = tmp_path / 'tiny.onnx'
    with pytest.raises(SystemExit) as exit_:
        main(['--model', str(path), '-o', str(out), '--precision', precision, '--verify', str(photo),
              '--verify-crop', '40'])
    assert exit_.value.code == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f'--verify: onnxruntime against PyTorch on {photo} (40×40, clamped to [0, 1]): largest '
                           'difference ')
    printed = float(line.split('largest difference ')[1].split(' ')[0])
    x = photograph(str(photo), 40).to(DTYPES[precision])
    with torch.no_grad():
        expected = copy.deepcopy(net).to(x.dtype)(x).float().clamp(0, 1)
    measured = (onnx_runner(out.read_bytes())(x).float().clamp(0, 1) - expected).abs().max().item()
    assert float(f'{measured:.2g}') == printed and printed <= DEFAULT_TOLERANCE[precision]
    assert line.split(f'{printed:.2g} ')[1].startswith('to PyTorch fp16, ') and line.endswith(' to PyTorch fp32')


def test_failed_verification_writes_nothing(checkpoint, tmp_path, monkeypatch, capsys):
    """A graph that differs from PyTorch is not written (the export and the comparison stand in: they are checked
    above)."""
    onnx_modules()
    path, _ = checkpoint
    monkeypatch.setattr('esc.commands.export.export_onnx', lambda folded, example, opset, optimize: b'graph')
    monkeypatch.setattr('esc.commands.export.onnx_runner', lambda data: None)
    monkeypatch.setattr('esc.commands.export.max_difference', lambda run, net, x: 0.5)
    with pytest.raises(SystemExit) as exit_:
        main(['--model', str(path), '-o', str(tmp_path / 'bad.onnx')])
    assert exit_.value.code == 2 and list(tmp_path.iterdir()) == []
    message = capsys.readouterr().err.strip()
    assert message == ('error: verification: the fp32 export differs from PyTorch by 0.5 (> 0.0001) on a 2×18×29 '
                       'input; nothing was written')


@pytest.mark.parametrize('args,message', [
    (['--opset', '17'], 'error: --opset: 17 is too old; the exporter writes opset 18 or newer'),
    (['--format', 'torchscript'], "error: --format: 'torchscript' is not supported, only onnx"),
    (['--attn-type', 'flex'], "error: --attn-type: 'flex' cannot be exported; choose one of sdpa, naive"),
    (['-o', 'missing/x.onnx'], 'error: -o: no such folder'),
    (['--precision', 'fp8'], "error: --precision: 'fp8' is not one of fp32, fp16, bf16"),
    (['--verify', 'missing.png'], 'error: --verify: missing.png: cannot be read (No such file or directory)'),
    ([], 'error: model: {model}: checkpoint is not an ESC network (no proj.weight / blocks.0.*)'),
])
def test_bad_inputs_are_one_line_errors(tmp_path, capsys, args, message):
    foreign = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(4, 3, 3, 3)}, foreign)
    with pytest.raises(SystemExit) as exit_:
        main(['--model', str(foreign), '-o', str(tmp_path / 'x.onnx'), *args])
    err = capsys.readouterr().err.strip()
    message = message.format(model=foreign)
    assert exit_.value.code == 2 and err.startswith(message) and len(err.splitlines()) == 1, err
    assert not (tmp_path / 'x.onnx').exists()


@pytest.mark.slow
def test_official_layout_esc_x2_exports_and_reproduces_the_reference(reference):
    """Without onnxscript's graph optimizer (--no-optimize: 17 s here instead of 30); the optimized export is checked
    on the small networks of the default suite."""
    onnx_modules()
    ref = reference('esc_x2.pt')
    net = NETWORKS[ref['arch']](**ref['config']).eval()
    net.load_state_dict(ref['state_dict'], strict=True)
    window = net.window_size
    data = export_onnx(fold_for_export(net), example_input(window), optimize=False)
    assert ref['input'].shape[-2] % window and ref['input'].shape[-1] % window  # not the traced size either
    assert (onnx_runner(data)(ref['input']) - ref['output']).abs().max() <= 1e-4


@pytest.mark.parametrize('args,message', [
    (['--size', '12'], "error: --size: '12' is not HxW (e.g. 180x320)"),
    (['--size', '1000x90'], 'error: --size: 1000x90 is larger than the image (400x600)'),
    (['--repeats', '0'], 'error: --repeats: 0; give 1 or more'),
])
def test_onnx_benchmark_bad_inputs_are_one_line_errors(capsys, args, message):
    benchmark = load_script('onnx_vs_pytorch')
    with pytest.raises(SystemExit) as exit_:
        benchmark.main(args)
    assert exit_.value.code == 2 and capsys.readouterr().err.strip() == message


@pytest.mark.slow
def test_onnx_benchmark_prints_both_engines_on_one_image(checkpoint, capsys):
    """scripts/onnx_vs_pytorch.py: one run, one image, both engines timed and their outputs compared."""
    onnx_modules()
    path, _ = checkpoint
    benchmark = load_script('onnx_vs_pytorch')
    with pytest.raises(SystemExit) as exit_:
        benchmark.main(['--model', str(path), '--size', '20x28', '--repeats', '2', '--threads', '1'])
    lines = capsys.readouterr().out.strip().splitlines()
    assert exit_.value.code == 0
    assert lines[0].startswith('CPU: ') and ', 1 threads; torch ' in lines[0] and 'onnxruntime ' in lines[0]
    assert lines[1].startswith(f'ESC (custom) x2 from {path}; LR 20x28 of coffee; fp32; load average ')
    assert lines[3].startswith('onnxruntime: median ') and lines[4].startswith('PyTorch (esc.load_model): median ')
    assert all(line.endswith(' over 2 runs') for line in lines[3:5])
    assert float(lines[5].rsplit('largest output difference ', 1)[1]) <= 1e-4
