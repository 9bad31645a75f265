"""ESC+LTE, arbitrary-scale SR (paper Sec. 4.3): the network, its queries, the data, training and evaluation
through esc/train.py and esc/test.py, and the bicubic row at a non-integer scale."""
from __future__ import annotations

import math
import re

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from basicsr.metrics import calculate_psnr
from basicsr.utils import tensor2img
from basicsr.utils.matlab_functions import imresize

from esc.archs import ESC, ESCLTE, NETWORKS
from esc.archs.bicubic_arch import Bicubic, imresize_to
from esc.archs.lte_arch import make_coord
from esc.data.arbitrary_scale_dataset import ArbitraryScaleTestDataset, ArbitraryScaleTrainDataset, make_queries
from esc.errors import ESCError
from esc.models.lte_model import crop_border
from tests.helpers.networks import TINY_LTE, tiny_lte
from tests.helpers.paths import REPO
from tests.helpers.runs import assert_resumes_exactly, run, write


def test_the_paper_configuration_is_esc_with_an_lte_head():
    net = ESCLTE()
    backbone = {k: v.shape for k, v in ESC(upscaling_factor=2).state_dict().items() if not k.startswith('to_img')}
    own = {k: v.shape for k, v in net.state_dict().items()}
    assert {k: own[k] for k in backbone} == backbone  # ESC's blocks and names, no sub-pixel conv
    head = {k: tuple(v) for k, v in own.items() if k not in backbone}
    assert head == {'coef.weight': (256, 64, 3, 3), 'coef.bias': (256,), 'freq.weight': (256, 64, 3, 3),
                    'freq.bias': (256,), 'phase.weight': (128, 2),
                    'imnet.0.weight': (256, 256), 'imnet.0.bias': (256,), 'imnet.2.weight': (256, 256),
                    'imnet.2.bias': (256,), 'imnet.4.weight': (256, 256), 'imnet.4.bias': (256,),
                    'imnet.6.weight': (3, 256), 'imnet.6.bias': (3,)}
    assert net.upscaling_factor is None and net.streaming == 'off' and NETWORKS['ESCLTE'] is ESCLTE


@pytest.mark.parametrize('scale,expected', [(2, (32, 26)), (3, (48, 39)), (2.5, (40, 32)), (1.7, (27, 22))])
def test_shapes_and_determinism(scale, expected):
    net = tiny_lte()
    x = torch.rand(2, 3, 16, 13)
    with torch.no_grad():
        out = net.upscale(x, scale=scale)
        again = net.upscale(x, scale=scale)
    assert out.shape == (2, 3, *expected) and torch.isfinite(out).all()
    assert torch.equal(out, again)
    torch.manual_seed(0)
    twin = tiny_lte()
    torch.manual_seed(0)
    assert torch.equal(twin.upscale(x, scale=scale).detach(), tiny_lte().upscale(x, scale=scale).detach())
    coord = make_coord(expected).expand(2, -1, -1)
    cell = torch.full_like(coord, 2 / expected[0])
    cell[..., 1] = 2 / expected[1]
    with torch.no_grad():
        queried = net(x, coord, cell)
    assert queried.shape == (2, expected[0] * expected[1], 3)
    assert torch.allclose(queried.transpose(1, 2).reshape(out.shape), out, atol=1e-6)


def test_chunked_and_whole_queries_agree():
    net = tiny_lte()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        whole = net.upscale(x, scale=3.3)
        chunked = net.upscale(x, scale=3.3, chunk=777)  # 53×53 = 2809 queries: 3 full chunks and a remainder
    assert (whole - chunked).abs().max() <= 1e-5


def test_the_image_skip_is_bilinear_and_the_ensemble_weights_sum_to_one():
    """With a decoder that outputs a constant c, every query returns c + bilinear(I_LR): the four area
    weights of the local ensemble sum to 1, and S is bilinear upsampling with border clamping."""
    net = tiny_lte()
    last = net.imnet[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(0.1)
        x = torch.rand(1, 3, 12, 10)
        out = net.upscale(x, size=(30, 27))
    bilinear = F.interpolate(x, size=(30, 27), mode='bilinear', align_corners=False)
    assert (out - 0.1 - bilinear).abs().max() < 1e-5


def test_the_cell_is_clipped_beyond_the_largest_training_scale():
    net = tiny_lte()
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        plain, clipped = net.upscale(x, scale=8), net.upscale(x, scale=8, cell_scale_max=4)
        assert torch.equal(net.upscale(x, scale=3), net.upscale(x, scale=3, cell_scale_max=4))
    assert not torch.allclose(plain, clipped)


@pytest.mark.parametrize('call,message', [
    (lambda n, x: n.upscale(x, scale=1), 'scale: must be a finite number above 1, got 1'),
    (lambda n, x: n.upscale(x, scale=0.5), 'scale: must be a finite number above 1'),
    (lambda n, x: n.upscale(x, scale=float('nan')), 'scale: must be a finite number above 1, got nan'),
    (lambda n, x: n.upscale(x, scale=float('inf')), 'scale: must be a finite number above 1, got inf'),
    (lambda n, x: n.upscale(x, size=(4, 4)), 'size: (4, 4) is smaller than the LR image'),
    (lambda n, x: n.upscale(x, scale=2, chunk=0), 'chunk: must be a positive integer'),
    (lambda n, x: n(x, torch.full((1, 5, 2), 1.5), torch.full((1, 5, 2), 0.1)), 'coord: values must lie in [-1, 1]'),
    (lambda n, x: n(x, torch.full((1, 5, 2), float('nan')), torch.full((1, 5, 2), 0.1)), 'coord: holds non-finite'),
    (lambda n, x: n(x, torch.zeros(1, 5, 2), torch.full((1, 5, 2), float('inf'))), 'cell: holds non-finite'),
    (lambda n, x: n(x, torch.zeros(1, 5, 2), torch.zeros(1, 5, 2)), 'cell: sizes must be positive'),
    (lambda n, x: n(x, torch.zeros(1, 5, 3), torch.zeros(1, 5, 2)), 'coord: expected shape (1, Q, 2)'),
])
def test_bad_queries_fail_in_one_line(call, message):
    with pytest.raises(ESCError) as info:
        call(tiny_lte(), torch.rand(1, 3, 8, 8))
    assert message in str(info.value) and '\n' not in str(info.value)


@pytest.mark.parametrize('options,message', [
    (dict(upscaling_factor=4), 'upscaling_factor does not apply'),
    (dict(streaming='on'), "streaming must be 'off'"),
    (dict(hidden_dim=31), 'hidden_dim must be a positive even integer'),
])
def test_bad_options_fail_in_one_line(options, message):
    with pytest.raises(ESCError, match=re.escape(message)):
        ESCLTE(**{**TINY_LTE, **options})


def test_training_queries_sample_the_hr_crop():
    """make_queries: one HR crop of round(lq·s) pixels per patch, its bicubic LR patch, and sampled pixels whose
    RGB is the crop's pixel at their coordinate."""
    p = 40
    ys, xs = torch.meshgrid(torch.arange(p), torch.arange(p), indexing='ij')
    hr = torch.stack([ys / 64, xs / 64, torch.zeros(p, p)]).expand(3, -1, -1, -1).contiguous()
    batch = make_queries(hr, 10, 2.7, 50)
    size = 27
    assert batch['lq'].shape == (3, 3, 10, 10) and batch['coord'].shape == batch['cell'].shape == (3, 50, 2)
    assert torch.allclose(batch['cell'], torch.full((3, 50, 2), 2 / size))
    index = ((batch['coord'] + 1) * size / 2 - 0.5).round()  # the crop pixel of each coordinate
    offset = batch['gt'][..., :2] * 64 - index  # the crop's top-left corner, the same for all of a patch's pixels
    assert (offset - offset[:, :1]).abs().max() < 1e-4 and offset.min() >= 0 and offset.max() <= p - size
    for b in range(3):
        top, left = (int(v) for v in offset[b, 0].round())
        crop = hr[b:b + 1, :, top:top + size, left:left + size]
        assert torch.allclose(batch['lq'][b], imresize_to(crop, (10, 10))[0].clamp(0, 1), atol=1 / 255)
    with pytest.raises(ESCError, match='queries exceed'):
        make_queries(hr, 10, 1.0, 101)


def test_a_few_training_steps_on_cpu_lower_the_loss():
    net = tiny_lte().train()
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    hr = torch.rand(4, 3, 1, 1) * torch.linspace(0, 1, 36).view(1, 1, 1, 36).expand(4, 3, 36, 36)
    batch = make_queries(hr, 12, 2.5, 100)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = F.l1_loss(net(batch['lq'], batch['coord'], batch['cell']), batch['gt'])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.5 * losses[0]


def write_images(folder, count: int, size: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        smooth = cv2.resize(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), (size, size),
                            interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f'{i:02d}.png'), smooth)


def test_datasets(tmp_path):
    write_images(tmp_path / 'hr', 2, 37)
    test = ArbitraryScaleTestDataset(dict(dataroot_gt=str(tmp_path / 'hr'), scale=2.5, phase='test'))
    item = test[0]
    assert item['lq'].shape == (3, 14, 14) and item['gt'].shape == (3, 35, 35)  # ⌊37/2.5⌋ = 14, round(14·2.5) = 35
    assert torch.allclose(item['lq'] * 255, (item['lq'] * 255).round(), atol=1e-4)
    train = ArbitraryScaleTrainDataset(dict(dataroot_gt=str(tmp_path / 'hr'), lq_size=8, scale_max=4, sample_q=64,
                                            phase='train', cache=True))
    assert len(train) == 2 and train[1]['hr'].shape == (3, 32, 32)
    with pytest.raises(ESCError, match='smaller than the 48-pixel HR patch'):
        ArbitraryScaleTrainDataset(dict(dataroot_gt=str(tmp_path / 'hr'), lq_size=12, phase='train', sample_q=4))[0]
    with pytest.raises(ESCError, match=re.escape('datasets.test.scale: must be a finite number above 1, got 1')):
        ArbitraryScaleTestDataset(dict(dataroot_gt=str(tmp_path / 'hr'), scale=1, phase='test'))


def test_bicubic_resizes_like_matlab_at_any_scale():
    x = torch.rand(2, 3, 12, 16)
    for scale in (2, 3, 4):
        assert torch.allclose(Bicubic(scale)(x), imresize_to(x, (12 * scale, 16 * scale)), atol=1e-5)
        assert torch.allclose(imresize_to(x[0], (12 * scale, 16 * scale)), imresize(x[0], scale), atol=1e-5)
    assert Bicubic(2.5).upscale(x, scale=2.5).shape == (2, 3, 30, 40)
    with pytest.raises(ESCError, match='upscaling_factor must be'):
        Bicubic(1.0)
    assert crop_border(2.5, y_channel=True) == 3 and crop_border(2.5, y_channel=False) == 9
    assert crop_border(4, y_channel=False) == 10


def lte_train_options(root) -> dict:
    network = {'type': 'ESCLTE', **TINY_LTE}
    return {
        'name': 'tiny_lte', 'model_type': 'ESCLTEModel', 'scale': 2.5, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {
            'train': {'name': 'tiny', 'type': 'ArbitraryScaleTrainDataset', 'dataroot_gt': str(root / 'train'),
                      'io_backend': {'type': 'disk'}, 'lq_size': 12, 'scale_min': 1, 'scale_max': 3, 'sample_q': 100,
                      'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1,
                      'prefetch_mode': None},
            'val': {'name': 'tiny_val', 'type': 'ArbitraryScaleTestDataset', 'dataroot_gt': str(root / 'val'),
                    'io_backend': {'type': 'disk'}},
        },
        'network_g': network,
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-4, 'betas': [0.9, 0.999]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [3], 'gamma': 0.5}, 'total_iter': 3,
                  'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'val': {'val_freq': 3, 'save_img': False, 'chunk': 500, 'cell_scale_max': 3, 'pad_to_multiple': 8,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 9, 'test_y_channel': False}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 3, 'use_tb_logger': False,
                   'wandb': {'project': None, 'resume_id': None}},
    }


def test_train_and_test_through_the_entrypoints(tmp_path):
    write_images(tmp_path / 'train', 4, 40)
    write_images(tmp_path / 'val', 1, 48)
    result = run([str(REPO / 'esc/train.py'), '-opt', str(write(tmp_path / 'train.yml', lte_train_options(tmp_path)))],
                 tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = tmp_path / 'experiments' / 'tiny_lte'
    assert (experiment / 'models' / 'net_g_3.pth').is_file() and (experiment / 'training_states' / '3.state').is_file()
    log = next(experiment.glob('train_tiny_lte_*.log')).read_text()
    assert re.search(r'# psnr: \d+\.\d+', log) and 'l_pix:' in log

    test_opt = {
        'name': 'tiny_lte_test', 'model_type': 'ESCLTEModel', 'scale': 3.5, 'num_gpu': 0,
        'datasets': {'test_1': {'name': 'val', 'type': 'ArbitraryScaleTestDataset',
                                'dataroot_gt': str(tmp_path / 'val'), 'io_backend': {'type': 'disk'}}},
        'network_g': {'type': 'ESCLTE', **TINY_LTE},
        'path': {'pretrain_network_g': str(experiment / 'models' / 'net_g_3.pth'), 'param_key_g': 'params',
                 'strict_load_g': True},
        'val': {'save_img': True, 'chunk': 300, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4,
                                                                     'test_y_channel': True}}},
    }
    result = run([str(REPO / 'esc/test.py'), '-opt', str(write(tmp_path / 'test.yml', test_opt))], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = list((tmp_path / 'results' / 'tiny_lte_test' / 'visualization' / 'val').glob('*.png'))
    assert len(saved) == 1 and cv2.imread(str(saved[0])).shape == (46, 46, 3)  # ⌊48/3.5⌋ = 13, round(45.5) = 46


def test_the_bicubic_row_at_a_non_integer_scale(tmp_path):
    """esc/test.py with the Bicubic baseline at x2.5 reports the PSNR of MATLAB bicubic at that scale."""
    write_images(tmp_path / 'hr', 2, 41)
    opt = {
        'name': 'bicubic_x2.5', 'model_type': 'ESCLTEModel', 'scale': 2.5, 'num_gpu': 0,
        'datasets': {'test_1': {'name': 'tiny', 'type': 'ArbitraryScaleTestDataset',
                                'dataroot_gt': str(tmp_path / 'hr'), 'io_backend': {'type': 'disk'}}},
        'network_g': {'type': 'Bicubic', 'upscaling_factor': 2.5},
        'path': {'pretrain_network_g': None},
        'val': {'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 3,
                                                        'test_y_channel': True}}},
    }
    result = run([str(REPO / 'esc/test.py'), '-opt', str(write(tmp_path / 'bicubic.yml', opt))], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    reported = float(re.search(r'# psnr: (\d+\.\d+)', result.stdout + result.stderr).group(1))
    dataset = ArbitraryScaleTestDataset(dict(dataroot_gt=str(tmp_path / 'hr'), scale=2.5, phase='test'))
    expected = np.mean([calculate_psnr(tensor2img(imresize_to(item['lq'], item['gt'].shape[-2:])),
                                       tensor2img(item['gt']), crop_border=3, test_y_channel=True)
                        for item in (dataset[0], dataset[1])])
    assert reported == pytest.approx(expected, abs=1e-3)
    assert 20 < reported < 60


@pytest.mark.slow
def test_training_resumes_exactly(tmp_path):
    """The batch's scale and its queries draw from the restored generators, the HR patches from their own seeds."""
    write_images(tmp_path / 'train', 4, 40)
    opt = lte_train_options(tmp_path)
    opt['val'] = None
    del opt['datasets']['val']
    assert_resumes_exactly(tmp_path, opt)


# --- LTE on other encoders: the Table 5 and 6 baselines ----------------------------------------------------------
BASELINES = {'ATD-lt+LTE': 'ATD_light_LTE', 'HiT-SRF+LTE': 'HiTSRF_LTE'}
OFFICIAL_PARAMETERS = {'ATD-lt+LTE': 1_168_107, 'HiT-SRF+LTE': 1_315_847}
"""Parameters of esc_arb's ATDLight+LTE and HiTSRF+LTE less their encoders' unused conv_last (20,784 and 32,460),
counted on models built from its code."""
TINY_HITSRF = dict(type='HiT_SRF', embed_dim=16, depths=[1], num_heads=[2], base_win_size=[4, 4], mlp_ratio=1.0,
                   upscale=2, upsampler=None, hier_win_ratios=[1])


def head_keys(net: torch.nn.Module) -> dict:
    """LTE's parameters and their shapes, less the estimators' input width (the encoder's)."""
    return {k: tuple(v.shape[:1] + v.shape[2:]) if k.split('.')[0] in ('coef', 'freq') else tuple(v.shape)
            for k, v in net.state_dict().items() if k.split('.')[0] in ('coef', 'freq', 'phase', 'imnet')}


@pytest.mark.parametrize('variant', sorted(BASELINES))
def test_the_lte_baselines_build_from_their_option_files(variant):
    from esc.archs.lte_arch import LTE, LTEHead, RECONSTRUCTION_MODULES, VARIANTS
    from esc.config.validation import validate_options

    tag = BASELINES[variant]
    if VARIANTS[variant]['encoder']['type'] not in NETWORKS:
        pytest.skip(f"{VARIANTS[variant]['encoder']['type']} is not in this checkout")
    train = yaml.safe_load((REPO / f'options/train/ESC_LTE/train_{tag}_DIV2K.yml').read_text())
    assert train['network_g'] == {**VARIANTS[variant], 'data_norm': [0.5, 0.5]}
    options = {k: v for k, v in train['network_g'].items() if k != 'type'}
    net = NETWORKS[train['network_g']['type']](**options).eval()
    assert isinstance(net, LTE) and net.data_norm == (0.5, 0.5)
    assert sum(p.numel() for p in net.parameters()) == OFFICIAL_PARAMETERS[variant]
    assert head_keys(net) == head_keys(ESCLTE())  # one head: the same estimators and decoder as ESC+LTE's
    assert set(net.state_dict()) - set(head_keys(net)) == {k for k in net.state_dict() if k.startswith('encoder.')}
    assert type(net).query is type(tiny_lte()).query is LTEHead.query
    assert not any(k.split('.')[1] in RECONSTRUCTION_MODULES for k in net.state_dict() if k.startswith('encoder.'))
    for file in sorted((REPO / f'options/test/ESC_LTE/{tag}').glob('*.yml')):
        opt = yaml.safe_load(file.read_text())
        assert opt['network_g'] == train['network_g'], file.name
        opt['num_gpu'] = 0
        validate_options(opt, is_train=False)


@pytest.mark.parametrize('encoder,message', [
    ({'type': 'ESC', 'upscaling_factor': 2}, "encoder.type 'ESC' is not a network with a feature body; choose one of"),
    ({'type': 'ESCLTE'}, "encoder.type 'ESCLTE' is not a network with a feature body"),
    ({'dim': 16}, "encoder must be a network's options with its type"),
    ({**TINY_HITSRF, 'embed_dims': 4}, "encoder: .*unexpected keyword argument 'embed_dims'"),
])
def test_an_lte_encoder_must_be_a_feature_body(encoder, message):
    with pytest.raises(ESCError, match=message) as info:
        NETWORKS['LTE'](encoder=encoder, hidden_dim=16, mlp_dims=[16])
    assert '\n' not in str(info.value)


def test_an_lte_baseline_trains_and_tests_through_the_entrypoints(tmp_path):
    """ESCLTEModel trains and evaluates LTE on another encoder (a tiny HiT-SRF) as it does ESC+LTE."""
    write_images(tmp_path / 'train', 4, 40)
    write_images(tmp_path / 'val', 1, 48)
    opt = lte_train_options(tmp_path)
    opt['name'] = 'tiny_hitsrf_lte'
    opt['network_g'] = {'type': 'LTE', 'encoder': TINY_HITSRF, 'hidden_dim': 16, 'mlp_dims': [16],
                        'data_norm': [0.5, 0.5]}
    result = run([str(REPO / 'esc/train.py'), '-opt', str(write(tmp_path / 'train.yml', opt))], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = tmp_path / 'experiments' / 'tiny_hitsrf_lte'
    log = next(experiment.glob('train_tiny_hitsrf_lte_*.log')).read_text()
    assert re.search(r'# psnr: \d+\.\d+', log) and len(re.findall(r'l_pix: (\S+)', log)) == 3
    state = torch.load(experiment / 'models' / 'net_g_3.pth', weights_only=True)['params']
    assert 'encoder.conv_first.weight' in state and 'imnet.2.weight' in state
