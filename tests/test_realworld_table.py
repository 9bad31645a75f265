"""The real-world table command (esc/commands/realworld_table.py): the official table's layout, data pairing,
one-line errors
for what is missing before any image is upscaled, and (slow) a whole table on a tiny network whose PSNR, SSIM and
LPIPS cells are recomputed here from the images it wrote."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from esc.commands.realworld_table import DATASETS, dataset_files, format_table, main, pair_key
from esc.errors import ESCError
from tests.helpers.iqa import random_weights, sr_image
from tests.helpers.networks import small

pytest.importorskip('pyiqa', reason='pyiqa is in the test extra: pip install -e ".[test]"')


def write_dataset(root: Path, name: str, paired: bool, count: int = 2, size: int = 12, scale: int = 2) -> None:
    """LR photographs (crops of scikit-image's astronaut) and, for a paired set, their ground truths, named as the
    released RealSR files are (``<name>_HR.png`` / ``<name>_LR4.png``)."""
    photo = sr_image(size * scale + 8 * count)
    for i in range(count):
        hr = photo[i * 8:i * 8 + size * scale, i * 8:i * 8 + size * scale]
        lr = cv2.resize(hr, (size, size), interpolation=cv2.INTER_AREA)
        if paired:
            (root / name / 'HR').mkdir(parents=True, exist_ok=True)
            (root / name / 'LR').mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / name / 'HR' / f'Canon_{i:03d}_HR.png'), hr)
            cv2.imwrite(str(root / name / 'LR' / f'Canon_{i:03d}_LR4.png'), lr)
        else:
            (root / name).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / name / f'photo{i}.png'), lr)


def test_the_table_has_the_official_layout():
    datasets = list(DATASETS.values())
    assert [d.name for d in datasets] == ['RealSR', 'DRealSR', 'RealLQ250', 'RealSRSet']
    scores = {d.name: {m: 1.0 for m in d.metrics} for d in datasets}
    header, rule, row = format_table({'ESC_Real_X4': scores}, datasets)
    cells = [c.strip() for c in header.strip('|').split('|')]
    assert cells[:6] == ['Method', 'RealSR PSNR ↑', 'RealSR SSIM ↑', 'RealSR LPIPS ↓', 'RealSR DISTS ↓', 'RealSR FID ↓']
    assert cells[11:] == ['RealLQ250 NIQE ↓', 'RealLQ250 MANIQA ↑', 'RealLQ250 MUSIQ ↑', 'RealLQ250 CLIPIQA ↑',
                          'RealSRSet NIQE ↓', 'RealSRSet MANIQA ↑', 'RealSRSet MUSIQ ↑', 'RealSRSet CLIPIQA ↑']
    assert row.startswith('| ESC_Real_X4 | 1.00 | 1.0000 |') and rule.count('---') == len(cells)


def test_pairs_are_matched_by_name_and_what_is_missing_is_one_line(tmp_path):
    assert {pair_key(Path(p)) for p in ('Canon_001_HR.png', 'Canon_001_LR4.png', 'x/Canon_001_x1.png',
                                        'Canon_001_x4.png', 'Canon_001.png')} == {'Canon_001'}
    write_dataset(tmp_path, 'RealSR', paired=True)
    pairs = dataset_files(DATASETS['RealSR'], tmp_path)
    assert [(lr.name, gt.name) for lr, gt in pairs] == [('Canon_000_LR4.png', 'Canon_000_HR.png'),
                                                        ('Canon_001_LR4.png', 'Canon_001_HR.png')]
    (tmp_path / 'RealSR/HR/Canon_001_HR.png').unlink()
    with pytest.raises(ESCError, match=r'^--datasets RealSR: .*Canon_001_LR4\.png has no ground truth in '):
        dataset_files(DATASETS['RealSR'], tmp_path)
    with pytest.raises(ESCError, match=r'^--datasets DRealSR: no images in .*DRealSR/HR; DRealSR is published at '
                                       r'https://github\.com/xiezw5/'):
        dataset_files(DATASETS['DRealSR'], tmp_path)


def test_a_missing_weight_file_stops_the_command_before_any_image(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_dataset(tmp_path / 'datasets', 'RealSRSet', paired=False)
    torch.save({'params_ema': small('ESC', 2).state_dict()}, tmp_path / 'tiny.pth')
    with pytest.raises(SystemExit) as exit_:
        main(['--model', 'tiny.pth', '--datasets', 'RealSRSet'])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1
    assert err[0].startswith('error: metric maniqa.weights: no such file experiments/pretrained_models/iqa/'
                             'ckpt_koniq10k.pt')
    assert not (tmp_path / 'results').exists()  # nothing was upscaled
    with pytest.raises(SystemExit) as exit_:
        main(['--model', 'missing.pth', '--datasets', 'RealSRSet'])
    assert exit_.value.code == 2 and 'error: --model: no such file missing.pth' in capsys.readouterr().err


@pytest.mark.slow
def test_the_whole_table_on_a_tiny_network(tmp_path, monkeypatch, capsys, small_networks, full_reference_files):
    """RealSR (pairs) and RealSRSet (LR only) through a tiny x2 ESC, every metric from local files (the no-reference
    networks shrunk): the printed PSNR, SSIM and LPIPS are the means of the metrics of the images it wrote (FID makes
    this a slow test: a 2048×2048 matrix square root)."""
    from basicsr.metrics import calculate_psnr, calculate_ssim

    from esc.metrics.full_reference import calculate_lpips

    monkeypatch.chdir(tmp_path)
    iqa = tmp_path / 'experiments/pretrained_models/iqa'
    iqa.mkdir(parents=True)
    for metric, file in (('maniqa', 'ckpt_koniq10k.pt'), ('musiq', 'musiq_koniq_ckpt-e95806b9.pth'),
                         ('clipiqa', 'RN50.pt')):
        random_weights(metric, iqa / file, seed=0)
    for key, file in (('lpips', 'LPIPS_v0.1_alex-df73285e.pth'), ('alexnet', 'alexnet-owt-7be5be79.pth'),
                      ('dists', 'DISTS_weights-f5e65c96.pth'), ('vgg16', 'vgg16-397923af.pth'),
                      ('fid', 'pt_inception-2015-12-05-6726825d.pth')):
        shutil.copy(full_reference_files[key], iqa / file)
    write_dataset(tmp_path / 'datasets', 'RealSR', paired=True, count=3, size=40)  # AlexNet needs 64 pixels or more
    write_dataset(tmp_path / 'datasets', 'RealSRSet', paired=False, size=104)  # NIQE: 2x2 blocks of 96 pixels
    torch.manual_seed(0)
    torch.save({'params_ema': small('ESC', 2).state_dict()}, tmp_path / 'tiny.pth')

    with pytest.raises(SystemExit) as exit_:
        main(['--model', 'tiny.pth', '--datasets', 'RealSR', 'RealSRSet', '--device', 'cpu'])
    out = capsys.readouterr().out.strip().splitlines()
    assert exit_.value.code == 0, out
    row = [c.strip() for c in out[-1].strip('|').split('|')]
    assert row[0] == 'tiny' and len(row) == 1 + 5 + 4 and all(np.isfinite(float(c)) for c in row[1:])
    written = tmp_path / 'results/realworld_table/tiny'
    psnr, ssim, lpips = [], [], []
    for i in range(3):
        sr = cv2.imread(str(written / 'RealSR' / f'Canon_{i:03d}.png'))
        gt = cv2.imread(str(tmp_path / f'datasets/RealSR/HR/Canon_{i:03d}_HR.png'))
        psnr.append(calculate_psnr(sr, gt, crop_border=0, test_y_channel=True))
        ssim.append(calculate_ssim(sr, gt, crop_border=0, test_y_channel=True))
        lpips.append(calculate_lpips(sr, gt))
    assert float(row[1]) == pytest.approx(np.mean(psnr), abs=0.006)
    assert float(row[2]) == pytest.approx(np.mean(ssim), abs=6e-5)
    assert float(row[3]) == pytest.approx(np.mean(lpips), abs=6e-5)
    assert sorted(p.name for p in (written / 'RealSRSet').iterdir()) == ['photo0.png', 'photo1.png']
