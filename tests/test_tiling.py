"""Tiled evaluation: bounded memory, exact for local operators, the same Set14 score for ESC."""
import cv2
import numpy as np
import pytest
import torch
from basicsr.metrics import calculate_psnr
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import ARCH_REGISTRY

from esc.errors import ESCError
from esc.utils.tiling import tile_starts, tiled_forward
from tests.helpers.paths import shared_path


@pytest.mark.parametrize('size,tile,overlap,align', [(130, 64, 16, 1), (250, 96, 32, 32), (1000, 256, 32, 32),
                                                     (97, 40, 8, 8)])
def test_tile_starts_cover_with_overlap(size, tile, overlap, align):
    assert tile_starts(50, 64, 8) == [0]
    starts = tile_starts(size, tile, overlap, align)
    assert starts[0] == 0 and all(s % align == 0 for s in starts)
    ends = [min(s + tile, size) for s in starts]
    assert ends[-1] == size and all(e - s >= overlap for s, e in zip(starts[1:], ends))  # shared with the previous
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_tiles_of_a_pointwise_upscaler_reassemble_exactly():
    x = torch.rand(2, 3, 37, 53)

    def upscale(t):
        return t.repeat_interleave(3, -1).repeat_interleave(3, -2) * 2

    assert torch.allclose(tiled_forward(upscale, x, 3, 16, 4), upscale(x), atol=1e-6)
    with pytest.raises(ESCError, match='overlap < tile size'):
        tiled_forward(upscale, x, 3, 8, 8)


SET14_CROP = (256, 352)
"""The HR height and width the tiled Set14 check crops each image to: LR 128×176, two rows of three 96-px tiles
at an overlap of 32 (a third of the pixels of the whole images)."""


@pytest.mark.slow
def test_tiled_set14_score_matches_whole_images(reference):
    """Official-layout ESC ×2 weights on Set14, LR tiles of 96 px overlapping by at least 32 and aligned to
    the 32-px windows, as evaluation and esc/commands/upscale.py tile (every image is tiled):
    the Set14 PSNR (mean over images, Y, border 2) moves by less than 0.01 dB, and each tiled output
    stays close to its whole-image output (tiling is an approximation: attention windows, the 13×13
    kernels and the dynamic kernels' pooling all see past a tile). Each image is its central HR crop of at most
    :data:`SET14_CROP`: still 2×2 to 2×3 tiles an image, with seams both ways, interior tiles and a last tile
    shorter than the others."""
    ref = reference('esc_x2.pt')
    net = ARCH_REGISTRY.get(ref['arch'])(**ref['config'], attn_type='sdpa').eval()
    net.load_state_dict(ref['state_dict'])
    to_img = (lambda t: (t[0].numpy().transpose(1, 2, 0)[..., ::-1] * 255).round())
    scores, agreement = [], {}
    for path in sorted(shared_path('datasets', 'Set14').glob('*.png')):
        hr = cv2.imread(str(path), cv2.IMREAD_COLOR).astype(np.float32) / 255.
        top, left = (max(0, side - crop) // 4 * 2 for side, crop in zip(hr.shape[:2], SET14_CROP))  # even: 2×2 pixels
        hr = hr[top:top + SET14_CROP[0], left:left + SET14_CROP[1]]
        hr = hr[:hr.shape[0] // 2 * 2, :hr.shape[1] // 2 * 2]
        lq = torch.from_numpy(np.ascontiguousarray(imresize(hr, 0.5)[..., ::-1].transpose(2, 0, 1))).unsqueeze(0)
        assert min(lq.shape[-2:]) > 96, f'{path.name} would fit in one tile'
        with torch.no_grad():
            whole = net(lq).clamp(0, 1)
            tiled = tiled_forward(net, lq, 2, 96, 32, align=net.window_size).clamp(0, 1)
        agreement[path.name] = -10 * torch.log10(((tiled - whole) ** 2).mean()).item()
        hr255 = (hr * 255).round()
        scores.append([calculate_psnr(to_img(out), hr255, 2, test_y_channel=True) for out in (whole, tiled)])
    # agreement measured: 49.3 dB at worst on these crops, the PSNR moved by 0.0006 dB (48.5 dB on whole images, 35.6
    # with tiles not aligned to windows)
    assert len(scores) == 14 and min(agreement.values()) > 45, agreement
    whole_psnr, tiled_psnr = np.mean(scores, axis=0)
    assert abs(tiled_psnr - whole_psnr) < 0.01, (whole_psnr, tiled_psnr)
