"""ESC in spandrel (esc/spandrel.py): detection from the state dict alone, the official layouts and this project's
files through ``spandrel.ModelLoader``, the official outputs through the descriptor, precisions, refusals, and the
ComfyUI custom node."""
import importlib
import importlib.util
import subprocess
import sys

import pytest
import torch

from esc.archs import build_variant
from esc.archs.esc_arch import VARIANTS
from esc.errors import ESCError
from esc.io.checkpoint import weights_metadata, write_safetensors
from tests.helpers.networks import randomise, small, tiny_lte
from tests.helpers.paths import REPO, SCRIPTS

SPANDREL = 'spandrel is optional: pip install -e .[spandrel]'
NAMED = [name for name, config in VARIANTS.items() if config['type'] in ('ESC', 'ESCFP', 'ESCReal')]


@pytest.fixture(scope='module')
def spandrel():
    """spandrel with ESC installed in its main registry (what ``ModelLoader()`` uses)."""
    module = pytest.importorskip('spandrel', reason=SPANDREL)
    import esc.spandrel

    esc.spandrel.install()
    return module


def _load(spandrel, path):
    return spandrel.ModelLoader().load_from_file(str(path))


def _same_weights(model, state_dict):
    loaded = model.state_dict()
    return loaded.keys() == state_dict.keys() and all(torch.equal(loaded[k], v) for k, v in state_dict.items())


def test_install_adds_esc_once_to_the_registry_given(spandrel):
    import esc.spandrel

    registry = spandrel.ArchRegistry()
    entry = esc.spandrel.install(registry)
    assert esc.spandrel.install(registry) is entry and len(registry) == 1 and entry.architecture.id == 'ESC'
    assert 'ESC' in spandrel.MAIN_REGISTRY and 'ESC' not in spandrel.ArchRegistry()


@pytest.mark.parametrize('name', NAMED)
def test_every_named_variant_opens_from_an_official_release_file(spandrel, name, tmp_path):
    scale = 4 if 'Real' in name else 2
    net = build_variant(name, scale)
    path = tmp_path / 'release.pth'
    torch.save({'params': net.state_dict(), 'params_ema': net.state_dict()}, path)
    model = _load(spandrel, path)
    assert isinstance(model, spandrel.ImageModelDescriptor) and model.architecture.id == 'ESC'
    assert model.tags[0] == name and model.scale == scale and model.purpose == 'SR'
    assert type(model.model) is type(net) and model.model.window_size == VARIANTS[name]['window_size']
    assert (model.input_channels, model.output_channels) == (3, 3)
    assert model.size_requirements.none and model.tiling == spandrel.ModelTiling.SUPPORTED
    assert _same_weights(model.model, net.state_dict())


@pytest.mark.parametrize('file', ['esc_x2.pt', 'esc_fp_x4.pt', 'esc_real_x4.pt'])
@pytest.mark.parametrize('layout', ['official .pth', 'bare .safetensors'])
def test_descriptor_reproduces_the_official_outputs(spandrel, reference, tmp_path, file, layout):
    ref = reference(file)
    if layout == 'official .pth':
        path = tmp_path / 'official.pth'
        torch.save({'params_ema': ref['state_dict']}, path)
    else:
        path = tmp_path / 'bare.safetensors'
        write_safetensors(ref['state_dict'], str(path), {})
    model = _load(spandrel, path)
    assert model.scale == ref['config']['upscaling_factor'] and type(model.model).__name__ == ref['arch']
    assert ref['input'].shape[-2] % model.model.window_size  # sides no multiple of the window: no padding needed
    assert (model(ref['input']) - ref['output'].clamp(0, 1)).abs().max() <= 1e-4


def test_this_projects_files_open_with_their_ema_weights(spandrel, tmp_path):
    """A training checkpoint (params and params_ema, which differ) and a safetensors file written here (with
    metadata spandrel drops): detected from the tensors, the EMA weights taken."""
    torch.manual_seed(0)
    states = {key: randomise(small('ESCReal', 2)).state_dict() for key in ('params', 'params_ema')}
    training = tmp_path / 'net_g_1000.pth'
    torch.save(states, training)
    ours = tmp_path / 'net_g_1000.safetensors'
    write_safetensors(states['params_ema'], str(ours), weights_metadata(dict(type='ESCReal'), 2, 'params_ema'))
    reference = randomise(small('ESCReal', 2))
    reference.load_state_dict(states['params_ema'])
    x = torch.rand(1, 3, 11, 14)
    with torch.no_grad():
        expected = reference(x).clamp(0, 1)
    for path in (training, ours):
        model = _load(spandrel, path)
        assert model.scale == 2 and model.tags[:4] == ['ESCReal (custom)', '16nf', '1nb', 'w8']
        assert _same_weights(model.model, states['params_ema'])
        assert torch.equal(model(x), expected)


def test_a_table_3_ablation_without_self_attention_opens(spandrel):
    """No attention layer, so no window to read off the tensors: detected, tagged without one, and run."""
    net = randomise(small('ESC', 2, first_mixer='conv_attn'))
    model = spandrel.MAIN_REGISTRY.load(net.state_dict())
    assert model.tags == ['ESC (custom)', '16nf', '1nb'] and model.scale == 2
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        assert (model(x) - net(x).clamp(0, 1)).abs().max() <= 1e-6


def test_flashbias_checkpoints_run_on_their_factors(spandrel, tmp_path):
    """A network holding its position biases as FlashBias factors (the layout the repository loads now: the
    official ``flashbias_q``/``flashbias_k``) opens with its rank and reproduces its PyTorch output."""
    net = randomise(small('ESC', 3, attn_type='flashbias', bias_rank=6))
    assert any(k.endswith('.attn.flashbias_q') for k in net.state_dict())
    path = tmp_path / 'fb.pth'
    torch.save({'params_ema': net.state_dict()}, path)
    model = _load(spandrel, path)
    assert model.tags[-1] == 'FlashBias r6' and model.scale == 3 and model.model.blocks[0].attn.rank == 6
    assert model.model.attn_type == 'flashbias'
    x = torch.rand(1, 3, 10, 13)
    with torch.no_grad():
        assert (model(x) - net(x).clamp(0, 1)).abs().max() <= 1e-6


@pytest.mark.parametrize('arch,scale', [('ESC', 2), ('ESCFP', 4), ('ESCReal', 4), ('flashbias', 2)])
@pytest.mark.parametrize('dtype,tolerance', [(torch.bfloat16, 0.03), (torch.float16, 0.005)])
def test_half_and_bfloat16_as_flagged(spandrel, tmp_path, arch, scale, dtype, tolerance):
    """The flags say fp16 and bf16 work: each precision's output stays near fp32's (CPU here)."""
    import esc.spandrel

    options = dict(attn_type='flashbias', bias_rank=4) if arch == 'flashbias' else {}
    net = randomise(small('ESC' if arch == 'flashbias' else arch, scale, **options))
    path = tmp_path / 'net.pth'
    torch.save({'params': net.state_dict()}, path)
    model = _load(spandrel, path)
    assert model.supports_half is esc.spandrel.SUPPORTS_HALF is True
    assert model.supports_bfloat16 is esc.spandrel.SUPPORTS_BFLOAT16 is True
    x = torch.rand(1, 3, 12, 17)
    expected = model(x)
    got = model.to(dtype)(x.to(dtype))
    assert got.dtype == dtype and got.shape == expected.shape
    assert (got.float() - expected).abs().max() <= tolerance


def test_official_weights_in_half_and_bfloat16(spandrel, reference, tmp_path):
    """Full-width official-layout ESC ×2 (random weights, outputs up to 1.9 before clamping) in fp16 and bf16."""
    ref = reference('esc_x2.pt')
    path = tmp_path / 'official.pth'
    torch.save({'params_ema': ref['state_dict']}, path)
    model = _load(spandrel, path)
    expected = ref['output'].clamp(0, 1)
    for dtype, tolerance in ((torch.bfloat16, 0.03), (torch.float16, 0.01)):
        got = model.to(dtype)(ref['input'].to(dtype)).float()
        assert (got - expected).abs().max() <= tolerance, dtype


def test_esc_lte_is_refused_in_one_line(spandrel, tmp_path):
    path = tmp_path / 'lte.pth'
    torch.save({'params_ema': tiny_lte().state_dict()}, path)
    with pytest.raises(ESCError) as error:
        _load(spandrel, path)
    assert len(str(error.value).splitlines()) == 1
    assert str(error.value).startswith('ESCLTE (custom) upscales to any scale, a spandrel model has one integer scale')


def test_damaged_weights_are_refused_in_one_line_before_a_network_is_built(spandrel, tmp_path):
    state_dict = randomise(small('ESC', 2)).state_dict()
    state_dict['blocks.0.attn.relative_position_bias'][0, 0] = float('nan')
    path = tmp_path / 'damaged.pth'
    torch.save({'params_ema': state_dict}, path)
    with pytest.raises(ESCError) as error:
        _load(spandrel, path)
    assert str(error.value) == ('spandrel: ESC state dict: blocks.0.attn.relative_position_bias holds NaN or infinite '
                                'values; the checkpoint is damaged')


def test_other_architectures_are_not_taken_for_esc(spandrel):
    """spandrel's own networks still load as themselves once ESC is installed, and ESC's detection refuses them;
    no built-in architecture claims an ESC state dict either."""
    import esc.spandrel
    from spandrel.architectures.Compact.__arch.SRVGG import SRVGGNetCompact
    from spandrel.architectures.SPAN.__arch.span import SPAN
    from spandrel.architectures.SwinIR.__arch.SwinIR import SwinIR

    swinir = SwinIR(img_size=32, window_size=8, embed_dim=30, depths=[2], num_heads=[2], upscale=2,
                    upsampler='pixelshuffle')
    for network, arch_id in ((SRVGGNetCompact(), 'Compact'), (SPAN(num_in_ch=3, num_out_ch=3), 'SPAN'),
                             (swinir, 'SwinIR')):
        state_dict = network.state_dict()
        assert not esc.spandrel.is_esc_state_dict(state_dict)
        assert spandrel.MAIN_REGISTRY.load(state_dict).architecture.id == arch_id
    esc_state = randomise(small('ESC', 2)).state_dict()
    claims = [entry.architecture.id for entry in spandrel.MAIN_REGISTRY.architectures('detection')
              if entry.detect(esc_state)]
    assert claims == ['ESC']


def test_without_spandrel_the_import_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, 'spandrel', None)  # what a missing package looks like to `import`
    monkeypatch.delitem(sys.modules, 'esc.spandrel', raising=False)
    with pytest.raises(ESCError) as error:
        importlib.import_module('esc.spandrel')
    assert str(error.value) == 'esc.spandrel needs spandrel (tested: 0.4.2): pip install -e .[spandrel]'


def test_spandrel_support_imports_nothing_comfyui_lacks():
    """``pip install --no-deps`` into ComfyUI's Python is enough: no training or command dependency is imported."""
    pytest.importorskip('spandrel', reason=SPANDREL)
    code = ('import sys, esc.spandrel; print(sorted({m.split(".")[0] for m in sys.modules} & '
            '{"basicsr", "cv2", "yaml", "skimage", "av", "fvcore", "tensorboard", "lmdb", "scipy"}))')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0 and result.stdout.strip() == '[]', result.stderr


def test_the_comfyui_custom_node_makes_the_stock_loader_open_esc(spandrel, tmp_path, monkeypatch):
    """ComfyUI imports every custom-node file and reads NODE_CLASS_MAPPINGS; its Load Upscale Model node then hands
    the file's state dict to spandrel's ModelLoader. The node file only needs to install ESC."""
    registry = spandrel.ArchRegistry()
    monkeypatch.setattr('esc.spandrel.MAIN_REGISTRY', registry)  # the node installs into a registry of its own here
    spec = importlib.util.spec_from_file_location('esc_spandrel_node', SCRIPTS / 'comfyui' / 'esc_spandrel.py')
    node = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(node)
    assert node.NODE_CLASS_MAPPINGS == {} and 'ESC' in registry
    net = randomise(small('ESCFP', 4))
    path = tmp_path / 'ESC_FP_x4.pth'
    torch.save({'params_ema': net.state_dict()}, path)
    model = spandrel.ModelLoader(registry=registry).load_from_state_dict(torch.load(path, weights_only=True)).eval()
    assert isinstance(model, spandrel.ImageModelDescriptor) and model.scale == 4
