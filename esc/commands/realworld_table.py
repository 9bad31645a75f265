"""Print the official ESC-Real table of quantitative real-world results for one or more checkpoints.

    python esc/commands/realworld_table.py --model experiments/pretrained_models/ESC_Real_X4.pth
    esc-realworld-table --model ESC_Real_X4.pth ESC_Real_FB_R48_GAN_X4.pth --datasets RealSR RealSRSet

The official table (its README's figure of real-world results, made by its comparison script with pyiqa) scores
RealSR and DRealSR, which have ground truths, with PSNR and SSIM (on Y, no border cropped, as pyiqa's ``psnr`` and
``ssim``), LPIPS, DISTS and FID, and RealLQ250 and RealSRSet, which have none, with NIQE, MANIQA, MUSIQ and CLIPIQA.
This command does the same: one row per checkpoint, a group of columns per dataset, in that order (``--datasets``
picks some), as a Markdown table. Every LR image is reflect-padded to a multiple of the network's window and the
output cropped back (the official evaluation); the SR images are written under ``--output`` (default
``results/realworld_table/<checkpoint name>/<dataset>/``), where FID reads them.

Data (``--data-root``, default ``datasets/``; datasets/README.md says where each is published):
``RealSR/HR`` and ``RealSR/LR``, ``DRealSR/HR`` and ``DRealSR/LR`` (a ground truth and its LR image are matched by
name once a trailing ``_HR``, ``_LR<n>`` or ``_x<n>`` is dropped, so the released names ``Canon_001_HR.png`` /
``Canon_001_LR4.png`` and ``..._x1.png`` / ``..._x4.png`` pair up), and folders of LR images ``RealLQ250`` and
``RealSRSet``. The metrics read their weight files from ``experiments/pretrained_models/iqa/`` (docs/evaluation.md,
"Real-world SR"); every file and folder is checked before the first image is upscaled, a missing one being one
line naming it and where it is published.
"""
from __future__ import annotations

import argparse
import os.path as osp
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

try:
    import esc  # noqa: F401
except ModuleNotFoundError as missing:  # run from a checkout that was never installed
    sys.exit('error: the esc package is not installed: run `pip install -e .` in the checkout first'
             if missing.name == 'esc' else f'error: {missing}')

import numpy as np  # noqa: E402
import torch  # noqa: E402

from esc.errors import ESCError  # noqa: E402
from esc.utils.cli import run_command  # noqa: E402

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
PAIR_SUFFIX = re.compile(r'_(hr|lr\d*|x\d+)$', re.IGNORECASE)
"""What is dropped from a file name's stem to pair a ground truth with its LR image."""


@dataclass(frozen=True)
class Dataset:
    """One column group of the table: its folder under the data root, whether it has ground truths, its metrics."""

    name: str
    paired: bool
    published_at: str

    @property
    def metrics(self) -> Tuple[str, ...]:
        return PAIRED_METRICS if self.paired else NO_REFERENCE_METRICS


PAIRED_METRICS = ('PSNR', 'SSIM', 'LPIPS', 'DISTS', 'FID')
NO_REFERENCE_METRICS = ('NIQE', 'MANIQA', 'MUSIQ', 'CLIPIQA')
LOWER_IS_BETTER = ('LPIPS', 'DISTS', 'FID', 'NIQE')
DATASETS: Dict[str, Dataset] = {d.name: d for d in (
    Dataset('RealSR', True, 'https://github.com/csjcai/RealSR (RealSR V3, Canon and Nikon test pairs at x4)'),
    Dataset('DRealSR', True, 'https://github.com/xiezw5/Component-Divide-and-Conquer-for-Real-World-Image-Super-'
                             'Resolution (DRealSR, x4 test pairs)'),
    Dataset('RealLQ250', False, 'https://github.com/shallowdream204/DreamClear (RealLQ250)'),
    Dataset('RealSRSet', False, 'https://github.com/cszn/BSRGAN (testsets/RealSRSet)'),
)}
"""The official table's datasets, in its order."""


def pair_key(path: Path) -> str:
    return PAIR_SUFFIX.sub('', path.stem)


def images_in(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def dataset_files(dataset: Dataset, root: Path) -> List[Tuple[Path, Optional[Path]]]:
    """(LR image, ground truth or None) of every image of ``dataset`` under ``root``; a missing folder, an empty one or
    an LR image without its ground truth is a one-line ESCError."""
    folder = root / dataset.name
    lr_folder = folder / 'LR' if dataset.paired else folder
    needed = (folder / 'HR', lr_folder) if dataset.paired else (lr_folder,)
    for path in needed:
        if not path.is_dir() or not images_in(path):
            raise ESCError(f'--datasets {dataset.name}: no images in {path}; '
                           f'{dataset.name} is published at {dataset.published_at}')
    if not dataset.paired:
        return [(lr, None) for lr in images_in(lr_folder)]
    truths = {pair_key(p): p for p in images_in(folder / 'HR')}
    pairs = []
    for lr in images_in(lr_folder):
        if pair_key(lr) not in truths:
            raise ESCError(f'--datasets {dataset.name}: {lr} has no ground truth in {folder / "HR"} '
                           f'(looked for {pair_key(lr)}[_HR|_x1].*)')
        pairs.append((lr, truths[pair_key(lr)]))
    return pairs


def check_metric_files(datasets: Sequence[Dataset], device: str) -> None:
    """Every weight file the chosen datasets' metrics read, and pyiqa, before anything runs (one-line ESCError)."""
    from esc.metrics import full_reference, no_reference

    for dataset in datasets:
        if dataset.paired:
            for metric in ('lpips', 'dists'):
                full_reference.check_metric_options({'type': f'calculate_{metric}', 'device': device},
                                                    f'metric {metric}')
            full_reference.require_pyiqa('metric fid')
            path = full_reference.METRICS['fid'].default_path()
            if not osp.isfile(path):
                raise ESCError(full_reference.missing_file_message(full_reference.METRICS['fid'].weights, path,
                                                                   'metric fid.weights'))
        else:
            for metric in ('maniqa', 'musiq', 'clipiqa'):
                no_reference.check_metric_options({'type': f'calculate_{metric}', 'device': device},
                                                  f'metric {metric}')


def bgr(image: np.ndarray) -> np.ndarray:
    """An RGB uint8 image as basicsr's metrics take it (BGR)."""
    return np.ascontiguousarray(image[..., ::-1])


def upscale_padded(model, image: np.ndarray) -> np.ndarray:
    """The official evaluation: the LR image reflect-padded at the bottom and right to a multiple of the network's
    window, upscaled, and cropped back to its size times the scale (RGB uint8 in and out)."""
    from esc.archs.layers import pad_to_multiple

    window = getattr(model.net, 'window_size', 1)
    scale = int(model.scale)
    x = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]
    out = model.upscale_tensor(pad_to_multiple(x, window))[..., :x.shape[-2] * scale, :x.shape[-1] * scale]
    return (out[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def match_size(sr: np.ndarray, gt: np.ndarray, source: Path, scale: int) -> Tuple[np.ndarray, np.ndarray]:
    """SR and ground truth cropped to their common size; a difference of a whole LR pixel or more is an error."""
    if any(abs(a - b) >= scale for a, b in zip(sr.shape[:2], gt.shape[:2])):
        raise ESCError(f'{source}: the x{scale} SR image is {sr.shape[1]}x{sr.shape[0]}, its ground truth '
                       f'{gt.shape[1]}x{gt.shape[0]}; not a x{scale} pair')
    height, width = min(sr.shape[0], gt.shape[0]), min(sr.shape[1], gt.shape[1])
    return sr[:height, :width], gt[:height, :width]


def score_dataset(model, dataset: Dataset, files: List[Tuple[Path, Optional[Path]]], out_dir: Path,
                  device: str, progress: Callable[[str], None]) -> Dict[str, float]:
    """Upscale every image of ``dataset`` with ``model``, write the SR images to ``out_dir`` and return the mean of
    each metric of the dataset's column group (FID over the folders)."""
    from basicsr.metrics import calculate_niqe, calculate_psnr, calculate_ssim

    from esc.metrics.full_reference import calculate_dists, calculate_lpips, fid_between_folders
    from esc.metrics.no_reference import score_image
    from esc.io.images import read_image, write_image

    out_dir.mkdir(parents=True, exist_ok=True)
    truth_dir = out_dir.parent / f'{dataset.name}_GT'
    if dataset.paired:
        truth_dir.mkdir(parents=True, exist_ok=True)
    scores: Dict[str, List[float]] = {metric: [] for metric in dataset.metrics if metric != 'FID'}
    scale = int(model.scale)
    for index, (lr_path, gt_path) in enumerate(files, 1):
        sr = upscale_padded(model, _rgb8(read_image(lr_path)))
        if gt_path is not None:
            sr, gt = match_size(sr, _rgb8(read_image(gt_path)), lr_path, scale)
            write_image(truth_dir / f'{pair_key(lr_path)}.png', gt)  # FID compares the cropped ground truths
            scores['PSNR'].append(calculate_psnr(bgr(sr), bgr(gt), crop_border=0, test_y_channel=True))
            scores['SSIM'].append(calculate_ssim(bgr(sr), bgr(gt), crop_border=0, test_y_channel=True))
            scores['LPIPS'].append(calculate_lpips(bgr(sr), bgr(gt), device=device))
            scores['DISTS'].append(calculate_dists(bgr(sr), bgr(gt), device=device))
        else:
            scores['NIQE'].append(float(calculate_niqe(bgr(sr), crop_border=0)))
            for metric in ('MANIQA', 'MUSIQ', 'CLIPIQA'):
                scores[metric].append(score_image(metric.lower(), bgr(sr), device=device))
        write_image(out_dir / f'{pair_key(lr_path)}.png', sr)
        progress(f'{dataset.name}: {index}/{len(files)} {lr_path.name}')
    means = {metric: float(np.mean(values)) for metric, values in scores.items()}
    if dataset.paired:
        means['FID'] = fid_between_folders(str(out_dir), str(truth_dir), device=device, option='metric fid.weights')
    return means


def _rgb8(image: np.ndarray) -> np.ndarray:
    """An image read by esc.io.images as 8-bit RGB (grayscale repeated, alpha dropped, 16 bits rounded)."""
    from esc.io.images import colour_of

    image = colour_of(image)
    if image.dtype == np.uint16:
        image = (image.astype(np.float64) / 257).round().astype(np.uint8)
    return image


def format_table(rows: Dict[str, Dict[str, Dict[str, float]]], datasets: Sequence[Dataset]) -> List[str]:
    """The Markdown table: a header naming each dataset's columns (↑ higher is better, ↓ lower), one row per model."""
    header = ['Method'] + [f'{d.name} {m} {"↓" if m in LOWER_IS_BETTER else "↑"}' for d in datasets for m in d.metrics]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for name, scores in rows.items():
        cells = [name] + [_cell(m, scores[d.name][m]) for d in datasets for m in d.metrics]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def _cell(metric: str, value: float) -> str:
    return f'{value:.2f}' if metric in ('PSNR', 'MUSIQ', 'FID') else f'{value:.4f}'


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', nargs='+', required=True, help='checkpoints (.pth or .safetensors), one row each')
    p.add_argument('--datasets', nargs='+', default=list(DATASETS), choices=list(DATASETS),
                   help='column groups, in the official order (default: all four)')
    p.add_argument('--data-root', default='datasets', help='folder holding the datasets (default datasets/)')
    p.add_argument('--output', default=None,
                   help='where the SR images go (default results/realworld_table/<checkpoint name>/)')
    p.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    return p


def run(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    from esc.upscaler import load_model

    datasets = [DATASETS[name] for name in DATASETS if name in args.datasets]
    for path in args.model:
        if not osp.isfile(path):
            raise ESCError(f'--model: no such file {path}')
    files = {d.name: dataset_files(d, Path(args.data_root)) for d in datasets}
    check_metric_files(datasets, args.device)
    rows: Dict[str, Dict[str, Dict[str, float]]] = {}
    for path in args.model:
        model = load_model(path, device=args.device)
        name = Path(path).stem
        out_root = Path(args.output) / name if args.output else Path('results/realworld_table') / name
        print(f'{model} from {path}', flush=True)
        rows[name] = {d.name: score_dataset(model, d, files[d.name], out_root / d.name, args.device,
                                            lambda line: print(line, file=sys.stderr, flush=True))
                      for d in datasets}
    for line in format_table(rows, datasets):
        print(line, flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_command(run, argv)


if __name__ == '__main__':
    main()
