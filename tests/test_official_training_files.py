"""The official repository's training option files (options/train/official/, its keys and values as released) start
training through esc/train.py with only their data paths changed: here to small generated data (LMDB sub-images
for DIV2K, a folder for ESC-Real's DF2KOST, Set5-style pairs and the real-world folder for validation).

Every file is checked as esc/train.py checks it (types, keys, paths) by default; one file per family (ESC, ESC-FP,
ESC-light from scratch and fine-tuned from x2, ESC-Real's L1 and GAN stages) trains for one iteration and
validates in the slow set: full-size networks take 20-60 s an iteration on two CPU cores. Those runs shorten the
run from the command line (``--force_yml``: one iteration, two images a batch, no GPU), not in the file. The DFLIP
files need a dataset this project does not have; they are refused in one line, as docs/official_files.md lists.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List

import cv2
import numpy as np
import pytest
import torch
import yaml

import esc.compat  # noqa: F401  (registers the datasets and models; basicsr's data needs its torchvision alias)
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from esc.archs import NETWORKS
from esc.errors import ESCError
from esc.utils.options import validate_options
from tests.conftest import REPO
from tests.test_entrypoints import run, write

OFFICIAL = REPO / 'options' / 'train' / 'official'
FILES = sorted(path.stem for path in OFFICIAL.glob('*.yaml'))
NOT_IN_THIS_PROJECT = {'ESC_DFLIP_X2', 'ESC_DFLIP_X3', 'ESC_DFLIP_X4'}
"""Files that cannot run here (docs/official_files.md): their training set is a DownsampleImageDataset."""
NEEDS_META_INFO = {'ESC_Real_X4_MSE', 'ESC_Real_X4_GAN'}
"""Files whose RealESRGANDataset reads a folder without a ``meta_info`` list: the official dataset lists the folder
itself, basicsr's (which runs under that name here) needs the list, so the runs here add one (docs/official_files.md)."""
RUNS = ['ESC_DIV2K_X2', 'ESC_FP_X3', 'ESC_light_X4', 'ESC_Real_X4_MSE', 'ESC_Real_X4_GAN']
"""One file per family that trains here for an iteration (the x3/x4 ones fine-tune the x2 weights)."""
SHORT_RUN = ['train:total_iter=1', 'datasets:train:batch_size_per_gpu=2', 'num_gpu=0', 'logger:print_freq=1']
"""How a test run is shortened: on the command line, not in the file."""
IMAGES_PER_TRAIN_SET = 2


def official(file: str) -> Dict[str, Any]:
    return yaml.safe_load((OFFICIAL / f'{file}.yaml').read_text())


def test_the_official_files_are_all_here():
    names = {f'ESC_{kind}_X{scale}' for kind in ('DIV2K', 'DFLIP', 'FP', 'light') for scale in (2, 3, 4)}
    assert set(FILES) == names | {'ESC_Real_X4_MSE', 'ESC_Real_X4_GAN'}
    for file in FILES:  # released with the authors' own data folders, which this checkout does not have
        roots = [d[key] for d in official(file)['datasets'].values() for key in ('dataroot_gt', 'dataroot_lq')
                 if key in d]
        assert roots and all(root.startswith('/home2/') for root in roots), file


def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random image with some structure (BGR, uint8)."""
    small = rng.integers(0, 256, (max(height // 8, 2), max(width // 8, 2), 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def write_folder(folder: Path, images: List[np.ndarray], names: List[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for image, name in zip(images, names):
        cv2.imwrite(str(folder / f'{name}.png'), image)


def write_lmdb(folder: Path, images: List[np.ndarray], keys: List[str]) -> str:
    """An LMDB as basicsr's scripts make it (meta_info.txt included), from PNGs written beside it."""
    write_folder(folder.with_suffix(''), images, keys)
    make_lmdb_from_imgs(str(folder.with_suffix('')), str(folder), [f'{k}.png' for k in keys], keys)
    return str(folder)


def with_tiny_data(opt: Dict[str, Any], root: Path) -> Dict[str, Any]:
    """``opt`` with every dataset's paths pointing to small generated data of the shape it expects; nothing else
    changes."""
    rng = np.random.default_rng(0)
    scale = opt['scale']
    for phase, dataset in opt['datasets'].items():
        folder = root / 'data' / phase
        if phase == 'train':
            size = dataset.get('gt_size', opt.get('gt_size', 128))
            hr = [smooth_image(rng, size, size) for _ in range(IMAGES_PER_TRAIN_SET)]
            keys = [f'{i:04d}' for i in range(IMAGES_PER_TRAIN_SET)]
            if dataset['io_backend']['type'] == 'lmdb':
                dataset['dataroot_gt'] = write_lmdb(folder / 'HR.lmdb', hr, keys)
                if 'dataroot_lq' in dataset:
                    lr = [cv2.resize(h, (size // scale, size // scale), interpolation=cv2.INTER_AREA) for h in hr]
                    dataset['dataroot_lq'] = write_lmdb(folder / 'LR.lmdb', lr, keys)
            else:
                write_folder(folder / 'HR', hr, keys)
                dataset['dataroot_gt'] = str(folder / 'HR')
                if 'meta_info' in dataset:
                    (folder / 'meta_info.txt').write_text(''.join(f'{k}.png\n' for k in keys))
                    dataset['meta_info'] = str(folder / 'meta_info.txt')
            continue
        hr = smooth_image(rng, 8 * scale, 8 * scale)
        if 'dataroot_gt' in dataset:
            write_folder(folder / 'HR', [hr], ['img'])
            dataset['dataroot_gt'] = str(folder / 'HR')
        if 'dataroot_lq' in dataset:
            template = dataset.get('filename_tmpl', '{}') if 'dataroot_gt' in dataset else '{}'
            write_folder(folder / 'LR', [cv2.resize(hr, (8, 8), interpolation=cv2.INTER_AREA)],
                         [template.format('img')])
            dataset['dataroot_lq'] = str(folder / 'LR')
    return opt


def write_pretrained(opt: Dict[str, Any], cwd: Path) -> None:
    """Weights where the file's ``pretrain_network_g`` (a path relative to the run) expects them: random ones of the
    x2 (or ESC-Real) network the file fine-tunes from, as a release file (``params_ema``)."""
    path = opt['path'].get('pretrain_network_g')
    if not path:
        return
    network = {k: v for k, v in opt['network_g'].items() if k not in ('type', 'attn_type', 'deployment')}
    network['upscaling_factor'] = int(re.search(r'_X(\d)', Path(path).stem).group(1))
    torch.manual_seed(0)
    state = NETWORKS[opt['network_g']['type']](**network).state_dict()
    (cwd / path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({'params_ema': state}, cwd / path)


def write_vgg19(cwd: Path) -> None:
    """A VGG19 state dict (random weights) where the perceptual loss looks for ImageNet's."""
    from esc.losses.perceptual_loss import default_locations, models

    torch.manual_seed(0)
    path = cwd / default_locations('vgg19')[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(models.vgg.vgg19(weights=None).state_dict(), path)


@pytest.mark.parametrize('file', sorted(set(FILES) - NOT_IN_THIS_PROJECT))
def test_every_official_training_file_is_accepted(file, tmp_path):
    opt = with_tiny_data(official(file), tmp_path)
    opt['num_gpu'] = 0
    validate_options(opt, is_train=True)


@pytest.mark.parametrize('file', sorted(NOT_IN_THIS_PROJECT))
def test_the_dflip_files_are_refused_in_one_line(file, tmp_path):
    opt = with_tiny_data(official(file), tmp_path)
    with pytest.raises(ESCError, match=r"^datasets\.train\.type: 'DownsampleImageDataset' is not a registered "
                                       r'dataset') as info:
        validate_options(opt, is_train=True)
    assert '\n' not in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize('file', RUNS)
def test_one_official_file_per_family_trains(file, tmp_path):
    opt = official(file)
    if file in NEEDS_META_INFO:
        opt['datasets']['train']['meta_info'] = None  # the one key these files lack; with_tiny_data writes the list
    opt = with_tiny_data(opt, tmp_path)
    write_pretrained(opt, tmp_path)
    machine = ['network_g:attn_type=sdpa'] if opt['network_g'].get('attn_type') == 'Flex' else []  # no CPU backward
    if opt['train'].get('perceptual_opt'):  # ImageNet's VGG19 is never downloaded: random weights where it is looked for
        write_vgg19(tmp_path)
    result = run([str(REPO / 'esc/train.py'), '-opt', str(write(tmp_path / f'{file}.yaml', opt)), '--force_yml',
                  *SHORT_RUN, *machine], tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    experiment = tmp_path / 'experiments' / opt['name']
    log = next(experiment.glob(f"train_{opt['name']}_*.log")).read_text()
    losses = re.findall(r'iter:\s+1, .*?(l_\w+): (\S+)', log)
    assert losses and all(np.isfinite(float(value)) for _, value in losses), log[-2000:]
    assert (experiment / 'models' / 'net_g_latest.pth').is_file()
    if opt['path'].get('pretrain_network_g'):
        assert f"Loading {opt['network_g']['type']} from {opt['path']['pretrain_network_g']}" in log
    if 'Real' not in file:  # the five benchmark sets are scored after the last iteration
        assert len(re.findall(r'# psnr: \d+\.\d+', log)) == 5
