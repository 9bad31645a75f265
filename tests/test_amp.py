"""Mixed precision, torch.compile and channels-last (``use_amp``, ``amp_bf16``, ``use_compile``, ``use_channels_last``
in ``train`` and ``val``): option checks, what each switch does to a training step and to evaluation, fp16's gradient
scaler and its training state, compiled networks (one evaluation graph for many image sizes, checkpoints unchanged)
and exact resume of a bf16 run."""
from __future__ import annotations

import re

import pytest
import torch
import yaml
from basicsr.models import build_model
from torch import nn
from torch._dynamo.utils import counters

from esc.acceleration import Acceleration, FastPath
from esc.config.validation import validate_options
from esc.errors import ESCError
from esc.models.lte_model import ESCLTEModel
from esc.models.real_model import ESCRealESRGANModel
from tests.helpers.models import model_options, training_model
from tests.helpers.paths import REPO
from tests.helpers.runs import assert_resumes_exactly, train_options

DEMO = REPO / 'options/demo/train_ESC_light_X2_demo.yml'
SIZES = [(88, 96), (96, 88), (100, 120), (120, 100), (104, 136), (136, 104), (112, 150), (150, 112), (128, 128),
         (131, 97), (97, 131), (160, 90)]
"""12 LR sizes, none a multiple of another, all above the sizes where CPU convolutions pick another kernel
(a few dozen pixels per side, which would add a graph or two: bounded, but not one)."""


def _set(opt: dict, path: str, value) -> dict:
    *parents, leaf = path.split('.')
    for key in parents:
        opt = opt.setdefault(key, {})
    opt[leaf] = value


@pytest.mark.parametrize('path,value,message', [
    ('train.amp_bf16', 'yes', "train.amp_bf16: must be true or false, got 'yes'"),
    ('val.use_compile', 1, 'val.use_compile: must be true or false, got 1'),
    ('train.use_channel_last', True, 'train.use_channel_last: unknown option (did you mean use_channels_last?)'),
])
def test_bad_options_name_their_key_path(path, value, message):
    opt = yaml.safe_load(DEMO.read_text())
    for section in ('train', 'val'):
        opt[section].update(use_amp=True, amp_bf16=True, use_compile=True, use_channels_last=True)
    validate_options(opt, is_train=True)
    _set(opt, path, value)
    with pytest.raises(ESCError) as info:
        validate_options(opt, is_train=True)
    assert str(info.value) == message


def test_fp16_is_refused_off_cuda_naming_the_key():
    with pytest.raises(ESCError, match=r'^train\.amp_bf16: false under use_amp asks for fp16, but precision fp16 is '
                                       r'only supported on CUDA \(use fp32 or bf16 on CPU\)$'):
        training_model(use_amp=True)
    opt = model_options()
    opt['val'].update(use_amp=True)  # evaluation only (esc/test.py)
    with pytest.raises(ESCError, match=r'^val\.amp_bf16: false under use_amp asks for fp16'):
        build_model(opt)


@pytest.mark.parametrize('model_class,phases,message', [
    (ESCLTEModel, {'train': Acceleration(), 'val': Acceleration(fast=FastPath(compile='default'))},
     'val.use_compile: ESCLTEModel does not support torch.compile'),
    (ESCRealESRGANModel, {'train': Acceleration('fp16', device_type='cuda'), 'val': Acceleration()},
     'train.amp_bf16: ESCRealESRGANModel cannot train in fp16'),
])
def test_models_refuse_what_they_cannot_accelerate(model_class, phases, message):
    model = object.__new__(model_class)
    model.acceleration = phases
    with pytest.raises(ESCError, match=f'^{re.escape(message)}') as info:
        model._check_acceleration()
    assert '\n' not in str(info.value)


def _layouts(net: nn.Module, seen: list):
    """Record the dtype and channels-last-ness of ``net``'s first convolution's output at every call."""
    return net.proj.register_forward_hook(
        lambda module, args, out: seen.append((out.dtype, out.is_contiguous(memory_format=torch.channels_last))))


def test_bf16_channels_last_training_step_and_evaluation():
    model = training_model(use_amp=True, amp_bf16=True, use_channels_last=True)
    assert model.acceleration['val'] == model.acceleration['train']  # val inherits train's keys
    for net in (model.net_g, model.net_g_ema):
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in net.parameters() if p.dim() == 4)
    trained, evaluated = [], []
    _layouts(model.net_g, trained), _layouts(model.net_g_ema, evaluated)
    before = [p.detach().clone() for p in model.net_g.parameters()]
    model.feed_data({'lq': torch.rand(2, 3, 8, 8), 'gt': torch.rand(2, 3, 16, 16)})
    model.optimize_parameters(1)
    assert trained == [(torch.bfloat16, True)]
    assert model.output.dtype == torch.float32 and torch.isfinite(torch.tensor(model.log_dict['l_pix']))
    assert all(p.dtype == torch.float32 for p in model.net_g.parameters())  # fp32 weights, bf16 compute
    assert any(not torch.equal(a, b) for a, b in zip(before, model.net_g.parameters()))

    model.lq = torch.rand(1, 3, 11, 13)
    model.test()
    assert set(evaluated) == {(torch.bfloat16, True)}
    bf16 = model.output
    model.acceleration['val'] = Acceleration()
    evaluated.clear()
    model.test()
    assert {dtype for dtype, _ in evaluated} == {torch.float32}
    assert bf16.dtype == torch.float32 and bf16.shape == model.output.shape == (1, 3, 22, 26)
    assert 0 < (bf16 - model.output).abs().max() < 0.05


def test_fp16_gradient_scaler_in_the_training_step_and_state(tmp_path):
    """ESCModel's fp16 wiring, run on the CPU by giving a bf16 model an fp16 gradient scaler: the loss is logged at
    its value while backward runs on the scaled one, the step unscales (equal to the unscaled step: the scale is a
    power of two), an overflowing step is skipped and halves the scale, and resume restores the scale."""
    def fp16_scaled(model):
        model.grad_scaler = torch.amp.GradScaler('cpu')
        return model

    torch.manual_seed(0)
    scaled = fp16_scaled(training_model(use_amp=True, amp_bf16=True))
    torch.manual_seed(0)
    plain = training_model(use_amp=True, amp_bf16=True)
    batch = {'lq': torch.rand(2, 3, 8, 8), 'gt': torch.rand(2, 3, 16, 16)}
    for model in (scaled, plain):
        model.feed_data(batch)
        model.optimize_parameters(1)
    assert scaled.log_dict == plain.log_dict
    for a, b in zip(scaled.net_g.parameters(), plain.net_g.parameters()):
        assert torch.equal(a, b)
    assert scaled.grad_scaler.get_scale() == 2.0 ** 16

    weights = [p.detach().clone() for p in scaled.net_g.parameters()]
    scaled.optimizer_g.zero_grad()
    scaled.backward(next(scaled.net_g.parameters()).sum() * float('inf'))  # an fp16 overflow, not a bad loss
    scaled.optimizer_step(scaled.optimizer_g)
    assert all(torch.equal(a, b) for a, b in zip(weights, scaled.net_g.parameters()))
    assert scaled.grad_scaler.get_scale() == 2.0 ** 15

    scaled.grad_scaler.update(new_scale=1024.0)
    scaled.opt['path']['training_states'] = str(tmp_path)
    scaled.save_training_state(epoch=0, current_iter=1)
    state = torch.load(tmp_path / '1.state', weights_only=True)
    resumed = fp16_scaled(training_model(use_amp=True, amp_bf16=True))
    resumed.resume_training(state)
    assert resumed.grad_scaler.get_scale() == 1024.0


@pytest.mark.cuda
def test_fp16_training_on_cuda(tmp_path):
    opt = model_options()
    opt.update(num_gpu=1, is_train=True)
    opt['path'] = {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None,
                   'training_states': str(tmp_path)}
    opt['train'] = {'ema_decay': 0.5, 'optim_g': {'type': 'Adam', 'lr': 1e-2}, 'total_iter': 10, 'use_amp': True,
                    'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
                    'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}}
    model = build_model(opt)
    seen = []
    _layouts(model.net_g, seen)
    for step in range(3):
        model.feed_data({'lq': torch.rand(2, 3, 8, 8), 'gt': torch.rand(2, 3, 16, 16)})
        model.optimize_parameters(step)
    assert seen[0][0] == torch.float16 and model.output.dtype == torch.float32
    model.save_training_state(epoch=0, current_iter=3)
    state = torch.load(tmp_path / '3.state', weights_only=True)
    assert state['grad_scaler']['scale'] == model.grad_scaler.get_scale() > 0


@pytest.mark.slow
def test_compiled_training_and_evaluation_compile_a_bounded_number_of_graphs(tmp_path, scalar_cpu_kernels):
    """A compiled training run: one graph for its fixed-size batches, one for evaluating 12 image sizes (height and
    width dynamic), none added by training on afterwards; no graph breaks; the compiled step trains (the weights
    move) and the EMA follows; compiled evaluation equals the plain network's; parameter names are unchanged, so the
    checkpoint holds an eager model's keys, in its order (no ``_orig_mod.`` prefix), for the network and its EMA
    alike, and the weights load into an uncompiled network and back."""
    torch._dynamo.reset()
    counters.clear()
    model = training_model(use_compile=True)
    batch = {'lq': torch.rand(2, 3, 16, 16), 'gt': torch.rand(2, 3, 32, 32)}  # tests/test_entrypoints' patches
    before = [p.detach().clone() for p in (*model.net_g.parameters(), *model.net_g_ema.parameters())]
    for step in range(3):
        model.feed_data(batch)
        model.optimize_parameters(step)
    assert counters['stats']['unique_graphs'] == 1
    moved = [not torch.equal(a, b) for a, b in zip(before, (*model.net_g.parameters(), *model.net_g_ema.parameters()))]
    trained = len(list(model.net_g.parameters()))
    assert any(moved[:trained]) and any(moved[trained:])
    plain = build_model(model_options())
    assert list(plain.net_g.state_dict()) == list(model.net_g.state_dict()) == list(model.net_g_ema.state_dict())
    plain.net_g.load_state_dict(model.net_g_ema.state_dict())
    for size in SIZES:
        model.lq = plain.lq = torch.rand(1, 3, *size)
        model.test()
        plain.test()
        torch.testing.assert_close(model.output, plain.output, rtol=0, atol=1e-4)
    assert counters['stats']['unique_graphs'] == 2
    model.feed_data(batch)
    model.optimize_parameters(3)
    assert counters['stats']['unique_graphs'] == 2
    assert not counters['graph_break']
    saved = _saved_weights(model, tmp_path / 'compiled')
    eager_keys = list(plain.net_g.state_dict())
    assert {key: list(weights) for key, weights in saved.items()} == {'params': eager_keys, 'params_ema': eager_keys}
    assert not any(key.startswith('_orig_mod') for weights in saved.values() for key in weights)
    model.net_g.load_state_dict(plain.net_g.state_dict())  # and back into the compiled network


@pytest.mark.slow
def test_bf16_channels_last_run_resumes_exactly(tmp_path):
    """Through esc/train.py (EMA on): 4 iterations in one go equal 2, a resume and 2 more, bit for bit. (A compiled
    run resumes exactly too; its three compiles take minutes on 2 CPU cores, so the suite leaves it out.)"""
    opt = train_options('amp')
    opt['train'].update(ema_decay=0.9, use_amp=True, amp_bf16=True, use_channels_last=True)
    assert_resumes_exactly(tmp_path, opt)
    log = next((tmp_path / 'experiments/amp_whole').glob('train_amp_whole_*.log')).read_text()
    assert 'Precision and compilation: training bf16 autocast, eager, channels-last' in log


def _saved_weights(model, folder) -> dict:
    """What ``model`` writes for its generator (and its EMA), as esc/train.py saves it."""
    folder.mkdir()
    model.opt['path']['models'] = str(folder)
    model.save_network([model.net_g, model.net_g_ema], 'net_g', 1, param_key=['params', 'params_ema'])
    return torch.load(folder / 'net_g_1.pth', weights_only=True)


@pytest.mark.slow
def test_compiled_evaluation_runs_beside_the_network_it_compiles(scalar_cpu_kernels):
    """``val.use_compile`` only: test() runs a compiled wrapper (dynamo compiles a graph) whose output is the plain
    network's; the network itself stays the class it was built as, with its parameter names, and runs eagerly when
    evaluation is switched back to eager (no graph added, nothing of torch's toggled)."""
    torch._dynamo.reset()
    counters.clear()
    opt = model_options()
    opt['val'].update(use_compile=True)  # evaluation only (esc/test.py)
    compiled, plain = build_model(opt), build_model(model_options())
    plain.net_g.load_state_dict(compiled.net_g.state_dict())
    compiled.lq = plain.lq = torch.rand(1, 3, 12, 12)
    compiled.test()
    plain.test()
    assert counters['stats']['unique_graphs'] == 1
    torch.testing.assert_close(compiled.output, plain.output, rtol=0, atol=1e-4)
    assert type(compiled.net_g) is type(plain.net_g)
    assert list(compiled.net_g.state_dict()) == list(plain.net_g.state_dict())
    compiled.acceleration['val'] = Acceleration()
    compiled.test()
    torch.testing.assert_close(compiled.output, plain.output, rtol=0, atol=1e-4)
    assert counters['stats']['unique_graphs'] == 1
