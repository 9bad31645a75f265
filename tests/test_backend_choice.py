"""Which attention backend runs where, and flex attention over a test set of many image sizes (issue 13).

- ``auto`` means the fastest backend that works on the device: flex only where its kernel compiles (CUDA
  with Triton and a head dim of at least 16), sdpa otherwise; one log line says which and why.
- An explicit backend that cannot run is a one-line error before any training or evaluation.
- Evaluating images of many sizes compiles flex attention a bounded number of times (not once per size),
  so dynamo's recompile limit is never reached and flex never runs uncompiled.
"""
from __future__ import annotations

import logging

import pytest
import torch
from basicsr.models import build_model
from torch._dynamo.utils import counters

from esc.archs.attention import (BACKENDS, FlexBackend, choose_backend, describe_attention, flex_attention_available,
                                 resolve_attn_type)
from esc.archs.esc_arch import ESC
from esc.errors import ESCError
from tests.helpers.models import model_options

FLEX = pytest.mark.skipif(not flex_attention_available(), reason='this torch has no FlexAttention')
NET16 = dict(type='ESC', dim=32, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=1, window_size=8, num_heads=2,
             exp_ratio=1.25)  # head dim 16, as in ESC and ESC-FP


def test_auto_is_sdpa_on_the_cpu_for_inference_and_training():
    for training in (False, True):
        backend, why = choose_backend('auto', 'cpu', 16, training)
        assert backend == 'sdpa' and why.startswith('auto on cpu')


def test_auto_on_cuda_is_flex_only_where_it_compiles(monkeypatch):
    """Decided without a GPU: the conditions are what the CUDA flex kernel needs (checked on an H200: head
    dim 8 raised inductor's 'NYI: embedding dimension ... at least 16')."""
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: (9, 0))
    choose_backend.cache_clear()
    try:
        if flex_attention_available():
            assert choose_backend('auto', 'cuda', 16, True)[0] == 'flex'
        backend, why = choose_backend('auto', 'cuda', 8, False)
        assert backend == 'sdpa' and 'head dim 8 < 16' in why
        import importlib.util
        real_find_spec = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'triton'
                            else real_find_spec(name, *a))
        choose_backend.cache_clear()
        backend, why = choose_backend('auto', 'cuda', 16, True)
        assert backend == 'sdpa' and 'Triton is not installed' in why
        with pytest.raises(ESCError, match=r"^attn_type 'flex' cannot run here: Triton is not installed"):
            choose_backend('flex', 'cuda', 16, True)
    finally:
        choose_backend.cache_clear()


def test_flex_reasons_on_the_cpu():
    flex = BACKENDS['flex']
    assert isinstance(flex, FlexBackend)
    assert flex.unavailable(torch.device('cpu'), 16, training=True) == 'FlexAttention has no CPU backward'
    if flex_attention_available():
        assert flex.unavailable(torch.device('cpu'), 8, training=False) is None
    assert resolve_attn_type('Naive', torch.device('cpu')) == 'naive'


def test_describe_attention_gives_one_line_per_configuration():
    net = ESC(**{k: v for k, v in NET16.items() if k != 'type'}, upscaling_factor=2)
    net.blocks[0].attn.attn_type = 'naive'
    lines = describe_attention(net, torch.device('cpu'), training=False)
    assert lines == ['attention: naive for attn_type naive (head dim 16): as configured']
    with pytest.raises(ESCError, match="^attn_type 'flex' cannot run here: FlexAttention has no CPU backward"):
        net.blocks[0].attn.attn_type = 'flex'
        describe_attention(net, torch.device('cpu'), training=True)


def test_training_with_explicit_flex_on_the_cpu_stops_before_it_starts():
    opt = model_options()
    opt['network_g'] = {**NET16, 'upscaling_factor': 2, 'attn_type': 'flex'}
    opt['is_train'] = True
    opt['train'] = {'optim_g': {'type': 'AdamW', 'lr': 1e-4}, 'pixel_opt': {'type': 'L1Loss'}}
    with pytest.raises(ESCError, match="^attn_type 'flex' cannot run here: FlexAttention has no CPU backward"):
        build_model(opt)


def test_the_model_logs_its_backend(caplog):
    opt = model_options()
    opt['network_g'] = {**NET16, 'upscaling_factor': 2, 'attn_type': 'auto'}
    logger = logging.getLogger('basicsr')
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger='basicsr'):
            build_model(opt)
    finally:
        logger.removeHandler(caplog.handler)
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith('attention:')] == [
        'attention: sdpa for attn_type auto (head dim 16): auto on cpu: fused SDPA (flash forward; '
        'FlexAttention is no faster on the CPU and cannot train there)']


SIZES = [(8, 8), (11, 13), (16, 40), (23, 9), (30, 30), (40, 17), (33, 57), (48, 48), (9, 71), (64, 24), (50, 50),
         (19, 88)]
"""Twelve LR sizes of a test set (8×8 is a single window, which dynamo specialises)."""


@FLEX
def test_flex_evaluates_twelve_sizes_with_a_bounded_number_of_compiles():
    """As esc/test.py runs a test set: ESCModel.test on every size in one process. Dynamo may not hit its
    recompile limit (it would run flex uncompiled, materialising every score matrix), made strict here: 4
    compiles at most, and reaching the limit raises instead of falling back."""
    opt = model_options()
    opt['network_g'] = {**NET16, 'upscaling_factor': 2, 'attn_type': 'flex', 'streaming': 'off'}
    model = build_model(opt)
    reference = build_model({**opt, 'network_g': {**opt['network_g'], 'attn_type': 'naive'}})
    reference.net_g.load_state_dict(model.net_g.state_dict())
    torch._dynamo.reset()
    counters.clear()
    # torch's own patching: pytest's monkeypatch restores config modules wrongly (it deletes the key on undo)
    with torch._dynamo.config.patch(recompile_limit=4, fail_on_recompile_limit_hit=True):
        for height, width in SIZES:
            lq = torch.rand(1, 3, height, width)
            model.lq = reference.lq = lq
            model.test()
            reference.test()
            assert model.output.shape == (1, 3, 2 * height, 2 * width)
            assert (model.output - reference.output).abs().max() <= 1e-4, (height, width)
    graphs = counters['stats']['unique_graphs']
    assert 1 <= graphs <= 2, f'flex attention compiled {graphs} times for {len(SIZES)} sizes'
