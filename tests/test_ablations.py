"""Table 3 ablations as options of the ESC arch: structure, #Params and #FLOPs where fully determined."""
import pytest
import torch

from esc.archs import build_variant
from esc.archs.attention import WindowAttention
from esc.archs.layers import ConvAttn
from esc.errors import ESCError
from esc.evaluation.complexity import count_flops, count_parameters
from esc.evaluation.paper import TABLE3

DETERMINED = {
    '9x9 LK': dict(kernel_size=9),
    '17x17 LK': dict(kernel_size=17),
    'w/o LK Share': dict(share_lk=False),
    'w/o LK Share and DK': dict(share_lk=False, dynamic_kernel=False),
}
OUR_READINGS = {  # the paper gives no N/M for these; ours, and how close they come
    'WS16 and more layers': dict(window_size=16, conv_blocks=7),
    'WS24 and more layers': dict(window_size=24, conv_blocks=6),
}


def tiny(**options):
    return build_variant('ESC', 2, dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=2, window_size=8,
                         num_heads=2, **options)


@pytest.mark.parametrize('case', list(DETERMINED) + list(OUR_READINGS))
def test_parameters_match_table3(case):
    params = count_parameters(build_variant('ESC', 2, **{**DETERMINED, **OUR_READINGS}[case]))
    if case == 'w/o LK Share and DK':
        assert abs(params / 1e3 - TABLE3[case].params_k) < 1  # 1,949,264: within 1K as the issue allows
    else:
        assert round(params / 1e3) == TABLE3[case].params_k


@pytest.mark.slow  # seven fvcore counts, about a minute and a half
@pytest.mark.parametrize('case', list(DETERMINED) + list(OUR_READINGS))
def test_flops_match_table3(case):
    net = build_variant('ESC', 2, attn_type='naive', **{**DETERMINED, **OUR_READINGS}[case])
    assert abs(count_flops(net, 2) / 1e9 - TABLE3[case].flops_g) <= (0.2 if case == 'w/o LK Share and DK' else 0.05)


def test_unshared_large_kernels_are_private_and_8_symmetric():
    net = tiny(share_lk=False)
    assert not hasattr(net, 'plk_filter')
    kernels = [m.plk.lk for m in net.modules() if isinstance(m, ConvAttn)]
    assert len(kernels) == 2 and kernels[0] is not kernels[1]
    x = torch.rand(1, 3, 9, 9)
    with torch.no_grad():
        before = net(x)
        kernels[0].mul_(2)  # each ConvAttn uses its own kernel
        assert before.shape == (1, 3, 18, 18) and not torch.allclose(net(x), before)


def test_without_dynamic_kernel_has_no_generator():
    assert not any('dwc_proj' in k for k in tiny(dynamic_kernel=False).state_dict())
    assert any('dwc_proj' in k for k in tiny().state_dict())


def test_mixers_swap_self_attention_and_conv_attn():
    only_sa = tiny(inner_mixer='self_attn')
    assert not hasattr(only_sa, 'plk_filter')
    assert all(isinstance(m, WindowAttention) for m in only_sa.blocks[0].pconvs)
    only_ca = tiny(first_mixer='conv_attn')
    assert isinstance(only_ca.blocks[0].attn, ConvAttn)
    assert not any(isinstance(m, WindowAttention) for m in only_ca.modules())
    for net in (only_sa, only_ca):
        out = net(torch.rand(2, 3, 10, 12))
        out.mean().backward()
        assert out.shape == (2, 3, 20, 24)
        assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ESCError, match="inner_mixer must be one of self_attn, conv_attn, got 'mlp'"):
        tiny(inner_mixer='mlp')
