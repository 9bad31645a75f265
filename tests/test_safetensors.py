"""safetensors on purpose: read with the safetensors library wherever a checkpoint is read, written by the
converter and by training on request, with the network options and scale in the metadata."""
import copy
import json

import pytest
import torch
import yaml
from basicsr.models import build_model
from safetensors import safe_open
from safetensors.torch import save_file

import esc
from esc.commands.convert_safetensors import main as convert
from esc.config.validation import validate_options
from esc.errors import ESCError
from esc.io.checkpoint import (load_resume_state, prune_checkpoints, read_checkpoint, read_state_dict,
                               weights_metadata, write_safetensors)
from tests.helpers.models import model_options, training_model
from tests.helpers.networks import randomise, small
from tests.helpers.paths import REPO


@pytest.fixture
def release(tmp_path):
    """A small ESC ×2 release file (.pth) whose params and params_ema differ, and the two state dicts."""
    torch.manual_seed(0)
    states = {key: randomise(small('ESC', 2)).state_dict() for key in ('params', 'params_ema')}
    path = tmp_path / 'release.pth'
    torch.save(states, path)
    return path, states


def _metadata(path):
    with safe_open(str(path), framework='pt') as f:
        return f.metadata()


def _upscale(path, **options):
    model = esc.load_model(str(path), device='cpu', **options)
    torch.manual_seed(1)
    return model, model.upscale_tensor(torch.rand(1, 3, 13, 19))


def test_pth_to_safetensors_round_trip_gives_identical_output(release, tmp_path, capsys):
    path, states = release
    converted = tmp_path / 'release.safetensors'
    with pytest.raises(SystemExit) as exit_:
        convert(['--model', str(path), '-o', str(converted)])
    assert exit_.value.code == 0 and f'[params_ema] written to {converted}' in capsys.readouterr().out
    tensors = read_state_dict(str(converted), None)
    assert tensors.keys() == states['params_ema'].keys()
    assert all(torch.equal(tensors[k], v) for k, v in states['params_ema'].items())  # the EMA weights by default
    original, expected = _upscale(path)
    reloaded, got = _upscale(converted)
    assert torch.equal(got, expected) and reloaded.options == original.options

    raw = tmp_path / 'raw.safetensors'
    with pytest.raises(SystemExit):
        convert(['--model', str(path), '-o', str(raw), '--param-key', 'params'])
    assert torch.equal(_upscale(raw)[1], _upscale(path, param_key='params')[1])
    assert json.loads(_metadata(raw)['esc.param_key']) == 'params'


def test_metadata_holds_options_and_scale_and_detection_reads_them(release, tmp_path, monkeypatch):
    path, _ = release
    converted = tmp_path / 'release.safetensors'
    with pytest.raises(SystemExit):
        convert(['--model', str(path), '-o', str(converted)])
    metadata = _metadata(converted)
    assert json.loads(metadata['esc.network']) == esc.load_model(str(path), device='cpu').options
    assert json.loads(metadata['esc.scale']) == 2 and json.loads(metadata['esc.param_key']) == 'params_ema'

    def no_guessing(*args, **kwargs):
        raise AssertionError('the state dict was read for options the metadata holds')

    monkeypatch.setattr('esc.upscaler.detect_network', no_guessing)
    assert esc.load_model(str(converted), device='cpu').options['window_size'] == 8
    with pytest.raises(ESCError, match='checkpoint is a x2 ESC; it cannot upscale x4'):
        esc.load_model(str(converted), scale=4)
    # what only the metadata can tell: a ConvFFN ratio of 1.3 gives int(16 · 1.3) = 20 channels, read back as 1.25
    state = small('ESC', 2, exp_ratio=1.3).state_dict()
    options = dict(type='ESC', dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=2, window_size=8, num_heads=2,
                   exp_ratio=1.3, upscaling_factor=2, attn_type='flex', streaming='on')
    exact = tmp_path / 'ratio.safetensors'
    write_safetensors(state, str(exact), weights_metadata(options, 2, 'params'))
    model = esc.load_model(str(exact), device='cpu')
    assert model.options['exp_ratio'] == 1.3 and model.net.streaming == 'auto'  # how it ran there is not kept
    assert model.net.blocks[0].attn.attn_type == 'auto'


def test_foreign_safetensors_without_metadata_load_by_detection(release, tmp_path, monkeypatch):
    """A bare state dict as traiNNer-redux or chaiNNer write it; read by the safetensors library, not torch.load."""
    path, states = release
    foreign = tmp_path / 'foreign.safetensors'
    save_file({k: v.contiguous() for k, v in states['params_ema'].items()}, str(foreign))
    misnamed = tmp_path / 'foreign_named.pth'
    misnamed.write_bytes(foreign.read_bytes())

    def unpickling(*args, **kwargs):
        raise AssertionError('torch.load read a safetensors file')

    expected = _upscale(path)[1]
    monkeypatch.setattr(torch, 'load', unpickling)
    for candidate in (foreign, misnamed):
        assert read_checkpoint(str(candidate), 'params_ema')[1] == {}
        model, got = _upscale(candidate)
        assert model.name == 'ESC (custom)' and torch.equal(got, expected)


def test_a_corrupt_safetensors_file_is_one_line_naming_it(release, tmp_path, capsys):
    path, states = release
    good = tmp_path / 'good.safetensors'
    write_safetensors(states['params_ema'], str(good), weights_metadata(None, 2, 'params_ema'))
    garbage, truncated = tmp_path / 'garbage.safetensors', tmp_path / 'truncated.safetensors'
    garbage.write_bytes(b'\x00' * 64)
    truncated.write_bytes(good.read_bytes()[:-100])
    for bad in (garbage, truncated):
        with pytest.raises(ESCError, match=rf'^model: cannot read safetensors file {bad}: [^\n]+$'):
            esc.load_model(str(bad), device='cpu')
        with pytest.raises(ESCError, match=rf'^path.pretrain_network_g: cannot read safetensors file {bad}'):
            build_model(model_options(str(bad)))
    with pytest.raises(SystemExit) as exit_:
        convert(['--model', str(truncated), '-o', str(tmp_path / 'out.safetensors')])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.startswith(f'error: --model: cannot read safetensors file {truncated}')
    assert len(err.splitlines()) == 1 and not (tmp_path / 'out.safetensors').exists()
    bad_json = tmp_path / 'bad_json.safetensors'
    save_file({'a': torch.zeros(1)}, str(bad_json), metadata={'esc.network': '{not json'})
    with pytest.raises(ESCError, match=rf'^model: {bad_json}: metadata esc.network is not JSON'):
        esc.load_model(str(bad_json), device='cpu')


def test_pretrain_network_g_reads_safetensors(release, tmp_path):
    path, states = release
    converted = tmp_path / 'release.safetensors'
    with pytest.raises(SystemExit):
        convert(['--model', str(path), '-o', str(converted)])
    for param_key in ('params_ema', 'params'):  # one state dict: any param key takes it (a log line says so)
        model = build_model(model_options(str(converted), param_key))
        assert all(torch.equal(v, states['params_ema'][k]) for k, v in model.net_g.state_dict().items())


def test_training_writes_safetensors_and_resumes_from_them(tmp_path, monkeypatch):
    """``logger.weights_format: safetensors``: the EMA weights in net_g_<iter>.safetensors, the trained ones
    beside it; resuming (basicsr points at net_g_<iter>.pth) loads each network from its file."""
    options = []  # what the model was built from (basicsr pops the optimizer and scheduler types as it builds)
    monkeypatch.setattr('tests.helpers.models.build_model',
                        lambda opt: options.append(copy.deepcopy(opt)) or build_model(opt))
    model = training_model()
    models, states = tmp_path / 'models', tmp_path / 'training_states'
    models.mkdir(), states.mkdir()
    for opt in (model.opt, options[0]):
        opt['logger'] = {'weights_format': 'safetensors'}
        opt['path'].update(models=str(models), training_states=str(states))
    model.feed_data({'lq': torch.rand(2, 3, 8, 8), 'gt': torch.rand(2, 3, 16, 16)})
    model.optimize_parameters(1)
    model.save(0, 3)
    assert sorted(p.name for p in models.iterdir()) == ['net_g_3.params.safetensors', 'net_g_3.safetensors']
    assert (states / '3.state').is_file()  # training states stay torch files
    trained, ema = (model.net_g.state_dict(), model.net_g_ema.state_dict())
    assert not all(torch.equal(trained[k], ema[k]) for k in trained)
    metadata = _metadata(models / 'net_g_3.safetensors')
    assert json.loads(metadata['esc.network']) == model.opt['network_g'] and json.loads(metadata['esc.scale']) == 2
    assert esc.load_model(str(models / 'net_g_3.safetensors'), device='cpu').name == 'ESC (custom)'

    opt = dict(options[0], auto_resume=True)
    opt['path'].update(param_key_g='params_ema')
    assert load_resume_state(opt)['iter'] == 3
    assert opt['path']['pretrain_network_g'] == str(models / 'net_g_3.safetensors')
    resumed = build_model(opt)
    assert all(torch.equal(v, trained[k]) for k, v in resumed.net_g.state_dict().items())
    assert all(torch.equal(v, ema[k]) for k, v in resumed.net_g_ema.state_dict().items())

    model.save(0, 5)
    prune_checkpoints(str(models), str(states), keep_last=1)  # the weights of pruned states go, in both files
    assert sorted(p.name for p in models.iterdir()) == ['net_g_5.params.safetensors', 'net_g_5.safetensors']


def test_weights_format_is_validated():
    opt = yaml.safe_load((REPO / 'options/train/ESC/train_ESC_X2_DIV2K.yml').read_text())
    opt['logger']['weights_format'] = 'ckpt'
    with pytest.raises(ESCError, match="^logger.weights_format: must be one of pth, safetensors, got 'ckpt'$"):
        validate_options(opt, is_train=True)
    opt['logger']['weights_format'] = 'safetensors'
    validate_options(opt, is_train=True)
