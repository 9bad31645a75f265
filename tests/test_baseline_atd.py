"""ATD-light, the paper's ATD-lt baseline (esc/archs/atd_arch.py): the official state-dict layout and outputs (against
spandrel's ATD, an independently kept copy of the official class, where installed), the category attention against
its definition, the padding, the features for ATD-light+LTE, the official option files (options/test/ATDLight)
validated and run through esc/test.py on random weights in the official checkpoint layout, one-line errors, and
Table 4's #Params/#FLOPs.

No test here needs the official code: the layout and outputs were compared with it once, outside the suite
(docs/baselines.md says how and what was found).
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
import torch

from esc.archs import ATD, NETWORKS
from esc.archs.atd_arch import ATD_LIGHT, CategoryAttention, shifted_window_mask, symmetric_pad
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
TINY = dict(embed_dim=16, depths=[2, 3], num_heads=[2, 4], window_size=8, category_size=16, num_tokens=8,
            reducted_dim=4, convffn_kernel_size=3, mlp_ratio=2)


def option_file(scale: int) -> Path:
    return REPO / f'options/test/ATDLight/ATD_light_DFLIP_X{scale}.yml'


def light_network(scale: int) -> Dict[str, Any]:
    """ATD-light's network_g section as the official test files give it."""
    return dict(type='ATD', upscale=scale, in_chans=3, img_size=64, embed_dim=48, depths=[6, 6, 6, 6],
                num_heads=[4, 4, 4, 4], window_size=16, category_size=128, num_tokens=64, reducted_dim=8,
                convffn_kernel_size=7, img_range=1.0, mlp_ratio=1, upsampler='pixelshuffledirect',
                resi_connection='1conv', use_checkpoint=False)


def official_options(scale: int, root: Path, checkpoint: str) -> Dict[str, Any]:
    """The official ATD_light_DFLIP_X<scale>.yaml, its paths under ``root``, on the CPU."""
    return official_test_options('ATD_light_DFLIP', light_network(scale), scale, root, checkpoint, 'params_ema')


@functools.lru_cache(maxsize=None)
def light(scale: int) -> ATD:
    return ATD(**without_type(light_network(scale))).eval()


# --- the official layout and outputs ---------------------------------------------------------------------------
def test_atd_light_is_the_official_files_configuration():
    assert without_type(light_network(2)) == {**ATD_LIGHT, 'upscale': 2, 'in_chans': 3, 'img_size': 64,
                                              'img_range': 1.0, 'use_checkpoint': False}


def test_state_dict_has_the_official_keys_and_shapes():
    """What the official class holds for ATD-light ×2: 683 entries; per layer three attentions on one qkv, the last
    layer of each group without the dictionary refinement (norm3, sigma); a token dictionary per group; the
    relative-position index as a persistent int64 buffer; the upsampler's conv as upsample.0."""
    state = light(2).state_dict()
    assert len(state) == 683
    layer = 'layers.0.residual_group.layers.0.'
    shapes = {'relative_position_index_SA': (256, 256), 'conv_first.weight': (48, 3, 3, 3),
              'patch_embed.norm.weight': (48,), 'layers.0.residual_group.td': (64, 48), layer + 'sigma': (64, 1),
              layer + 'norm3.weight': (64,), layer + 'wqkv.weight': (144, 48),
              layer + 'attn_win.relative_position_bias_table': (961, 4), layer + 'attn_atd.scale': (64,),
              layer + 'attn_atd.wq.weight': (8, 48), layer + 'attn_atd.wv.weight': (48, 48),
              layer + 'attn_aca.logit_scale': (1, 1), layer + 'attn_aca.proj.weight': (48, 48),
              layer + 'convffn.dwconv.depthwise_conv.0.weight': (48, 1, 7, 7), layer + 'convffn.fc2.weight': (48, 48),
              'layers.3.conv.weight': (48, 48, 3, 3), 'norm.bias': (48,), 'conv_after_body.weight': (48, 48, 3, 3),
              'upsample.0.weight': (12, 48, 3, 3)}
    assert {key: tuple(state[key].shape) for key in shapes} == shapes
    assert not any(key.startswith('layers.2.residual_group.layers.5.norm3') for key in state)
    assert 'layers.2.residual_group.layers.4.sigma' in state
    assert state['relative_position_index_SA'].dtype == torch.int64
    assert 'mean' not in state  # a buffer of this class, not of the official checkpoints
    ws = 16  # the official index: (Δrow + ws − 1)·(2ws − 1) + Δcol + ws − 1, Δ = query − key
    index = state['relative_position_index_SA']
    assert index[0, 0] == (ws - 1) * (2 * ws - 1) + ws - 1
    assert index[ws + 2, 1] == (1 + ws - 1) * (2 * ws - 1) + (2 - 1) + ws - 1  # query (1, 2), key (0, 1)


@pytest.mark.parametrize('options,scale', [
    ({k: v for k, v in without_type(light_network(2)).items() if k != 'upscale'}, 2),
    (dict(TINY, upsampler='pixelshuffle', resi_connection='3conv'), 3),
    (dict(TINY, upsampler='nearest+conv', qkv_bias=False, patch_norm=False), 4),
    (dict(TINY, in_chans=1, img_range=255.0, upsampler='pixelshuffledirect'), 2),  # spandrel's default is ''
], ids=['light', 'pixelshuffle-3conv', 'nearest-conv', 'one-channel'])
def test_outputs_are_spandrels_atd(options, scale):
    """spandrel's ATD (a copy of the official class, kept by another project) takes this class's state dict
    strictly, key for key in the same order, and gives the same output in evaluation mode."""
    spandrel_atd = pytest.importorskip('spandrel.architectures.ATD.__arch.atd_arch').ATD
    ours = ATD(upscale=scale, **options).eval()
    state = random_state(ours, seed=scale)
    ours.load_state_dict(state)
    reference = spandrel_atd(upscale=scale, **{k: v for k, v in options.items() if k != 'use_checkpoint'}).eval()
    assert list(reference.state_dict()) == list(state)
    reference.load_state_dict(state, strict=True)
    x = torch.rand(2, options.get('in_chans', 3), 21, 27, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert got.shape == (2, options.get('in_chans', 3), 21 * scale, 27 * scale)
    assert (got - expected).abs().max() <= 1e-5


# --- the category attention, against its definition -------------------------------------------------------------
def naive_category_attention(attn: CategoryAttention, qkv: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
    """One image's category attention token by token: the tokens in order of category (all distinct here), cut into
    groups of ``category_size``, the last group filled up with the last tokens of the order in reverse; every token
    attends within its group, per head, with logits q·k times exp(min(logit_scale, log 100))."""
    n, c = qkv.shape[0], qkv.shape[1] // 3
    heads, size = attn.num_heads, min(n, attn.category_size)
    order = sorted(range(n), key=lambda token: int(categories[token]))
    tail = -(-n // size) * size - n
    padded = order + order[n - tail:][::-1]
    scale = math.exp(min(float(attn.logit_scale), math.log(100.0)))
    out = torch.empty(n, c)
    for start in range(0, len(padded), size):
        group = padded[start:start + size]
        q, k, v = (qkv[group, i * c:(i + 1) * c].view(len(group), heads, -1) for i in range(3))
        scores = torch.einsum('ihd,jhd->hij', q, k) * scale
        mixed = torch.einsum('hij,jhd->ihd', scores.softmax(-1), v).reshape(len(group), c)
        for position, token in enumerate(group):
            if start + position < n:  # the padding tokens' own outputs are dropped
                out[token] = mixed[position]
    return attn.proj(out)


@pytest.mark.parametrize('n', [24, 20])  # three whole groups of 8; and a tail group padded with 4 mirrored tokens
def test_category_attention_is_its_definition(n):
    torch.manual_seed(n)
    attn = CategoryAttention(dim=12, num_heads=3, category_size=8)
    with torch.no_grad():
        attn.logit_scale.fill_(1.3)
    qkv = torch.randn(1, n, 36)
    categories = torch.randperm(32)[:n]  # distinct: the definition does not depend on how ties are broken
    similarity = torch.nn.functional.one_hot(categories, 32).float()[None] + 0.01 * torch.rand(1, n, 32)
    with torch.no_grad():
        got = attn(qkv, similarity)[0]
        expected = naive_category_attention(attn, qkv[0], categories)
    assert (got - expected).abs().max() <= 1e-5


def test_shifted_mask_joins_only_positions_of_one_region():
    """32×32 in windows of 16 shifted by 8: the top-left window lies in one region; the bottom-right one holds four
    (rows and columns 16–23 and 24–31 came from opposite edges), so exactly half of its pairs per axis differ."""
    mask = shifted_window_mask(32, 32, 16)
    assert mask.shape == (4, 256, 256) and set(mask.unique().tolist()) == {0.0, -100.0}
    assert (mask[0] == 0).all()
    rows = torch.arange(256) // 16 >= 8  # the window's lower half of rows
    cols = torch.arange(256) % 16 >= 8
    same = (rows[:, None] == rows[None, :]) & (cols[:, None] == cols[None, :])
    assert torch.equal(mask[3] == 0, same)
    assert torch.equal(mask[1] == 0, cols[:, None] == cols[None, :])  # top-right: split by columns only


# --- padding, batches, features, gradients ----------------------------------------------------------------------
@pytest.mark.parametrize('size', [1, 5, 13, 16, 21])
def test_padding_is_the_official_mirror_with_the_edge_repeated(size):
    """Up to a multiple of the window by the signal and its mirror image (numpy's 'symmetric'), also where the
    input is shorter than the padding (the official code fails there)."""
    x = torch.arange(size * 3, dtype=torch.float32).view(1, 1, size, 3)
    expected = np.pad(x.numpy(), ((0, 0), (0, 0), (0, -size % 8), (0, 5)), mode='symmetric')
    assert torch.equal(symmetric_pad(x, 8), torch.from_numpy(expected))


def test_any_lr_size_gives_the_padded_output_cropped():
    net = ATD(upscale=3, **TINY).eval()
    net.load_state_dict(random_state(net))
    x = torch.rand(1, 3, 5, 11)
    with torch.no_grad():
        out = net(x)
        padded = net(symmetric_pad(x, 8))
    assert out.shape == (1, 3, 15, 33)
    assert torch.equal(out, padded[..., :15, :33])


def test_batch_equals_single_images():
    """The category sort, the dictionary refinement and the instance norm work per image."""
    net = ATD(upscale=2, **TINY).eval()
    net.load_state_dict(random_state(net))
    x = torch.rand(3, 3, 16, 24)
    with torch.no_grad():
        batch = net(x)
        singles = torch.cat([net(image[None]) for image in x])
    assert (batch - singles).abs().max() <= 1e-5


def test_features_are_what_the_upsampler_takes():
    """``features`` (ATD-light+LTE's encoder) is conv(body(F0)) + F0 of the image as given: the upsampler on the
    features of the mean-shifted image is the forward pass; other sizes are padded and cropped back."""
    net = ATD(upscale=2, **TINY).eval()
    net.load_state_dict(random_state(net))
    x = torch.rand(2, 3, 16, 24)
    with torch.no_grad():
        feat = net.features((x - net.mean) * net.img_range)
        assert feat.shape == (2, 16, 16, 24)
        assert torch.equal(net.upsample(feat) / net.img_range + net.mean, net(x))
        odd = torch.rand(1, 3, 11, 13)
        assert torch.equal(net.features(odd), net.features(symmetric_pad(odd, 8))[..., :11, :13])


def test_checkpointed_training_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = ATD(upscale=2, **TINY)
    checkpointed = ATD(upscale=2, use_checkpoint=True, **TINY)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 16, 16)
    for net in (plain, checkpointed):
        net.train()
        net(x).square().mean().backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


# --- one-line errors ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize('options,message', [
    (dict(embed_dim=18, num_heads=[4, 4]), r'embed_dim \(18\) is not divisible by num_heads \(4\)'),
    (dict(depths=[2, 2, 2]), r'depths has 3 groups but num_heads 2'),
    (dict(depths=[]), r'depths must be a non-empty list of positive integers, got \[\]'),
    (dict(window_size=7), r'window_size must be even \(shifted windows move by half\), got 7'),
    (dict(convffn_kernel_size=4), r'convffn_kernel_size must be odd, got 4'),
    (dict(upsampler=''), r"upsampler must be one of pixelshuffledirect, pixelshuffle, nearest\+conv, got ''"),
    (dict(resi_connection='2conv'), r"resi_connection must be one of 1conv, 3conv, got '2conv'"),
    (dict(upsampler='nearest+conv', upscale=2), r"upsampler 'nearest\+conv' takes upscale 4 only, got 2"),
    (dict(upsampler='pixelshuffle', upscale=5), r"upsampler 'pixelshuffle' takes upscale 2\^n or 3, got 5"),
    (dict(num_tokens=0), r'num_tokens must be a positive integer, got 0'),
    (dict(mlp_ratio='2'), r"mlp_ratio must be a positive number, got '2'"),
])
def test_bad_options_are_one_line(options, message):
    with pytest.raises(ESCError, match=r'^network_g \(ATD\): ' + message + '$'):
        ATD(**{**TINY, 'depths': [2, 2], 'num_heads': [2, 2], **options})


def test_an_unknown_option_is_named_by_the_option_checks(tmp_path):
    options = official_options(2, tmp_path, 'weights.pth')
    options['network_g']['ape'] = True  # the official class has it (an absolute position embedding); no file sets it
    with pytest.raises(ESCError, match=r'network_g\.ape'):
        validate_options(options, is_train=False)


def test_a_checkpoint_of_another_scale_or_network_is_one_line():
    with pytest.raises(ESCError, match=r"^checkpoint does not fit ATD: 'upsample\.0\.weight' has shape "
                                       r'\(27, 48, 3, 3\) in the checkpoint but \(12, 48, 3, 3\) in the network$'):
        light(2).load_state_dict(light(3).state_dict())
    with pytest.raises(ESCError, match=r"^checkpoint does not fit ATD: key 'relative_position_index_SA' is missing"):
        light(2).load_state_dict(NETWORKS['ESC'](upscaling_factor=2).state_dict())


# --- the option files -------------------------------------------------------------------------------------------
@pytest.mark.parametrize('scale', SCALES)
def test_option_files_are_the_official_ones_with_this_projects_paths(scale, tmp_path):
    weights = f'ATD_light_DFLIP_X{scale}.pth'
    assert_option_file_is_the_official_one(option_file(scale), official_options, scale, weights, tmp_path)


@pytest.mark.parametrize('scale', [2, pytest.param(3, marks=pytest.mark.slow), pytest.param(4, marks=pytest.mark.slow)])
def test_option_files_run_through_esc_test_on_official_checkpoints(scale, tmp_path):
    """This project's file (its paths pointed at one tiny pair per benchmark) and the official layout of it (LR
    names with 'x<scale>') through esc/test.py on a random checkpoint of the official layout: strict loading, the
    images the network gives (×2, ×3: ESRModel pads the LR image to whole windows by reflection, as the official
    test does) and the PSNR of each set."""
    assert_option_files_run_through_esc_test(ATD(**without_type(light_network(scale))), scale, tmp_path,
                                             option_file(scale), official_options, param_keys=('params', 'params_ema'),
                                             pad=16, size=12)


# --- Table 4: #Params and #FLOPs ------------------------------------------------------------------------------
@pytest.mark.parametrize('scale', SCALES)
def test_parameters_match_table4(scale):
    params = count_parameters(light(scale))
    assert round(params / 1e3) == TABLE4['ATD-lt', scale].params_k
    outputs = 3 * (scale * scale - 4)  # only the upsampling conv differs from ×2: 3·r² outputs of 48·3·3 + 1
    assert params - count_parameters(light(2)) == outputs * (48 * 9 + 1)
    assert params == {2: 753_204, 3: 759_699, 4: 768_792}[scale]


def architecture_flops(net: ATD, h: int, w: int) -> int:
    """The multiply-accumulates of an (h, w) LR input written out from the architecture (fvcore's conventions: one
    per multiply-accumulate, 5 per element of a LayerNorm or InstanceNorm, none for softmax, sort or gather), for
    n = the pixels after padding to whole windows: conv3×3 in; per layer two LayerNorms, qkv (3C²), window
    attention against ws² keys (2·ws²·C) and its proj (C²), the dictionary attention (queries C·r, keys and values
    M·C·r + M·C² per image, similarities N·M·r, weighted sum N·M·C), the category attention within groups of
    ``category_size`` (2·g·C) and its proj (C²), the ConvFFN (2·C·hidden + k²·hidden); per refining layer the
    InstanceNorm and pooling of the dictionary (5·M·N + M·N·C); per group a conv3×3; the body's LayerNorms (the
    embedding's and the last) and conv3×3; the upsampling conv."""
    layers = [layer for block in net.layers for layer in block.residual_group.layers]
    first = layers[0]
    c, ws = net.embed_dim, net.window_size
    r, m = first.attn_atd.wq.out_features, first.attn_atd.scale.numel()
    hidden, k = first.convffn.fc1.out_features, first.convffn.dwconv.depthwise_conv[0].kernel_size[0]
    n = (-(-h // ws) * ws) * (-(-w // ws) * ws)
    group = min(n, first.attn_aca.category_size)
    per_pixel_layer = (2 * 5 * c + 3 * c * c + 2 * ws * ws * c + c * c + c * r + m * r + m * c + 2 * group * c + c * c
                       + 2 * c * hidden + k * k * hidden)
    refining = sum(not layer.is_last for layer in layers)
    per_pixel = (9 * 3 * c + len(layers) * per_pixel_layer + refining * (5 * m + m * c) + len(net.layers) * 9 * c * c
                 + 2 * 5 * c + 9 * c * c + net.upsample[0].out_channels * c * 9)
    return n * per_pixel + len(layers) * (m * c * r + m * c * c)


def test_flops_are_the_architectures_count():
    """fvcore through esc.evaluation.complexity gives the architecture's count, from its small traces (the fit ATD
    passes: every op is linear in the padded pixels) and traced whole alike."""
    net = ATD(upscale=2, **TINY)
    assert count_flops(net, 2, output_size=(2 * 16, 2 * 24)) == architecture_flops(net, 16, 24)
    fitted = count_flops(net, 2, output_size=(2 * 21, 2 * 26))  # LR 21×26 (padded 24×32): fitted from small traces
    assert fitted == count_flops(net, 2, output_size=(2 * 21, 2 * 26), direct=True) == architecture_flops(net, 21, 26)


@pytest.mark.slow
@pytest.mark.parametrize('scale', SCALES)
def test_flops_at_the_papers_protocol(scale):
    """fvcore on a 1280×720 output (LR 360×640, 240×426, 180×320, padded to whole 16×16 windows) is Table 4's
    #FLOPs to the printed digit (380.0, 168.0, 100.1 G): four small traces each, about 20 s on a quiet machine."""
    net = light(scale)
    flops = count_flops(net, scale)
    assert flops == architecture_flops(net, 720 // scale, 1280 // scale)
    assert round(flops / 1e9, 1) == TABLE4['ATD-lt', scale].flops_g
