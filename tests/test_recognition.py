"""Each registered network recognises its own state dicts (esc/archs/recognition.py and each class's ``recognise``):
every network round-trips from its weights to the options that rebuild it, no two networks claim one state dict,
the registry's order is documented for all of them, and a plain baseline checkpoint opens through esc.load_model."""
import inspect

import numpy as np
import pytest
import torch

import esc
from esc.archs import NETWORKS, RECOGNITION_ORDER, recognise_network
from esc.errors import ESCError
from esc.upscaler import detect_network

ESC_SMALL = dict(dim=16, pdim=8, kernel_size=5, n_blocks=2, conv_blocks=2, window_size=8, num_heads=2)
SRFORMER_SMALL = dict(img_size=8, embed_dim=8, depths=[2], num_heads=[2], window_size=4, mlp_ratio=2)
ATD_SMALL = dict(embed_dim=8, depths=[2], num_heads=[2], window_size=4, num_tokens=4, reducted_dim=2,
                 convffn_kernel_size=3, mlp_ratio=1)
HITSRF_SMALL = dict(embed_dim=16, depths=[2], num_heads=[2], mlp_ratio=2)

CASES = {
    'ESC x2': ('ESC', dict(ESC_SMALL, upscaling_factor=2)),
    'ESC x3 ablations': ('ESC', dict(ESC_SMALL, upscaling_factor=3, use_ln=True, share_lk=False,
                                     dynamic_kernel=False)),
    'ESC only self-attentions': ('ESC', dict({k: v for k, v in ESC_SMALL.items() if k not in ('pdim', 'kernel_size')},
                                             upscaling_factor=2, inner_mixer='self_attn', share_lk=False,
                                             dynamic_kernel=False)),  # no ConvAttn: no kernel, read as off
    'ESC only ConvAttns': ('ESC', dict({k: v for k, v in ESC_SMALL.items() if k not in ('window_size', 'num_heads')},
                                       upscaling_factor=2, first_mixer='conv_attn')),  # no attention, no window
    'ESC FlashBias': ('ESC', dict(ESC_SMALL, upscaling_factor=2, attn_type='flashbias', bias_rank=[4, 6])),
    'ESCFP x4': ('ESCFP', dict(ESC_SMALL, upscaling_factor=4)),
    'ESCReal x2': ('ESCReal', dict(ESC_SMALL, upscaling_factor=2)),
    'ESCReal x4': ('ESCReal', dict(ESC_SMALL, upscaling_factor=4)),
    'ESCLTE': ('ESCLTE', dict(ESC_SMALL, hidden_dim=16, mlp_dims=[16, 8])),
    'LTE on ATD': ('LTE', dict(encoder=dict(type='ATD', **ATD_SMALL), hidden_dim=16, mlp_dims=[16])),
    'LTE on HiT_SRF': ('LTE', dict(encoder=dict(type='HiT_SRF', **HITSRF_SMALL), hidden_dim=16, mlp_dims=[8])),
    'SRFormer direct x2': ('SRFormer', dict(SRFORMER_SMALL, upscale=2, upsampler='pixelshuffledirect')),
    'SRFormer classical x3 3conv': ('SRFormer', dict(SRFORMER_SMALL, upscale=3, upsampler='pixelshuffle',
                                                     resi_connection='3conv')),
    'SRFormer real x4 ape': ('SRFormer', dict(SRFORMER_SMALL, upscale=4, upsampler='nearest+conv', ape=True,
                                              qkv_bias=False, patch_norm=False)),
    'SRFormer x1': ('SRFormer', dict(SRFORMER_SMALL, upscale=1, upsampler='')),
    'SRFormer unshifted': ('SRFormer', dict(SRFORMER_SMALL, img_size=4, upscale=2, upsampler='pixelshuffledirect')),
    'ATD direct x2': ('ATD', dict(ATD_SMALL, upscale=2)),
    'ATD classical x4': ('ATD', dict(ATD_SMALL, depths=[2, 1], num_heads=[2, 4], upscale=4, upsampler='pixelshuffle',
                                     qkv_bias=False)),
    'ATD real x4': ('ATD', dict(ATD_SMALL, upscale=4, upsampler='nearest+conv', resi_connection='3conv')),
    'HiT_SRF direct x3': ('HiT_SRF', dict(HITSRF_SMALL, upscale=3)),
    'HiT_SRF classical x2 ape': ('HiT_SRF', dict(HITSRF_SMALL, upscale=2, upsampler='pixelshuffle', ape=True,
                                                 img_size=16)),
}


def build(name):
    network, config = CASES[name]
    torch.manual_seed(0)
    net = NETWORKS[network](**config).eval()
    with torch.no_grad():  # weights of their own everywhere (some generators start at zero)
        for parameter in net.parameters():
            parameter.normal_(0, 0.05)
    return net


def assert_same_options(network, config, recognised):
    """``recognised`` rebuilds ``network(**config)``: every option given is read back, and every other option read
    is the constructor's default (an LTE's encoder by the same rule, less the upsampler LTE drops)."""
    defaults = {key: parameter.default for key, parameter in inspect.signature(network.__init__).parameters.items()
                if parameter.default is not inspect.Parameter.empty}
    for key, value in config.items():
        if key == 'encoder':
            encoder = dict(value)
            assert recognised['encoder'].pop('type') == encoder.pop('type')
            assert_same_options(NETWORKS[value['type']], encoder, recognised['encoder'])
        else:
            assert key in recognised and _same(recognised[key], value), (key, recognised.get(key), value)
    for key, value in recognised.items():
        if key not in config:
            assert _same(value, defaults[key]), (key, value, defaults[key])


def _same(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


@pytest.mark.parametrize('name', CASES)
def test_every_network_round_trips_from_its_state_dict(name):
    network, config = CASES[name]
    net = build(name)
    state_dict = net.state_dict()
    found = recognise_network(state_dict)
    assert found is not None and found['type'] == network
    assert NETWORKS[network].recognise(state_dict) == {key: value for key, value in found.items() if key != 'type'}
    options = dict(found)
    options.pop('type')
    assert_same_options(NETWORKS[network], config, dict(options, encoder=dict(options['encoder']))
                        if 'encoder' in options else options)
    rebuilt = NETWORKS[network](**options).eval()
    rebuilt.load_state_dict(state_dict, strict=True)
    side = config['img_size'] if config.get('ape') else 8  # with ape, the input is the size it was trained for
    x = torch.rand(1, 3, side, side)
    with torch.inference_mode():
        if getattr(net, 'fixed_scale', True):
            expected, got = net(x), rebuilt(x)
        else:
            expected, got = net.upscale(x, scale=1.5), rebuilt.upscale(x, scale=1.5)
    assert torch.equal(expected, got)


def test_every_registered_network_is_covered_and_has_a_place_in_the_order():
    assert {network for network, _ in CASES.values()} == set(NETWORKS)
    assert sorted(RECOGNITION_ORDER) == sorted(NETWORKS)
    for network in NETWORKS.values():
        assert inspect.ismethod(network.recognise) and network.recognise.__self__ is network


@pytest.mark.parametrize('name', CASES)
def test_no_two_networks_claim_one_state_dict(name):
    state_dict = build(name).state_dict()
    claims = [network for network, cls in NETWORKS.items() if cls.recognise(state_dict) is not None]
    assert claims == [CASES[name][0]]


def test_a_state_dict_no_network_claims_keeps_the_one_line_error():
    foreign = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 3, 3)).state_dict()
    assert all(cls.recognise(foreign) is None for cls in NETWORKS.values())
    assert recognise_network(foreign) is None
    with pytest.raises(ESCError) as error:
        detect_network(foreign)
    assert str(error.value) == 'checkpoint is not an ESC network (no proj.weight / blocks.0.*)'


def test_a_damaged_baseline_is_named_in_one_line_by_its_network():
    state_dict = build('SRFormer direct x2').state_dict()
    state_dict['conv_first.weight'] = state_dict['conv_first.weight'][0]
    with pytest.raises(ESCError) as error:
        recognise_network(state_dict)
    assert str(error.value) == ("checkpoint: conv_first.weight has shape (3, 3, 3); an SRFormer's has 4 "
                                'dimensions')
    body = {key: value for key, value in build('ATD direct x2').state_dict().items() if not key.startswith('upsample')}
    with pytest.raises(ESCError, match='^checkpoint: ATD weights without an upsampler'):
        recognise_network(body)


def test_hitsrf_windows_other_than_the_official_hierarchy_are_refused_in_one_line():
    net = NETWORKS['HiT_SRF'](**HITSRF_SMALL, hier_win_ratios=[1, 2], upscale=2)
    with pytest.raises(ESCError) as error:
        recognise_network(net.state_dict())
    assert str(error.value).startswith('checkpoint: layers.0.residual_group.blocks.1.correlation.spatial_linear.weight '
                                       'mixes 4 pixels per cell')
    assert len(str(error.value).splitlines()) == 1


@pytest.mark.parametrize('name', ['SRFormer direct x2', 'ATD direct x2', 'HiT_SRF direct x3'])
def test_a_plain_baseline_checkpoint_opens_through_load_model_and_upscales(name, tmp_path):
    net = build(name)
    path = tmp_path / 'baseline.pth'
    torch.save({'params_ema': net.state_dict()}, path)
    model = esc.load_model(str(path), device='cpu')
    scale = net.upscaling_factor
    assert model.scale == scale and model.name == f'{CASES[name][0]} (custom)'
    image = (np.random.default_rng(0).random((12, 10, 3)) * 255).astype(np.uint8)
    out = model.upscale(image)
    assert out.shape == (12 * scale, 10 * scale, 3) and out.dtype == np.uint8
    with torch.inference_mode():
        expected = net(torch.from_numpy(image / 255.0).permute(2, 0, 1)[None].float()).clamp(0, 1)
    expected = (expected[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
    with pytest.raises(ESCError, match=rf'checkpoint is a x{scale} {CASES[name][0]}; it cannot upscale x5$'):
        esc.load_model(str(path), device='cpu', scale=5)


def test_a_bare_lte_on_a_baseline_encoder_opens_through_load_model_at_any_scale(tmp_path):
    net = build('LTE on ATD')
    path = tmp_path / 'lte.pth'
    torch.save(net.state_dict(), path)
    model = esc.load_model(str(path), device='cpu', scale=2.5)
    assert model.scale == 2.5 and model.options['encoder']['type'] == 'ATD'
    x = torch.rand(1, 3, 6, 8)
    with torch.inference_mode():
        expected = net.upscale(x, scale=2.5, cell_scale_max=4).clamp(0, 1)
    assert torch.allclose(model.upscale_tensor(x), expected, atol=1e-6)
