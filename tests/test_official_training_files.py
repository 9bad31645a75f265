"""The official repository's training option files (options/train/official/, its keys and values as released) start
training through esc/train.py with only their data paths changed: here to small generated data (LMDB sub-images
for DIV2K and DFLIP, a folder for ESC-Real's DF2KOST, Set5-style pairs and the real-world folder for validation).

Every file is checked as esc/train.py checks it (types, keys, paths) by default; one file per family (ESC, DFLIP,
ESC-FP, ESC-light from scratch and fine-tuned from x2, ESC-Real's L1 and GAN stages) trains for one iteration and
validates in the slow set: full-size networks take 20-60 s an iteration on two CPU cores. Those runs shorten the
run from the command line (``--force_yml``: one iteration, two images a batch, no GPU), not in the file.

The two official datasets the files name are checked here too: ``DownsampleImageDataset`` (the DFLIP files; its LR
patch against torchvision's ToPILImage → Resize(BICUBIC) → ToTensor, its three ways of listing images, its seeded
crops, its errors) and ``RealESRGANDataset`` without ``meta_info`` (ESC-Real's files; the folder is the list).
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any, Dict, List

import cv2
import numpy as np
import pytest
import torch
import yaml

import esc.compat  # noqa: F401  (registers the datasets and models; basicsr's data needs its torchvision alias)
from basicsr.data import build_dataset
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from esc.archs import NETWORKS
from esc.config.validation import validate_options
from esc.data import DownsampleImageDataset, ESCRealESRGANDataset
from esc.data.resumable import SeededIndex, TrainingSamples
from esc.errors import ESCError
from tests.helpers.paths import REPO
from tests.helpers.runs import run, write

OFFICIAL = REPO / 'options' / 'train' / 'official'
FILES = sorted(path.stem for path in OFFICIAL.glob('*.yaml'))
RUNS = ['ESC_DIV2K_X2', 'ESC_DFLIP_X2', 'ESC_FP_X3', 'ESC_light_X4', 'ESC_Real_X4_MSE', 'ESC_Real_X4_GAN']
"""One file per family that trains here for an iteration (the x3/x4 ones fine-tune the x2 weights)."""
SHORT_RUN = ['train:total_iter=1', 'datasets:train:batch_size_per_gpu=2', 'num_gpu=0', 'logger:print_freq=1']
"""How a test run is shortened: on the command line, not in the file."""
SMALL_REAL_PATCH = ['gt_size=128', 'datasets:train:gt_size=128']
"""ESC-Real's files also crop 128-pixel training patches instead of 256 (a quarter of the work of the networks, the
VGG19 and the discriminator): one 32-pixel window of LR, as the smallest patch the network takes whole."""
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


@pytest.mark.parametrize('file', FILES)
def test_every_official_training_file_is_accepted(file, tmp_path):
    opt = with_tiny_data(official(file), tmp_path)
    opt['num_gpu'] = 0
    validate_options(opt, is_train=True)


@pytest.mark.parametrize('file', ['ESC_DFLIP_X3', 'ESC_Real_X4_MSE'])
def test_the_official_training_sets_build_as_released(file, tmp_path):
    """The training set of a DFLIP file (LMDB) and of an ESC-Real file (a folder, no list) builds through basicsr's
    registry under the file's own ``type`` and yields samples of the file's ``gt_size``."""
    opt = with_tiny_data(official(file), tmp_path)
    train_set = {**opt['datasets']['train'], 'phase': 'train', 'scale': opt['scale']}
    dataset = build_dataset(train_set)
    assert len(dataset) == IMAGES_PER_TRAIN_SET
    sample = dataset[0]
    size = train_set['gt_size']
    if file.startswith('ESC_DFLIP'):
        assert isinstance(dataset, DownsampleImageDataset)
        assert sample['gt'].shape == (3, size, size) and sample['lq'].shape == (3, size // 3, size // 3)
    else:
        assert isinstance(dataset, ESCRealESRGANDataset)
        assert dataset.paths == sorted(str(p) for p in Path(train_set['dataroot_gt']).glob('*.png'))
        assert sample['gt'].shape[-2:] == (400, 400)  # basicsr's 400-pixel pad/crop; the model crops gt_size


@pytest.mark.slow
@pytest.mark.parametrize('file', RUNS)
def test_one_official_file_per_family_trains(file, tmp_path):
    opt = with_tiny_data(official(file), tmp_path)
    write_pretrained(opt, tmp_path)
    flex = opt['network_g'].get('attn_type') == 'Flex'
    overrides = ['network_g:attn_type=sdpa'] if flex else []  # Flex has no CPU backward
    if opt['model_type'].startswith('Real'):
        overrides += SMALL_REAL_PATCH
    if opt['train'].get('perceptual_opt'):  # ImageNet's VGG19 is never downloaded: random weights where it is looked for
        write_vgg19(tmp_path)
    result = run([str(REPO / 'esc/train.py'), '-opt', str(write(tmp_path / f'{file}.yaml', opt)), '--force_yml',
                  *SHORT_RUN, *overrides], tmp_path)
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


def downsample_set(root: Path, mode: str, images: List[np.ndarray], **options: Any) -> DownsampleImageDataset:
    """A DownsampleImageDataset over ``images`` (BGR uint8) stored as ``mode`` says: 'folder', 'meta_info_file'
    (a list naming them in reverse order) or 'lmdb'."""
    keys = [f'{i:04d}' for i in range(len(images))]
    opt = {**dict(type='DownsampleImageDataset', phase='train', scale=2, gt_size=8, use_hflip=True, use_rot=True,
                  io_backend=dict(type='disk')), **options}
    if mode == 'lmdb':
        opt.update(dataroot_gt=write_lmdb(root / 'HR.lmdb', images, keys), io_backend=dict(type='lmdb'))
    else:
        write_folder(root / 'HR', images, keys)
        opt['dataroot_gt'] = str(root / 'HR')
        if mode == 'meta_info_file':
            (root / 'list.txt').write_text(''.join(f'{k}.png (9,9,3)\n' for k in reversed(keys)))
            opt['meta_info_file'] = str(root / 'list.txt')
    return DownsampleImageDataset(opt)


def orientations(image: np.ndarray) -> List[np.ndarray]:
    """The eight flips and quarter turns of ``image``: what basicsr's augment (hflip, vflip, transpose) can make."""
    turns = [np.rot90(image, k) for k in range(4)]
    return turns + [np.fliplr(turn) for turn in turns]


def test_downsample_lr_patch_is_pils_bicubic_of_the_8_bit_crop(tmp_path):
    """The LR patch is the official one: torchvision's ToPILImage (x·255 truncated to 8 bits) → Resize(BICUBIC) →
    ToTensor of the GT crop, and PIL's bicubic of the 8-bit crop itself; the GT crop is the file's pixels (RGB)."""
    from PIL import Image
    from torchvision import transforms

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (21, 26, 3), dtype=np.uint8)  # noise: every rounding shows
    dataset = downsample_set(tmp_path, 'folder', [image], gt_size=12, scale=3)
    sample = dataset[0]
    gt, lq = sample['gt'], sample['lq']
    assert lq.shape == (3, 4, 4) and lq.dtype == torch.float32
    levels = (gt * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert torch.equal(gt, torch.from_numpy(levels).permute(2, 0, 1).float() / 255)  # 8-bit levels, as decoded
    rgb = image[..., ::-1]
    assert any(np.array_equal(levels, variant) for t in range(10) for l in range(15)  # a crop, flipped/turned or not
               for variant in orientations(rgb[t:t + 12, l:l + 12]))
    official = transforms.ToTensor()(transforms.Resize((4, 4), transforms.InterpolationMode.BICUBIC)(
        transforms.ToPILImage()(gt)))
    assert torch.equal(lq, official)
    pil = np.asarray(Image.fromarray(levels).resize((4, 4), Image.BICUBIC), dtype=np.float32) / 255
    assert torch.equal(lq, torch.from_numpy(pil).permute(2, 0, 1))
    assert sample['gt_path'] == sample['lq_path'] == str(tmp_path / 'HR' / '0000.png')


def test_downsample_normalises_both_images_when_asked(tmp_path):
    image = smooth_image(np.random.default_rng(2), 16, 16)
    plain = downsample_set(tmp_path / 'a', 'folder', [image], use_hflip=False, use_rot=False)
    normalised = downsample_set(tmp_path / 'b', 'folder', [image], use_hflip=False, use_rot=False,
                                mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.5])
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1), torch.tensor([0.2, 0.25, 0.5]).view(3, 1, 1)
    random.seed(3)
    a = plain[0]
    random.seed(3)
    b = normalised[0]
    assert not torch.equal(a['gt'], b['gt'])
    for key in ('gt', 'lq'):
        assert torch.allclose(b[key], (a[key] - mean) / std, atol=1e-6)


@pytest.mark.parametrize('mode', ['folder', 'meta_info_file', 'lmdb'])
def test_downsample_reads_a_folder_a_list_or_an_lmdb(mode, tmp_path):
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8) for i in range(3)]  # noise: LMDB map room
    dataset = downsample_set(tmp_path, mode, images, use_hflip=False, use_rot=False, gt_size=8)
    order = [2, 1, 0] if mode == 'meta_info_file' else [0, 1, 2]
    expected = ([str(tmp_path / 'HR' / f'{i:04d}.png') for i in order] if mode != 'lmdb'
                else [f'{i:04d}' for i in order])
    assert dataset.paths == expected
    for index, source in enumerate(order):
        sample = dataset[index]
        rgb = images[source][..., ::-1]
        levels = (sample['gt'] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        h, w = rgb.shape[:2]
        assert any(np.array_equal(levels, rgb[t:t + 8, l:l + 8]) for t in range(h - 7) for l in range(w - 7))


def test_downsample_crops_follow_the_sample_seed(tmp_path):
    """Through the resumable loader's TrainingSamples a sample's crop and flips depend on its seed only, not on the
    caller's generators (which are left as they were); other seeds give other patches."""
    image = smooth_image(np.random.default_rng(4), 40, 40)
    samples = TrainingSamples(downsample_set(tmp_path, 'folder', [image], gt_size=16), 'train')
    random.seed(0)
    first = samples[SeededIndex(0, 1234)]
    state = random.getstate()
    random.random()
    second = samples[SeededIndex(0, 1234)]
    assert torch.equal(first['gt'], second['gt']) and torch.equal(first['lq'], second['lq'])
    random.seed(0)
    samples[SeededIndex(0, 99)]
    assert random.getstate() == state
    others = [samples[SeededIndex(0, seed)]['gt'] for seed in range(8)]
    assert any(not torch.equal(first['gt'], other) for other in others)


def one_line_error(build: Any) -> str:
    with pytest.raises(ESCError) as info:
        build()
    message = str(info.value)
    assert '\n' not in message
    return message


def test_downsample_errors_are_one_line(tmp_path):
    image = smooth_image(np.random.default_rng(5), 12, 12)
    base = dict(type='DownsampleImageDataset', phase='train', scale=2, gt_size=8, io_backend=dict(type='disk'))
    missing = str(tmp_path / 'nowhere')
    assert one_line_error(lambda: DownsampleImageDataset({**base, 'dataroot_gt': missing})) == (
        f'datasets.train.dataroot_gt: no such folder {missing}')
    assert one_line_error(lambda: DownsampleImageDataset(
        {**base, 'dataroot_gt': missing + '.lmdb', 'io_backend': dict(type='lmdb')})) == (
        f'datasets.train.dataroot_gt: {missing}.lmdb is not an LMDB with a meta_info.txt')
    (tmp_path / 'empty').mkdir()
    assert one_line_error(lambda: DownsampleImageDataset({**base, 'dataroot_gt': str(tmp_path / 'empty')})) == (
        f"datasets.train.dataroot_gt: no images in {tmp_path / 'empty'}")
    assert one_line_error(lambda: DownsampleImageDataset(
        {**base, 'dataroot_gt': str(tmp_path), 'meta_info_file': str(tmp_path / 'list.txt')})) == (
        f"datasets.train.meta_info_file: no such file {tmp_path / 'list.txt'}")
    (tmp_path / 'list.txt').write_text('gone.png\n')
    assert one_line_error(lambda: DownsampleImageDataset(
        {**base, 'dataroot_gt': str(tmp_path), 'meta_info_file': str(tmp_path / 'list.txt')})) == (
        f"datasets.train.meta_info_file: {tmp_path / 'list.txt'} lists {tmp_path / 'gone.png'}, which does not exist")
    assert one_line_error(lambda: DownsampleImageDataset({**base, 'gt_size': None, 'dataroot_gt': missing})) == (
        'datasets.train.gt_size: must be a positive integer (the HR crop), got None')
    write_folder(tmp_path / 'HR', [image, image[:7]], ['big', 'small'])
    (tmp_path / 'HR' / 'broken.png').write_bytes(b'not a png')
    dataset = DownsampleImageDataset({**base, 'dataroot_gt': str(tmp_path / 'HR')})
    assert dataset.paths == [str(tmp_path / 'HR' / name) for name in ('big.png', 'broken.png', 'small.png')]
    assert dataset[0]['gt'].shape == (3, 8, 8)
    assert one_line_error(lambda: dataset[1]) == (
        f"datasets.train: {tmp_path / 'HR' / 'broken.png'} cannot be decoded as an image")
    assert one_line_error(lambda: dataset[2]) == (
        f"datasets.train: {tmp_path / 'HR' / 'small.png'} (12x7) is smaller than the 8x8 crop (gt_size)")


def real_set(dataroot_gt: Path, **options: Any) -> Dict[str, Any]:
    """ESC-Real's training set as its official files configure it, on ``dataroot_gt``."""
    opt = official('ESC_Real_X4_MSE')['datasets']['train']
    return {**opt, 'phase': 'train', 'scale': 4, 'dataroot_gt': str(dataroot_gt), 'gt_size': 8, **options}


def test_realesrgan_without_meta_info_lists_the_folder(tmp_path):
    """Without ``meta_info`` the folder's images (sorted, full paths; other files left out) are the set, as in the
    official dataset; basicsr's own dataset needs the list."""
    rng = np.random.default_rng(6)
    write_folder(tmp_path / 'HR', [smooth_image(rng, 12, 12) for _ in range(3)], ['b', 'c', 'a'])
    (tmp_path / 'HR' / 'notes.txt').write_text('not an image')
    dataset = build_dataset(real_set(tmp_path / 'HR'))
    assert type(dataset).__name__ == 'RealESRGANDataset' and isinstance(dataset, ESCRealESRGANDataset)
    assert dataset.paths == [str(tmp_path / 'HR' / f'{name}.png') for name in 'abc']
    assert 'meta_info' not in dataset.opt
    assert dataset[0]['gt'].shape == (3, 400, 400)
    (tmp_path / 'list.txt').write_text('c.png\n')  # a named list still decides
    listed = build_dataset(real_set(tmp_path / 'HR', meta_info=str(tmp_path / 'list.txt')))
    assert listed.paths == [str(tmp_path / 'HR' / 'c.png')]


def test_realesrgan_folder_and_list_errors_are_one_line(tmp_path):
    missing = tmp_path / 'nowhere'
    assert one_line_error(lambda: build_dataset(real_set(missing))) == (
        f'datasets.train.dataroot_gt: no such folder {missing}')
    (tmp_path / 'empty').mkdir()
    assert one_line_error(lambda: build_dataset(real_set(tmp_path / 'empty'))) == (
        f"datasets.train.dataroot_gt: no images in {tmp_path / 'empty'}")
    assert one_line_error(lambda: build_dataset(real_set(tmp_path / 'empty', meta_info=str(missing)))) == (
        f'datasets.train.meta_info: no such file {missing}')
