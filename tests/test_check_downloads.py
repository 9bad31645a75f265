"""scripts/check_downloads.py on small fake folders: counts, LMDB pairing, meta-info listings, checksums and the
network inside a checkpoint against the option files naming it; missing items say where they are published."""
from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest
import torch

from esc.archs import build_variant
from tests.helpers.paths import REPO, load_script

downloads = load_script('_download_checks')


def images(folder, count: int, size: int = 8) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        cv2.imwrite(str(folder / f'{i:04d}.png'), np.full((size, size, 3), i, np.uint8))


def lmdb(folder, keys: int) -> None:
    folder.mkdir(parents=True)
    (folder / 'data.mdb').write_bytes(b'\0' * 16)
    (folder / 'meta_info.txt').write_text(''.join(f'{i:04d}.png (8,8,3) 1\n' for i in range(keys)))


@pytest.fixture
def root(tmp_path):
    """A checkout-like root: the project's real option files, nothing downloaded yet."""
    (tmp_path / 'options').symlink_to(REPO / 'options')
    return tmp_path


def by_path(findings) -> dict:
    return {f.item.path: f for f in findings}


def test_benchmark_and_training_folders_are_counted(root):
    images(root / 'datasets/Set5/HR', 5)
    images(root / 'datasets/Set5/LR_bicubic/X2', 5)
    images(root / 'datasets/Set5/LR_bicubic/X3', 4)  # one image short
    lmdb(root / 'datasets/DIV2K/DIV2K_train_HR_sub.lmdb', 3)
    lmdb(root / 'datasets/DIV2K/DIV2K_train_LR_bicubic_X2_sub.lmdb', 3)
    lmdb(root / 'datasets/DIV2K/DIV2K_train_LR_bicubic_X3_sub.lmdb', 2)  # does not pair with HR
    found = by_path(downloads.check_all(str(root), ['benchmarks', 'div2k']))

    assert found['datasets/Set5/HR'].line() == 'ok       datasets/Set5/HR: 5 images'
    assert found['datasets/Set5/LR_bicubic/X2'].status == downloads.OK
    assert found['datasets/Set5/LR_bicubic/X3'].line() == 'WRONG    datasets/Set5/LR_bicubic/X3: 4 images, expected 5'
    assert found['datasets/DIV2K/DIV2K_train_HR_sub.lmdb'].detail == '3 entries'
    assert found['datasets/DIV2K/DIV2K_train_LR_bicubic_X2_sub.lmdb'].status == downloads.OK
    assert found['datasets/DIV2K/DIV2K_train_LR_bicubic_X3_sub.lmdb'].detail == \
        '2 entries, but DIV2K_train_HR_sub.lmdb has 3: they must pair one to one'
    urban = found['datasets/Urban100/HR']
    assert urban.status == downloads.MISSING and 'https://github.com/jbhuang0604/SelfExSR' in urban.detail
    assert 'https://data.vision.ee.ethz.ch/cvl/DIV2K/ (DIV2K_train_HR.zip)' in \
        found['datasets/DIV2K/DIV2K_train_HR'].detail


def test_real_world_listing_and_published_checksums(root):
    (root / 'datasets/DF2KOST/DF2K_HR_sub').mkdir(parents=True)
    (root / 'datasets/DF2KOST/DF2K_HR_sub/0001_s001.png').write_bytes(b'png')
    (root / 'datasets/DF2KOST/meta_info.txt').write_text('DF2K_HR_sub/0001_s001.png\nDF2K_HR_sub/0001_s002.png\n')
    pretrained = root / 'experiments/pretrained_models'
    pretrained.mkdir(parents=True)
    (pretrained / 'vgg19-dcbb9e9d.pth').write_bytes(b'not the published VGG19')
    found = by_path(downloads.check_all(str(root), ['real', 'vgg'], only_present=True))

    assert found['datasets/DF2KOST/meta_info.txt'].detail == \
        '1 of 2 listed files are absent, e.g. DF2K_HR_sub/0001_s002.png'
    vgg = found['experiments/pretrained_models/vgg19-dcbb9e9d.pth']
    assert vgg.status == downloads.WRONG and vgg.detail.endswith('the publisher gives dcbb9e9d')
    assert 'datasets/RealSRSet' not in found  # --present: absent items are not reported

    content = pretrained / 'file.bin'
    content.write_bytes(b'abc')
    digest = hashlib.sha256(b'abc').hexdigest()
    assert downloads.published_sha256(digest[:8])(str(content))[0] == downloads.OK  # torch hub's prefix convention
    assert downloads.published_sha256(digest)(str(content))[0] == downloads.OK


def test_checkpoints_are_checked_against_the_option_files_naming_them(root):
    pretrained = root / 'experiments/pretrained_models'
    pretrained.mkdir(parents=True)
    light_x2 = build_variant('ESC-light', 2).state_dict()
    torch.save({'params': light_x2, 'params_ema': light_x2}, pretrained / 'ESC_light_DIV2K_X2.pth')
    torch.save({'params_ema': build_variant('ESC-light', 3).state_dict()}, pretrained / 'ESC_light_DIV2K_X4.pth')
    (pretrained / 'ESC_DIV2K_X2.pth').write_bytes(b'')
    found = by_path(downloads.check_all(str(root), ['checkpoints'], only_present=True))

    assert found[f'{downloads.PRETRAINED}/ESC_light_DIV2K_X2.pth'].detail == 'ESC-light x2'
    wrong_scale = found[f'{downloads.PRETRAINED}/ESC_light_DIV2K_X4.pth']
    assert wrong_scale.status == downloads.WRONG and wrong_scale.detail.startswith('holds a ESC-light x3')
    empty = found[f'{downloads.PRETRAINED}/ESC_DIV2K_X2.pth']
    assert empty.status == downloads.WRONG and 'the file is empty' in empty.detail

    missing = by_path(downloads.check_all(str(root), ['checkpoints']))[f'{downloads.PRETRAINED}/ESC_FP_DIV2K_X3.pth']
    assert missing.detail == 'get it from https://github.com/dslisleedh/ESC/releases/tag/1.0.0 (asset ESC_FP_X3.pth)'


def test_every_checkpoint_an_option_file_names_is_listed_with_its_release():
    expected = downloads.option_checkpoints(str(REPO))
    assert {'experiments/pretrained_models/ESC_DIV2K_X2.pth', 'experiments/pretrained_models/ESC_Real_X4.pth',
            'experiments/pretrained_models/ESC_light_DIV2K_X3.pth'} <= set(expected)
    assert downloads.release_name('ESC_Real_X4.pth') == 'ESC_Real_X4_GAN.pth'
    assert downloads.release_name('ESC_FP_DIV2K_X4.pth') == 'ESC_FP_X4.pth'
    readme = (REPO / 'experiments/pretrained_models/README.md').read_text()
    for path in expected:  # the pretrained-models README lists each with the file name it has on the release page
        name = path.rsplit('/', 1)[1]
        assert name in readme and downloads.release_name(name) in readme, name


def test_the_command_exits_1_while_anything_is_missing_or_wrong(root, capsys):
    command = load_script('check_downloads')
    images(root / 'datasets/Set14/HR', 14)
    assert command.main(['benchmarks', '--root', str(root), '--present']) == 0
    assert capsys.readouterr().out.splitlines() == ['ok       datasets/Set14/HR: 14 images', '1 ok, 0 missing, 0 wrong']
    assert command.main(['benchmarks', '--root', str(root)]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == '1 ok, 19 missing, 0 wrong'
    with pytest.raises(SystemExit) as info:
        command.main(['benchmark', '--root', str(root)])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == ("error: GROUP: unknown 'benchmark'; choose from benchmarks, div2k, "
                                               'dflip, real, vgg, iqa, checkpoints')


def test_baseline_checkpoints_are_held_against_their_option_files(root):
    """The baselines' checkpoints (SRFormer-light here; ATD-light and HiT-SRF alike) are checked key for key and shape
    for shape against the network their test option file builds: the layout is the official one (params)."""
    from esc.archs import SRFormer

    pretrained = root / 'experiments/pretrained_models'
    pretrained.mkdir(parents=True)
    light = dict(in_chans=3, img_size=64, window_size=16, img_range=1.0, depths=[6, 6, 6, 6], embed_dim=60,
                 num_heads=[6, 6, 6, 6], mlp_ratio=2, upsampler='pixelshuffledirect', resi_connection='1conv')
    torch.save({'params': SRFormer(upscale=2, **light).state_dict()}, pretrained / 'SRFormer_light_DFLIP_X2.pth')
    torch.save({'params': SRFormer(upscale=3, **light).state_dict()}, pretrained / 'SRFormer_light_DFLIP_X4.pth')
    found = by_path(downloads.check_all(str(root), ['checkpoints'], only_present=True))
    right = found[f'{downloads.PRETRAINED}/SRFormer_light_DFLIP_X2.pth']
    assert (right.status, right.detail) == (downloads.OK, 'SRFormer x2')
    wrong = found[f'{downloads.PRETRAINED}/SRFormer_light_DFLIP_X4.pth']
    assert wrong.status == downloads.WRONG
    assert wrong.detail == ("checkpoint does not fit SRFormer x4: 'upsample.0.weight' has shape (27, 60, 3, 3) in the "
                            'checkpoint but (48, 60, 3, 3) in the network')
