"""Deployment export (esc/export.py): folding, ONNX checked with onnxruntime, the command line."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from esc.archs import NETWORKS
from esc.archs.attention import relative_position_bias
from esc.archs.layers import symmetric_average
from esc.errors import ESCError
from esc.export import example_input, export_onnx, fold_for_export, main, onnx_runner
from tests.conftest import REPO
from tests.test_networks import randomise, small

ONNXRUNTIME = 'onnxruntime (and onnx, onnxscript) are optional: pip install -e .[export]'
TINY = dict(conv_blocks=1, kernel_size=13)  # with test_networks.SMALL: dim 16, 1 block, window 8, 2 heads
SCALES = {'ESC': 2, 'ESCFP': 4, 'ESCReal': 4}


def tiny(arch: str, **overrides):
    return randomise(small(arch, SCALES[arch], **{**TINY, **overrides}))


def _onnx_modules():
    pytest.importorskip('onnxruntime', reason=ONNXRUNTIME)
    pytest.importorskip('onnxscript', reason=ONNXRUNTIME)
    return pytest.importorskip('onnx', reason=ONNXRUNTIME)


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


@pytest.mark.parametrize('arch', ['ESC', 'ESCFP', 'ESCReal'])
def test_onnx_matches_pytorch_with_dynamic_height_and_width(arch):
    onnx = _onnx_modules()
    net = tiny(arch)
    model = onnx.load_from_string(export_onnx(fold_for_export(net), example_input(net.window_size)))
    inputs, outputs = model.graph.input[0].type.tensor_type.shape.dim, model.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in inputs] == [1, 3, 'height', 'width']
    assert [d.dim_param for d in outputs[2:]] == [f'{net.upscaling_factor}*height', f'{net.upscaling_factor}*width']
    assert model.opset_import[0].version >= 17
    run_onnx = onnx_runner(model.SerializeToString())
    for size in ((16, 24), (11, 30), (5, 3)):  # window multiples, not, smaller than a window; traced: 13×19
        x = torch.rand(1, 3, *size)
        with torch.no_grad():
            assert (run_onnx(x) - net(x)).abs().max() <= 1e-4, size

    # folded: constants in the graph, no table or raw LK to gather from or average
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    assert not any(n.endswith(('plk_filter', 'relative_position_bias')) for n in initializers)
    table = net.blocks[0].attn.relative_position_bias.detach()
    dense = relative_position_bias(table, net.window_size).numpy()
    assert any(v.size == dense.size and np.array_equal(v.reshape(dense.shape), dense) for v in initializers.values())
    if arch != 'ESCFP':
        assert np.array_equal(initializers['folded_large_kernel'], symmetric_average(net.plk_filter.detach()).numpy())


def _run_cli(*args):
    return subprocess.run([sys.executable, str(REPO / 'esc' / 'export.py'), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """A tiny random ESC ×2 saved as a basicsr training checkpoint."""
    torch.manual_seed(0)
    net = tiny('ESC').eval()
    path = tmp_path_factory.mktemp('ckpt') / 'tiny_x2.pth'
    torch.save({'params': net.state_dict(), 'params_ema': net.state_dict()}, path)
    return path, net


def test_cli_writes_a_verified_onnx_file(checkpoint, tmp_path):
    _onnx_modules()
    path, net = checkpoint
    out = tmp_path / 'tiny.onnx'
    proc = _run_cli('--model', path, '-o', out)
    assert proc.returncode == 0, proc.stderr
    assert f'ONNX written to {out}' in proc.stdout and 'max abs difference to PyTorch' in proc.stdout
    assert [p.name for p in tmp_path.iterdir()] == ['tiny.onnx']  # no temporary left beside it
    x = torch.rand(1, 3, 9, 26)
    with torch.no_grad():
        assert (onnx_runner(out.read_bytes())(x) - net(x)).abs().max() <= 1e-4


def test_failed_verification_writes_nothing(checkpoint, tmp_path, monkeypatch, capsys):
    _onnx_modules()
    path, _ = checkpoint
    monkeypatch.setattr('esc.export.max_difference', lambda run, net, x: 0.5)
    with pytest.raises(SystemExit) as exit_:
        main(['--model', str(path), '-o', str(tmp_path / 'bad.onnx')])
    assert exit_.value.code == 2 and list(tmp_path.iterdir()) == []
    message = capsys.readouterr().err.strip()
    assert message == ('error: verification: the export differs from PyTorch by 0.5 (> 0.0001) on a 18×29 input; '
                       'nothing was written')


@pytest.mark.parametrize('args,message', [
    (['--opset', '17'], 'error: --opset: 17 is too old; the exporter writes opset 18 or newer'),
    (['--format', 'torchscript'], "error: --format: 'torchscript' is not supported, only onnx"),
    (['--attn-type', 'flex'], "error: --attn-type: 'flex' cannot be exported; choose one of sdpa, naive"),
    (['-o', 'missing/x.onnx'], 'error: -o: no such folder'),
    ([], 'error: checkpoint is not an ESC network (no proj.weight / blocks.0.*)'),
])
def test_bad_inputs_are_one_line_errors(tmp_path, capsys, args, message):
    foreign = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(4, 3, 3, 3)}, foreign)
    with pytest.raises(SystemExit) as exit_:
        main(['--model', str(foreign), '-o', str(tmp_path / 'x.onnx'), *args])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.startswith(message) and len(err.splitlines()) == 1, err
    assert not (tmp_path / 'x.onnx').exists()


@pytest.mark.slow
def test_official_layout_esc_x2_exports_and_reproduces_the_reference(reference):
    _onnx_modules()
    ref = reference('esc_x2.pt')
    net = NETWORKS[ref['arch']](**ref['config']).eval()
    net.load_state_dict(ref['state_dict'], strict=True)
    window = net.window_size
    data = export_onnx(fold_for_export(net), example_input(window))
    assert ref['input'].shape[-2] % window and ref['input'].shape[-1] % window  # not the traced size either
    assert (onnx_runner(data)(ref['input']) - ref['output']).abs().max() <= 1e-4
