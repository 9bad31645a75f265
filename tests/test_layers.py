"""The shared building blocks: padding, the 8-symmetry average, per-sample dynamic kernels."""
import pytest
import torch
import torch.nn.functional as F

from esc.archs.layers import (ConvAttn, DecomposedLargeKernelConv, LayerNorm2d, SharedLargeKernelConv,
                              depthwise_conv_per_sample, pad_to_multiple, reflect_pad, symmetric_average)


@pytest.mark.parametrize('h,w,pads', [(40, 52, (0, 24, 0, 12)), (17, 33, (3, 15, 2, 31)), (9, 9, (8, 8, 8, 8))])
def test_reflect_pad_equals_torch_where_torch_applies(h, w, pads):
    x = torch.randn(2, 3, h, w)
    top, bottom, left, right = pads
    assert torch.equal(reflect_pad(x, *pads), F.pad(x, (left, right, top, bottom), mode='reflect'))


def test_reflect_pad_wider_than_input_keeps_reflecting():
    x = torch.arange(3.).view(1, 1, 1, 3)
    row = reflect_pad(x, 0, 0, 0, 7)[0, 0, 0].tolist()
    assert row == [0, 1, 2, 1, 0, 1, 2, 1, 0, 1]
    one = torch.full((1, 2, 1, 1), 5.)
    assert torch.equal(pad_to_multiple(one, 32), torch.full((1, 2, 32, 32), 5.))


def test_pad_to_multiple_sizes():
    for h, w in [(1, 1), (16, 16), (31, 33), (64, 64)]:
        assert pad_to_multiple(torch.zeros(1, 1, h, w), 32).shape[-2:] == (-(-h // 32) * 32, -(-w // 32) * 32)


def test_symmetric_average_is_invariant_and_idempotent():
    k = torch.randn(4, 4, 13, 13)
    avg = symmetric_average(k)
    for transform in (lambda t: t.flip(-1), lambda t: t.flip(-2), lambda t: t.rot90(1, (-2, -1)),
                      lambda t: t.transpose(-2, -1)):
        assert torch.allclose(transform(avg), avg, atol=1e-6)
        assert torch.allclose(symmetric_average(transform(k)), avg, atol=1e-6)
    assert torch.allclose(symmetric_average(avg), avg, atol=1e-6)
    assert not torch.allclose(avg, k)


def test_layer_norm_normalises_channels_per_pixel():
    x = torch.randn(2, 8, 5, 7) * 3 + 1
    y = LayerNorm2d(8)(x)
    assert torch.allclose(y.mean(1), torch.zeros(2, 5, 7), atol=1e-5)
    assert torch.allclose(y.var(1, unbiased=False), torch.ones(2, 5, 7), atol=1e-3)


def test_depthwise_conv_per_sample_uses_each_samples_kernel():
    x, kernels = torch.randn(3, 4, 9, 11), torch.randn(3, 4, 3, 3)
    out = depthwise_conv_per_sample(x, kernels)
    for i in range(3):
        expected = F.conv2d(x[i:i + 1], kernels[i].unsqueeze(1), padding=1, groups=4)
        assert torch.allclose(out[i:i + 1], expected, atol=1e-5)


@pytest.mark.parametrize('plk_type,lk', [
    (SharedLargeKernelConv, lambda: symmetric_average(torch.randn(16, 16, 13, 13))),
    (DecomposedLargeKernelConv, lambda: (torch.randn(16, 16, 1, 1), torch.randn(16, 1, 13, 13))),
])
def test_conv_attn_batch_equals_single_samples(plk_type, lk):
    torch.manual_seed(1)
    module = ConvAttn(32, 16, plk_type(16))
    for p in module.parameters():  # the generator's last conv starts at zero: make the dynamic kernel count
        torch.nn.init.normal_(p, std=0.2)
    large_kernel = lk()
    x = torch.randn(3, 32, 12, 10)
    batched = module(x, large_kernel)
    singles = torch.cat([module(x[i:i + 1], large_kernel) for i in range(3)])
    assert torch.allclose(batched, singles, atol=1e-5)
    # the dynamic kernel is input-dependent: scaling one sample changes its kernel, not only its output
    assert not torch.allclose(module(2 * x[:1], large_kernel), 2 * module(x[:1], large_kernel), atol=1e-3)
