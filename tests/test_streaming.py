"""Row-strip inference (esc.archs.streaming) computes exactly what the whole-image forward does."""
import pytest
import torch
import torch.nn.functional as F

from esc.archs import build_variant
from esc.archs.layers import RowFoldedKernel, symmetric_average
from esc.archs.streaming import streamed_forward, strip_rows
from esc.errors import ESCError
from tests.helpers.networks import randomise, small


def _plain_and_streamed(net, x, pixels):
    net.streaming = 'off'
    with torch.no_grad():
        plain = net(x)
        streamed = streamed_forward(net, x, pixels=pixels)
    return plain, streamed


# window 8: 8-pixel-wide images and 64 pixels per strip give 8-row strips, so every layer crosses strip
# edges; height 17 leaves one real row in the last window row, whose reflect padding reaches two strips up
@pytest.mark.parametrize('arch,scale,overrides', [
    ('ESC', 2, {}),
    ('ESC', 3, dict(use_ln=True)),
    ('ESCFP', 4, dict(pdim=8)),
    ('ESCReal', 4, {}),
    ('ESCReal', 2, {}),
    ('ESC', 2, dict(share_lk=False)),
    ('ESC', 2, dict(dynamic_kernel=False)),
    ('ESC', 2, dict(inner_mixer='self_attn')),
    ('ESC', 2, dict(first_mixer='conv_attn')),
])
def test_streamed_equals_whole_image(arch, scale, overrides):
    torch.manual_seed(0)
    net = randomise(small(arch, scale, **overrides))
    x = torch.rand(2, 3, 17, 8)
    plain, streamed = _plain_and_streamed(net, x, pixels=64)
    assert streamed.shape == plain.shape
    assert (streamed - plain).abs().max() <= 1e-5


@pytest.mark.parametrize('size', [(5, 3), (40, 29), (64, 64)])
def test_streamed_equals_whole_image_at_paper_width(size):
    """The paper's ESC-light layer sizes (13×13 LK, 32×32 windows) with several strips and odd sizes."""
    torch.manual_seed(0)
    net = randomise(build_variant('ESC-light', 2, n_blocks=1)).eval()
    plain, streamed = _plain_and_streamed(net, torch.rand(1, 3, *size), pixels=16 * size[1])
    assert (streamed - plain).abs().max() <= 1e-5


def test_streaming_option_picks_the_path(monkeypatch):
    net = small().eval()
    calls = []
    monkeypatch.setattr('esc.archs.esc_arch.streamed_forward', lambda n, x: calls.append(n) or x)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        net(x)
    assert calls == [net]  # auto: CPU without gradients
    net(x)  # gradients enabled: whole image
    net.streaming = 'off'
    with torch.no_grad():
        net(x)
    assert calls == [net]
    with pytest.raises(ESCError, match="streaming must be one of auto, on, off, got 'yes'"):
        small(streaming='yes')


def test_strips_are_even_and_cover_the_image():
    assert strip_rows(180, 320, pixels=1 << 15) == 90
    assert strip_rows(181, 320, pixels=1 << 15) == 91  # two strips, not 102 + 79
    assert strip_rows(10, 320, pixels=1 << 15) == 10
    assert strip_rows(1000, 5000, pixels=1 << 15) == 16  # at least 16 rows


@pytest.mark.parametrize('k,size', [(13, (40, 23)), (5, (3, 2)), (3, (1, 1))])
def test_row_folded_kernel_is_the_direct_convolution(k, size):
    torch.manual_seed(0)
    kernel = symmetric_average(torch.randn(6, 4, k, k)) / k  # outputs of order 1
    x = torch.randn(2, 4, *size)
    folded = RowFoldedKernel(kernel)
    assert folded.shape == kernel.shape
    assert (folded.conv2d(x) - F.conv2d(x, kernel, padding=k // 2)).abs().max() <= 1e-5
