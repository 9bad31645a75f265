"""Every shipped option file builds its network and is consistent with itself."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from basicsr.archs import build_network
from basicsr.utils.registry import DATASET_REGISTRY, MODEL_REGISTRY

from tests.conftest import REPO

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
        assert metric['crop_border'] == opt['scale'] and metric['test_y_channel']


@pytest.mark.parametrize('variant,scale', TABLE2)
def test_every_table2_row_has_train_and_test_options(variant, scale):
    train = load(REPO / f'options/train/{variant}/train_{variant}_X{scale}_DIV2K.yml')
    test = load(REPO / f'options/test/{variant}/test_{variant}_X{scale}_DIV2K.yml')
    assert train['network_g'] == test['network_g']
    assert train['datasets']['train']['gt_size'] == 64 * scale  # LR patches 64×64
    assert train['train']['optim_g'] == {'type': 'AdamW', 'lr': 5e-4, 'weight_decay': 0, 'betas': [0.9, 0.9]}
    assert train['train']['total_iter'] == 500000 and train['train']['warmup_iter'] == 20000
    assert train['train']['ema_decay'] == 0.999
    assert train['datasets']['train']['batch_size_per_gpu'] * 4 == 64
    pretrain = train['path']['pretrain_network_g']
    assert (pretrain is None) == (scale == 2) and (scale == 2 or '_X2_' in pretrain)
    assert [d['name'] for d in test['datasets'].values()] == ['Set5', 'Set14', 'B100', 'Urban100', 'Manga109']
    assert test['val']['pad_to_multiple'] == 32


def test_shipped_test_options_name_what_is_missing(tmp_path):
    """The shipped Table 2 test options, run from a root without benchmarks and then without the checkpoint:
    one line naming the first missing path each time, before any network or dataset is built."""
    option_file = REPO / 'options/test/ESC/test_ESC_X2_DIV2K.yml'

    def run() -> str:
        result = subprocess.run([sys.executable, str(REPO / 'esc/test.py'), '-opt', str(option_file)], cwd=tmp_path,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-3000:]
        return result.stderr.strip().splitlines()[-1]

    assert run().startswith('error: datasets.test_1.dataroot_gt: no such file or folder datasets/Set5/HR')
    for dataset in load(option_file)['datasets'].values():  # one 8x8 image per benchmark, LR made for x2
        for key, size in (('dataroot_gt', 8), ('dataroot_lq', 4)):
            folder = tmp_path / dataset[key]
            folder.mkdir(parents=True)
            cv2.imwrite(str(folder / 'a.png'), np.zeros((size, size, 3), np.uint8))
    assert run().startswith('error: path.pretrain_network_g: no such file experiments/pretrained_models/ESC_DIV2K_X2.pth')
