"""esc/commands/upscale.py never upscales a damaged image: a truncated file of any format is skipped with one line
naming it, and the run exits 1 (issue 16: a JPEG cut short used to come out grey below the cut, exit 0)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from esc.errors import ESCError
from esc.io.images import read_image
from tests.helpers.runs import TINY_NET, run_in_process

FORMATS = ('.jpg', '.png', '.webp', '.tif')


def photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    return cv2.GaussianBlur(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), (5, 5), 0)


def write_truncated(folder: Path, ext: str, keep: float = 0.6) -> Path:
    ok, encoded = cv2.imencode(ext, photo())
    assert ok
    data = encoded.tobytes()
    path = folder / f'cut{ext}'
    path.write_bytes(data[:int(len(data) * keep)])
    return path


@pytest.mark.parametrize('ext', FORMATS)
def test_whole_files_read_and_truncated_ones_are_refused(tmp_path, ext):
    whole = tmp_path / f'whole{ext}'
    cv2.imwrite(str(whole), photo())
    assert read_image(whole).shape == (96, 128, 3)
    cut = write_truncated(tmp_path, ext)
    refused = r'(damaged or truncated image|damaged image header|not an image \(no image format recognised\))'
    with pytest.raises(ESCError, match=rf'^{cut}: {refused}'):
        read_image(cut)


def test_a_truncated_jpeg_is_skipped_by_the_command(tmp_path):
    """OpenCV decodes this JPEG without an error (grey below the cut); the command must not write it."""
    src, out = tmp_path / 'in', tmp_path / 'out'
    src.mkdir()
    cut = write_truncated(src, '.jpg')
    assert cv2.imread(str(cut)) is not None  # the case the check exists for
    cv2.imwrite(str(src / 'good.png'), photo()[:16, :16])
    from esc.archs.esc_arch import ESC
    net = ESC(**{k: v for k, v in TINY_NET.items() if k != 'type'})
    torch.save({'params_ema': net.state_dict()}, tmp_path / 'tiny.pth')
    result = run_in_process('esc.commands.upscale', ['-i', str(src), '-o', str(out), '--model',
                                                     str(tmp_path / 'tiny.pth'), '--device', 'cpu'], tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert f'skipped: {cut}: damaged or truncated image (image file is truncated' in result.stderr
    assert 'done 1, skipped 1' in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ['good_x2.png']
