"""Users of the official repository bring their option files and checkpoints unchanged (issue 24): its model names
(ESRModel, RealHATMSEModel, RealHATGANModel), attention spellings, ``deployment`` and ``flashbias_rank`` are
accepted, and its FlashBias checkpoints (``flashbias_q``/``flashbias_k`` per layer, no table) load strictly and
give what this project's factorisation of the same table at the same rank gives.

The option files are written here in the official layout (same sections, keys and values; only the data and
checkpoint paths and ``num_gpu`` differ), and so are the checkpoints: tables factorised the official way,
U·√S for queries and V·√S for keys, computed here with ``torch.linalg.svd`` independently of esc.archs.attention.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Dict

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.utils.registry import MODEL_REGISTRY

import esc
from esc.archs import NETWORKS
from esc.archs.attention import relative_position_bias
from esc.archs.layers import pad_to_multiple
from esc.config.validation import validate_options
from esc.errors import ESCError
from esc.models.esc_model import ESCModel
from esc.models.official import OFFICIAL_MODELS, OfficialEvaluation
from esc.models.real_model import ESCRealESRGANModel, ESCRealESRNetModel
from esc.upscaler import detect_network
from tests.helpers.files import as_saved, paired_dataset, read_rgb, write_pairs
from tests.helpers.networks import SMALL, tiny_with_strong_biases, without_type
from tests.helpers.runs import run_in_process

ESC_X2 = dict(type='ESC', dim=64, pdim=16, kernel_size=13, n_blocks=5, conv_blocks=5, window_size=32, num_heads=4,
              upscaling_factor=2, exp_ratio=1.25)
ESC_REAL_X4 = dict(type='ESCReal', dim=64, pdim=16, kernel_size=13, n_blocks=10, conv_blocks=5, window_size=32,
                   num_heads=4, upscaling_factor=4, exp_ratio=2)
NETWORKS_BY_FILE: Dict[str, Dict[str, Any]] = {
    'ESC_DIV2K_X3': {**ESC_X2, 'upscaling_factor': 3, 'deployment': True},
    'ESC_light_X2': {**ESC_X2, 'n_blocks': 3, 'deployment': True},
    'ESC_FP_X2': dict(type='ESCFP', dim=48, pdim=16, kernel_size=13, n_blocks=5, conv_blocks=5, window_size=32,
                      num_heads=3, upscaling_factor=2, exp_ratio=1.25, deployment=True),
    'ESC_DFLIP_X2': {**ESC_X2, 'deployment': True, 'attn_type': 'Flex'},
    'ESC_XL_X2': {**ESC_X2, 'dim': 192, 'pdim': 48, 'n_blocks': 8, 'window_size': 48, 'num_heads': 12,
                  'use_ln': True, 'attn_type': 'Flex'},
    'ESC_Real_X4': {**ESC_REAL_X4, 'attn_type': 'Flex'},
    'ESC_FB_R48_DIV2K_X2': {**ESC_X2, 'attn_type': 'FlashBias', 'flashbias_rank': 48},
    'ESC_Real_FB_R48_X4': {**ESC_REAL_X4, 'attn_type': 'FlashBias', 'flashbias_rank': 48},
}
"""The network_g sections of the official option files (the keys and values as released)."""


def official_test_options(file: str, root: Path, checkpoint: str) -> dict:
    """An official test option file: ESRModel, paired Set5-style data (ESC-Real FlashBias: SingleImageDataset with the
    official file's filename_tmpl), the checkpoint's EMA weights loaded strictly, images saved, PSNR/SSIM on Y."""
    network = dict(NETWORKS_BY_FILE[file])
    scale = network['upscaling_factor']
    if file == 'ESC_Real_FB_R48_X4':
        datasets = dict(test_1=dict(name='Test', type='SingleImageDataset', dataroot_lq=str(root / f'LR_bicubic/X{scale}'),
                                    filename_tmpl=f'{{}}x{scale}', io_backend=dict(type='disk')))
    else:
        datasets = dict(test_1=paired_dataset('Set5', root, scale), test_2=paired_dataset('Set14', root, scale))
    val: Dict[str, Any] = dict(save_img=True, suffix=None)
    if 'Real' not in file:
        val['metrics'] = {name: dict(type=f'calculate_{name}', crop_border=scale, test_y_channel=True)
                          for name in ('psnr', 'ssim')}
    return dict(name=file, model_type='ESRModel', scale=scale, num_gpu=0, manual_seed=0, datasets=datasets,
                network_g=network, path=dict(pretrain_network_g=checkpoint, param_key_g='params_ema', strict_load_g=True),
                val=val)


REAL_DEGRADATIONS = dict(
    resize_prob=[0.2, 0.7, 0.1], resize_range=[0.15, 1.5], gaussian_noise_prob=0.5, noise_range=[1, 30],
    poisson_scale_range=[0.05, 3], gray_noise_prob=0.4, jpeg_range=[30, 95], second_blur_prob=0.8,
    resize_prob2=[0.3, 0.4, 0.3], resize_range2=[0.3, 1.2], gaussian_noise_prob2=0.5, noise_range2=[1, 25],
    poisson_scale_range2=[0.05, 2.5], gray_noise_prob2=0.4, jpeg_range2=[30, 95], gt_size=256, queue_size=180)
KERNELS = dict(blur_kernel_size=21, kernel_list=['iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso',
                                                 'plateau_aniso'],
               kernel_prob=[0.45, 0.25, 0.12, 0.03, 0.12, 0.03], sinc_prob=0.1, blur_sigma=[0.2, 3],
               betag_range=[0.5, 4], betap_range=[1, 2])


def official_train_options(file: str, root: Path) -> dict:
    """An official training option file: the FlashBias x2 fine-tuning (ESRModel, LMDB DIV2K) or ESC-Real's L1 and GAN
    stages (RealHATMSEModel, RealHATGANModel; RealESRGANDataset on DF2KOST)."""
    logger = dict(print_freq=100, save_checkpoint_freq=5e3, use_tb_logger=True, wandb=dict(project=None, resume_id=None))
    common = dict(manual_seed=0, num_gpu=0, logger=logger, dist_params=dict(backend='nccl', port=29500))
    adamw = dict(type='AdamW', lr=5e-4, weight_decay=0, betas=[0.9, 0.9])
    if file == 'ESC_FB_R48_DIV2K_X2':
        train_set = dict(name='DIV2K', type='PairedImageDataset', dataroot_gt=str(root / 'DIV2K_train_HR_sub.lmdb'),
                         dataroot_lq=str(root / 'X2_sub.lmdb'), filename_tmpl='{}', io_backend=dict(type='lmdb'),
                         gt_size=128, use_hflip=True, use_rot=True, use_shuffle=True, num_worker_per_gpu=4,
                         batch_size_per_gpu=16, dataset_enlarge_ratio=1, prefetch_mode='cuda', pin_memory=True)
        metrics = {name: dict(type=f'calculate_{name}', crop_border=2, test_y_channel=True) for name in ('psnr', 'ssim')}
        return dict(name=file, model_type='ESRModel', scale=2, **common,
                    datasets=dict(train=train_set, val_1=paired_dataset('Set5', root, 2)),
                    network_g=NETWORKS_BY_FILE[file],
                    path=dict(pretrain_network_g='pretrained_models/ESC_DIV2K_X2.pth', param_key_g='params_ema',
                              strict_load_g=True, resume_state=None),
                    train=dict(ema_decay=0.999, optim_g={**adamw, 'lr': 5e-5},
                               scheduler=dict(type='MultiStepLR', milestones=[250000, 400000, 450000, 475000, 490000],
                                              gamma=0.5),
                               total_iter=500000, warmup_iter=20000,
                               pixel_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean')),
                    val=dict(val_freq=5e3, save_img=False, metrics=metrics))
    train_set = dict(name='DF2KOST', type='RealESRGANDataset', dataroot_gt=str(root / 'DF2KMultiscaleOST'),
                     io_backend=dict(type='disk'), **KERNELS, **{f'{k}2': v for k, v in KERNELS.items()},
                     final_sinc_prob=0.8, gt_size=256, use_hflip=True, use_rot=False, use_shuffle=True,
                     num_worker_per_gpu=4, batch_size_per_gpu=12, dataset_enlarge_ratio=1, prefetch_mode=None)
    train_set['blur_sigma2'] = [0.2, 1.5]
    network = {**ESC_REAL_X4, 'deployment': True}
    if file == 'ESC_Real_X4_MSE':
        return dict(name=file, model_type='RealHATMSEModel', scale=4, **common, gt_usm=True, **REAL_DEGRADATIONS,
                    datasets=dict(train=train_set), network_g=network,
                    path=dict(pretrain_network_g=None, strict_load_g=True, resume_state=None),
                    train=dict(ema_decay=0.999, optim_g=adamw, optim_d=adamw,
                               scheduler=dict(type='MultiStepLR', milestones=[100000], gamma=0.4),
                               total_iter=1000000, warmup_iter=-1,
                               pixel_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean')))
    layers = dict(conv1_2=0.1, conv2_2=0.1, conv3_4=1, conv4_4=1, conv5_4=1)
    return dict(name=file, model_type='RealHATGANModel', scale=4, **common, l1_gt_usm=True, percep_gt_usm=True,
                gan_gt_usm=False, **REAL_DEGRADATIONS, datasets=dict(train=train_set), network_g=network,
                network_d=dict(type='UNetDiscriminatorSN', num_in_ch=3, num_feat=64, skip_connection=True),
                path=dict(pretrain_network_g='experiments/ESC_Real_X4_MSE/models/net_g_latest.pth',
                          param_key_g='params_ema', strict_load_g=True, resume_state=None),
                train=dict(ema_decay=0.999, optim_g={**adamw, 'lr': 1e-4}, optim_d={**adamw, 'lr': 1e-4},
                           scheduler=dict(type='MultiStepLR', milestones=[400000], gamma=0.5), total_iter=400000,
                           warmup_iter=-1, pixel_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean'),
                           perceptual_opt=dict(type='PerceptualLoss', layer_weights=layers, vgg_type='vgg19',
                                               use_input_norm=True, perceptual_weight=1.0, style_weight=0,
                                               range_norm=False, criterion='l1'),
                           gan_opt=dict(type='GANLoss', gan_type='vanilla', real_label_val=1.0, fake_label_val=0.0,
                                        loss_weight=0.1),
                           net_d_iters=1, net_d_init_iters=0))


def test_official_model_names_are_this_projects_models():
    assert OFFICIAL_MODELS == {'ESRModel': ESCModel, 'RealHATMSEModel': ESCRealESRNetModel,
                               'RealHATGANModel': ESCRealESRGANModel}
    for name, model in OFFICIAL_MODELS.items():
        registered = MODEL_REGISTRY.get(name)
        assert registered.__name__ == name and registered.__mro__[1:3] == (OfficialEvaluation, model)
        assert set(vars(registered)) <= {'__module__', '__doc__', '__qualname__'}  # nothing but the official evaluation


@pytest.mark.parametrize('file', sorted(NETWORKS_BY_FILE))
def test_official_test_option_files_are_accepted(file, tmp_path):
    validate_options(official_test_options(file, tmp_path, 'weights.pth'), is_train=False)


@pytest.mark.parametrize('file', ['ESC_FB_R48_DIV2K_X2', 'ESC_Real_X4_MSE', 'ESC_Real_X4_GAN'])
def test_official_train_option_files_are_accepted(file, tmp_path):
    validate_options(official_train_options(file, tmp_path), is_train=True)


def test_official_network_options_build_the_official_layers():
    net = NETWORKS['ESC'](**without_type(NETWORKS_BY_FILE['ESC_FB_R48_DIV2K_X2']))
    state = net.state_dict()
    assert state['blocks.0.attn.flashbias_q'].shape == state['blocks.4.attn.flashbias_k'].shape == (4, 1024, 48)
    assert not any(k.endswith('relative_position_bias') for k in state)
    default = NETWORKS['ESC'](**{**without_type(ESC_X2), 'attn_type': 'FlashBias', 'n_blocks': 1})
    assert default.blocks[0].attn.rank == 256 - 16  # the official default: 256 − head dim
    for spelling in ('Flex', 'SDPA', 'Naive'):
        exact = NETWORKS['ESC'](**{**without_type(ESC_X2), 'attn_type': spelling, 'deployment': True, 'n_blocks': 1})
        assert exact.attn_type == spelling.lower() and 'blocks.0.attn.relative_position_bias' in exact.state_dict()


def official_flashbias_state(table_state: dict, rank: int, window_size: int) -> dict:
    """What the official code saves for a FlashBias network made from a table state dict: every table replaced by
    ``flashbias_q`` = U·√S and ``flashbias_k`` = V·√S of its dense bias, truncated to ``rank`` (float32 SVD)."""
    state = {}
    for key, value in table_state.items():
        if not key.endswith('relative_position_bias'):
            state[key] = value.clone()
            continue
        u, s, vh = torch.linalg.svd(relative_position_bias(value, window_size).float(), full_matrices=False)
        root = s[:, :rank].sqrt().unsqueeze(1)
        layer = key[:-len('relative_position_bias')]
        state[layer + 'flashbias_q'] = u[:, :, :rank] * root
        state[layer + 'flashbias_k'] = vh[:, :rank].transpose(-2, -1) * root
    return state


def random_flashbias_state(network: dict, seed: int = 0) -> dict:
    """An official-layout FlashBias state dict for the official network ``network`` (its table network's parameters,
    each table replaced by random ``flashbias_q``/``flashbias_k`` of (heads, ws², flashbias_rank)): what a released
    FlashBias file holds, without a 1024×1024 SVD per layer."""
    torch.manual_seed(seed)
    tables = NETWORKS[network['type']](**{k: v for k, v in without_type(network).items()
                                          if k not in ('attn_type', 'flashbias_rank')})
    heads, positions, rank = network['num_heads'], network['window_size'] ** 2, network['flashbias_rank']
    state = {}
    for key, value in tables.state_dict().items():
        if key.endswith('relative_position_bias'):
            layer = key[:-len('relative_position_bias')]
            state[layer + 'flashbias_q'] = torch.randn(heads, positions, rank) * 0.2
            state[layer + 'flashbias_k'] = torch.randn(heads, positions, rank) * 0.2
        else:
            state[key] = torch.randn_like(value) * (0.3 if 'to_qkv' in key else 0.03)
    return state


def official_evaluation(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The output the official test step gives: the LR image reflect-padded to whole windows, the output cropped."""
    scale = net.upscaling_factor
    with torch.no_grad():
        out = net.eval()(pad_to_multiple(x, net.window_size))
    return out[..., :x.shape[-2] * scale, :x.shape[-1] * scale]


def run_test_command(options: dict, cwd: Path) -> subprocess.CompletedProcess:
    (cwd / 'official.yml').write_text(yaml.safe_dump(options, sort_keys=False))
    return run_in_process('esc.test', ['-opt', 'official.yml'], cwd)


@pytest.mark.slow
@pytest.mark.parametrize('file', ['ESC_FB_R48_DIV2K_X2', 'ESC_Real_FB_R48_X4'])
def test_official_flashbias_test_files_run_on_official_checkpoints(file, tmp_path):
    """The FlashBias test files as released (ESC x2 and ESC-Real x4 at rank 48) through esc/test.py on official-layout
    checkpoints: strict loading, the images the network gives, and esc.load_model and the inference command on the
    same file (full-size networks: about half a minute each)."""
    network = NETWORKS_BY_FILE[file]
    scale = network['upscaling_factor']
    state = random_flashbias_state(network)
    checkpoint = tmp_path / f'{file}.pth'
    torch.save({'params': state, 'params_ema': state}, checkpoint)
    write_pairs(tmp_path / 'data', scale, size=12)
    net = NETWORKS[network['type']](**without_type(network))
    net.load_state_dict(state, strict=True)
    x = read_rgb(tmp_path / f'data/LR_bicubic/X{scale}/img0x{scale}.png')
    with torch.no_grad():
        expected = net.eval()(x)
        padded = official_evaluation(net, x)

    result = run_test_command(official_test_options(file, tmp_path / 'data', str(checkpoint)), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = 'Test' if 'Real' in file else 'Set5'
    saved = cv2.imread(str(tmp_path / f'results/{file}/visualization/{folder}/img0x{scale}_{file}.png'))
    assert saved is not None and saved.shape == (12 * scale, 12 * scale, 3)
    assert np.abs(saved.astype(float) - as_saved(padded)).max() <= 1  # the official evaluation: padded to the window
    log = next((tmp_path / f'results/{file}').glob('test_*.log')).read_text()
    assert 'Model [ESRModel] is created.' in log

    options = detect_network(state)
    assert (options['type'], options['bias_rank'], options['attn_type']) == (network['type'], 48, 'flashbias')
    model = esc.load_model(str(checkpoint), device='cpu')
    with torch.no_grad():
        assert (model.net(x) - expected).abs().max() <= 1e-5
    from esc.commands.upscale import main as inference_main
    with pytest.raises(SystemExit) as exit_:
        inference_main(['-i', str(tmp_path / f'data/LR_bicubic/X{scale}/img0x{scale}.png'), '-o', str(tmp_path / 'out'),
                        '--model', str(checkpoint)])
    assert exit_.value.code == 0
    upscaled = cv2.imread(str(tmp_path / f'out/img0x{scale}_x{scale}.png'))
    assert np.abs(upscaled.astype(float) - as_saved(expected)).max() <= 1


def test_official_factors_are_this_projects_factorisation_of_the_same_table(tmp_path):
    """A table checkpoint loaded into a FlashBias network here is factorised as the official code does: the official
    file made from it and the table itself give one output, through load_state_dict, esc.load_model (the official
    file) and an ESRModel test file whose pretrain_network_g is the table (a window of 8 and rank 12 keep the SVDs
    quick)."""
    table_net = tiny_with_strong_biases()
    with torch.no_grad():  # let the attention layer's output weigh in the image, so its error shows
        table_net.blocks[0].ln_attn.weight.fill_(1.0)
        table_net.blocks[0].attn.to_out.weight.normal_(0, 1.0)
        table_net.blocks[0].conv_out.weight.normal_(0, 0.5)
    rank = 12
    official = official_flashbias_state(table_net.state_dict(), rank, table_net.window_size)
    fb_options = dict(type='ESC', **{**SMALL, 'conv_blocks': 1, 'kernel_size': 5}, upscaling_factor=2,
                      attn_type='FlashBias', flashbias_rank=rank)
    ours, loaded = (NETWORKS['ESC'](**without_type(fb_options)).eval() for _ in range(2))
    ours.load_state_dict(table_net.state_dict(), strict=True)  # factorised on the way in, by this project
    loaded.load_state_dict(official, strict=True)
    x = torch.rand(1, 3, 13, 19)
    with torch.no_grad():
        expected, got, exact = ours(x), loaded(x), table_net(x)
        product = ours.blocks[0].attn.bias()
        assert (loaded.blocks[0].attn.bias() - product).abs().max() <= 1e-4  # one Φq·Φkᵀ (the signs may differ)
        assert (product - table_net.blocks[0].attn.bias()).abs().max() > 0.5  # rank 12 of 64 leaves much out
    assert (got - expected).abs().max() <= 1e-5
    assert (expected - exact).abs().max() > 1e-3  # and it shows in the image

    write_pairs(tmp_path / 'data', 2, sets=('Set5',), size=13)
    x = read_rgb(tmp_path / 'data/LR_bicubic/X2/img0x2.png')
    with torch.no_grad():
        want = as_saved(official_evaluation(ours, x))
    torch.save({'params_ema': official}, tmp_path / 'official_fb.pth')
    torch.save({'params_ema': table_net.state_dict()}, tmp_path / 'table.pth')
    assert np.abs(as_saved(official_evaluation(esc.load_model(str(tmp_path / 'official_fb.pth'), device='cpu').net, x))
                  - want).max() <= 1
    options = official_test_options('ESC_FB_R48_DIV2K_X2', tmp_path / 'data', str(tmp_path / 'table.pth'))
    options['network_g'] = fb_options
    options['datasets'] = dict(test_1=paired_dataset('Set5', tmp_path / 'data', 2))
    result = run_test_command(options, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = cv2.imread(str(tmp_path / 'results/ESC_FB_R48_DIV2K_X2/visualization/Set5/img0x2_ESC_FB_R48_DIV2K_X2.png'))
    assert np.abs(saved.astype(float) - want).max() <= 1


def test_earlier_factor_names_still_load(tmp_path):
    """Files this project wrote before it took the official names (bias_factor_q/k) load into the official layout."""
    net = NETWORKS['ESC'](**{**without_type(ESC_X2), 'n_blocks': 1, 'conv_blocks': 1, 'attn_type': 'flashbias', 'bias_rank': 6})
    earlier = {k.replace('flashbias_q', 'bias_factor_q').replace('flashbias_k', 'bias_factor_k'): v
               for k, v in net.state_dict().items()}
    assert 'blocks.0.attn.bias_factor_q' in earlier
    torch.save({'params_ema': earlier}, tmp_path / 'earlier.pth')
    model = esc.load_model(str(tmp_path / 'earlier.pth'), device='cpu')
    assert torch.equal(model.net.blocks[0].attn.flashbias_k, net.blocks[0].attn.flashbias_k)
    assert 'blocks.0.attn.flashbias_q' in model.net.state_dict()


def test_a_flashbias_checkpoint_in_a_table_network_is_one_line():
    fb = NETWORKS['ESC'](**{**without_type(ESC_X2), 'n_blocks': 1, 'conv_blocks': 1, 'attn_type': 'FlashBias', 'flashbias_rank': 8})
    table = NETWORKS['ESC'](**{**without_type(ESC_X2), 'n_blocks': 1, 'conv_blocks': 1, 'attn_type': 'Flex'})
    with pytest.raises(ESCError, match=r"^checkpoint does not fit ESC: key 'blocks\.0\.attn\.relative_position_bias' "
                                       r'is missing'):
        table.load_state_dict(fb.state_dict())
    wrong_rank = NETWORKS['ESC'](**{**without_type(ESC_X2), 'n_blocks': 1, 'conv_blocks': 1, 'attn_type': 'FlashBias',
                                    'flashbias_rank': 9})
    with pytest.raises(ESCError, match=r"'blocks\.0\.attn\.flashbias_q' has shape \(4, 1024, 8\) in the checkpoint "
                                       r'but \(4, 1024, 9\) in the network'):
        wrong_rank.load_state_dict(fb.state_dict())
