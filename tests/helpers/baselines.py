"""What the tests of the paper's baselines (SRFormer-light, ATD-light, HiT-SRF) share: the official DFLIP test option
file of a baseline as released, a random checkpoint of the official layout, and the run of both that file and this
project's copy of it through esc/test.py, checked against the network's own output."""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Sequence

import cv2
import numpy as np
import torch
import yaml
from basicsr.metrics import calculate_psnr

from esc.archs.layers import pad_to_multiple
from esc.evaluation.paper import BENCHMARKS
from tests.helpers.files import as_saved, paired_dataset, read_rgb, write_pairs
from tests.helpers.paths import REPO
from tests.helpers.runs import run

OfficialOptions = Callable[[int, Path, str], Dict[str, Any]]
"""A baseline's official test option file for (scale, data root, checkpoint path)."""


def official_test_options(name: str, network_g: Dict[str, Any], scale: int, root: Path, checkpoint: str,
                          param_key: str) -> Dict[str, Any]:
    """An official ``<name>_X<scale>.yaml`` of the baselines (ESRModel, five benchmarks with '{}x<scale>' LR names,
    ``param_key`` loaded strictly, PSNR/SSIM on Y; ×4 saves no images), its paths under ``root``, on the CPU."""
    metrics = {metric: dict(type=f'calculate_{metric}', crop_border=scale, test_y_channel=True)
               for metric in ('psnr', 'ssim')}
    return dict(name=f'{name}_X{scale}', model_type='ESRModel', scale=scale, num_gpu=0, manual_seed=0,
                datasets={f'test_{i}': paired_dataset(bench, root, scale) for i, bench in enumerate(BENCHMARKS, 1)},
                network_g=network_g,
                path=dict(pretrain_network_g=checkpoint, param_key_g=param_key, strict_load_g=True),
                val=dict(save_img=scale != 4, suffix=None, metrics=metrics))


def random_state(net: torch.nn.Module, seed: int = 0) -> Dict[str, torch.Tensor]:
    """``net``'s state dict with every weight perturbed (biases, norms and position tables included), buffers kept."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in net.state_dict().items():
        keep = not value.is_floating_point() or key.endswith('attn_mask')
        state[key] = value.clone() if keep else value + 0.05 * torch.randn(value.shape, generator=generator)
    return state


def logged_scores(log: str) -> Dict[str, float]:
    """Each test set's PSNR as esc/test.py logs it."""
    return {name: float(psnr) for name, psnr in re.findall(r'Validation (\w+)\n\s*# psnr: ([\d.]+)', log)}


def assert_option_files_run_through_esc_test(net: torch.nn.Module, scale: int, tmp_path: Path, option_file: Path,
                                             official: OfficialOptions, param_keys: Sequence[str], pad: int,
                                             size: int) -> None:
    """This project's option file (its paths pointed at one tiny pair per benchmark) and the official layout of it
    (LR names with 'x<scale>') through esc/test.py on a random checkpoint of the official layout holding
    ``param_keys``: strict loading, the images the network gives (the LR image of ``size`` pixels reflect-padded to
    a multiple of ``pad`` where ESRModel pads it, 0: not padded) and the PSNR of each set."""
    net = net.eval()
    state = random_state(net)
    net.load_state_dict(state)
    checkpoint = tmp_path / 'baseline.pth'
    torch.save({key: state for key in param_keys}, checkpoint)
    official_root, our_root = tmp_path / 'official', tmp_path / 'ours'
    write_pairs(official_root, scale, sets=('Set5',), size=size)
    shutil.copytree(official_root / 'HR', our_root / 'HR')
    (our_root / f'LR_bicubic/X{scale}').mkdir(parents=True)
    shutil.copy(official_root / f'LR_bicubic/X{scale}/img0x{scale}.png', our_root / f'LR_bicubic/X{scale}/img0.png')
    x = read_rgb(official_root / f'LR_bicubic/X{scale}/img0x{scale}.png')
    with torch.no_grad():
        expected = as_saved(net(pad_to_multiple(x, pad) if pad else x)[..., :size * scale, :size * scale])
    expected_psnr = calculate_psnr(expected, cv2.imread(str(official_root / 'HR/img0.png')), crop_border=scale,
                                   test_y_channel=True)

    ours = yaml.safe_load(option_file.read_text())
    for dataset in ours['datasets'].values():
        dataset.update(dataroot_gt=str(our_root / 'HR'), dataroot_lq=str(our_root / f'LR_bicubic/X{scale}'))
    ours['path']['pretrain_network_g'] = str(checkpoint)
    runs = {'ours': ours, 'official': official(scale, official_root, str(checkpoint))}
    for label, options in runs.items():
        options['name'] = f'{options["name"]}_{label}'
        (tmp_path / f'{label}.yml').write_text(yaml.safe_dump(options, sort_keys=False))
        result = run([str(REPO / 'esc/test.py'), '-opt', f'{label}.yml'], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        results = tmp_path / 'results' / options['name']
        log = next(results.glob('test_*.log')).read_text()
        assert 'Model [ESRModel] is created.' in log and f'Loading {type(net).__name__} from' in log
        assert f"[{options['path']['param_key_g']}]" in log
        scores = logged_scores(log)
        assert list(scores) == list(BENCHMARKS)
        assert all(abs(psnr - expected_psnr) < 1e-3 for psnr in scores.values()), (scores, expected_psnr)
        saved = sorted((results / 'visualization').rglob('*.png'))
        assert len(saved) == (5 if scale != 4 else 0)
        for path in saved:
            assert np.abs(cv2.imread(str(path)).astype(float) - expected).max() <= 1


def assert_option_file_is_the_official_one(option_file: Path, official: OfficialOptions, scale: int, weights: str,
                                           tmp_path: Path) -> None:
    """This project's copy of an official test file is the official one but for the data and weight paths (this
    project's layout: datasets/<set>, LR names as the HR names; ``weights`` under experiments/pretrained_models) and
    num_gpu, and both pass the option checks."""
    from esc.config.validation import validate_options

    ours = yaml.safe_load(option_file.read_text())
    released = official(scale, Path('datasets'), f'experiments/pretrained_models/{weights}')
    for dataset in released['datasets'].values():
        dataset.pop('filename_tmpl')
        for key in ('dataroot_gt', 'dataroot_lq'):
            dataset[key] = dataset[key].replace('datasets/', f"datasets/{dataset['name']}/")
    assert ours == {**released, 'num_gpu': 'auto'}
    validate_options(ours, is_train=False)
    validate_options(official(scale, tmp_path, 'weights.pth'), is_train=False)
