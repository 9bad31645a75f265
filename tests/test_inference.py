"""Upscaling your own images: checkpoint detection, esc.load_model / upscale, and esc/commands/upscale.py."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import esc
from esc.archs import build_variant
from esc.errors import ESCError
from esc.upscaler import detect_network, variant_name
from tests.helpers.networks import randomise, small
from tests.helpers.paths import REFERENCE_FILES
from tests.helpers.runs import run_in_process


@pytest.mark.parametrize('arch,scale,overrides', [
    ('ESC', 3, {}),
    ('ESC', 2, dict(use_ln=True, share_lk=False)),
    ('ESC', 4, dict(dynamic_kernel=False, inner_mixer='self_attn')),
    ('ESC', 2, dict(first_mixer='conv_attn')),
    ('ESCFP', 2, dict(pdim=8)),
    ('ESCReal', 4, {}),
    ('ESCReal', 2, {}),
])
def test_detected_options_rebuild_the_same_network(arch, scale, overrides):
    net = small(arch, scale, **overrides)
    options = detect_network(net.state_dict())
    assert options['type'] == arch and options['upscaling_factor'] == scale
    config = dict(options)
    rebuilt = esc.archs.NETWORKS[config.pop('type')](**config)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}
    for key, value in overrides.items():
        assert options[key] == value, key


@pytest.mark.parametrize('name,scale', [('ESC', 4), ('ESC-light', 2), ('ESC-FP', 3), ('ESC-Real', 4), ('ESC-Real', 2)])
def test_paper_variants_are_named(name, scale):
    assert variant_name(detect_network(build_variant(name, scale).state_dict())) == name


def test_foreign_and_mismatched_checkpoints_are_one_line_errors(tmp_path):
    with pytest.raises(ESCError, match='not an ESC network'):
        detect_network({'conv1.weight': torch.zeros(1)})
    with pytest.raises(ESCError, match='checkpoint is a x2 ESC; it cannot upscale x4'):
        detect_network(small('ESC', 2).state_dict(), scale=4)
    state = small('ESC', 2).state_dict()
    del state['to_img.weight']
    with pytest.raises(ESCError, match='does not tell its scale.*candidates: 2, 3, 4'):
        detect_network(state)
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(ESCError, match=f'model: cannot read checkpoint {empty}'):
        esc.load_model(str(empty))
    with pytest.raises(ESCError, match='precision fp16 is only supported on CUDA'):
        esc.load_model(str(empty), device='cpu', precision='fp16')


def test_an_arch_the_checkpoint_is_not_is_named_in_words(tmp_path):
    path = tmp_path / 'esc_light_x2.pth'
    torch.save({'params_ema': esc.build_variant('ESC-light', 2).state_dict()}, path)
    with pytest.raises(ESCError, match=rf'^arch: {path} is an ESC-light x2 checkpoint \(ESC\), not an ESCFP$'):
        esc.load_model(str(path), device='cpu', arch='ESCFP')
    assert esc.load_model(str(path), device='cpu', arch='ESC').name == 'ESC-light'


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """A small random ESC ×2 saved as a basicsr training checkpoint (``params`` and ``params_ema``)."""
    torch.manual_seed(0)
    net = randomise(small('ESC', 2)).eval()
    path = tmp_path_factory.mktemp('ckpt') / 'small_x2.pth'
    torch.save({'params': net.state_dict(), 'params_ema': net.state_dict()}, path)
    return path, net


@pytest.mark.parametrize('name', REFERENCE_FILES)
def test_official_layout_files_load_and_reproduce(reference, name, tmp_path):
    ref = reference(name)
    path = tmp_path / 'official.pth'
    torch.save({'params': ref['state_dict']}, path)  # release files hold 'params' (or 'params_ema')
    model = esc.load_model(str(path), device='cpu')
    assert model.options['type'] == ref['arch']
    assert (model.upscale_tensor(ref['input']) - ref['output'].clamp(0, 1)).abs().max() <= 1e-4


def test_upscale_keeps_layout_and_dtype(checkpoint):
    path, net = checkpoint
    model = esc.load_model(str(path), device='cpu')
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = net(torch.from_numpy(rgb / 255.).float().permute(2, 0, 1)[None]).clamp(0, 1)
    out = model.upscale(rgb)
    assert out.shape == (18, 22, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - np.rint(expected[0].permute(1, 2, 0).numpy() * 255)).max() <= 1

    gray = rgb[..., 0]
    grey_out = model.upscale(gray)
    assert grey_out.shape == (18, 22) and grey_out.dtype == np.uint8
    assert np.abs(grey_out.astype(int) - model.upscale(np.dstack([gray] * 3)).mean(axis=2)).max() <= 1

    rgba = np.dstack([rgb, rng.integers(0, 256, (9, 11), dtype=np.uint8)])
    rgba_out = model.upscale(rgba)
    alpha = F.interpolate(torch.from_numpy(rgba[..., 3] / 255.).float()[None, None], scale_factor=2, mode='bicubic',
                          align_corners=False).clamp(0, 1)[0, 0].numpy()
    assert rgba_out.shape == (18, 22, 4) and np.abs(rgba_out[..., 3] - np.rint(alpha * 255)).max() <= 1
    assert np.array_equal(rgba_out[..., :3], out)

    deep = rgb.astype(np.uint16) * 257
    deep_out = model.upscale(deep)
    assert deep_out.dtype == np.uint16 and np.abs(deep_out.astype(int) - out.astype(int) * 257).max() <= 257
    floats = model.upscale(rgb / 255.)
    assert floats.dtype == np.float64 and np.abs(floats * 255 - out).max() <= 1

    grey_alpha = model.upscale(rgba[..., (0, 3)])  # grey and alpha: the grey as three equal channels, alpha apart
    assert grey_alpha.shape == (18, 22, 2) and np.array_equal(grey_alpha[..., 1], rgba_out[..., 3])
    assert np.array_equal(grey_alpha[..., 0], model.upscale(rgba[..., 0]))

    for bad, message in ((np.zeros((4, 4, 5)), 'expected H×W'), (np.zeros((0, 4)), 'empty'),
                         (np.zeros((4, 4), dtype=np.int32), 'dtype int32 is not supported')):
        with pytest.raises(ESCError, match=message):
            model.upscale(bad)


def test_tiled_model_upscales_large_inputs_in_tiles(checkpoint, monkeypatch):
    path, _ = checkpoint
    model = esc.load_model(str(path), device='cpu', tile=16, tile_overlap=4)
    shapes = []
    forward = model.net.forward
    monkeypatch.setattr(model.net, 'forward', lambda x: shapes.append(tuple(x.shape)) or forward(x))
    assert model.upscale(np.zeros((20, 40, 3), dtype=np.uint8)).shape == (40, 80, 3)
    assert len(shapes) > 1 and max(s[-1] for s in shapes) == 16 and all(max(s[-2:]) <= 16 for s in shapes)
    with pytest.raises(ESCError, match='tile: need a tile of at least 8 pixels'):
        esc.load_model(str(path), tile=16, tile_overlap=16)


def _run_cli(*args):
    """``esc-upscale args`` in this process (the console script's entry point, its exit status and output)."""
    return run_in_process('esc.commands.upscale', [str(arg) for arg in args], Path.cwd())


def test_cli_folder_run_writes_every_image_and_skips_bad_files(checkpoint, tmp_path):
    path, _ = checkpoint
    src, out = tmp_path / 'in', tmp_path / 'out'
    src.mkdir()
    rgb = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    cv2.imwrite(str(src / 'rgb.png'), rgb)
    cv2.imwrite(str(src / 'gray.png'), rgb[..., 0])
    cv2.imwrite(str(src / 'rgba.png'), np.dstack([rgb, rgb[..., :1]]))
    cv2.imwrite(str(src / 'deep.tif'), rgb.astype(np.uint16) * 257)
    cv2.imwrite(str(src / 'photo.jpg'), rgb)
    cv2.imwrite(str(src / 'web.webp'), rgb)
    (src / 'empty.png').write_bytes(b'')
    (src / 'notes.txt').write_text('not an image')
    proc = _run_cli('-i', src, '-o', out, '--model', path)
    assert proc.returncode == 1, proc.stderr
    assert 'done 6, skipped 2' in proc.stdout
    assert f'skipped: {src / "empty.png"}: empty file' in proc.stderr
    assert f'skipped: {src / "notes.txt"}: not an image (no image format recognised)' in proc.stderr
    expected = {'rgb_x2.png': ((24, 20, 3), np.uint8), 'gray_x2.png': ((24, 20), np.uint8),
                'rgba_x2.png': ((24, 20, 4), np.uint8), 'deep_x2.tif': ((24, 20, 3), np.uint16),
                'photo_x2.jpg': ((24, 20, 3), np.uint8), 'web_x2.webp': ((24, 20, 3), np.uint8)}
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    for name, (shape, dtype) in expected.items():
        image = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert image.shape == shape and image.dtype == dtype, name


def test_cli_with_o_equal_to_i_takes_no_result_for_an_input_and_replaces_nothing_unasked(checkpoint, tmp_path):
    """-o equal to -i: a second run neither upscales the first run's results nor replaces them; --overwrite does."""
    path, _ = checkpoint
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / 'a.png'), image)
    cv2.imwrite(str(tmp_path / 'a_x2.png'), image)  # what a.png's result is called: taken for an earlier result
    proc = _run_cli('-i', tmp_path, '-o', tmp_path, '--model', path)
    assert proc.returncode == 1, proc.stderr
    assert f'not inputs: 1 earlier result of this tool in {tmp_path} (a_x2.png)' in proc.stdout
    assert (f'skipped: {tmp_path / "a.png"}: its output {tmp_path / "a_x2.png"} already exists and this run did '
            'not write it; left as it is (--overwrite replaces it)') in proc.stderr
    assert 'done 0, skipped 1' in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.png', 'a_x2.png']
    assert cv2.imread(str(tmp_path / 'a_x2.png')).shape == (8, 8, 3)
    proc = _run_cli('-i', tmp_path, '-o', tmp_path, '--model', path, '--overwrite')
    assert proc.returncode == 0 and 'done 1, skipped 0' in proc.stdout, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.png', 'a_x2.png']
    assert cv2.imread(str(tmp_path / 'a_x2.png')).shape == (16, 16, 3)


def test_cli_bad_single_inputs_are_one_line(checkpoint, tmp_path):
    path, _ = checkpoint
    cv2.imwrite(str(tmp_path / 'a.png'), np.zeros((8, 8, 3), dtype=np.uint8))

    (tmp_path / 'bad.png').write_text('not an image')
    for args, message in ((('-i', tmp_path / 'bad.png'), f'error: {tmp_path / "bad.png"}: not an image'),
                          (('-i', tmp_path / 'missing'), 'error: -i: no such file or folder'),
                          (('-i', tmp_path / 'a.png', '--scale', '4'),
                           f'error: model: {path}: checkpoint is a x2 ESC; it cannot upscale x4')):
        proc = _run_cli(*args, '-o', tmp_path / 'o', '--model', path)
        assert proc.returncode == 2 and proc.stderr.strip().startswith(message), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_esc_lte_checkpoints_upscale_to_any_scale(tmp_path):
    """ESC+LTE is detected from its LTE head and upscales by the scale it is told, non-integer ones included."""
    from esc.archs.lte_arch import ESCLTE

    net = ESCLTE(dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=1, window_size=8, num_heads=2, hidden_dim=32,
                 mlp_dims=[32, 24]).eval()
    path = tmp_path / 'lte.pth'
    torch.save({'params': net.state_dict()}, path)
    options = detect_network(net.state_dict())
    assert options['type'] == 'ESCLTE' and options['hidden_dim'] == 32 and options['mlp_dims'] == [32, 24]
    with pytest.raises(ESCError, match='serves any scale above 1; say which'):
        esc.load_model(str(path))
    model = esc.load_model(str(path), scale=2.5)
    rgba = np.random.default_rng(0).integers(0, 256, (10, 13, 4), dtype=np.uint8)
    out = model.upscale(rgba)
    assert out.shape == (25, 32, 4) and out.dtype == np.uint8  # round(10 * 2.5), round(13 * 2.5)
    x = torch.from_numpy(rgba[..., :3]).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expected = net.upscale(x, scale=2.5, cell_scale_max=4).clamp(0, 1)  # esc_arb's evaluation: no padding
    assert np.abs(out[..., :3].astype(int) - (expected[0].permute(1, 2, 0).numpy() * 255).round()).max() <= 1
    with pytest.raises(ESCError, match='scale: must be a finite number above 1'):
        esc.load_model(str(path), scale=0.5)
    model.tile = 8
    with pytest.raises(ESCError, match='ESC\\+LTE is not tiled'):
        model.upscale(rgba)

    image = tmp_path / 'in.png'
    cv2.imwrite(str(image), rgba[..., :3])
    result = _run_cli('-i', str(image), '-o', str(tmp_path / 'out'), '--model', str(path), '--scale', '3.5')
    assert result.returncode == 0, result.stderr[-2000:]
    assert cv2.imread(str(tmp_path / 'out' / 'in_x3.5.png')).shape == (35, 46, 3)


@pytest.mark.cuda
@pytest.mark.parametrize('precision', ['fp32', 'fp16', 'bf16'])
def test_cuda_precisions_agree_with_the_cpu(checkpoint, precision):
    """--device cuda at each precision: the CPU fp32 result within what the precision can hold."""
    path, _ = checkpoint
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    cpu = esc.load_model(str(path), device='cpu').upscale(image).astype(int)
    cuda = esc.load_model(str(path), device='cuda', precision=precision).upscale(image).astype(int)
    assert cuda.shape == cpu.shape
    assert np.abs(cuda - cpu).mean() <= {'fp32': 0.01, 'fp16': 0.5, 'bf16': 2.0}[precision]


def test_bf16_on_the_cpu_stays_close_to_fp32(checkpoint):
    """--precision bf16 autocasts on the CPU too (fp16 is refused there: see the one-line errors above)."""
    path, _ = checkpoint
    image = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    reference = esc.load_model(str(path), device='cpu').upscale(image).astype(int)
    bf16 = esc.load_model(str(path), device='cpu', precision='bf16').upscale(image).astype(int)
    assert 0 < np.abs(bf16 - reference).mean() <= 2.0  # it did run in bf16, and still agrees
