"""MANIQA, MUSIQ and CLIPIQA through pyiqa (esc.metrics): each reads the weight file it is given and nothing else,
never touches the network, works as a basicsr metric of an option file's val.metrics, and a missing file is one
line saying where to put it and where it is published. Small networks of pyiqa's architectures with random
weights stand in for the published ones (hundreds of MB)."""
from __future__ import annotations

import socket
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.metrics import calculate_metric

from esc.config.validation import validate_options
from esc.errors import ESCError
from esc.metrics import no_reference
from tests.helpers.iqa import SMALL_METRIC_NETWORKS, random_weights, sr_image
from tests.helpers.paths import REPO
from tests.helpers.runs import run_in_process

pytest.importorskip('pyiqa', reason='pyiqa is in the test extra: pip install -e ".[test]"')


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f'a network connection was attempted: {args}')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)


@pytest.mark.parametrize('metric', sorted(SMALL_METRIC_NETWORKS))
def test_the_local_file_is_what_is_loaded_and_nothing_is_downloaded(metric, tmp_path, small_networks, offline):
    first, second = tmp_path / 'first.pth', tmp_path / 'second.pth'
    saved = random_weights(metric, first, seed=1)
    random_weights(metric, second, seed=2)

    network = no_reference.build_network(metric, str(first))
    loaded = (network.clip_model[0] if metric == 'clipiqa' else network).state_dict()
    assert set(loaded) == set(saved)
    for key, value in saved.items():  # CLIP's loader passes its convolutions and projections through fp16
        rounded = value.half().float() if metric == 'clipiqa' and value.is_floating_point() else value
        assert torch.equal(loaded[key], value) or torch.equal(loaded[key].float(), rounded), key

    scores = [calculate_metric({'img': sr_image(), 'img2': None},
                               {'type': f'calculate_{metric}', 'crop_border': 4, 'weights': str(path)})
              for path in (first, second)]
    assert all(np.isfinite(scores)) and scores[0] != scores[1], scores  # each file gives its own score
    again = calculate_metric({'img': sr_image()}, {'type': f'calculate_{metric}', 'crop_border': 4,
                                                   'weights': str(first)})
    assert again == scores[0]


def test_a_file_of_another_network_is_one_line(tmp_path, small_networks):
    random_weights('musiq', tmp_path / 'musiq.pth', seed=0)
    with pytest.raises(ESCError, match=r'^val\.metrics\.maniqa\.weights: .*musiq\.pth does not hold MANIQA '
                                       r'\(KonIQ-10k\) weights') as info:
        no_reference.build_network('maniqa', str(tmp_path / 'musiq.pth'))
    assert '\n' not in str(info.value)


def test_esc_real_option_file_names_the_metrics_and_their_default_files():
    opt = yaml.safe_load((REPO / 'options/test/ESC_Real/test_ESC_Real_X4_RealSRSet.yml').read_text())
    validate_options(opt, is_train=False)
    metrics = opt['val']['metrics']
    assert {m['type'] for m in metrics.values()} >= {'calculate_niqe', 'calculate_maniqa', 'calculate_musiq',
                                                     'calculate_clipiqa'}
    for name in ('maniqa', 'musiq', 'clipiqa'):
        assert no_reference.weights_path(name, metrics[name].get('weights')) == \
            f'experiments/pretrained_models/iqa/{no_reference.METRICS[name].weight_file}'
    readme = (REPO / 'docs/evaluation.md').read_text()
    for spec in no_reference.METRICS.values():  # docs/evaluation.md says where each goes and where it is published
        assert spec.weight_file in readme and spec.published_at in readme


def test_missing_weight_file_stops_esc_test_in_one_line(tmp_path):
    (tmp_path / 'lq').mkdir()
    cv2.imwrite(str(tmp_path / 'lq' / 'patch.png'), sr_image(32))
    opt = dict(name='iqa', model_type='ESCModel', scale=2, num_gpu=0,
               datasets=dict(test_1=dict(name='NoGT', type='SingleImageDataset', dataroot_lq='lq',
                                         io_backend=dict(type='disk'))),
               network_g=dict(type='Bicubic', upscaling_factor=2), path=dict(pretrain_network_g=None),
               val=dict(save_img=False, metrics=dict(musiq=dict(type='calculate_musiq', weights='nowhere/m.pth'))))
    (tmp_path / 'iqa.yml').write_text(yaml.safe_dump(opt))
    result = run_in_process('esc.test', ['-opt', 'iqa.yml'], tmp_path)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith('error: val.metrics.musiq.weights: no such file nowhere/m.pth')
    assert 'musiq_koniq_ckpt-e95806b9.pth' in line
    assert 'published at https://huggingface.co/chaofengc/IQA-PyTorch-Weights/' in line
    assert not (tmp_path / 'results' / 'iqa' / 'visualization').exists()  # stopped before evaluating anything


def test_without_pyiqa_the_metric_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, 'pyiqa', None)
    with pytest.raises(ESCError, match=r'^val\.metrics\.clipiqa: needs pyiqa, which is not installed '
                                       r'\(pip install -e "\.\[iqa\]"\)$'):
        no_reference.check_metric_options({'type': 'calculate_clipiqa'}, 'val.metrics.clipiqa')
    no_reference.check_metric_options({'type': 'calculate_niqe'}, 'val.metrics.niqe')  # not a pyiqa metric


# --- LPIPS, DISTS and FID (esc.metrics.full_reference) ---------------------------------------------------------------
@pytest.mark.parametrize('metric', ['lpips', 'dists'])
def test_lpips_and_dists_read_their_two_local_files_and_compare_with_the_ground_truth(metric, full_reference_files,
                                                                                      offline):
    from esc.metrics import full_reference

    full_reference._cached_network.cache_clear()
    backbone = str(full_reference_files['alexnet' if metric == 'lpips' else 'vgg16'])
    weights = str(full_reference_files[metric])
    gt = sr_image(64)
    sr = cv2.GaussianBlur(gt, (5, 5), 2)
    options = {'type': f'calculate_{metric}', 'weights': weights, 'backbone_weights': backbone, 'crop_border': 2}
    same = calculate_metric({'img': gt, 'img2': gt}, options)
    blurred = calculate_metric({'img': sr, 'img2': gt}, options)
    assert same == pytest.approx(0, abs=1e-6) and blurred > same  # a distance to the ground truth
    network = full_reference.build_network(metric, weights, backbone)
    saved = torch.load(weights, weights_only=True)
    for key, value in saved.items():  # pyiqa's file is what is loaded, the backbone from torchvision's
        assert torch.equal(network.state_dict()[key], value), key
    first_conv = 'net.slice1.0.weight' if metric == 'lpips' else 'stage1.0.weight'
    assert torch.equal(network.state_dict()[first_conv], torch.load(backbone, weights_only=True)['features.0.weight'])
    if metric == 'dists':
        other = dict(options, weights=str(full_reference_files['dists_other']))
        assert calculate_metric({'img': sr, 'img2': gt}, other) != blurred
    full_reference._cached_network.cache_clear()


def test_full_reference_files_missing_or_of_another_network_are_one_line(full_reference_files, tmp_path):
    from esc.metrics import check_metric_options, full_reference

    with pytest.raises(ESCError) as info:
        check_metric_options({'type': 'calculate_lpips', 'backbone_weights': str(full_reference_files['alexnet'])},
                             'val.metrics.lpips')
    message = str(info.value)
    assert message.startswith('val.metrics.lpips.weights: no such file '
                              'experiments/pretrained_models/iqa/LPIPS_v0.1_alex-df73285e.pth')
    assert 'published at https://huggingface.co/chaofengc/IQA-PyTorch-Weights/blob/main/LPIPS_v0.1_alex-df73285e.pth' \
        in message and '\n' not in message
    with pytest.raises(ESCError, match=r'^val\.metrics\.dists\.backbone_weights: no such file nowhere/vgg\.pth .*'
                                       r'vgg16-397923af\.pth.*published at https://download\.pytorch\.org/models/'):
        check_metric_options({'type': 'calculate_dists', 'weights': str(full_reference_files['dists']),
                              'backbone_weights': 'nowhere/vgg.pth'}, 'val.metrics.dists')
    with pytest.raises(ESCError, match=r'^val\.metrics\.lpips\.backbone_weights: .*vgg16\.pth does not hold '
                                       r"torchvision's ImageNet AlexNet weights") as info:
        full_reference.build_network('lpips', str(full_reference_files['lpips']), str(full_reference_files['vgg16']))
    assert '\n' not in str(info.value)
    with pytest.raises(ESCError, match=r'^val\.metrics\.dists\.weights: .*lpips\.pth does not hold DISTS weights'):
        full_reference.build_network('dists', str(full_reference_files['lpips']), str(full_reference_files['vgg16']))
    with pytest.raises(ESCError, match=r'^val\.metrics\.lpips: LPIPS \(AlexNet, v0\.1\) compares the SR image with its '
                                       r'ground truth; this dataset has none'):
        calculate_metric({'img': sr_image(32), 'img2': None},
                         {'type': 'calculate_lpips', 'weights': str(full_reference_files['lpips']),
                          'backbone_weights': str(full_reference_files['alexnet'])})


def test_lpips_and_dists_are_option_file_metrics():
    opt = yaml.safe_load((REPO / 'options/test/ESC_Real/test_ESC_Real_X4_RealSR.yml').read_text())
    validate_options(opt, is_train=False)
    assert {m['type'] for m in opt['val']['metrics'].values()} == {'calculate_psnr', 'calculate_ssim',
                                                                   'calculate_lpips', 'calculate_dists'}
    readme = (REPO / 'docs/evaluation.md').read_text()
    from esc.metrics import full_reference
    for spec in full_reference.METRICS.values():  # docs/evaluation.md says where each goes and where it is published
        for file in (spec.weights, spec.backbone):
            if file is not None:
                assert file.name in readme and file.published_at in readme, file.name


def image_folders(root):
    """Two folders of four 48×48 images: flat grey levels and noise."""
    rng = np.random.default_rng(0)
    flat, noisy = root / 'flat', root / 'noisy'
    for folder in (flat, noisy):
        folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(flat / f'{i}.png'), np.full((48, 48, 3), 40 * i + 30, dtype=np.uint8))
        cv2.imwrite(str(noisy / f'{i}.png'), rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    return flat, noisy


def test_fid_weight_file_missing_or_of_another_network_is_one_line(full_reference_files, tmp_path):
    from esc.metrics.full_reference import fid_between_folders

    flat, noisy = image_folders(tmp_path)
    with pytest.raises(ESCError, match=r'^--fid-weights: no such file nowhere\.pth .*pt_inception-2015-12-05-6726825d'
                                       r'\.pth.*published at '):
        fid_between_folders(str(flat), str(noisy), 'nowhere.pth', device='cpu')
    with pytest.raises(ESCError, match=r'^--fid-weights: .*dists\.pth does not hold FID \(the FID Inception\) weights'):
        fid_between_folders(str(flat), str(noisy), str(full_reference_files['dists']), device='cpu')
    with pytest.raises(ESCError, match=r'^FID: .*empty is not a folder of images'):
        (tmp_path / 'empty').mkdir()
        fid_between_folders(str(flat), str(tmp_path / 'empty'), str(full_reference_files['fid']), device='cpu')


@pytest.mark.slow
def test_fid_between_folders_reads_the_local_inception(full_reference_files, offline, tmp_path, monkeypatch):
    """pyiqa's FID over two folders with the FID Inception from the local file: the network the FID runs holds that
    file's tensors, every one (pyiqa regroups the Inception's modules under its own names, in the file's order), and
    distinct sets score above zero. The network is checked directly rather than by a second FID with other weights:
    each FID takes the square root of a 2048×2048 matrix, 12 s on two cores."""
    from esc.metrics import full_reference

    build_network, built = full_reference.build_network, []

    def recording_build_network(*args, **kwargs):
        built.append(build_network(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(full_reference, 'build_network', recording_build_network)
    flat, noisy = image_folders(tmp_path)
    apart = full_reference.fid_between_folders(str(flat), str(noisy), str(full_reference_files['fid']), device='cpu')
    assert apart > 1e-3
    used = list(built[0].state_dict().values())
    stored = list(torch.load(full_reference_files['fid'], map_location='cpu').values())
    assert len(built) == 1 and len(used) == len(stored) == 566
    assert all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(used, stored))
