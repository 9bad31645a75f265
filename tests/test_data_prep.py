"""Benchmark and training-data preparation (scripts/prepare_*.py, esc/data/*_prep.py) and the bicubic
baseline rows they reproduce."""
from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs import build_network
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils import tensor2img
from basicsr.utils.matlab_functions import imresize

from esc.data.benchmark_prep import prepare_benchmark
from esc.data.training_prep import LRFolder, crop_positions, extract_subimages, pack_lmdb
from esc.errors import ESCError
from tests.helpers.paths import REPO, load_script, shared_path
from tests.helpers.runs import run

# Bicubic rows of the SR literature (PSNR dB / SSIM on Y, border = scale).
PAPER = {
    'Set5': {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)},
    'Set14': {2: (30.24, 0.8688), 3: (27.55, 0.7742), 4: (26.00, 0.7027)},
}
PSNR_TOL, SSIM_TOL = 0.05, 0.002


def script_main(name: str):
    """``main`` of scripts/<name>.py, to call in-process (faster than a subprocess)."""
    return load_script(name).main


def noise_image(shape: tuple, seed: int) -> np.ndarray:
    """A smooth-ish random uint8 image (noise blurred, so bicubic has something to keep)."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.uniform(0, 255, shape).astype(np.float32), (0, 0), 1.0)
    return np.clip(image, 0, 255).astype(np.uint8)


def expected_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """The specification: MATLAB imresize of the HR image mod-cropped to the scale, rounded half up."""
    h, w = hr.shape[0] // scale * scale, hr.shape[1] // scale * scale
    lr = imresize(hr[:h, :w].astype(np.float32) / 255.0, 1 / scale)
    return np.clip(np.floor(lr * 255.0 + 0.5), 0, 255).astype(np.uint8)


def mtimes(folder: Path) -> dict:
    return {p.relative_to(folder): p.stat().st_mtime_ns for p in sorted(folder.rglob('*'))}


@pytest.fixture
def tiny_root(tmp_path):
    """A benchmark root with colour HR images whose sides are not multiples of 2, 3 or 4, and one grayscale."""
    hr = tmp_path / 'Tiny' / 'HR'
    hr.mkdir(parents=True)
    cv2.imwrite(str(hr / 'odd.png'), noise_image((37, 50, 3), 0))
    cv2.imwrite(str(hr / 'square.png'), noise_image((48, 48, 3), 1))
    cv2.imwrite(str(hr / 'gray.png'), noise_image((29, 31), 2))
    return tmp_path / 'Tiny'


def test_lr_images_are_bicubic_of_the_mod_cropped_hr_and_rerun_is_a_no_op(tiny_root, capsys):
    script_main('prepare_benchmarks')([str(tiny_root)])
    assert 'Tiny X3: 3 written, 0 unchanged' in capsys.readouterr().out
    for name in ('odd', 'square', 'gray'):
        hr = cv2.imread(str(tiny_root / 'HR' / f'{name}.png'), cv2.IMREAD_COLOR)
        for scale in (2, 3, 4):
            lr = cv2.imread(str(tiny_root / 'LR_bicubic' / f'X{scale}' / f'{name}.png'), cv2.IMREAD_UNCHANGED)
            assert lr.shape == (hr.shape[0] // scale, hr.shape[1] // scale, 3), (name, scale)
            np.testing.assert_array_equal(lr, expected_lr(hr, scale), err_msg=f'{name} x{scale}')
    gray_lr = cv2.imread(str(tiny_root / 'LR_bicubic' / 'X3' / 'gray.png'), cv2.IMREAD_UNCHANGED)
    assert gray_lr.shape == (9, 10, 3)
    assert (gray_lr[..., 0] == gray_lr[..., 1]).all() and (gray_lr[..., 1] == gray_lr[..., 2]).all()
    assert gray_lr.std() > 1  # not a constant image

    before = mtimes(tiny_root)
    script_main('prepare_benchmarks')([str(tiny_root), '--scales', '2', '3', '4'])
    assert 'Tiny X2: 0 written, 3 unchanged' in capsys.readouterr().out
    assert mtimes(tiny_root) == before  # nothing rewritten, no temporary files left


def test_existing_outputs_are_never_overwritten(tiny_root, capsys):
    prepare_benchmark(tiny_root, (2,), progress=False)
    lr_path = tiny_root / 'LR_bicubic' / 'X2' / 'odd.png'
    edited = cv2.imread(str(lr_path))
    edited[0, 0] ^= 1
    cv2.imwrite(str(lr_path), edited)
    data = lr_path.read_bytes()
    report = prepare_benchmark(tiny_root, (2,), progress=False)
    assert report.counts[2]['kept'] == 1 and report.counts[2]['unchanged'] == 2
    assert lr_path.read_bytes() == data
    assert f'{lr_path} exists and differs' in capsys.readouterr().err

    cv2.imwrite(str(lr_path), edited[:-1])
    with pytest.raises(ESCError, match=r'odd\.png exists with size 25x17.*gives 25x18; delete it'):
        prepare_benchmark(tiny_root, (2,), progress=False)

    lr_path.write_bytes(data[:100])  # an unreadable (truncated) output is not a good one: replaced
    assert prepare_benchmark(tiny_root, (2,), progress=False).counts[2]['replaced'] == 1
    np.testing.assert_array_equal(cv2.imread(str(lr_path)), expected_lr(cv2.imread(str(tiny_root / 'HR/odd.png')), 2))


def test_uncropped_hr_is_mod_cropped_by_paired_image_dataset(tiny_root):
    """No mod-cropped HR copies are needed: outside training basicsr crops GT to r× the LR size."""
    prepare_benchmark(tiny_root, (3,), progress=False)
    dataset = PairedImageDataset(dict(phase='val', scale=3, io_backend={'type': 'disk'},
                                      dataroot_gt=str(tiny_root / 'HR'), dataroot_lq=str(tiny_root / 'LR_bicubic/X3')))
    item = next(d for d in dataset if d['gt_path'].endswith('odd.png'))
    assert tuple(item['lq'].shape) == (3, 12, 16) and tuple(item['gt'].shape) == (3, 36, 48)
    hr = cv2.imread(str(tiny_root / 'HR' / 'odd.png'))
    np.testing.assert_array_equal(tensor2img(item['gt']), hr[:36, :48])


def test_bad_hr_files_fail_in_one_line_naming_the_file(tmp_path, capsys):
    truncated, text = tmp_path / 'Truncated' / 'HR', tmp_path / 'Text' / 'HR'
    for folder in (truncated, text):
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / 'good.png'), noise_image((16, 16, 3), 3))
    data = cv2.imencode('.png', noise_image((40, 40, 3), 4))[1].tobytes()
    (truncated / 'half.png').write_bytes(data[:len(data) // 2])
    (text / 'notes.txt').write_text('not an image\n')
    main = script_main('prepare_benchmarks')
    for path, argv, why in ((truncated / 'half.png', [str(truncated.parent)], 'truncated PNG'),
                            (text / 'notes.txt', [str(text.parent), '--scales', '2'], 'not an image file')):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        stderr = capsys.readouterr().err
        assert exit_info.value.code == 2, stderr
        assert stderr.startswith(f'error: {path}: {why}') and 'Traceback' not in stderr, stderr
        assert len(stderr.strip().splitlines()) == 1, stderr


def test_skip_bad_warns_and_continues(tmp_path, capsys):
    hr = tmp_path / 'Mixed' / 'HR'
    hr.mkdir(parents=True)
    cv2.imwrite(str(hr / 'a_good.png'), noise_image((20, 24, 3), 5))
    data = cv2.imencode('.png', noise_image((40, 40, 3), 6))[1].tobytes()
    (hr / 'b_truncated.png').write_bytes(data[:-20])
    (hr / 'c_empty.png').write_bytes(b'')
    (hr / 'd_notes.txt').write_text('x')
    (hr / 'e_fake.png').write_text('not a png')
    main = script_main('prepare_benchmarks')
    with pytest.raises(SystemExit) as exit_info:
        main([str(hr.parent)])
    assert exit_info.value.code == 2
    assert re.fullmatch(rf'error: {re.escape(str(hr / "b_truncated.png"))}: truncated PNG \({len(data) - 20} bytes, '
                        r'ends inside the IDAT chunk\)\n', capsys.readouterr().err)

    main([str(hr.parent), '--skip-bad'])
    err = capsys.readouterr().err
    for name, why in [('b_truncated.png', 'truncated PNG'), ('c_empty.png', 'empty file'),
                      ('d_notes.txt', 'not an image file'), ('e_fake.png', 'not a PNG file')]:
        assert f'warning: skipped {hr / name}: {why}' in err
    for scale in (2, 3, 4):
        assert sorted(p.name for p in (hr.parent / 'LR_bicubic' / f'X{scale}').iterdir()) == ['a_good.png']


def test_crop_positions_follow_basicsr():
    assert crop_positions(100, 48, 24) == [0, 24, 48, 52]  # an extra crop flush with the edge
    assert crop_positions(96, 48, 24) == [0, 24, 48]  # already flush
    assert crop_positions(100, 48, 24, thresh=4) == [0, 24, 48]  # 4 pixels left over: not more than thresh
    assert crop_positions(40, 48, 24) == []
    assert crop_positions(2040, 480, 240) == [0, 240, 480, 720, 960, 1200, 1440, 1560]


def test_extract_and_lmdb_round_trip(tmp_path, capsys):
    hr_dir, lr_root = tmp_path / 'HR', tmp_path / 'LR_bicubic'
    (lr_root / 'X2').mkdir(parents=True)
    hr_dir.mkdir()
    images = {'0001': noise_image((100, 124, 3), 7), '0002': noise_image((96, 96, 3), 8)}
    for stem, hr in images.items():
        cv2.imwrite(str(hr_dir / f'{stem}.png'), hr)
        cv2.imwrite(str(lr_root / 'X2' / f'{stem}x2.png'), expected_lr(hr, 2))  # DIV2K's LR names
    main = script_main('prepare_training_data')
    extract = ['extract', str(hr_dir), '--lr-root', str(lr_root), '--scales', '2', '--crop-size', '48', '--step', '24']
    main(extract)
    hr_sub, lr_sub = tmp_path / 'HR_sub', lr_root / 'X2_sub'
    assert '29 written' in capsys.readouterr().out  # 4x5 + 3x3 sub-images
    names = sorted(p.name for p in hr_sub.iterdir())
    assert len(names) == 29 and names == sorted(p.name for p in lr_sub.iterdir())
    # sub-image 7 of 0001 is row 2 (y=24), column 2 (x=24); its LR crop is the same region at 1/2
    np.testing.assert_array_equal(cv2.imread(str(hr_sub / '0001_s007.png')), images['0001'][24:72, 24:72])
    lr = cv2.imread(str(lr_root / 'X2' / '0001x2.png'))
    np.testing.assert_array_equal(cv2.imread(str(lr_sub / '0001_s007.png')), lr[12:36, 12:36])
    np.testing.assert_array_equal(cv2.imread(str(hr_sub / '0001_s020.png')), images['0001'][52:100, 76:124])

    before = mtimes(tmp_path)
    main(extract)
    assert '0 written, 29 unchanged' in capsys.readouterr().out and mtimes(tmp_path) == before

    hr_lmdb, lr_lmdb = tmp_path / 'HR_sub.lmdb', tmp_path / 'LR_bicubic_X2_sub.lmdb'
    main(['lmdb', str(hr_sub), str(hr_lmdb)])
    main(['lmdb', str(lr_sub), str(lr_lmdb)])
    assert len((hr_lmdb / 'meta_info.txt').read_text().splitlines()) == 29
    assert '0001_s007.png (24,24,3) 1' in (lr_lmdb / 'meta_info.txt').read_text()
    assert pack_lmdb(hr_sub, hr_lmdb) == 'unchanged'
    stale = r'HR_sub\.lmdb exists but holds 0001_s001 as \(48,48,3\), while .* is \(24,24,3\)'
    with pytest.raises(ESCError, match=stale):
        pack_lmdb(lr_sub, hr_lmdb)  # same keys, other images: not mistaken for up to date
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no temporary LMDB left

    dataset = PairedImageDataset(dict(phase='val', scale=2, io_backend={'type': 'lmdb'},
                                      dataroot_gt=str(hr_lmdb), dataroot_lq=str(lr_lmdb)))
    assert len(dataset) == 29
    item = next(d for d in dataset if d['gt_path'] == '0001_s007')
    assert tuple(item['gt'].shape) == (3, 48, 48) and tuple(item['lq'].shape) == (3, 24, 24)
    np.testing.assert_array_equal(tensor2img(item['gt']), images['0001'][24:72, 24:72])
    np.testing.assert_array_equal(tensor2img(item['lq']), lr[12:36, 12:36])


def test_training_prep_errors_are_one_line(tmp_path, capsys):
    main = script_main('prepare_training_data')
    with pytest.raises(SystemExit) as exit_info:
        main(['extract', str(tmp_path / 'missing')])
    assert exit_info.value.code == 2 and capsys.readouterr().err == f'error: {tmp_path / "missing"}: no such folder\n'
    with pytest.raises(SystemExit):
        main(['lmdb', str(tmp_path / 'missing'), str(tmp_path / 'out.lmdb')])
    assert capsys.readouterr().err == f'error: {tmp_path / "missing"}: no such folder\n'

    hr_dir, lr_dir = tmp_path / 'HR', tmp_path / 'X3'
    hr_dir.mkdir()
    lr_dir.mkdir()
    hr = noise_image((100, 96, 3), 9)
    cv2.imwrite(str(hr_dir / 'a.png'), hr)
    cv2.imwrite(str(lr_dir / 'a.png'), expected_lr(hr, 3))
    x3 = [LRFolder(lr_dir, tmp_path / 'X3_sub', 3)]
    # without mod-cropping, 100 - 48 = 52 is not a multiple of 3: the bottom crop would be off the LR grid
    with pytest.raises(ESCError, match=r'a\.png: its height \(100 px\) leaves the sub-image at 52 off the x3 LR grid'):
        extract_subimages(hr_dir, tmp_path / 'out', x3, crop=48, step=24, mod=1, progress=False)
    # by default positions are computed on the HR image mod-cropped to 3 (99 rows): the bottom crop starts at 51
    report = extract_subimages(hr_dir, tmp_path / 'out', x3, crop=48, step=24, progress=False)
    assert report.counts[tmp_path / 'X3_sub']['written'] == 4 * 3
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / 'out' / 'a_s010.png')), hr[51:99, 0:48])
    cv2.imwrite(str(lr_dir / 'a.png'), expected_lr(hr, 3)[:-1])
    with pytest.raises(ESCError, match=r'a\.png: 32x32, but 1/3 of .*a\.png \(96x100\) is 32x33'):
        extract_subimages(hr_dir, tmp_path / 'out', x3, crop=48, step=24, progress=False)


# --- the bicubic baseline rows ------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
    """Copies of ../shared/datasets/{Set5,Set14} in the tiny_root layout, prepared by the script's logic."""
    roots = {}

    def get(name: str) -> Path:
        if name not in roots:
            source = shared_path('datasets', name)
            root = tmp_path_factory.mktemp('benchmarks') / name
            (root / 'HR').mkdir(parents=True)
            for image in sorted(source.glob('*.png')):
                (root / 'HR' / image.name).write_bytes(image.read_bytes())
            prepare_benchmark(root, (2, 3, 4), progress=False)
            roots[name] = root
        return roots[name]

    return get


def bicubic_scores(root: Path, scale: int) -> dict:
    """Mean PSNR/SSIM (Y, border = scale) of the Bicubic network on a prepared benchmark, as ESCModel computes them
    (``esc``), and with grayscale HR images measured on their gray values instead of the Y of three equal channels
    (``gray``: the MATLAB convention behind the literature's tables)."""
    dataset = PairedImageDataset(dict(phase='test', scale=scale, io_backend={'type': 'disk'},
                                      dataroot_gt=str(root / 'HR'), dataroot_lq=str(root / 'LR_bicubic' / f'X{scale}')))
    net = build_network({'type': 'Bicubic', 'upscaling_factor': scale})
    scores = {'esc': [], 'gray': []}
    for item in dataset:
        sr, gt = tensor2img(net(item['lq'][None])[0]), tensor2img(item['gt'])
        score = (calculate_psnr(sr, gt, scale, test_y_channel=True), calculate_ssim(sr, gt, scale, test_y_channel=True))
        scores['esc'].append(score)
        if cv2.imread(item['gt_path'], cv2.IMREAD_UNCHANGED).ndim == 2:
            sr, gt = sr[..., :1], gt[..., :1]
            score = (calculate_psnr(sr, gt, scale), calculate_ssim(sr, gt, scale))
        scores['gray'].append(score)
    return {key: tuple(float(v) for v in np.mean(values, axis=0)) for key, values in scores.items()}


def test_bicubic_set5_x2_through_esc_test(prepared, tmp_path):
    root = prepared('Set5')
    with open(REPO / 'options/test/Bicubic/test_Bicubic_X2.yml') as f:
        opt = yaml.safe_load(f)
    opt['datasets'] = {'test_1': {**opt['datasets']['test_1'], 'dataroot_gt': str(root / 'HR'),
                                  'dataroot_lq': str(root / 'LR_bicubic' / 'X2')}}
    opt['val']['pbar'] = False
    (tmp_path / 'bicubic.yml').write_text(yaml.safe_dump(opt, sort_keys=False))
    result = run([str(REPO / 'esc/test.py'), '-opt', 'bicubic.yml'], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    log = next((tmp_path / 'results' / 'Bicubic_X2').glob('test_Bicubic_X2_*.log')).read_text()
    psnr = float(re.search(r'Validation Set5\s*\n\s*# psnr: ([\d.]+)', log).group(1))
    ssim = float(re.search(r'Validation Set5\s*\n.*\n\s*# ssim: ([\d.]+)', log).group(1))
    print(f'Set5 x2 bicubic through esc/test.py: {psnr:.4f} dB / {ssim:.4f}')
    assert psnr == pytest.approx(PAPER['Set5'][2][0], abs=PSNR_TOL)
    assert ssim == pytest.approx(PAPER['Set5'][2][1], abs=SSIM_TOL)


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_bicubic_set5(prepared, scale):
    psnr, ssim = bicubic_scores(prepared('Set5'), scale)['esc']
    print(f'Set5 x{scale} bicubic: {psnr:.4f} dB / {ssim:.4f} (literature {PAPER["Set5"][scale]})')
    assert psnr == pytest.approx(PAPER['Set5'][scale][0], abs=PSNR_TOL)
    assert ssim == pytest.approx(PAPER['Set5'][scale][1], abs=SSIM_TOL)


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_bicubic_set14(prepared, scale):
    """basicsr measures Set14's grayscale ``bridge`` on the Y of three equal channels, Y = 16 + 219/255·gray, which
    shrinks its errors by 219/255 and lifts its PSNR by 20·log10(255/219) = 1.32 dB, the mean by 0.094 dB; the
    literature (MATLAB) measured it on its gray values. On that convention the literature's row is reproduced."""
    root = prepared('Set14')
    scores = bicubic_scores(root, scale)
    (psnr, ssim), (lit_psnr, lit_ssim) = scores['esc'], scores['gray']
    print(f'Set14 x{scale} bicubic: {psnr:.4f} dB / {ssim:.4f} as esc/test.py measures it; {lit_psnr:.4f} dB / '
          f'{lit_ssim:.4f} with bridge on its gray values (literature {PAPER["Set14"][scale]})')
    assert lit_psnr == pytest.approx(PAPER['Set14'][scale][0], abs=PSNR_TOL)
    assert lit_ssim == pytest.approx(PAPER['Set14'][scale][1], abs=SSIM_TOL)
    gray = [p.name for p in sorted((root / 'HR').iterdir()) if cv2.imread(str(p), cv2.IMREAD_UNCHANGED).ndim == 2]
    assert gray == ['bridge.png']
    n = len(list((root / 'HR').iterdir()))
    assert psnr - lit_psnr == pytest.approx(20 * math.log10(255 / 219) / n, abs=1e-3)


def test_missing_folders_and_mismatched_lr_fail_in_one_line(tiny_root, tmp_path):
    """esc/test.py on a benchmark whose LR folder is missing, and on one whose LR images are of another scale."""
    prepare_benchmark(tiny_root, (3,), progress=False)

    def options(name: str, lq_folder: str) -> Path:
        opt = dict(name=name, model_type='ESCModel', scale=2, num_gpu=0,
                   datasets=dict(test_1=dict(name='Tiny', type='PairedImageDataset', dataroot_gt=str(tiny_root / 'HR'),
                                             dataroot_lq=str(tiny_root / 'LR_bicubic' / lq_folder),
                                             io_backend=dict(type='disk'))),
                   network_g=dict(type='Bicubic', upscaling_factor=2), path=dict(pretrain_network_g=None),
                   val=dict(save_img=False, metrics=dict(psnr=dict(type='calculate_psnr', crop_border=2))))
        path = tmp_path / f'{name}.yml'
        path.write_text(yaml.safe_dump(opt))
        return path

    runs = {
        'missing': f'error: datasets.test_1.dataroot_lq: no such file or folder {tiny_root / "LR_bicubic" / "X2"}',
        'wrong_scale': f'error: {tiny_root / "HR" / "gray.png"}: HR is 31x29, so its x2 LR image should be 15x14, '
                       f'but {tiny_root / "LR_bicubic" / "X3" / "gray.png"} is 10x9; was it made for another scale?',
    }
    for name, message in runs.items():
        result = run([str(REPO / 'esc/test.py'), '-opt', str(options(name, 'X2' if name == 'missing' else 'X3'))],
                     tmp_path)
        stderr = result.stderr
        assert result.returncode == 2, stderr[-3000:]
        assert 'Traceback' not in stderr and stderr.strip().splitlines()[-1].startswith(message), stderr[-3000:]


def _paired_dataset(root, gt_shape, lq_shape, gt_bytes=None):
    from basicsr.data import build_dataset
    (root / 'gt').mkdir()
    (root / 'lq').mkdir()
    cv2.imwrite(str(root / 'gt' / 'a.png'), np.zeros(gt_shape, np.uint8))
    cv2.imwrite(str(root / 'lq' / 'a.png'), np.zeros(lq_shape, np.uint8))
    if gt_bytes is not None:
        (root / 'gt' / 'a.png').write_bytes(gt_bytes)
    return build_dataset(dict(name='toy', type='PairedImageDataset', dataroot_gt=str(root / 'gt'),
                              dataroot_lq=str(root / 'lq'), io_backend=dict(type='disk'), phase='train', scale=2,
                              gt_size=16, use_hflip=True, use_rot=True, filename_tmpl='{}'))


@pytest.mark.parametrize('gt_shape,lq_shape,gt_bytes,reason', [
    ((30, 30, 3), (16, 16, 3), None, r'Scale mismatches\. GT \(30, 30\) is not 2x multiplication of LQ \(16, 16\)'),
    ((12, 12, 3), (6, 6, 3), None, r'LQ \(6, 6\) is smaller than patch size \(8, 8\)'),
    ((32, 32, 3), (16, 16, 3), b'\x89PNG truncated', 'an image does not decode'),
])
def test_bad_training_pairs_name_their_files(tmp_path, gt_shape, lq_shape, gt_bytes, reason):
    dataset = _paired_dataset(tmp_path, gt_shape, lq_shape, gt_bytes)
    pair = f"bad pair {tmp_path / 'gt' / 'a.png'} / {tmp_path / 'lq' / 'a.png'}: "
    with pytest.raises(ESCError, match=r'datasets \(toy\): ' + re.escape(pair) + reason):
        dataset[0]


def test_a_bad_pair_in_a_loader_worker_is_still_one_line(tmp_path, capsys):
    from esc.utils.cli import one_line_errors
    loader = torch.utils.data.DataLoader(_paired_dataset(tmp_path, (30, 30, 3), (16, 16, 3)), num_workers=1)
    with pytest.raises(SystemExit), one_line_errors():
        next(iter(loader))
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith('error: datasets (toy): bad pair ')
