"""HiT-SRF, the paper's HiT-SRF baseline (esc/archs/hitsrf_arch.py): spatial-channel correlation and its position
bias checked against their definitions written out, the official checkpoint layout, the official option files
(options/test/HiTSRF) validated and run through esc/test.py on random weights, one-line errors, and Table 4's
#Params/#FLOPs.

No test here needs the official code: the layout and outputs were compared with it once, outside the suite
(docs/baselines.md says how and what was found).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Dict

import pytest
import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY

from esc.archs import NETWORKS, HiT_SRF
from esc.archs.hitsrf_arch import SpatialChannelCorrelation
from esc.archs.layers import reflect_pad
from esc.config.validation import validate_options
from esc.errors import ESCError
from esc.evaluation.complexity import HD_OUTPUT, count_flops, count_parameters
from esc.evaluation.paper import TABLE4
from tests.helpers.baselines import (assert_option_file_is_the_official_one, assert_option_files_run_through_esc_test,
                                     official_test_options, random_state)
from tests.helpers.networks import without_type
from tests.helpers.paths import REPO

SCALES = (2, 3, 4)
TINY = dict(embed_dim=16, depths=[3, 2], num_heads=[2, 4], base_win_size=[4, 4], hier_win_ratios=[0.5, 1, 2])


def option_file(scale: int) -> Path:
    return REPO / f'options/test/HiTSRF/HiTSRF_DFLIP_X{scale}.yml'


def hitsrf_network(scale: int) -> Dict[str, Any]:
    """HiT-SRF's network_g section as the official test files give it."""
    return dict(type='HiT_SRF', upscale=scale, in_chans=3, img_size=64, base_win_size=[8, 8], img_range=1.0,
                depths=[6, 6, 6, 6], embed_dim=60, num_heads=[6, 6, 6, 6], expansion_factor=2, resi_connection='1conv',
                hier_win_ratios=[0.5, 1, 2, 4, 6, 8], upsampler='pixelshuffledirect')


def official_options(scale: int, root: Path, checkpoint: str) -> Dict[str, Any]:
    """The official HiTSRF_DFLIP_X<scale>.yaml, its paths under ``root``, on the CPU."""
    return official_test_options('HiTSRF_DFLIP', hitsrf_network(scale), scale, root, checkpoint, 'params')


def perturbed(net: HiT_SRF, seed: int = 0) -> HiT_SRF:
    net.load_state_dict(random_state(net, seed))
    return net.eval()


# --- spatial-channel correlation, against its definition -------------------------------------------------------
def naive_position_bias(corr: SpatialChannelCorrelation) -> torch.Tensor:
    """(heads, L, cells): for query (y, x) and key cell (a, b), the mean over the cell's pixels (y', x') of the
    position MLP at the offset (y − y', x − x')."""
    (wh, ww), (nh, nw), (ch, cw) = corr.window_size, corr.cells, corr.cell_size
    offsets = torch.tensor([[[[float(y - (a * ch + i)), float(x - (b * cw + j))] for i in range(ch) for j in range(cw)]
                             for a in range(nh) for b in range(nw)] for y in range(wh) for x in range(ww)])
    return corr.pos(offsets).mean(2).permute(2, 0, 1)  # (L, cells, pixels, heads) → (heads, L, cells)


def naive_scc(corr: SpatialChannelCorrelation, qv: torch.Tensor) -> torch.Tensor:
    """SCC of one (wh, ww, C) window of DFE's output (computed on the whole map) written out: q its first C/2
    channels, v the rest, heads of d = C/(2h) consecutive channels. Spatial: each key cell's v is ``spatial_linear``
    of its pixels; a query's head output is Σ_cells (q·v_cell / d + bias) v_cell. Channel: V·(QᵀV / L)ᵀ over all
    heads at once."""
    wh, ww, c = qv.shape
    heads, half = corr.num_heads, c // 2
    d = half // heads
    (nh, nw), (ch, cw) = corr.cells, corr.cell_size
    q, v = qv[..., :half], qv[..., half:]
    weight, offset = corr.spatial_linear.weight.view(ch, cw, 1), corr.spatial_linear.bias
    cells = torch.stack([(v[a * ch:(a + 1) * ch, b * cw:(b + 1) * cw] * weight).sum((0, 1)) + offset
                         for a in range(nh) for b in range(nw)])  # (cells, C/2)
    bias = naive_position_bias(corr)
    spatial = torch.empty(wh * ww, half)
    for pixel in range(wh * ww):
        query = q.reshape(-1, half)[pixel]
        for head in range(heads):
            channels = slice(head * d, (head + 1) * d)
            scores = cells[:, channels] @ query[channels] / d + bias[head, pixel]
            spatial[pixel, channels] = scores @ cells[:, channels]
    queries, values = q.reshape(-1, half), v.reshape(-1, half)
    channel = values @ (queries.t() @ values / (wh * ww)).t()
    return corr.proj(torch.cat([spatial, channel], -1)).view(wh, ww, c)


@pytest.mark.parametrize('window,base', [((4, 4), (8, 8)), ((8, 8), (4, 4)), ((4, 8), (2, 4))])
def test_position_bias_is_the_mean_over_each_key_cell(window, base):
    torch.manual_seed(0)
    corr = SpatialChannelCorrelation(16, 2, window, base).eval()
    with torch.no_grad():
        assert torch.allclose(corr.position_bias(), naive_position_bias(corr), atol=1e-5)


@pytest.mark.parametrize('window,base', [((8, 8), (4, 4)), ((4, 4), (8, 8))])
def test_spatial_channel_correlation_is_its_definition(window, base):
    """Two windows side by side: each is correlated on its own, as the definition says."""
    torch.manual_seed(0)
    corr = SpatialChannelCorrelation(20, 2, window, base).eval()
    x = torch.randn(1, window[0], 2 * window[1], 20)
    with torch.no_grad():
        for p in corr.parameters():
            p.normal_(0, 0.3)
        got = corr(x)[0]
        qv = corr.qv(x.permute(0, 3, 1, 2))[0].permute(1, 2, 0)
        for index in range(2):
            columns = slice(index * window[1], (index + 1) * window[1])
            assert torch.allclose(got[:, columns], naive_scc(corr, qv[:, columns]), atol=1e-4)


@pytest.mark.parametrize('size,pad', [(5, 4), (5, 5), (5, 12), (9, 24), (2, 3)])
def test_wide_window_padding_is_the_official_two_reflections(size, pad):
    """Where a window needs more padding than the map has rows, the official block reflect-pads by size − 1 and then
    reflects that; :func:`reflect_pad` keeps reflecting back and forth, which is the same wherever the official
    two steps work (pad ≤ 3·size − 3)."""
    x = torch.arange(float(size)).view(1, 1, size, 1).expand(1, 1, size, 3)
    first = F.pad(x, (0, 0, 0, size - 1), mode='reflect')
    official = F.pad(first, (0, 0, 0, pad - (size - 1)), mode='reflect')
    assert torch.equal(reflect_pad(x, 0, pad, 0, 0), official)


# --- the network ------------------------------------------------------------------------------------------------
def test_registered_for_option_files_and_built_with_the_official_layout():
    assert NETWORKS['HiT_SRF'] is HiT_SRF and ARCH_REGISTRY.get('HiT_SRF') is HiT_SRF
    state = HiT_SRF(**without_type(hitsrf_network(2))).state_dict()
    assert len(state) == 882  # as the official class at the official files' options
    block = 'layers.3.residual_group.blocks.5.'
    shapes = {'correlation.qv.conv.0.weight': (12, 60, 1, 1), 'correlation.qv.conv.2.weight': (12, 12, 3, 3),
              'correlation.qv.conv.4.weight': (60, 12, 1, 1), 'correlation.qv.linear.weight': (60, 60, 1, 1),
              'correlation.proj.weight': (60, 60), 'correlation.pos.pos_proj.weight': (3, 2),
              'correlation.pos.pos1.0.weight': (3,), 'correlation.pos.pos3.2.weight': (6, 3),
              'mlp.fc1.weight': (120, 60), 'mlp.dwconv.depthwise_conv.0.weight': (120, 1, 5, 5),
              'mlp.fc2.weight': (60, 120), 'norm1.weight': (60,), 'norm2.bias': (60,)}
    assert {k: tuple(state[block + k].shape) for k in shapes} == shapes
    assert [state[f'layers.0.residual_group.blocks.{j}.correlation.spatial_linear.weight'].shape[1]
            for j in range(6)] == [1, 1, 4, 16, 36, 64]  # windows 4…64 in cells of at most 8×8
    for key, shape in {'conv_first.weight': (60, 3, 3, 3), 'patch_embed.norm.weight': (60,), 'layers.2.conv.weight':
                       (60, 60, 3, 3), 'norm.bias': (60,), 'conv_after_body.weight': (60, 60, 3, 3),
                       'upsample.0.weight': (12, 60, 3, 3)}.items():
        assert tuple(state[key].shape) == shape


@pytest.mark.parametrize('scale', SCALES)
@pytest.mark.parametrize('size', [(1, 1), (3, 5), (13, 19)])
def test_any_lr_size_gives_exactly_scaled_output(scale, size):
    """Inputs smaller than a window, even one pixel, are padded by reflecting back and forth."""
    net = perturbed(HiT_SRF(upscale=scale, **TINY))
    with torch.no_grad():
        out = net(torch.rand(1, 3, *size))
    assert out.shape == (1, 3, size[0] * scale, size[1] * scale) and torch.isfinite(out).all()


def test_features_are_what_the_upsampler_takes():
    """``features`` is the body on the input as given (for an LTE head); ``forward`` adds the mean shift, the
    range and the upsampler around it."""
    net = perturbed(HiT_SRF(upscale=2, img_range=255.0, **TINY))
    x = torch.rand(2, 3, 9, 14)
    with torch.no_grad():
        feat = net.features(x)
        mean = torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1)
        expected = net.upsample(net.features((x - mean) * 255.0)) / 255.0 + mean
        assert feat.shape == (2, 16, 9, 14)
        assert torch.allclose(net(x), expected, atol=1e-6)
        assert not torch.allclose(net.features(x + 0.1), feat)  # nothing normalises the input away


def test_batch_equals_single_images():
    net = perturbed(HiT_SRF(upscale=3, **TINY))
    x = torch.rand(3, 3, 12, 20)
    with torch.no_grad():
        whole = net(x)
        single = torch.cat([net(x[i:i + 1]) for i in range(3)])
    assert torch.allclose(whole, single, atol=1e-5)


@pytest.mark.parametrize('options', [
    dict(upsampler='pixelshuffle', resi_connection='3conv', upscale=4),
    dict(upsampler='nearest+conv', upscale=4, patch_norm=False),
    dict(upsampler=None, upscale=1, ape=True, img_size=8),
    dict(upsampler='pixelshuffle', upscale=3, in_chans=1),
])
def test_other_official_configurations_build_train_and_run(options):
    net = HiT_SRF(**{**TINY, **options, 'use_checkpoint': True, 'drop_path_rate': 0.2, 'drop_rate': 0.1,
                     'value_drop_rate': 0.1})
    channels = net.in_chans
    x = torch.rand(2, channels, 8, 8)
    net(x).mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    with torch.no_grad():
        assert net.eval()(x).shape == (2, channels, 8 * net.upscale, 8 * net.upscale)


def test_stochastic_depth_and_dropout_act_in_training_only():
    net = perturbed(HiT_SRF(upscale=2, **TINY, drop_path_rate=0.5, value_drop_rate=0.3))
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        evaluated = net(x)
        assert torch.equal(net(x), evaluated)
        net.train()
        assert not torch.allclose(net(x), evaluated)


@pytest.mark.parametrize('options,message', [
    (dict(embed_dim=18), r'embed_dim \(18\) must be divisible by 2 × num_heads \(2\)'),
    (dict(num_heads=[2]), r'num_heads must give a positive integer for each of the 2 groups'),
    (dict(embed_dim=8, num_heads=[2, 2]), 'embed_dim must be at least 16'),
    (dict(depths=[4, 2]), 'hier_win_ratios gives 3 windows, a group of depth 4 needs one per block'),
    (dict(hier_win_ratios=[0.5, 1.5, 2]), 'a window height of 6 is neither at most nor a multiple of the base'),
    (dict(hier_win_ratios=[0.1, 1, 2]), r'hier_win_ratios make a window of 0×0'),
    (dict(base_win_size=[4, 4, 4]), 'base_win_size must be a positive integer or a pair of them'),
    (dict(upsampler='pixelshuffle', upscale=5), "upsampler 'pixelshuffle' takes upscale 2\\^n or 3, got 5"),
    (dict(upsampler='nearest+conv', upscale=2), "upsampler 'nearest\\+conv' takes upscale 4 only, got 2"),
    (dict(upsampler='bicubic'), 'upsampler must be one of pixelshuffle, pixelshuffledirect'),
    (dict(resi_connection='2conv'), 'resi_connection must be one of 1conv, 3conv'),
    (dict(upscale=0), 'upscale must be a positive integer'),
    (dict(mlp_ratio=0), 'mlp_ratio must be a positive number'),
    (dict(expansion_factor=4), r'expansion_factor \(4\) differs from mlp_ratio \(2.0\); HiT-SRF never reads'),
])
def test_bad_options_are_one_line(options, message):
    with pytest.raises(ESCError, match=rf'^network_g \(HiT_SRF\): {message}'):
        HiT_SRF(**{**TINY, **options})


def test_bad_inputs_are_one_line():
    net = HiT_SRF(upscale=2, **TINY).eval()
    with pytest.raises(ESCError, match=r'^x: expected an N×3×H×W image batch, got shape \(1, 4, 8, 8\)$'):
        net(torch.rand(1, 4, 8, 8))
    with pytest.raises(ESCError, match=r'^x: expected an N×3×H×W image batch, got shape \(3, 8, 8\)$'):
        net.features(torch.rand(3, 8, 8))
    with_ape = HiT_SRF(upscale=2, ape=True, img_size=16, **TINY).eval()
    with pytest.raises(ESCError, match=r'^x: a HiT_SRF with ape takes 16×16 inputs only .* got 16×20$'):
        with_ape(torch.rand(1, 3, 16, 20))


def test_a_checkpoint_of_another_scale_or_configuration_is_one_line():
    x2, x3 = (HiT_SRF(**without_type(hitsrf_network(scale))) for scale in (2, 3))
    with pytest.raises(ESCError, match=r"^checkpoint does not fit HiT_SRF: 'upsample\.0\.weight' has shape "
                                       r'\(27, 60, 3, 3\) in the checkpoint but \(12, 60, 3, 3\) in the network$'):
        x2.load_state_dict(x3.state_dict())
    ours = x2.state_dict()
    with pytest.raises(ESCError, match=r"^checkpoint does not fit HiT_SRF: key 'layers\.3\.conv\.weight' is missing"):
        x2.load_state_dict({k: v for k, v in ours.items() if not k.startswith('layers.3.conv')})


# --- the option files -------------------------------------------------------------------------------------------
@pytest.mark.parametrize('scale', SCALES)
def test_option_files_are_the_official_ones_with_this_projects_paths(scale, tmp_path):
    weights = f'HiTSRF_DFLIP_X{scale}.pth'
    assert_option_file_is_the_official_one(option_file(scale), official_options, scale, weights, tmp_path)


def test_an_option_the_network_does_not_take_is_one_line():
    options = official_options(2, Path('data'), 'weights.pth')
    options['network_g']['window_size'] = 8
    with pytest.raises(ESCError, match=r'^network_g\.window_size: unknown option'):
        validate_options(options, is_train=False)


@pytest.mark.slow
@pytest.mark.parametrize('scale', SCALES)
def test_option_files_run_through_esc_test_on_official_checkpoints(scale, tmp_path):
    """This project's file (its paths pointed at one tiny pair per benchmark) or the official layout of it (LR
    names with 'x<scale>') through esc/test.py on a random checkpoint of the official layout: strict loading, the
    images the network gives (unpadded: HiT-SRF pads inside each block, and ESRModel pads only to a window_size
    the network has not got) and the PSNR of each set. Six full-size HiT-SRF passes on 10×10 images and a test
    run: about 10 s on a quiet machine (a minute on a loaded one)."""
    assert_option_files_run_through_esc_test(HiT_SRF(**without_type(hitsrf_network(scale))), scale, tmp_path,
                                             option_file(scale), official_options, param_keys=('params',),
                                             pad=0, size=10)


# --- Table 4: #Params and #FLOPs ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def hitsrf_parameters(scale: int) -> int:
    return count_parameters(HiT_SRF(**without_type(hitsrf_network(scale))))


@pytest.mark.parametrize('scale', SCALES)
def test_parameters_match_table4(scale):
    assert round(hitsrf_parameters(scale) / 1e3) == TABLE4['HiT-SRF', scale].params_k
    outputs = 3 * (scale * scale - 4)  # only the upsampling conv differs from ×2: 3·r² outputs of 60·3·3 + 1
    assert hitsrf_parameters(scale) - hitsrf_parameters(2) == outputs * (60 * 9 + 1)


def architecture_flops(net: HiT_SRF, h: int, w: int) -> int:
    """The multiply-accumulates of an h×w LR input written out from the architecture, with fvcore's LayerNorm count
    (5 per element). On the map padded to block j's window: DFE (C→C/5, 3×3 at C/5, C/5→C, and the C×C gate), the
    cell mixing (C/2 per pixel), spatial scores and weighted sum against the window's cells (C/2 · cells each),
    channel correlation (two (C/2)² products per pixel) and ``proj`` (C²). On the map itself: two LayerNorms and
    the ConvFFN (2·C·hidden + 25·hidden) per block, a conv3×3 per group, the head, the body's norms and conv3×3,
    and the upsampling conv. Per block, once: the position MLP over the (2wh − 1)(2ww − 1) offsets."""
    c = net.embed_dim
    pixels = h * w
    total = pixels * (3 * c * 9 + 2 * 5 * c + 9 * c * c + net.upsample[0].out_channels * c * 9)
    for group in net.layers:
        total += pixels * 9 * c * c
        for block in group.residual_group.blocks:
            corr = block.correlation
            (wh, ww), (nh, nw) = corr.window_size, corr.cells
            narrow, hidden = corr.qv.conv[0].out_channels, block.mlp.fc1.out_features
            width = corr.pos.pos_proj.out_features
            padded = -(-h // wh) * wh * -(-w // ww) * ww
            total += padded * (2 * c * narrow + 9 * narrow * narrow + c * c + c // 2 + c * nh * nw + c * c // 2 + c * c)
            total += pixels * (2 * 5 * c + 2 * c * hidden + 25 * hidden)
            total += (2 * wh - 1) * (2 * ww - 1) * (2 * width + 3 * 5 * width + 2 * width * width
                                                    + width * corr.num_heads)
    return total


def test_flops_are_the_architectures_count():
    """fvcore's count of a small HiT-SRF at sizes off every window multiple, windows wider than the map included."""
    net = HiT_SRF(upscale=2, embed_dim=20, depths=[4], num_heads=[2], base_win_size=[4, 4],
                  hier_win_ratios=[0.5, 1, 2, 4])
    for h, w in [(5, 7), (9, 20)]:
        assert count_flops(net, 2, output_size=(2 * h, 2 * w)) == architecture_flops(net, h, w)


PAPER_X3_LR = (240, 427)
"""The LR size the paper's ×3 #FLOPs fits: 1280/3 rounded up (a 1281-pixel-wide output). The protocol here (and the
paper's ESC ×3 row) takes 1280 // 3 = 426, which gives 101.42 G against the printed 101.6; 427 gives 101.57 G. ×2
and ×4 divide 1280×720 exactly and agree to the printed digit (docs/baselines.md)."""


@pytest.mark.parametrize('scale', SCALES)
def test_flops_match_table4(scale):
    """The architecture's count at the paper's 1280×720 output (LR 360×640, 240×426, 180×320)."""
    net = HiT_SRF(**without_type(hitsrf_network(scale)))
    lr = (HD_OUTPUT[0] // scale, HD_OUTPUT[1] // scale)
    flops_g = architecture_flops(net, *lr) / 1e9
    paper = TABLE4['HiT-SRF', scale].flops_g
    if scale == 3:
        assert round(flops_g, 2) == 101.42 and paper == 101.6
        assert round(architecture_flops(net, *PAPER_X3_LR) / 1e9, 1) == paper
    else:
        assert round(flops_g, 1) == paper


@pytest.mark.slow
def test_fvcore_at_the_papers_protocol_is_the_architectures_count():
    """count_flops traces HiT-SRF ×4 whole at 180×320 (its windows vary block by block, so no small traces stand in):
    about 20 s on a quiet machine. ×2 and ×3 (226,476,549,096 and 101,422,543,848) were traced the same way once."""
    net = HiT_SRF(**without_type(hitsrf_network(4)))
    flops = count_flops(net, 4)
    assert flops == architecture_flops(net, 180, 320) == 57_986_512_872
    assert round(flops / 1e9, 1) == TABLE4['HiT-SRF', 4].flops_g
