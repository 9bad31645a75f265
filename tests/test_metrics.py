"""The metrics the tables report: basicsr's PSNR/SSIM checked against scikit-image, and NIQE for sets
without ground truth through esc/test.py."""
from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import yaml
from basicsr.metrics import calculate_niqe, calculate_psnr, calculate_ssim
from basicsr.utils.matlab_functions import imresize
from skimage import data

from esc.data.benchmark_prep import bicubic_downsample
from tests.helpers.runs import run_in_process


def test_basicsr_psnr_ssim_agree_with_scikit_image():
    gt = np.ascontiguousarray(data.astronaut()[100:228, 150:278, ::-1])  # basicsr's metrics take BGR
    sr = np.clip(np.floor(imresize(bicubic_downsample(gt, 2).astype(np.float32) / 255, 2) * 255 + 0.5), 0, 255)
    sr = sr.astype(np.uint8)
    border = 2

    def y_channel(bgr: np.ndarray) -> np.ndarray:  # ITU-R BT.601, written out independently of basicsr
        b, g, r = (bgr[border:-border, border:-border, i].astype(np.float64) for i in range(3))
        return 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255

    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    y_sr, y_gt = y_channel(sr), y_channel(gt)
    psnr = calculate_psnr(sr, gt, border, test_y_channel=True)
    ssim = calculate_ssim(sr, gt, border, test_y_channel=True)
    assert 20 < psnr < 40 and 0.5 < ssim < 0.99  # a real, imperfect reconstruction
    assert psnr == pytest.approx(peak_signal_noise_ratio(y_gt, y_sr, data_range=255), abs=1e-3)
    assert ssim == pytest.approx(structural_similarity(y_gt, y_sr, gaussian_weights=True, sigma=1.5,
                                                       use_sample_covariance=False, data_range=255), abs=1e-3)


def test_niqe_on_a_set_without_ground_truth(tmp_path):
    """A folder of LR images only (SingleImageDataset) and the NIQE metric: esc/test.py logs the mean NIQE of
    the SR images it saves, and bicubic upsampling scores worse (higher) than the sharp original."""
    hr = np.ascontiguousarray(data.chelsea()[:, :, ::-1])
    (tmp_path / 'lq').mkdir()
    cv2.imwrite(str(tmp_path / 'lq' / 'chelsea.png'), bicubic_downsample(hr, 2))
    opt = dict(name='niqe_check', model_type='ESCModel', scale=2, num_gpu=0,
               datasets=dict(test_1=dict(name='NoGT', type='SingleImageDataset', dataroot_lq='lq',
                                         io_backend=dict(type='disk'))),
               network_g=dict(type='Bicubic', upscaling_factor=2), path=dict(pretrain_network_g=None),
               val=dict(save_img=True, suffix='SR', metrics=dict(niqe=dict(type='calculate_niqe', crop_border=2))))
    (tmp_path / 'niqe.yml').write_text(yaml.safe_dump(opt))
    result = run_in_process('esc.test', ['-opt', 'niqe.yml'], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    log = next((tmp_path / 'results' / 'niqe_check').glob('test_niqe_check_*.log')).read_text()
    logged = float(re.search(r'Validation NoGT\s*\n\s*# niqe: ([\d.]+)', log).group(1))
    sr = cv2.imread(str(tmp_path / 'results/niqe_check/visualization/NoGT/chelsea_SR.png'))
    assert sr.shape == (hr.shape[0] // 2 * 2, hr.shape[1] // 2 * 2, 3)
    assert logged == pytest.approx(float(calculate_niqe(sr, 2)), abs=1e-3)
    assert logged > float(calculate_niqe(hr[:sr.shape[0], :sr.shape[1]], 2)) + 0.5
