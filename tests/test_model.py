"""ESCModel: checkpoints through the option-file path, evaluation padding, atomic saves."""
import os

import pytest
import torch
from basicsr.models import build_model

from esc.errors import ESCError
from esc.io.checkpoint import atomic_torch_save, read_state_dict
from tests.helpers.files import file_size_limit
from tests.helpers.models import model_options, training_model


def random_state(scale=2):
    opt = model_options(scale=scale)
    model = build_model(opt)
    with torch.no_grad():
        for p in model.net_g.parameters():
            p.normal_(0, 0.05)
    return {k: v.clone() for k, v in model.net_g.state_dict().items()}


@pytest.mark.parametrize('param_key', ['params', 'params_ema'])
def test_release_files_load_by_param_key(tmp_path, param_key):
    states = {'params': random_state(), 'params_ema': random_state()}
    path = tmp_path / 'release.pth'
    torch.save(states, path)
    model = build_model(model_options(str(path), param_key))
    for key, value in model.net_g.state_dict().items():
        assert torch.equal(value, states[param_key][key]), key


def test_bare_state_dict_and_module_prefix(tmp_path):
    state = random_state()
    path = tmp_path / 'bare.pth'
    torch.save({f'module.{k}': v for k, v in state.items()}, path)
    assert set(read_state_dict(str(path), 'params')) == set(state)


def test_x2_checkpoint_into_x4_network_through_options(tmp_path):
    path = tmp_path / 'x2.pth'
    torch.save({'params': random_state(scale=2)}, path)
    model = build_model(model_options(str(path), scale=4))
    assert model.net_g.to_img.weight.shape[0] == 48


def test_checkpoint_errors_name_the_culprit(tmp_path):
    with pytest.raises(ESCError, match='path.pretrain_network_g: no such file'):
        build_model(model_options(str(tmp_path / 'none.pth')))
    path = tmp_path / 'other.pth'
    torch.save({'state': {'a': {}}}, path)
    with pytest.raises(ESCError, match=r"has no 'params' \(param_key_g\); it holds state"):
        build_model(model_options(str(path)))
    (tmp_path / 'junk.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(ESCError, match='cannot read checkpoint'):
        build_model(model_options(str(tmp_path / 'junk.pth')))


def test_evaluation_pads_to_the_window_and_crops_back():
    model = build_model(model_options())
    model.lq = torch.rand(1, 3, 11, 13)
    model.test()
    assert model.output.shape == (1, 3, 22, 26)
    with torch.no_grad():
        padded = torch.nn.functional.pad(model.lq, (0, 3, 0, 5), mode='reflect')
        assert torch.equal(model.output, model.net_g(padded)[..., :22, :26])


def test_a_failed_write_is_one_line_with_the_reason_and_leaves_the_old_file(tmp_path):
    path = tmp_path / 'net.pth'
    atomic_torch_save({'v': torch.ones(2)}, str(path))
    with file_size_limit(64 * 1024), pytest.raises(ESCError) as info:
        atomic_torch_save({'v': torch.zeros(1_000_000)}, str(path))
    assert str(info.value) == (f'cannot write {path}: File too large; nothing was written there (an earlier file of '
                               'that name is untouched)')
    assert torch.equal(torch.load(path, weights_only=True)['v'], torch.ones(2))
    assert os.listdir(tmp_path) == ['net.pth']  # the partial file is gone


def test_tiled_evaluation_through_the_model():
    model = build_model(model_options())
    model.lq = torch.rand(1, 3, 30, 21)
    model.test()
    whole = model.output
    model.opt['val'].update(tile=64, tile_overlap=8)  # one tile covers the image: identical
    model.test()
    assert torch.equal(model.output, whole)
    model.opt['val'].update(tile=16, tile_overlap=8)
    model.test()
    assert model.output.shape == whole.shape and torch.isfinite(model.output).all()
    assert not torch.equal(model.output, whole)  # really tiled (a random net is not tile-invariant)


def test_hr_that_is_not_scale_times_the_lr_is_refused():
    """What basicsr's test-time GT crop cannot fix (an HR image smaller than r× its LR) names both files."""
    model = build_model(model_options())
    batch = {'lq': torch.rand(1, 3, 10, 12), 'gt': torch.rand(1, 3, 20, 24), 'lq_path': ['lr/a.png'],
             'gt_path': ['hr/a.png']}
    model.feed_data(batch)
    assert model.gt.shape == (1, 3, 20, 24)
    with pytest.raises(ESCError, match=r'^hr/a\.png: HR is 23x20, but its LR image lr/a\.png \(12x10\) x2 is 24x20'):
        model.feed_data({**batch, 'gt': torch.rand(1, 3, 20, 23)})


def _batch(nan=False):
    gt = torch.rand(2, 3, 16, 16)
    if nan:
        gt[0, 0, 3, 3] = float('nan')
    return {'lq': torch.rand(2, 3, 8, 8), 'gt': gt}


def _weights(model):
    return [p.detach().clone() for p in (*model.net_g.parameters(), *model.net_g_ema.parameters())]


def test_nonfinite_loss_stops_before_any_weight_changes():
    model = training_model()
    model.feed_data(_batch())
    model.optimize_parameters(1)
    before = _weights(model)
    model.feed_data(_batch(nan=True))
    with pytest.raises(ESCError, match=r'iteration 2: loss l_pix is nan; the weights were not updated '
                                       r'\(train.nonfinite_loss: skip would skip such steps\)'):
        model.optimize_parameters(2)
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(model)))


def test_nonfinite_loss_can_skip_the_step_and_training_goes_on():
    model = training_model('skip')
    before = _weights(model)
    model.feed_data(_batch(nan=True))
    model.optimize_parameters(5)
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(model)))
    model.feed_data(_batch())
    model.optimize_parameters(6)
    assert not all(torch.equal(a, b) for a, b in zip(before, _weights(model)))
    with pytest.raises(ESCError, match="train.nonfinite_loss: 'ignore' is not one of stop, skip"):
        training_model('ignore')
