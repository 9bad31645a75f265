"""The official checkpoints load strictly and reproduce the official outputs, with every backend here."""
import pytest
import torch
from basicsr.utils.registry import ARCH_REGISTRY

from esc.archs.attention import flex_attention_available
from tests.helpers.paths import REFERENCE_FILES

BACKENDS = ['auto', 'naive', 'sdpa'] + (['flex'] if flex_attention_available() else [])


@pytest.mark.parametrize('streaming', ['on', 'off'])
@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('name', REFERENCE_FILES)
def test_official_output_reproduced(reference, name, backend, streaming):
    """Whole-image and row-strip inference (esc.archs.streaming), every attention backend."""
    ref = reference(name)
    net = ARCH_REGISTRY.get(ref['arch'])(**ref['config'], attn_type=backend, streaming=streaming).eval()
    net.load_state_dict(ref['state_dict'], strict=True)
    with torch.no_grad():
        out = net(ref['input'])
    assert out.shape == ref['output'].shape
    assert (out - ref['output']).abs().max().item() <= 1e-4


@pytest.mark.cuda
@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('name', REFERENCE_FILES)
def test_official_output_reproduced_on_cuda(reference, name, backend):
    ref = reference(name)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    net = ARCH_REGISTRY.get(ref['arch'])(**ref['config'], attn_type=backend).eval().cuda()
    net.load_state_dict(ref['state_dict'], strict=True)
    with torch.no_grad():
        out = net(ref['input'].cuda()).cpu()
    assert (out - ref['output']).abs().max().item() <= 1e-4


def test_official_keys_are_exactly_ours(reference):
    """strict loading means the same names and shapes, not merely a superset."""
    for name in REFERENCE_FILES:
        ref = reference(name)
        net = ARCH_REGISTRY.get(ref['arch'])(**ref['config'])
        ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in ref['state_dict'].items()}
        assert ours == theirs, name
