"""scripts/make_crop.py: the README's before/after crop shows what was computed, on the demo's own LR image."""
import cv2
import numpy as np
import pytest
import torch

import esc
from esc.data.sample_image_dataset import SampleImageDataset
from tests.helpers.paths import load_script
from tests.helpers.runs import BICUBIC_COFFEE_X2

TINY = dict(dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=2, window_size=8, num_heads=2)


@pytest.fixture(scope='module')
def crop():
    return load_script('make_crop')


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    net = esc.ESC(**TINY, upscaling_factor=2)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0, 0.05)
    path = tmp_path_factory.mktemp('crop_ckpt') / 'tiny_x2.pth'
    torch.save({'params_ema': net.state_dict()}, path)
    return path


def demo_validation_pair():
    """The LR and HR images the demo validates on, as its dataset makes them (HWC RGB float)."""
    sample = SampleImageDataset({'name': 'val', 'type': 'SampleImageDataset', 'phase': 'val', 'scale': 2,
                                 'images': ['coffee']})[0]
    return sample['lq'].numpy().transpose(1, 2, 0), sample['gt'].numpy().transpose(1, 2, 0)


def test_the_picture_holds_the_demos_lr_image_upscaled(crop, tiny, tmp_path, capsys):
    out = tmp_path / 'docs' / 'crop.png'
    assert crop.run(['--model', str(tiny), '-o', str(out), '--device', 'cpu']) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f'coffee x2: bicubic {BICUBIC_COFFEE_X2:.4f} dB, ESC (custom) ')
    model = esc.load_model(str(tiny), device='cpu')
    versions = crop.make_versions(model, crop.load_photograph('coffee'))
    lr, hr = demo_validation_pair()
    np.testing.assert_array_equal(versions.lr, lr)
    np.testing.assert_array_equal(versions.hr, hr)
    network_output = model.upscale(lr)
    np.testing.assert_array_equal(versions.network, network_output)
    box = crop.Box(*(int(v) for v in printed.split('square ')[1].split(';')[0].split(',')))
    assert box == crop.worst_bicubic_box(versions, 96, 2)
    picture = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    shown = crop.panels(versions, box, 2, 2)
    left = crop.GAP + round(600 * 192 / 400) + crop.GAP  # after the overview (coffee is 600x400, shown 192 high)
    for panel, expected in enumerate(shown):
        x = left + panel * (192 + crop.GAP)
        np.testing.assert_array_equal(picture[crop.GAP:crop.GAP + 192, x:x + 192], expected)
    network = picture[crop.GAP:crop.GAP + 192, left + 2 * (192 + crop.GAP):][:, :192]
    independent = np.round(np.clip(network_output[box.y:box.y + 96, box.x:box.x + 96], 0, 1) * 255)
    np.testing.assert_array_equal(network[::2, ::2], independent.astype(np.uint8))


def test_the_default_square_is_where_bicubic_loses_most(crop):
    hr = np.zeros((64, 80, 3), np.float32)
    bicubic = hr.copy()
    bicubic[40:56, 24:40] = 0.5  # the one place bicubic is wrong
    versions = crop.Versions(hr[::2, ::2], bicubic, hr, hr)
    assert crop.worst_bicubic_box(versions, 16, 2) == crop.Box(24, 40, 16)


@pytest.mark.parametrize('options,message', [
    (['--box', '590,0,96'], '--box: 590,0,96 does not fit in the 600x400 image'),
    (['--box', '1,0,96'], '--box: 1,0,96: corner and side must be multiples of the scale (2)'),
    (['--image', 'no_such_photo'], '--image: no_such_photo is neither an image file nor a scikit-image sample'),
    (['-o', 'crop.gif'], '-o: crop.gif is not one of .png, .jpg, .jpeg, .webp (by its extension)'),
])
def test_bad_options_are_one_line_errors(crop, tiny, tmp_path, capsys, monkeypatch, options, message):
    monkeypatch.chdir(tmp_path)
    argv = ['--model', str(tiny), '-o', 'crop.png', '--device', 'cpu', *options]
    with pytest.raises(SystemExit) as stop:
        crop.main(argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith(f'error: {message}')
    assert list(tmp_path.iterdir()) == []
