"""SRFormer-light, the paper's SRFormer-lt baseline (esc/archs/srformer_arch.py): permuted self-attention checked
against its definition, the official option files (options/test/SRFormerLight) validated and run through
esc/test.py on random weights in the official checkpoint layout, one-line errors, and Table 4's #Params/#FLOPs.

No test here needs the official code: the layout and outputs were compared with it once, outside the suite
(docs/baselines.md says how and what was found).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Dict

import pytest
import torch

from esc.archs import SRFormer
from esc.archs.layers import pad_to_multiple
from esc.archs.srformer_arch import MASKED, PermutedSelfAttention, permuted_attention_mask
from esc.config.validation import validate_options
from esc.errors import ESCError
from esc.evaluation.complexity import count_flops, count_parameters
from esc.evaluation.paper import TABLE4
from tests.helpers.baselines import (assert_option_file_is_the_official_one, assert_option_files_run_through_esc_test,
                                     official_test_options, random_state)
from tests.helpers.networks import without_type
from tests.helpers.paths import REPO

SCALES = (2, 3, 4)
BENCHMARKS = ('Set5', 'Set14', 'B100', 'Urban100', 'Manga109')
TINY = dict(img_size=16, window_size=8, embed_dim=16, depths=[2, 2], num_heads=[2, 4], mlp_ratio=2,
            upsampler='pixelshuffledirect')


def option_file(scale: int) -> Path:
    return REPO / f'options/test/SRFormerLight/SRFormer_light_DFLIP_X{scale}.yml'


def light_network(scale: int) -> Dict[str, Any]:
    """SRFormer-light's network_g section as the official test files give it."""
    return dict(type='SRFormer', upscale=scale, in_chans=3, img_size=64, window_size=16, img_range=1.0,
                depths=[6, 6, 6, 6], embed_dim=60, num_heads=[6, 6, 6, 6], mlp_ratio=2,
                upsampler='pixelshuffledirect', resi_connection='1conv')


def official_options(scale: int, root: Path, checkpoint: str) -> Dict[str, Any]:
    """The official SRFormer_light_DFLIP_X<scale>.yaml, its paths under ``root``, on the CPU."""
    return official_test_options('SRFormer_light_DFLIP', light_network(scale), scale, root, checkpoint, 'params')


# --- permuted self-attention, against its definition -----------------------------------------------------------
def naive_psa(attn: PermutedSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """PSA of one (ws, ws, C) window written out token by token: key (i, j) is the 2×2 patch at rows 2i, 2i+1 and
    columns 2j, 2j+1, its four tokens' first C/4 ``kv`` channels side by side (the value: the last C/4); each query
    token (r, c) meets each key with the bias of the offset between its patch (r//2, c//2) and the key."""
    ws, _, c = x.shape
    half, heads, quarter = ws // 2, attn.num_heads, c // 4
    kv = attn.kv(x)
    keys = torch.empty(half, half, c)
    values = torch.empty(half, half, c)
    for i in range(half):
        for j in range(half):
            patch = [kv[2 * i + a, 2 * j + b] for a in range(2) for b in range(2)]
            keys[i, j] = torch.cat([token[:quarter] for token in patch])
            values[i, j] = torch.cat([token[quarter:] for token in patch])
    keys, values = keys.reshape(-1, heads, c // heads), values.reshape(-1, heads, c // heads)
    table = attn.relative_position_bias_table
    out = torch.empty(ws, ws, c)
    for r in range(ws):
        for col in range(ws):
            query = (attn.q(x[r, col]) * attn.scale).view(heads, c // heads)
            scores = torch.einsum('hd,khd->hk', query, keys)
            for k in range(half * half):
                di, dj = r // 2 - k // half + half - 1, col // 2 - k % half + half - 1
                scores[:, k] += table[di * (2 * half - 1) + dj]
            out[r, col] = torch.einsum('hk,khd->hd', scores.softmax(-1), values).reshape(c)
    return attn.proj(out.reshape(ws * ws, c))


def test_permuted_self_attention_is_its_definition():
    torch.manual_seed(0)
    attn = PermutedSelfAttention(dim=8, window_size=4, num_heads=2).eval()
    with torch.no_grad():
        attn.relative_position_bias_table.normal_(0, 1)
        windows = torch.randn(2, 4, 4, 8)
        got = attn(windows)
        for index in range(2):
            assert torch.allclose(got[index], naive_psa(attn, windows[index]), atol=1e-5)


@pytest.mark.parametrize('window', [8, 6])  # 6: an odd shift, whose half-grid bands end ⌈3/2⌉ = 2 before the edge
def test_shifted_mask_separates_the_regions_a_cyclic_shift_joins(window):
    size, shift = 2 * window, window // 2
    mask = permuted_attention_mask(size, size, window, shift)
    assert mask.shape == (4, window * window, window * window // 4)
    assert set(mask.unique().tolist()) == {0.0, MASKED}
    assert (mask[0] == 0).all()  # the top-left window holds one region only
    last = mask[-1].view(window, window, window // 2, window // 2)  # query (r, c) against key patch (i, j)
    keep = window - -(-shift // 2) * 2  # rows (and columns) of the last window in its first region, on the key grid
    assert (last[0, 0, :keep // 2, :keep // 2] == 0).all() and (last[0, 0, keep // 2:, :] == MASKED).all()
    assert (last[-1, -1, -1, -1] == 0).all() and (last[-1, -1, 0, 0] == MASKED).all()


# --- the network ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('scale', SCALES)
@pytest.mark.parametrize('size', [(3, 5), (16, 16), (13, 19)])
def test_any_lr_size_gives_exactly_scaled_output(scale, size):
    net = SRFormer(upscale=scale, **TINY).eval()
    net.load_state_dict(random_state(net))
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        out = net(x)
        padded = net(pad_to_multiple(x, 8))[..., :size[0] * scale, :size[1] * scale]
    assert out.shape == (1, 3, size[0] * scale, size[1] * scale)
    assert torch.allclose(out, padded, atol=1e-6)  # the network pads to whole windows itself, as the official code


def test_stored_masks_are_those_of_img_size_and_other_sizes_get_their_own():
    net = SRFormer(upscale=2, **TINY).eval()
    block = net.layers[0].residual_group.blocks[1]
    assert block.shift_size == 4 and net.layers[0].residual_group.blocks[0].attn_mask is None
    assert torch.equal(block.attn_mask, permuted_attention_mask(16, 16, 8, 4))
    assert torch.equal(block.mask(24, 32), permuted_attention_mask(24, 32, 8, 4))
    one_window = SRFormer(upscale=2, **{**TINY, 'img_size': 8})  # the official rule: no shifts at all
    assert all(b.shift_size == 0 for g in one_window.layers for b in g.residual_group.blocks)
    assert not any(k.endswith('attn_mask') for k in one_window.state_dict())


def test_batch_equals_single_images():
    net = SRFormer(upscale=3, **TINY).eval()
    net.load_state_dict(random_state(net))
    x = torch.rand(3, 3, 12, 20)
    with torch.no_grad():
        whole = net(x)
        single = torch.cat([net(x[i:i + 1]) for i in range(3)])
    assert torch.allclose(whole, single, atol=1e-5)


@pytest.mark.parametrize('options', [
    dict(upsampler='pixelshuffle', resi_connection='3conv', upscale=4),
    dict(upsampler='nearest+conv', upscale=4, qkv_bias=False, patch_norm=False),
    dict(upsampler='', upscale=1, ape=True),
])
def test_other_official_configurations_build_train_and_run(options):
    net = SRFormer(**{**TINY, **options, 'use_checkpoint': True, 'drop_path_rate': 0.2})
    x = torch.rand(2, 3, 16, 16)
    net(x).mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 3, 16 * net.upscale, 16 * net.upscale)


@pytest.mark.parametrize('options,message', [
    (dict(window_size=7), 'window_size must be even'),
    (dict(embed_dim=18, num_heads=[2, 2]), 'embed_dim must be a multiple of 4'),
    (dict(num_heads=[2]), r'num_heads must give one head count per group of depths \(2\)'),
    (dict(num_heads=[3, 4]), r'embed_dim \(16\) is not divisible by num_heads \(3\)'),
    (dict(upsampler='pixelshuffle', upscale=5), "upsampler 'pixelshuffle' scales by a power of 2 or by 3, not 5"),
    (dict(upsampler='bicubic'), "upsampler must be one of 'pixelshuffle', "),
    (dict(resi_connection='2conv'), 'resi_connection must be one of 1conv, 3conv'),
    (dict(patch_size=4), 'patch_size must be 1'),
    (dict(img_size=0), 'img_size must be a positive integer'),
])
def test_bad_options_are_one_line(options, message):
    with pytest.raises(ESCError, match=rf'^network_g \(SRFormer\): {message}'):
        SRFormer(**{**TINY, **options})


def test_ape_names_the_size_it_holds():
    net = SRFormer(**{**TINY, 'ape': True}).eval()
    with pytest.raises(ESCError, match=r'^SRFormer: ape holds positions for 16x16 inputs \(img_size\); got 16x24'):
        net(torch.rand(1, 3, 16, 20))


def test_a_checkpoint_of_another_scale_or_network_is_one_line():
    x2, x3 = (SRFormer(**without_type(light_network(scale))) for scale in (2, 3))
    with pytest.raises(ESCError, match=r"^checkpoint does not fit SRFormer: 'upsample\.0\.weight' has shape "
                                       r'\(27, 60, 3, 3\) in the checkpoint but \(12, 60, 3, 3\) in the network$'):
        x2.load_state_dict(x3.state_dict())
    other_img_size = SRFormer(**{**without_type(light_network(2)), 'img_size': 48}).state_dict()
    with pytest.raises(ESCError, match=r"'layers\.0\.residual_group\.blocks\.1\.attn_mask' has shape \(9, 256, 64\)"):
        x2.load_state_dict(other_img_size)


# --- the option files -------------------------------------------------------------------------------------------
@pytest.mark.parametrize('scale', SCALES)
def test_option_files_are_the_official_ones_with_this_projects_paths(scale, tmp_path):
    weights = f'SRFormer_light_DFLIP_X{scale}.pth'
    assert_option_file_is_the_official_one(option_file(scale), official_options, scale, weights, tmp_path)


def test_a_scale_the_network_does_not_make_is_one_line():
    options = official_options(2, Path('data'), 'weights.pth')
    options['network_g']['upscale'] = 3
    with pytest.raises(ESCError, match=r'^network_g\.upscale: 3 differs from scale: 2$'):
        validate_options(options, is_train=False)


@pytest.mark.parametrize('scale', [2, pytest.param(3, marks=pytest.mark.slow), pytest.param(4, marks=pytest.mark.slow)])
def test_option_files_run_through_esc_test_on_official_checkpoints(scale, tmp_path):
    """This project's file (its paths pointed at one tiny pair per benchmark) and the official layout of it (LR
    names with 'x<scale>') through esc/test.py on a random checkpoint of the official layout: strict loading, the
    images the network gives (×2, ×3) and the PSNR of each set."""
    assert_option_files_run_through_esc_test(SRFormer(**without_type(light_network(scale))), scale, tmp_path,
                                             option_file(scale), official_options, param_keys=('params',),
                                             pad=16, size=12)


# --- Table 4: #Params and #FLOPs ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def light_parameters(scale: int) -> int:
    return count_parameters(SRFormer(**without_type(light_network(scale))))


@pytest.mark.parametrize('scale', SCALES)
def test_parameters_match_table4(scale):
    assert round(light_parameters(scale) / 1e3) == TABLE4['SRFormer-lt', scale].params_k
    outputs = 3 * (scale * scale - 4)  # only the upsampling conv differs from ×2: 3·r² outputs of 60·3·3 + 1
    assert light_parameters(scale) - light_parameters(2) == outputs * (60 * 9 + 1)


def flops_per_padded_pixel(net: SRFormer) -> int:
    """The multiply-accumulates per LR pixel (after padding to whole windows) written out from the architecture, and
    fvcore's LayerNorm count (5 per element): conv3×3 in, per block two LayerNorms, q (C²), kv (C²/2), scores and
    weighted sum against ws²/4 keys (C each), proj (C²), ConvFFN (2·C·hidden + 25·hidden), per group a conv3×3,
    the body's two LayerNorms and conv3×3, and the upsampling conv."""
    c, ws = net.embed_dim, net.window_size
    blocks = [b for group in net.layers for b in group.residual_group.blocks]
    hidden = blocks[0].mlp.fc1.out_features
    block = 2 * 5 * c + c * c + c * c // 2 + 2 * (ws * ws // 4) * c + c * c + 2 * c * hidden + 25 * hidden
    upsampling = net.upsample[0].out_channels * c * 9
    return 3 * c * 9 + len(blocks) * block + len(net.layers) * 9 * c * c + 2 * 5 * c + 9 * c * c + upsampling


def test_flops_are_the_architectures_count():
    net = SRFormer(upscale=2, **TINY)
    assert count_flops(net, 2, output_size=(2 * 16, 2 * 24)) == flops_per_padded_pixel(net) * 16 * 24
    assert count_flops(net, 2, output_size=(2 * 13, 2 * 19)) == flops_per_padded_pixel(net) * 16 * 24  # padded


PAPER_FLOPS_GAP_G = {2: 0.1, 3: 0.6, 4: 0.05}
"""How far the paper's #FLOPs may lie from fvcore's count here (G). ×4 agrees to the printed digit; ×2 (236.23 here,
236.3 printed) and ×3 (104.83 here, 105.4 printed) do not, and no input size or counting convention found fits
all three: the official class gives the very same fvcore count, and its own ``flops()`` gives 229.4/105.1/61.3 G
(docs/baselines.md)."""


@pytest.mark.slow
@pytest.mark.parametrize('scale', SCALES)
def test_flops_at_the_papers_protocol(scale):
    """fvcore on a 1280×720 output (LR 360×640, 240×426, 180×320, padded to whole 16×16 windows): four small
    traces each, about 20 s on a quiet machine."""
    net = SRFormer(**without_type(light_network(scale)))
    flops = count_flops(net, scale)
    lr_height, lr_width = 720 // scale, 1280 // scale
    assert flops == flops_per_padded_pixel(net) * (-(-lr_height // 16) * 16) * (-(-lr_width // 16) * 16)
    assert abs(flops / 1e9 - TABLE4['SRFormer-lt', scale].flops_g) <= PAPER_FLOPS_GAP_G[scale]
