"""ESC-XL and ESC-Real-XL: built and detected by name, counted by scripts/complexity.py, and ESC-XL's 48×48
windows on every attention path (sdpa, flex, row strips, tiles, ONNX), each checked against naive attention."""
import pytest
import torch
import yaml

import esc
from esc.archs import VARIANTS, build_variant
from esc.archs.attention import flex_attention_available, relative_position_bias, relative_position_index
from esc.archs.esc_arch import ESC
from esc.archs.streaming import streamed_forward
from esc.errors import ESCError
from esc.evaluation.complexity import count_parameters
from esc.upscaler import Upscaler, detect_network, variant_name
from tests.helpers.networks import onnx_modules, randomise
from tests.helpers.paths import REPO, load_script

XL_WINDOW = VARIANTS['ESC-XL']['window_size']
NARROW_XL = dict(dim=24, pdim=8, kernel_size=13, n_blocks=1, conv_blocks=1, window_size=XL_WINDOW, num_heads=2,
                 exp_ratio=1.25, use_ln=True, upscaling_factor=2)
"""ESC-XL's layout (use_ln, 13×13 LK, 48×48 windows, several heads) at a width and depth that run in about a
second with naive attention (whose 2304×2304 scores per window and head dominate)."""
SIZE = (XL_WINDOW + 5, XL_WINDOW + 9)
"""2×2 windows, neither side a window multiple (the last window row and column are mostly reflect padding)."""


@pytest.mark.parametrize('name,scale,layout', [
    ('ESC-XL', 2, {'plk_filter': (48, 48, 13, 13), 'blocks.7.attn.relative_position_bias': (12, 95 * 95),
                   'blocks.0.lns.4.weight': (192,), 'blocks.0.convffns.4.proj.weight': (240, 192, 1, 1),
                   'to_img.weight': (12, 192, 3, 3)}),
    ('ESC-Real-XL', 4, {'plk_filter': (32, 32, 13, 13), 'blocks.15.attn.relative_position_bias': (8, 63 * 63),
                        'blocks.0.convffns.4.proj.weight': (256, 128, 1, 1), 'to_img.8.weight': (3, 128, 3, 3)}),
])
def test_xl_variants_are_built_and_detected_by_name(tmp_path, name, scale, layout):
    state = build_variant(name, scale).state_dict()
    assert {key: tuple(state[key].shape) for key in layout} == layout
    options = detect_network(state)
    assert {key: options[key] for key in VARIANTS[name]} == VARIANTS[name]
    assert variant_name(options) == name and options['upscaling_factor'] == scale
    path = tmp_path / f'{name}.pth'
    torch.save({'params_ema': state}, path)
    assert esc.load_model(str(path), device='cpu').name == name


def test_a_variant_is_every_option_not_only_the_listed_ones():
    esc_options = detect_network(build_variant('ESC', 2).state_dict())
    assert variant_name(esc_options) == 'ESC'
    assert variant_name({**esc_options, 'use_ln': True}) == 'ESC (custom)'
    xl_options = {**esc_options, **VARIANTS['ESC-XL']}
    assert variant_name(xl_options) == 'ESC-XL'
    assert variant_name({**xl_options, 'use_ln': False}) == 'ESC (custom)'
    assert variant_name({**xl_options, 'window_size': 32}) == 'ESC (custom)'
    assert variant_name({**xl_options, 'attn_type': 'flex', 'upscaling_factor': 4}) == 'ESC-XL'  # how it runs


def test_complexity_script_prints_the_xl_rows(monkeypatch, capsys):
    """Rows come from VARIANTS, at the scales each network has; FLOPs are stubbed here (counting the real XL
    networks takes minutes)."""
    script = load_script('complexity')
    built = []
    monkeypatch.setattr(script, 'build_variant', lambda *args, **kwargs: built.append(build_variant(*args, **kwargs))
                        or built[-1])
    monkeypatch.setattr(script, 'count_flops', lambda net, scale, direct=False: 10 ** 9 * scale)
    monkeypatch.setattr('sys.argv', ['complexity.py', '--variants', 'ESC-XL', 'ESC-Real-XL', '--scales', '3'])
    script.main()
    captured = capsys.readouterr()
    rows = captured.out.splitlines()[2:]
    assert len(built) == 1 and built[0].window_size == 48 and built[0].upscaling_factor == 3
    assert rows == [f'| ESC-XL | x3 | {count_parameters(built[0]) / 1e3:.1f} | 3.0 | - | - |']
    assert 'ESC-Real-XL: no x3' in captured.err


@pytest.mark.parametrize('name,files', [
    ('ESC-XL', ['train/ESC_XL/train_ESC_XL_X2_DF2K.yml', 'test/ESC_XL/test_ESC_XL_X2_DF2K_PT.yml',
                'test/ESC_XL/test_ESC_XL_X2_DF2K_FT.yml']),
    ('ESC-Real-XL', ['train/ESC_Real_XL/train_ESC_Real_XL_X4_MSE.yml', 'train/ESC_Real_XL/train_ESC_Real_XL_X4_GAN.yml',
                     'test/ESC_Real_XL/test_ESC_Real_XL_X4_RealSRSet.yml']),
])
def test_xl_option_files_build_the_named_variant(name, files):
    """Every file's network is the variant (test_options.py checks each file for itself); ESC-XL evaluates on
    whole 48×48 windows; ESC-Real-XL trains exactly as ESC-Real does, on the same data."""
    options = [yaml.safe_load((REPO / 'options' / path).read_text()) for path in files]
    for opt in options:
        network = {k: v for k, v in opt['network_g'].items() if k not in ('attn_type', 'upscaling_factor')}
        assert network == VARIANTS[name] and opt['network_g']['upscaling_factor'] == opt['scale']
    if name == 'ESC-XL':
        assert all(opt['val']['pad_to_multiple'] == 48 for opt in options)
        assert options[1]['path']['pretrain_network_g'].endswith('_PT.pth')
        return
    for path, opt in zip(files, options):
        real = yaml.safe_load((REPO / 'options' / path.replace('ESC_Real_XL', 'ESC_Real')).read_text())
        assert {k: v for k, v in opt.items() if k not in ('name', 'network_g', 'path', 'val')} == \
            {k: v for k, v in real.items() if k not in ('name', 'network_g', 'path', 'val')}


def test_relative_position_bias_at_window_48():
    table = torch.randn(2, (2 * XL_WINDOW - 1) ** 2)
    expected = table[:, relative_position_index(XL_WINDOW).flatten()].view(2, XL_WINDOW ** 2, XL_WINDOW ** 2)
    assert torch.equal(relative_position_bias(table, XL_WINDOW), expected)


@pytest.fixture(scope='module')
def narrow_xl():
    """A randomised narrow ESC-XL on naive attention, an input of :data:`SIZE` and its whole-image output."""
    torch.manual_seed(0)
    net = randomise(ESC(**NARROW_XL, attn_type='naive', streaming='off')).eval()
    x = torch.rand(1, 3, *SIZE)
    with torch.no_grad():
        return net, x, net(x)


def _run_on(monkeypatch, net, attn_type):
    """``net`` with every attention layer on ``attn_type`` until the test ends."""
    for module in net.modules():
        if hasattr(module, 'attn_type'):
            monkeypatch.setattr(module, 'attn_type', attn_type)
    return net


@pytest.mark.parametrize('attn_type', [
    'sdpa',
    pytest.param('flex', marks=pytest.mark.skipif(not flex_attention_available(), reason='no FlexAttention')),
])
def test_window_48_backends_match_naive(narrow_xl, monkeypatch, attn_type):
    """flex compiles one kernel on the CPU here (about 20 s the first time, cached after)."""
    net, x, expected = narrow_xl
    with torch.no_grad():
        out = _run_on(monkeypatch, net, attn_type)(x)
    assert (out - expected).abs().max() <= 1e-4


def test_window_48_row_strips_match_the_whole_image(narrow_xl, monkeypatch):
    """Strips of 16 rows: convolutions cross strip edges, attention runs window row by window row, the second
    of them 5 real rows and 43 reflected ones gathered from the full map (on sdpa, the CPU's default)."""
    net, x, expected = narrow_xl
    with torch.no_grad():
        out = streamed_forward(_run_on(monkeypatch, net, 'sdpa'), x, pixels=16 * SIZE[1])
    assert (out - expected).abs().max() <= 1e-4


def test_window_48_tiles_start_on_window_boundaries(narrow_xl, monkeypatch):
    """Tiles of 96 overlapping by 32 on a 99-pixel-wide image: two, the second starting at 48 (a window boundary,
    not at 64); where only the first covers the image the result is its output. An overlap that leaves a stride
    below one window is refused. (Tiling does not depend on the backend: sdpa, the fast one, runs it.)"""
    net = _run_on(monkeypatch, narrow_xl[0], 'sdpa')
    x = torch.rand(1, 3, 41, 2 * XL_WINDOW + 3)
    options = {'type': 'ESC', **NARROW_XL}
    with pytest.raises(ESCError, match=r'^tile: .*\(tile - overlap >= 48\), got tile 96 and overlap 64$'):
        Upscaler(net, options, torch.device('cpu'), tile=96, tile_overlap=64).upscale_tensor(x)
    tiles = []
    forward = net.forward
    monkeypatch.setattr(net, 'forward', lambda t: tiles.append(t) or forward(t))
    tiled = Upscaler(net, options, torch.device('cpu'), tile=96, tile_overlap=32).upscale_tensor(x)
    assert tiled.shape == (1, 3, 2 * 41, 2 * 99)
    assert [tuple(t.shape[-2:]) for t in tiles] == [(41, 96), (41, 99 - 48)]
    assert torch.equal(tiles[1], x[..., 48:])
    with torch.no_grad():
        first = forward(tiles[0]).clamp(0, 1)
    assert (tiled[..., :2 * 48] - first[..., :2 * 48]).abs().max() <= 1e-6


def test_window_48_exports_to_onnx(narrow_xl):
    """Traced at 53×99 (2×3 windows), run by onnxruntime at :data:`SIZE`: dynamic sizes, folded 48×48 biases."""
    onnx_modules()
    from esc.commands.export import example_input, export_onnx, fold_for_export, onnx_runner

    net, x, expected = narrow_xl
    run_onnx = onnx_runner(export_onnx(fold_for_export(net, 'sdpa'), example_input(XL_WINDOW)))
    assert (run_onnx(x) - expected).abs().max() <= 1e-4
