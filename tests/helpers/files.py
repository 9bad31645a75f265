"""Files a test writes or reads: paired HR/LR images in the benchmark layout, images read back as tensors or as
basicsr saves them, and a file-size limit that makes writes fail as on a full disk."""
from __future__ import annotations

import contextlib
import resource
import signal
from pathlib import Path

import cv2
import numpy as np
import torch


def paired_dataset(name: str, root: Path, scale: int) -> dict:
    """The option section of a paired test set under ``root`` in the official layout (HR/, LR_bicubic/X<scale>/
    with 'x<scale>' LR names)."""
    return dict(name=name, type='PairedImageDataset', dataroot_gt=str(root / 'HR'),
                dataroot_lq=str(root / f'LR_bicubic/X{scale}'), filename_tmpl=f'{{}}x{scale}',
                io_backend=dict(type='disk'))


def write_pairs(root: Path, scale: int, sets=('Set5', 'Set14'), size: int = 20) -> None:
    """One random HR image per name in ``sets`` under ``root``/HR (img0.png, img1.png, ...) and its area-downscaled
    LR image of ``size`` pixels under LR_bicubic/X<scale> (img0x<scale>.png, ...)."""
    rng = np.random.default_rng(0)
    for index, name in enumerate(sets):
        (root / 'HR').mkdir(parents=True, exist_ok=True)
        (root / f'LR_bicubic/X{scale}').mkdir(parents=True, exist_ok=True)
        hr = rng.integers(0, 256, (size * scale, size * scale, 3), dtype=np.uint8)
        cv2.imwrite(str(root / 'HR' / f'img{index}.png'), hr)
        cv2.imwrite(str(root / f'LR_bicubic/X{scale}' / f'img{index}x{scale}.png'),
                    cv2.resize(hr, (size, size), interpolation=cv2.INTER_AREA))


def read_rgb(path: Path) -> torch.Tensor:
    """A (1, 3, H, W) float image in [0, 1] from an image file."""
    return torch.from_numpy(cv2.imread(str(path))[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255


def as_saved(image: torch.Tensor) -> np.ndarray:
    """A network output as basicsr writes it: BGR, uint8 levels."""
    return (image[0].clamp(0, 1).permute(1, 2, 0).numpy()[..., ::-1] * 255).round()


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Writes beyond ``limit`` bytes fail with the OS's EFBIG ('File too large'), as on a full disk, in this process."""
    previous_signal = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the OS's error instead of a killed process
    previous = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, previous[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous)
        signal.signal(signal.SIGXFSZ, previous_signal)
