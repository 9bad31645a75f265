"""Window attention: every backend computes the same thing, forward and backward."""
import pytest
import torch

from esc.archs.attention import (FusedBiasAttention, WindowAttention, flex_attention_available, naive_attention, normalize_attn_type,
                                 relative_position_bias, relative_position_index, resolve_attn_type, sdpa_attention)
from esc.errors import ESCError


def test_relative_index_is_key_minus_query():
    ws = 4
    idx = relative_position_index(ws)
    q, k = 1 * ws + 2, 3 * ws + 0  # query (1, 2), key (3, 0)
    assert idx[q, k].item() == (3 - 1 + ws - 1) * (2 * ws - 1) + (0 - 2 + ws - 1)
    assert idx.min().item() == 0 and idx.max().item() == (2 * ws - 1) ** 2 - 1


@pytest.mark.parametrize('ws', [1, 3, 8])
def test_bias_from_table_crops_equals_the_index_gather(ws):
    table = torch.randn(2, (2 * ws - 1) ** 2, requires_grad=True)
    expected = table[:, relative_position_index(ws).flatten()].view(2, ws * ws, ws * ws)
    assert torch.equal(relative_position_bias(table, ws), expected)
    upstream = torch.randn_like(expected)
    (grad_crops,) = torch.autograd.grad(relative_position_bias(table, ws), table, upstream)
    (grad_gather,) = torch.autograd.grad(expected, table, upstream)
    assert torch.allclose(grad_crops, grad_gather, atol=1e-5)


@pytest.mark.parametrize('spelling,name', [('Flex', 'flex'), ('SDPA', 'sdpa'), ('Naive', 'naive'), ('auto', 'auto')])
def test_official_spellings(spelling, name):
    assert normalize_attn_type(spelling) == name


def test_unknown_attn_type_is_one_line_error():
    with pytest.raises(ESCError, match="attn_type: 'fast' is not supported"):
        WindowAttention(32, 8, 4, attn_type='fast')


def test_auto_resolution():
    cpu = torch.device('cpu')
    assert resolve_attn_type('auto', cpu) == 'sdpa'
    assert resolve_attn_type('naive', cpu) == 'naive'


def _module_grads(attn_type, x, state):
    module = WindowAttention(32, 8, 4, attn_type=attn_type)
    module.load_state_dict(state)
    x = x.clone().requires_grad_()
    out = module(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), x.grad, {n: p.grad for n, p in module.named_parameters()}


def test_cpu_backends_agree_forward_and_backward():
    torch.manual_seed(0)
    reference = WindowAttention(32, 8, 4)
    torch.nn.init.normal_(reference.relative_position_bias, std=0.5)
    state = reference.state_dict()
    x = torch.randn(2, 32, 13, 19)  # padded to 16×24: 6 windows per sample
    out_n, gx_n, gp_n = _module_grads('naive', x, state)
    out_s, gx_s, gp_s = _module_grads('sdpa', x, state)
    assert (out_n - out_s).abs().max() <= 1e-4
    assert (gx_n - gx_s).abs().max() <= 1e-4
    for name in gp_n:
        assert (gp_n[name] - gp_s[name]).abs().max() <= 1e-4, name
    assert gp_n['relative_position_bias'].abs().sum() > 0


def test_cpu_training_runs_the_fused_kernel_with_bias_gradient():
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 16, 4, requires_grad=True) for _ in range(3))
    bias = torch.randn(2, 16, 16, requires_grad=True)
    upstream = torch.randn(3, 2, 16, 4)
    out = sdpa_attention(q, k, v, bias)
    assert type(out.grad_fn).__name__ == 'FusedBiasAttentionBackward'
    out.backward(upstream)
    fused = [t.grad for t in (q, k, v, bias)]
    for t in (q, k, v, bias):
        t.grad = None
    naive_attention(q, k, v, bias).backward(upstream)
    for name, got, want in zip(('q', 'k', 'v', 'bias'), fused, (q.grad, k.grad, v.grad, bias.grad)):
        assert want.abs().sum() > 0, name
        assert (got - want).abs().max() <= 1e-5, name


def test_the_fused_kernel_is_exact_on_views_whose_last_dimension_is_strided():
    """The window split hands q, k and v over as views whose head dimension is strided; torch's CPU flash kernel
    leaves part of its output unwritten for such inputs (an error of about 10 here, NaN where the memory it reused
    held NaN: the benchmark's training step diverged now and then), so the fused function makes them contiguous."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 16, 64).transpose(-1, -2).requires_grad_() for _ in range(3))  # (2, 4, 64, 16)
    assert q.stride()[-1] != 1
    bias = torch.randn(4, 64, 64, requires_grad=True)
    for _ in range(3):
        poison = torch.full((1 << 22,), float('nan'))  # freed memory the kernel's output may reuse
        del poison
        fused = FusedBiasAttention.apply(q, k, v, bias)
        assert (fused - naive_attention(q, k, v, bias)).abs().max() <= 1e-5


def test_fused_bias_attention_gradcheck():
    torch.manual_seed(0)
    inputs = [torch.randn(2, 2, 9, 3, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    inputs.append(torch.randn(2, 9, 9, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(FusedBiasAttention.apply, inputs)


@pytest.mark.skipif(not flex_attention_available(), reason='this torch has no FlexAttention')
def test_flex_forward_agrees_on_cpu_and_refuses_cpu_training():
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 64, 16) for _ in range(3))
    module = WindowAttention(32, 8, 2, attn_type='flex')
    torch.nn.init.normal_(module.relative_position_bias, std=0.5)
    with torch.no_grad():
        flex = module.attend(q, k, v)
        naive = naive_attention(q, k, v, module.bias())
    assert (flex - naive).abs().max() <= 1e-4
    with pytest.raises(ESCError, match='no CPU backward'):
        module(torch.randn(1, 32, 8, 8))


@pytest.mark.cuda
def test_all_backends_agree_on_cuda_forward_and_backward():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    q, k, v = (torch.randn(4, 4, 1024, 16, device='cuda', requires_grad=True) for _ in range(3))
    module = WindowAttention(64, 32, 4, attn_type='naive').cuda()
    torch.nn.init.normal_(module.relative_position_bias, std=0.5)
    results = {}
    for backend in ('naive', 'sdpa', 'flex'):
        module.attn_type = backend
        out = module.attend(q, k, v)
        grads = torch.autograd.grad(out.square().sum(), [q, k, v, module.relative_position_bias])
        results[backend] = (out, *grads)
    for backend in ('sdpa', 'flex'):
        for a, b in zip(results['naive'], results[backend]):
            assert (a - b).abs().max().item() <= 1e-3 * max(1.0, a.abs().max().item()), backend


def test_sdpa_matches_naive_kernel_level():
    q, k, v = (torch.randn(2, 3, 49, 8) for _ in range(3))
    bias = torch.randn(3, 49, 49)
    assert (sdpa_attention(q, k, v, bias) - naive_attention(q, k, v, bias)).abs().max() <= 1e-5
