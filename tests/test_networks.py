"""The three networks: shapes the official code refuses, batch > 1, ×2 → ×r loading, bad options."""
import pytest
import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY

from esc.archs import build_variant
from esc.archs.esc_arch import resample_subpixel_conv
from esc.archs.layers import pad_to_multiple
from esc.errors import ESCError
from tests.helpers.networks import randomise, small


@pytest.mark.parametrize('arch,scale', [('ESC', 2), ('ESC', 3), ('ESCFP', 4), ('ESCReal', 4)])
@pytest.mark.parametrize('size', [(1, 1), (2, 3), (3, 16), (5, 7), (9, 4), (17, 33)])
def test_any_lr_size_gives_exactly_scaled_output(arch, scale, size):
    net = randomise(small(arch, scale))
    with torch.no_grad():
        out = net(torch.rand(1, 3, *size))
    assert out.shape == (1, 3, size[0] * scale, size[1] * scale)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize('arch', ['ESC', 'ESCFP', 'ESCReal'])
def test_eval_batch_equals_single_images(arch):
    net = randomise(small(arch, 4 if arch == 'ESCReal' else 2))
    x = torch.rand(3, 3, 12, 10)
    with torch.no_grad():
        batched = net(x)
        singles = torch.cat([net(x[i:i + 1]) for i in range(3)])
    assert (batched - singles).abs().max() <= 1e-5


def test_image_level_padding_matches_official_evaluation_where_it_applies():
    """Padding the LR image to the window (official evaluation) then cropping equals doing it by hand."""
    net = randomise(small())
    x = torch.rand(1, 3, 13, 21)
    with torch.no_grad():
        ours = net(pad_to_multiple(x, 8))[..., :26, :42]
        official = net(F.pad(x, (0, 3, 0, 3), mode='reflect'))[..., :26, :42]
    assert torch.equal(ours, official)


def test_resample_subpixel_conv_is_bilinear_per_tap():
    weight, bias = torch.randn(12, 5, 3, 3), torch.randn(12)
    new_weight, new_bias = resample_subpixel_conv(weight, bias, 4)
    assert new_weight.shape == (48, 5, 3, 3) and new_bias.shape == (48,)
    tap = weight[:, 2, 1, 0].view(1, 3, 2, 2)
    expected = F.interpolate(tap, size=(4, 4), mode='bilinear', align_corners=False).reshape(48)
    assert torch.allclose(new_weight[:, 2, 1, 0], expected, atol=1e-6)
    assert torch.allclose(new_bias, F.interpolate(bias.view(1, 3, 2, 2), size=(4, 4), mode='bilinear',
                                                  align_corners=False).reshape(48), atol=1e-6)
    same_weight, _ = resample_subpixel_conv(weight, bias, 2)
    assert torch.allclose(same_weight, weight, atol=1e-6)


@pytest.mark.parametrize('arch,scale', [('ESC', 3), ('ESC', 4), ('ESCFP', 4)])
def test_x2_state_dict_loads_into_other_scales(arch, scale):
    x2 = randomise(small(arch, 2))
    target = small(arch, scale)
    target.load_state_dict(x2.state_dict())
    expected, _ = resample_subpixel_conv(x2.to_img.weight.detach(), x2.to_img.bias.detach(), scale)
    assert torch.equal(target.to_img.weight.detach(), expected)
    assert torch.equal(target.blocks[0].attn.relative_position_bias, x2.blocks[0].attn.relative_position_bias)


@pytest.mark.parametrize('options,message', [
    (dict(pdim=32), r'pdim \(32\) must not exceed dim \(16\)'),
    (dict(num_heads=3), r'dim \(16\) is not divisible by num_heads \(3\)'),
    (dict(attn_type='flash'), r"attn_type: 'flash' is not supported"),
    (dict(windows_size=8), r'unknown option\(s\) windows_size'),
    (dict(upscaling_factor=None), r'missing option upscaling_factor'),
    (dict(kernel_size=4), r'kernel_size must be odd'),
    (dict(n_blocks=0), r'n_blocks must be a positive integer'),
    (dict(pdim=1), r'pdim must be at least 2, got 1'),
])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(ESCError, match=message) as info:
        small(**options)
    assert '\n' not in str(info.value)


def test_checkpoint_of_another_architecture_names_first_mismatch():
    esc_light = build_variant('ESC-light', 2)
    esc_fp = build_variant('ESC-FP', 2)
    with pytest.raises(ESCError, match=r"key 'lk_channel' is missing") as info:
        esc_fp.load_state_dict(esc_light.state_dict())
    assert '\n' not in str(info.value)
    wide = small(dim=24, num_heads=2)
    with pytest.raises(ESCError, match=r"'proj.weight' has shape \(16, 3, 3, 3\) in the checkpoint but "
                                       r"\(24, 3, 3, 3\) in the network"):
        wide.load_state_dict(small().state_dict())
    extra = {**small().state_dict(), 'head.weight': torch.zeros(1)}
    with pytest.raises(ESCError, match=r"unexpected key 'head.weight'"):
        small().load_state_dict(extra)


def test_use_ln_adds_a_layer_norm_before_every_convffn():
    keys = small(use_ln=True).state_dict().keys()
    assert {'blocks.0.lns.0.weight', 'blocks.0.lns.1.bias'} <= set(keys)
    assert not any('.lns.' in k for k in small().state_dict())


def test_variants_build_the_paper_configurations():
    net = build_variant('ESC-light', 3)
    assert len(net.blocks) == 3 and net.upscaling_factor == 3
    with pytest.raises(ESCError, match="variant 'ESC-huge' is unknown"):
        build_variant('ESC-huge', 2)


def test_training_step_reaches_every_parameter():
    net = small('ESC', 2).train()
    randomise(net)
    net(torch.rand(2, 3, 12, 12)).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_importing_the_networks_needs_neither_basicsr_nor_torchvision():
    import subprocess
    import sys
    code = ('import sys, esc, esc.archs, esc.evaluation.benchmark; '
            'print(sorted(m for m in ("basicsr", "torchvision") if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == '[]'


def test_compat_registers_every_network_with_basicsr():
    from esc.archs import NETWORKS
    for name, network in NETWORKS.items():
        assert ARCH_REGISTRY.get(name) is network
    assert ARCH_REGISTRY.get('Bicubic').__module__ == 'esc.archs.bicubic_arch'
