"""FlashBias (esc/archs/attention/flashbias.py): the backend's equation, SVD conversion of trained networks,
training with factorised biases, checkpoint detection, ONNX export and the conversion command."""
import copy
import re

import cv2
import numpy as np
import pytest
import torch

import esc
from esc.archs import NETWORKS
from esc.archs.attention import (FactorisedWindowAttention, choose_backend, describe_attention, factorise,
                                 flashbias_attention, naive_attention, relative_position_bias)
from esc.evaluation.flashbias_conversion import compare_on_image, factorise_network
from esc.errors import ESCError
from esc.upscaler import detect_network
from tests.helpers.networks import small, strong, tiny_with_strong_biases
from tests.helpers.paths import REFERENCE_FILES
from tests.helpers.runs import assert_resumes_exactly, train_options

WS = 8
N = WS * WS


def test_backend_is_the_biased_attention_forward_and_backward():
    """[q/√d, Φq]·[k, Φk]ᵀ with scale 1 is q·kᵀ/√d + Φq·Φkᵀ, through the stock CPU flash kernel and its backward,
    also when only the first rows of each window ask (row-strip inference)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, N, 16, requires_grad=True) for _ in range(3))
    factor_q, factor_k = (torch.randn(2, N, 12, requires_grad=True) for _ in range(2))
    upstream = torch.randn(3, 2, N, 16)
    out = flashbias_attention(q, k, v, factor_q, factor_k)
    assert 'Flash' in type(out.grad_fn.next_functions[0][0]).__name__  # the fused kernel, not the math path
    grads = torch.autograd.grad(out, (q, k, v, factor_q, factor_k), upstream)
    expected = naive_attention(q, k, v, factor_q @ factor_k.transpose(-2, -1))
    want = torch.autograd.grad(expected, (q, k, v, factor_q, factor_k), upstream)
    assert (out - expected).abs().max() <= 1e-5
    for name, got, ref in zip(('q', 'k', 'v', 'factor_q', 'factor_k'), grads, want):
        assert ref.abs().sum() > 0 and (got - ref).abs().max() <= 1e-4, name
    with torch.no_grad():
        rows = flashbias_attention(q[:, :, :20], k, v, factor_q, factor_k)
    assert (rows - expected[:, :, :20]).abs().max() <= 1e-5


def test_factorise_is_the_truncated_svd_and_energy_picks_the_smallest_rank():
    torch.manual_seed(0)
    bias = relative_position_bias(torch.randn(2, (2 * WS - 1) ** 2), WS)
    sigma = torch.linalg.svdvals(bias.double())
    share = sigma.square().sum(0).cumsum(0) / sigma.square().sum()
    for rank in (1, 10, 40):
        f = factorise(bias, rank=rank)
        assert f.factor_q.shape == f.factor_k.shape == (2, N, rank)
        error = torch.linalg.matrix_norm(bias.double() - (f.factor_q @ f.factor_k.transpose(-2, -1)).double())
        # Eckart–Young: the residual is the dropped singular values
        assert torch.allclose(error, sigma[:, rank:].square().sum(-1).sqrt(), rtol=1e-4, atol=1e-5)
        assert f.energy == pytest.approx(share[rank - 1].item(), rel=1e-9)
    picked = factorise(bias, energy=0.9)
    assert share[picked.rank - 1] >= 0.9 > share[picked.rank - 2]
    whole = factorise(bias, energy=1.0)  # through the SVD, not the rank-N shortcut
    assert (whole.factor_q @ whole.factor_k.transpose(-2, -1) - bias).abs().max() <= 1e-5
    for kwargs, message in ((dict(rank=0), 'rank: the rank must be an integer from 1 to'),
                            (dict(rank=N + 1), 'rank: the rank must be'), (dict(energy=1.5), 'energy: the share'),
                            (dict(), 'exactly one of rank and energy'), (dict(rank=4, energy=0.5), 'exactly one')):
        with pytest.raises(ESCError, match=message):
            factorise(bias, **kwargs)


def test_full_rank_reproduces_the_exact_network_and_the_error_falls_with_the_rank():
    torch.manual_seed(0)
    net = tiny_with_strong_biases(inner_mixer='self_attn')  # two attention layers per block
    x = torch.rand(1, 3, 21, 27)  # windows padded on both sides
    differences, energies = [], []
    for rank in (2, 8, 24, N):
        factorised = copy.deepcopy(net)
        reports = factorise_network(factorised, rank=rank)
        assert [r.name for r in reports] == ['blocks.0.attn', 'blocks.0.pconvs.0']
        assert all(isinstance(m, FactorisedWindowAttention) and m.attn_type == 'flashbias'
                   for m in (factorised.blocks[0].attn, factorised.blocks[0].pconvs[0]))
        result = compare_on_image(net, factorised, x, reports)
        assert all(r.max_difference is not None for r in reports)
        differences.append(result['max_difference'])
        energies.append(min(r.energy for r in reports))
    assert differences[-1] <= 1e-4 and energies[-1] == 1.0
    assert differences == sorted(differences, reverse=True) and differences[0] > 100 * differences[-1], differences
    assert energies == sorted(energies)
    assert not any(isinstance(m, FactorisedWindowAttention) for m in net.modules())  # converted copies only


@pytest.mark.parametrize('name', [pytest.param(name, marks=() if name == 'esc_x2.pt' else pytest.mark.slow)
                                  for name in REFERENCE_FILES])
def test_official_reference_reproduced_at_full_rank(reference, name):
    """The official checkpoint's tables, loaded into a factorised network, are factorised on the way in
    (full rank: every query and key carries 1024 more channels, so ESC-FP and ESC-Real run as slow tests)."""
    ref = reference(name)
    net = NETWORKS[ref['arch']](**ref['config'], attn_type='flashbias', bias_rank=ref['config']['window_size'] ** 2)
    net.load_state_dict(ref['state_dict'], strict=True)
    assert {k for k in net.state_dict() if k.endswith('.flashbias_q')} and 'relative_position_bias' not in str(net.state_dict().keys())
    with torch.no_grad():
        out = net.eval()(ref['input'])
    assert (out - ref['output']).abs().max().item() <= 1e-4


def test_factorised_layers_train_through_the_stock_backward_and_agree_with_the_dense_path():
    torch.manual_seed(0)
    net = strong(small('ESC', 2, conv_blocks=1, kernel_size=5, attn_type='flashbias', bias_rank=8)).train()
    dense = copy.deepcopy(net)
    for m in dense.modules():
        if isinstance(m, FactorisedWindowAttention):
            m.attn_type = 'naive'  # the same Φq·Φkᵀ as a dense bias
    x, target = torch.rand(2, 3, 16, 20), torch.rand(2, 3, 32, 40)
    grads = []
    for model in (net, dense):
        torch.nn.functional.l1_loss(model(x), target).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert grads[0]['blocks.0.attn.flashbias_q'].abs().sum() > 0
    for key, grad in grads[1].items():
        assert (grads[0][key] - grad).abs().max() <= 1e-5 * max(1.0, grad.abs().max().item()), key
    assert choose_backend('auto', 'cpu', 8, True, 'factors')[0] == 'sdpa'  # auto keeps the fused bias backward
    assert choose_backend('auto', 'cuda', 16, False, 'factors')[0] == 'sdpa'  # flex reads tables only
    assert describe_attention(net, torch.device('cpu'), True) == [
        'attention: flashbias for attn_type flashbias (head dim 8, bias as factors): as configured']


def test_row_strips_equal_the_whole_image():
    net = tiny_with_strong_biases(attn_type='flashbias', bias_rank=[5]).eval()
    x = torch.rand(1, 3, 29, 18)
    with torch.no_grad():
        whole = net(x)
        net.streaming = 'on'
        strips = net(x)
    assert (whole - strips).abs().max() <= 1e-5


@pytest.mark.parametrize('options,message', [
    (dict(attn_type='flex', bias_rank=4), "attn_type 'flex': it reads the position bias as table, the layer holds "
                                          'it as factors (leave bias_rank unset)'),
    (dict(attn_type='Flex', flashbias_rank=4), "attn_type 'Flex': it reads the position bias as table, the layer "
                                               'holds it as factors (leave flashbias_rank unset)'),
    (dict(bias_rank=4, flashbias_rank=5), 'flashbias_rank (5) and bias_rank (4) name one option'),
    (dict(flashbias_rank=[4, 4]), 'flashbias_rank lists 2 ranks for 1 self-attention layers'),
    (dict(deployment='yes'), "deployment must be true or false, got 'yes'"),
    (dict(bias_rank=0), 'bias_rank: the rank must be an integer from 1 to the window\'s 64 positions, got 0'),
    (dict(bias_rank=65), 'got 65'),
    (dict(bias_rank=[4, 4]), 'bias_rank lists 2 ranks for 1 self-attention layers'),
])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(ESCError, match=re.escape(message)) as error:
        small('ESC', 2, **options)
    assert str(error.value).startswith('network_g (ESC): ') and '\n' not in str(error.value)


def test_checkpoints_are_detected_and_load_and_the_inference_command_runs(tmp_path):
    from esc.commands.upscale import main as inference_main

    net = tiny_with_strong_biases(inner_mixer='self_attn')
    factorised = copy.deepcopy(net)
    ranks = [r.rank for r in factorise_network(factorised, energy=0.8)]
    assert len(set(ranks)) == 2, ranks  # one rank per layer
    path = tmp_path / 'fb.pth'
    torch.save({'params_ema': factorised.state_dict()}, path)
    options = detect_network(factorised.state_dict())
    assert (options['bias_rank'], options['attn_type'], options['window_size'], options['num_heads']) == (
        ranks, 'flashbias', WS, 2)
    model = esc.load_model(str(path), device='cpu')
    x = torch.rand(1, 3, 12, 17)
    with torch.no_grad():
        assert (model.net(x) - factorised(x)).abs().max() <= 1e-6
    cv2.imwrite(str(tmp_path / 'photo.png'), np.random.default_rng(0).integers(0, 255, (12, 17, 3), dtype=np.uint8))
    with pytest.raises(SystemExit) as exit_:
        inference_main(['-i', str(tmp_path / 'photo.png'), '-o', str(tmp_path / 'out'), '--model', str(path)])
    assert exit_.value.code == 0 and cv2.imread(str(tmp_path / 'out/photo_x2.png')).shape == (24, 34, 3)


def test_conversion_command_reports_every_layer_and_writes_a_flashbias_checkpoint(tmp_path, capsys):
    from esc.commands.convert_flashbias import main as convert_main

    net = tiny_with_strong_biases()
    source, target = tmp_path / 'exact.pth', tmp_path / 'fb.pth'
    torch.save({'params': net.state_dict()}, source)
    cv2.imwrite(str(tmp_path / 'photo.png'), np.random.default_rng(1).integers(0, 255, (40, 30, 3), dtype=np.uint8))
    with pytest.raises(SystemExit) as exit_:
        convert_main(['--model', str(source), '-o', str(target), '--rank', '12', '--image', str(tmp_path / 'photo.png')])
    out = capsys.readouterr().out
    assert exit_.value.code == 0, out
    assert 'blocks.0.attn: rank 12, energy kept 0.' in out and 'output max abs difference' in out
    assert 'network output against the exact one: max abs difference' in out and 'PSNR' in out
    state = torch.load(target, weights_only=True)['params_ema']
    assert state['blocks.0.attn.flashbias_q'].shape == (2, N, 12) and not any('relative_position' in k for k in state)
    with pytest.raises(SystemExit) as exit_:
        convert_main(['--model', str(source), '-o', str(tmp_path / 'x.pth'), '--rank', '65', '--image',
                      str(tmp_path / 'photo.png')])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.startswith('error: rank: the rank must be') and len(err.splitlines()) == 1


def test_onnx_export_keeps_the_factors_and_no_dense_bias(tmp_path, capsys):
    pytest.importorskip('onnxruntime')
    onnx = pytest.importorskip('onnx')
    pytest.importorskip('onnxscript')
    from esc.commands.export import main as export_main, onnx_runner

    net = tiny_with_strong_biases()
    source, target = tmp_path / 'exact.pth', tmp_path / 'fb.onnx'
    torch.save({'params': net.state_dict()}, source)
    with pytest.raises(SystemExit) as exit_:
        export_main(['--model', str(source), '-o', str(target), '--attn-type', 'flashbias'])
    assert exit_.value.code == 2 and 'give --bias-rank or --bias-energy' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        export_main(['--model', str(source), '-o', str(target), '--attn-type', 'flashbias', '--bias-rank', '8'])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and 'blocks.0.attn: rank 8, energy kept' in out and target.is_file()
    data = target.read_bytes()
    sizes = [int(np.prod(i.dims)) for i in onnx.load_from_string(data).graph.initializer]
    assert 2 * N * N not in sizes and 2 * N * 8 in sizes  # factors, no dense (heads, N, N) bias
    factorised = copy.deepcopy(net)
    factorise_network(factorised, rank=8)  # what the command exported
    x = torch.rand(1, 3, 11, 30)
    with torch.no_grad():
        exported = onnx_runner(data)(x)
        to_factorised, to_exact = (exported - factorised(x)).abs().max(), (exported - net(x)).abs().max()
    assert to_factorised <= 1e-4 and to_exact > 10 * to_factorised  # rank 8 of 64 is an approximation


@pytest.mark.slow
def test_training_with_factorised_biases_resumes_exactly(tmp_path):
    """esc/train.py with the official attn_type FlashBias and flashbias_rank 8 (a minute or two: three training runs)."""
    opt = train_options('flashbias')
    opt['network_g'].update(attn_type='FlashBias', flashbias_rank=8)  # the official spelling
    opt['val'] = None
    del opt['datasets']['val']
    assert_resumes_exactly(tmp_path, opt)
    weights = torch.load(tmp_path / 'experiments/flashbias_whole/models/net_g_4.pth', weights_only=True)['params']
    assert detect_network(weights)['bias_rank'] == 8


@pytest.mark.cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_cuda_flashbias_agrees_with_the_exact_path(dtype):
    """On CUDA (bf16: the flash kernel) the factorised network at a practical rank matches its own dense path,
    and at full rank the exact network; backward runs through the stock kernels."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    net = tiny_with_strong_biases().cuda()
    full, low = copy.deepcopy(net), copy.deepcopy(net)
    factorise_network(full, rank=N)
    factorise_network(low, rank=24)
    x = torch.rand(2, 3, 21, 27, device='cuda')
    tolerance = 1e-4 if dtype == torch.float32 else 3e-2
    with torch.no_grad(), torch.autocast('cuda', dtype=dtype, enabled=dtype != torch.float32):
        exact = net(x).float()
        assert (full(x).float() - exact).abs().max() <= tolerance
        flash = low(x).float()
        for m in low.modules():
            if isinstance(m, FactorisedWindowAttention):
                m.attn_type = 'sdpa'
        assert (low(x).float() - flash).abs().max() <= tolerance
    low.train()
    for m in low.modules():
        if isinstance(m, FactorisedWindowAttention):
            m.attn_type = 'flashbias'
    with torch.autocast('cuda', dtype=dtype, enabled=dtype != torch.float32):
        low(x).float().square().mean().backward()
    assert low.blocks[0].attn.flashbias_q.grad.abs().sum() > 0
