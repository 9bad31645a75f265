"""Every shipped option file builds its network and is consistent with itself."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from basicsr.archs import build_network
from basicsr.utils.registry import DATASET_REGISTRY, MODEL_REGISTRY

from esc.config.batch import plan_batch
from esc.evaluation.paper import TABLE5, TABLE6
from esc.models.lte_model import crop_border as lte_crop_border
from tests.helpers.paths import REPO
from tests.helpers.runs import run_in_process

OPTION_FILES = sorted((REPO / 'options').rglob('*.yml'))
TABLE2 = [(v, r) for v in ('ESC', 'ESC_light', 'ESC_FP') for r in (2, 3, 4)]


def load(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize('path', OPTION_FILES, ids=lambda p: str(p.relative_to(REPO / 'options')))
def test_option_file_is_consistent(path):
    opt = load(path)
    assert MODEL_REGISTRY.get(opt['model_type'])
    net = build_network(opt['network_g'])
    arbitrary = opt['model_type'] == 'ESCLTEModel'  # one network for every scale; `scale` is the evaluation's
    if arbitrary:
        assert net.upscaling_factor == (None if opt['network_g']['type'] in ('ESCLTE', 'LTE') else opt['scale'])
    else:
        assert net.upscaling_factor == opt['scale']
    for phase, dataset in opt['datasets'].items():
        assert DATASET_REGISTRY.get(dataset['type']), phase
        for key in ('dataroot_gt', 'dataroot_lq'):
            if key in dataset:
                assert dataset[key].startswith('datasets/'), f'{phase}.{key} must be relative to datasets/'
        if 'gt_size' in dataset:
            assert dataset['gt_size'] % opt['scale'] == 0
    if 'window_size' in opt['network_g'] and opt.get('val', {}).get('pad_to_multiple'):
        assert opt['val']['pad_to_multiple'] % opt['network_g']['window_size'] == 0
    for metric in opt.get('val', {}).get('metrics', {}).values():
        if arbitrary:  # Tables 5/6: RGB with border scale + 6 on DIV2K-val, Y with border scale on the benchmarks
            names = {d['name'] for phase, d in opt['datasets'].items() if not phase.startswith('train')}
            div2k = any(name.startswith('DIV2K') for name in names)
            assert metric['test_y_channel'] is not div2k
            assert metric['crop_border'] == lte_crop_border(opt['scale'], metric['test_y_channel'])
        elif metric['type'] == 'calculate_niqe':  # no reference: the SR image alone (on Y); lower is better
            assert metric['crop_border'] == opt['scale'] and metric['better'] == 'lower'
            assert all(d['type'] == 'SingleImageDataset' for d in opt['datasets'].values())
        elif metric['type'] in ('calculate_maniqa', 'calculate_musiq', 'calculate_clipiqa'):  # pyiqa's, whole image
            assert metric.get('crop_border', 0) == 0 and metric.get('better', 'higher') == 'higher'
            assert all(d['type'] == 'SingleImageDataset' for d in opt['datasets'].values())
        elif path.stem.endswith(('_RealSR', '_DRealSR')):  # the official real-world table: pyiqa's, no border
            assert metric.get('crop_border', 0) == 0 and metric.get('test_y_channel', True)
        else:
            assert metric['crop_border'] == opt['scale'] and metric['test_y_channel']
    if 'network_d' in opt:
        assert build_network(dict(opt['network_d']))


@pytest.mark.parametrize('data,scales,sets', [('DIV2K', tuple(TABLE5), ['DIV2K_val']),
                                              ('benchmarks', tuple(TABLE6['Set5']), list(TABLE6))])
def test_every_arbitrary_scale_column_has_test_options(data, scales, sets):
    """Every column of Tables 5 (DIV2K-val) and 6 (the benchmarks), for ESC+LTE and bicubic."""
    train = load(REPO / 'options/train/ESC_LTE/train_ESC_LTE_DIV2K.yml')
    for scale in scales:
        lte = load(REPO / f'options/test/ESC_LTE/test_ESC_LTE_{data}_X{scale}.yml')
        bicubic = load(REPO / f'options/test/ESC_LTE/Bicubic/test_Bicubic_{data}_X{scale}.yml')
        assert lte['network_g'] == train['network_g'] and lte['scale'] == bicubic['scale'] == scale
        assert bicubic['network_g'] == {'type': 'Bicubic', 'upscaling_factor': scale}
        for opt in (lte, bicubic):
            assert [d['name'] for d in opt['datasets'].values()] == sets
            assert {d['type'] for d in opt['datasets'].values()} == {'ArbitraryScaleTestDataset'}
            assert opt['val']['metrics']['psnr']['crop_border'] == scale + (6 if data == 'DIV2K' else 0)


def test_arbitrary_scale_training_follows_the_supplementary():
    opt = load(REPO / 'options/train/ESC_LTE/train_ESC_LTE_DIV2K.yml')
    data, train = opt['datasets']['train'], opt['train']
    assert opt['network_g']['type'] == 'ESCLTE'
    assert {k: opt['network_g'][k] for k in ('dim', 'n_blocks', 'conv_blocks')} == {'dim': 64, 'n_blocks': 5,
                                                                                    'conv_blocks': 5}
    assert data['dataroot_gt'] == 'datasets/DIV2K/DIV2K_train_HR'
    assert (data['lq_size'], data['sample_q'], data['scale_min'], data['scale_max']) == (64, 2304, 1, 4)
    assert data['batch_size_per_gpu'] * 4 == 32
    iters_per_epoch = 800 * data['dataset_enlarge_ratio'] // 32
    assert train['total_iter'] == 1000 * iters_per_epoch
    assert train['scheduler']['milestones'] == [e * iters_per_epoch for e in (200, 400, 600, 800)]
    assert train['optim_g'] == {'type': 'Adam', 'lr': 1e-4, 'betas': [0.9, 0.999]}
    assert train['pixel_opt']['type'] == 'L1Loss'


@pytest.mark.parametrize('variant,scale', TABLE2)
def test_every_table2_row_has_train_and_test_options(variant, scale):
    train = load(REPO / f'options/train/{variant}/train_{variant}_X{scale}_DIV2K.yml')
    test = load(REPO / f'options/test/{variant}/test_{variant}_X{scale}_DIV2K.yml')
    assert train['network_g'] == test['network_g']
    assert train['datasets']['train']['gt_size'] == 64 * scale  # LR patches 64×64
    assert train['train']['optim_g'] == {'type': 'AdamW', 'lr': 5e-4, 'weight_decay': 0, 'betas': [0.9, 0.9]}
    assert train['train']['total_iter'] == 500000 and train['train']['warmup_iter'] == 20000
    assert train['train']['ema_decay'] == 0.999
    plans = {gpus: plan_batch(train['datasets']['train'], gpus) for gpus in (1, 2, 4, 8)}
    assert {gpus: (p.total, p.micro_batch, p.accumulation) for gpus, p in plans.items()} == {
        1: (64, 16, 4), 2: (64, 16, 2), 4: (64, 16, 1), 8: (64, 8, 1)}  # the official 16 per GPU on 4
    pretrain = train['path']['pretrain_network_g']
    assert (pretrain is None) == (scale == 2) and (scale == 2 or '_X2_' in pretrain)
    assert [d['name'] for d in test['datasets'].values()] == ['Set5', 'Set14', 'B100', 'Urban100', 'Manga109']
    assert test['val']['pad_to_multiple'] == 32


def test_shipped_test_options_name_what_is_missing(tmp_path):
    """The shipped Table 2 test options, run from a root without benchmarks and then without the checkpoint:
    one line naming the first missing path each time, before any network or dataset is built."""
    option_file = REPO / 'options/test/ESC/test_ESC_X2_DIV2K.yml'

    def run() -> str:
        result = run_in_process('esc.test', ['-opt', str(option_file)], tmp_path)
        assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-3000:]
        return result.stderr.strip().splitlines()[-1]

    assert run().startswith('error: datasets.test_1.dataroot_gt: no such file or folder datasets/Set5/HR')
    for dataset in load(option_file)['datasets'].values():  # one 8x8 image per benchmark, LR made for x2
        for key, size in (('dataroot_gt', 8), ('dataroot_lq', 4)):
            folder = tmp_path / dataset[key]
            folder.mkdir(parents=True)
            cv2.imwrite(str(folder / 'a.png'), np.zeros((size, size, 3), np.uint8))
    assert run().startswith('error: path.pretrain_network_g: no such file experiments/pretrained_models/ESC_DIV2K_X2.pth')


def test_esc_real_options_follow_the_paper():
    """ESC-Real (Sec. 4.4, supplementary 6.3): an L1 stage, then L1 1.0 + VGG19 perceptual 1.0 + GAN 0.1 from
    its weights; RealESRGAN degradations; 48 LR patches of 64x64; 400k iterations each; NIQE on RealSRSet."""
    mse = load(REPO / 'options/train/ESC_Real/train_ESC_Real_X4_MSE.yml')
    gan = load(REPO / 'options/train/ESC_Real/train_ESC_Real_X4_GAN.yml')
    test = load(REPO / 'options/test/ESC_Real/test_ESC_Real_X4_RealSRSet.yml')
    assert mse['network_g'] == gan['network_g'] == test['network_g']
    assert {k: v for k, v in mse['network_g'].items() if k != 'attn_type'} == dict(
        type='ESCReal', dim=64, pdim=16, kernel_size=13, n_blocks=10, conv_blocks=5, window_size=32, num_heads=4,
        exp_ratio=2, upscaling_factor=4)
    assert (mse['model_type'], gan['model_type']) == ('ESCRealESRNetModel', 'ESCRealESRGANModel')
    for opt in (mse, gan):
        train_set = opt['datasets']['train']
        assert train_set['type'] == 'ESCRealESRGANDataset' and train_set['meta_info'].startswith('datasets/')
        assert opt['gt_size'] == train_set['gt_size'] == 64 * 4
        assert train_set['batch_size_per_gpu'] * 4 == 48 and opt['queue_size'] % train_set['batch_size_per_gpu'] == 0
        assert opt['train']['total_iter'] == 400000 and opt['train']['pixel_opt']['loss_weight'] == 1.0
        assert opt['train']['ema_decay'] == 0.999 and list(opt['datasets']) == ['train']
    degradation = [k for k in mse if k.startswith(('resize', 'noise', 'gaussian', 'poisson', 'gray', 'jpeg', 'second'))]
    assert len(degradation) == 15 and all(mse[k] == gan[k] for k in degradation)
    assert mse['datasets']['train'] == gan['datasets']['train']
    assert 'perceptual_opt' not in mse['train'] and 'network_d' not in mse
    assert gan['path']['pretrain_network_g'] == f"experiments/{mse['name']}/models/net_g_latest.pth"
    assert gan['path']['param_key_g'] == 'params_ema'
    assert gan['network_d']['type'] == 'UNetDiscriminatorSN' and gan['network_d']['skip_connection']
    perceptual = gan['train']['perceptual_opt']
    assert perceptual['type'] == 'OfflinePerceptualLoss' and perceptual['vgg_type'] == 'vgg19'
    assert perceptual['layer_weights'] == dict(conv1_2=0.1, conv2_2=0.1, conv3_4=1, conv4_4=1, conv5_4=1)
    assert perceptual['perceptual_weight'] == 1.0 and perceptual['style_weight'] == 0
    assert gan['train']['gan_opt']['type'] == 'GANLoss' and gan['train']['gan_opt']['loss_weight'] == 0.1
    assert test['datasets']['test_1']['type'] == 'SingleImageDataset' and test['val']['save_img']
    pyiqa = {name: dict(type=f'calculate_{name}') for name in ('maniqa', 'musiq', 'clipiqa')}  # the official table's
    assert test['val']['metrics'] == {'niqe': dict(type='calculate_niqe', crop_border=4, better='lower'), **pyiqa}
