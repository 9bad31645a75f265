"""Tiled evaluation: bounded memory without changing the numbers."""
import cv2
import numpy as np
import pytest
import torch
from basicsr.metrics import calculate_psnr
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import ARCH_REGISTRY

from esc.errors import ESCError
from esc.utils.tiling import tile_starts, tiled_forward
from tests.conftest import shared_path


def test_tile_starts_cover_with_overlap():
    assert tile_starts(50, 64, 8) == [0]
    starts = tile_starts(130, 64, 16)
    assert starts[0] == 0 and starts[-1] == 130 - 64
    assert all(b - a <= 64 - 16 for a, b in zip(starts, starts[1:]))


def test_tiles_of_a_pointwise_upscaler_reassemble_exactly():
    x = torch.rand(2, 3, 37, 53)

    def upscale(t):
        return t.repeat_interleave(3, -1).repeat_interleave(3, -2) * 2

    assert torch.allclose(tiled_forward(upscale, x, 3, 16, 4), upscale(x), atol=1e-6)
    with pytest.raises(ESCError, match='overlap < tile size'):
        tiled_forward(upscale, x, 3, 8, 8)


@pytest.mark.slow
def test_tiled_and_whole_image_psnr_agree_on_set14(reference):
    """Official-layout ESC ×2 weights on Set14: tiled (64 px LR tiles, 16 px overlap) vs whole images."""
    ref = reference('esc_x2.pt')
    net = ARCH_REGISTRY.get(ref['arch'])(**ref['config'], attn_type='sdpa').eval()
    net.load_state_dict(ref['state_dict'])
    gaps = []
    for path in sorted(shared_path('datasets', 'Set14').glob('*.png')):
        hr = cv2.imread(str(path), cv2.IMREAD_COLOR).astype(np.float32) / 255.
        hr = hr[:hr.shape[0] // 2 * 2, :hr.shape[1] // 2 * 2]
        lq = torch.from_numpy(np.ascontiguousarray(imresize(hr, 0.5)[..., ::-1].transpose(2, 0, 1))).unsqueeze(0)
        with torch.no_grad():
            whole = net(lq)
            tiled = tiled_forward(net, lq, 2, 64, 16)
        to_img = (lambda t: (t[0].clamp(0, 1).numpy().transpose(1, 2, 0)[..., ::-1] * 255).round())
        hr255 = (hr * 255).round()
        gaps.append(abs(calculate_psnr(to_img(whole), hr255, 2, test_y_channel=True)
                        - calculate_psnr(to_img(tiled), hr255, 2, test_y_channel=True)))
    assert len(gaps) == 14 and max(gaps) < 0.01, gaps
