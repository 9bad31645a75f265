"""Tiny ESCModels built in this process through basicsr's build_model, as the option files build them."""
from __future__ import annotations

from basicsr.models import build_model

import esc.compat  # noqa: F401  (registers ESCModel with basicsr's model registry)
from tests.helpers.runs import TINY_NET


def model_options(path=None, param_key='params', scale=2, pad=8):
    """The options of a tiny ESCModel for testing (:data:`TINY_NET` at ``scale``): the checkpoint ``path`` loaded
    strictly from ``param_key``, LR images padded to a multiple of ``pad``, on the CPU."""
    return {
        'model_type': 'ESCModel', 'is_train': False, 'dist': False, 'num_gpu': 0, 'scale': scale,
        'network_g': {**TINY_NET, 'upscaling_factor': scale},
        'path': {'pretrain_network_g': path, 'param_key_g': param_key, 'strict_load_g': True},
        'val': {'pad_to_multiple': pad},
    }


def training_model(mode=None, **train_options):
    """A tiny ESCModel ready to train (EMA 0.5, Adam); ``train_options`` add to its ``train`` section."""
    train = {'ema_decay': 0.5, 'optim_g': {'type': 'Adam', 'lr': 1e-2},
             'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
             'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}, 'total_iter': 10,
             **train_options}
    if mode is not None:
        train['nonfinite_loss'] = mode
    opt = {**model_options(), 'is_train': True, 'train': train}
    opt['path'] = {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None}
    return build_model(opt)
