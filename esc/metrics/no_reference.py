"""MANIQA, MUSIQ and CLIPIQA: the no-reference quality scores of the official ESC-Real table, computed by
pyiqa's networks from weight files on disk and registered as basicsr metrics for option files' ``val.metrics``.

    metrics:
      maniqa: {type: calculate_maniqa}                 # higher is better
      musiq: {type: calculate_musiq}
      clipiqa: {type: calculate_clipiqa, weights: /data/weights/RN50.pt}

Each metric reads one file, by default ``experiments/pretrained_models/iqa/<file>`` (``weights`` names
another), and never downloads anything: pyiqa's own constructors would fetch weights from the network when a
file is not given (and MANIQA's always fetches an ImageNet ViT that its checkpoint then overwrites), so the
networks are built here with every download path closed. A missing file stops ``esc/test.py`` before anything
is built, in one line saying where to put it and where it is published (:func:`check_metric_options`).

The settings are pyiqa's defaults for ``maniqa``, ``musiq`` and ``clipiqa`` (pyiqa 0.1.16): MANIQA and MUSIQ
trained on KonIQ-10k, CLIP-IQA on OpenAI's CLIP ResNet-50 with pyiqa's ten antonym prompts.
pyiqa is an optional dependency (``pip install -e ".[iqa]"``; the test extra includes it).
"""
from __future__ import annotations

import functools
import importlib.util
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np
import torch
from basicsr.utils.registry import METRIC_REGISTRY
from torch import nn

from esc.errors import ESCError
from esc.metrics.offline import pyiqa_offline

WEIGHTS_DIR = 'experiments/pretrained_models/iqa'
"""Where the weight files go by default (relative to the working directory, like every path of the options)."""
DEVICES = ('auto', 'cpu', 'cuda')
PYIQA_WEIGHTS = 'https://huggingface.co/chaofengc/IQA-PyTorch-Weights'
"""pyiqa's weight repository, where its MANIQA and MUSIQ checkpoints are published."""


@dataclass(frozen=True)
class NoReferenceMetric:
    """One pyiqa metric: its network, the weight file it reads and where that file is published."""

    title: str
    arch: str
    """pyiqa's network class."""
    weight_file: str
    published_at: str
    sha256: Optional[str] = None
    """The SHA-256 the publisher gives for the file, where it gives one (OpenAI's CLIP URLs carry it)."""
    arch_options: Mapping[str, Any] = field(default_factory=dict)
    """Options of the network besides its weights: pyiqa's defaults for the metric."""
    backbone_options: Mapping[str, Any] = field(default_factory=dict)
    """Overrides of the timm backbone a network builds (MANIQA's ViT); empty for the real networks."""

    def default_path(self) -> str:
        return osp.join(WEIGHTS_DIR, self.weight_file)


CLIP_RN50_SHA256 = 'afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762'
METRICS: Dict[str, NoReferenceMetric] = {
    'maniqa': NoReferenceMetric('MANIQA (KonIQ-10k)', 'MANIQA', 'ckpt_koniq10k.pt',
                                f'{PYIQA_WEIGHTS}/blob/main/ckpt_koniq10k.pt',
                                arch_options={'train_dataset': 'koniq', 'scale': 0.8}),
    'musiq': NoReferenceMetric('MUSIQ (KonIQ-10k)', 'MUSIQ', 'musiq_koniq_ckpt-e95806b9.pth',
                               f'{PYIQA_WEIGHTS}/blob/main/musiq_koniq_ckpt-e95806b9.pth'),
    'clipiqa': NoReferenceMetric('CLIP-IQA (OpenAI CLIP RN50)', 'CLIPIQA', 'RN50.pt',
                                 f'https://openaipublic.azureedge.net/clip/models/{CLIP_RN50_SHA256}/RN50.pt',
                                 sha256=CLIP_RN50_SHA256),
}
"""The metrics by their basicsr names without ``calculate_``."""


def weights_path(metric: str, weights: Optional[str] = None) -> str:
    """The weight file a metric reads: ``weights`` if given, else its default under :data:`WEIGHTS_DIR`."""
    return weights if weights is not None else METRICS[metric].default_path()


def missing_weights_message(metric: str, path: str, option: str) -> str:
    spec = METRICS[metric]
    return (f'{option}: no such file {path} (relative to {os.getcwd()}); put {spec.title} weights, '
            f'{spec.weight_file}, there or name the file with {option}; published at {spec.published_at}')


def check_metric_options(metric_options: Mapping[str, Any], option: str) -> None:
    """What a ``val.metrics.<name>`` entry of one of these metrics needs before evaluation starts: pyiqa, and
    its weight file. ``option`` is the entry's key path (``val.metrics.musiq``); raises ESCError in one line."""
    metric = _metric_of_type(metric_options.get('type'))
    if metric is None:
        return
    if metric_options.get('device', 'auto') not in DEVICES:
        raise ESCError(f"{option}.device: must be one of {', '.join(DEVICES)}, got {metric_options['device']!r}")
    require_pyiqa(option)
    path = weights_path(metric, metric_options.get('weights'))
    if not osp.isfile(path):
        raise ESCError(missing_weights_message(metric, path, f'{option}.weights'))


def _metric_of_type(metric_type: Any) -> Optional[str]:
    name = str(metric_type or '')
    return name[len('calculate_'):] if name.startswith('calculate_') and name[len('calculate_'):] in METRICS else None


def require_pyiqa(option: str) -> None:
    """A one-line ESCError (prefixed by ``option``) saying how to install pyiqa where it is missing."""
    try:
        found = importlib.util.find_spec('pyiqa') is not None
    except ValueError:  # in sys.modules as None: blocked
        found = False
    if not found:
        raise ESCError(f'{option}: needs pyiqa, which is not installed (pip install -e ".[iqa]")')


def build_network(metric: str, path: str, device: str = 'cpu') -> nn.Module:
    """pyiqa's network for ``metric`` with the weights in ``path`` (a local file; nothing is downloaded),
    in evaluation mode on ``device``."""
    spec = METRICS[metric]
    if not osp.isfile(path):
        raise ESCError(missing_weights_message(metric, path, f'val.metrics.{metric}.weights'))
    with pyiqa_offline(spec.backbone_options):
        from pyiqa.archs import build_network as build_pyiqa_network
        from pyiqa.archs.arch_util import clean_state_dict

        if metric == 'clipiqa':  # pyiqa's CLIP loader takes a file path in place of a model name
            return build_pyiqa_network({'type': spec.arch, 'backbone': path, **spec.arch_options}).eval().to(device)
        network = build_pyiqa_network({'type': spec.arch, 'pretrained': False, **spec.arch_options})
    option = f'val.metrics.{metric}.weights'
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # not a PyTorch file, or one holding more than tensors
        raise ESCError(f'{option}: cannot read {path}: {str(exc).strip().splitlines()[0]}') from None
    state = checkpoint.get('params', checkpoint) if isinstance(checkpoint, dict) else checkpoint  # pyiqa's layouts
    try:
        network.load_state_dict(clean_state_dict(state), strict=True)
    except (RuntimeError, AttributeError) as exc:
        raise ESCError(f'{option}: {path} does not hold {spec.title} weights '
                       f'({str(exc).strip().splitlines()[0]})') from None
    return network.eval().to(device)


@functools.lru_cache(maxsize=4)
def _cached_network(metric: str, path: str, device: str) -> nn.Module:
    return build_network(metric, path, device)


def resolve_device(device: str) -> str:
    """A metric's ``device`` option: 'auto' is CUDA where available, else the CPU."""
    if device not in DEVICES:
        raise ESCError(f"device: must be one of {', '.join(DEVICES)}, got {device!r}")
    return ('cuda' if torch.cuda.is_available() else 'cpu') if device == 'auto' else device


def as_rgb_tensor(img: np.ndarray, crop_border: int, input_order: str, option: str) -> torch.Tensor:
    """An image as basicsr's validation passes it (uint8 or [0, 255] BGR, HWC or CHW) as a (1, 3, H, W) RGB tensor
    in [0, 1], its border cropped; ``option`` names the metric in errors."""
    if input_order not in ('HWC', 'CHW'):
        raise ESCError(f"{option}.input_order: must be 'HWC' or 'CHW', got {input_order!r}")
    image = np.transpose(img, (1, 2, 0)) if input_order == 'CHW' else img
    if crop_border:
        image = image[crop_border:-crop_border, crop_border:-crop_border]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    rgb = np.ascontiguousarray(image[..., 2::-1], dtype=np.float32) / 255.
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).clamp(0, 1)


def score_image(metric: str, img: np.ndarray, crop_border: int = 0, weights: Optional[str] = None,
                device: str = 'auto', input_order: str = 'HWC') -> float:
    """The metric of one image as basicsr's validation passes it: uint8 (or [0, 255] float) BGR, HWC or CHW."""
    tensor = as_rgb_tensor(img, crop_border, input_order, f'val.metrics.{metric}')
    device = resolve_device(device)
    network = _cached_network(metric, osp.abspath(weights_path(metric, weights)), device)
    with torch.no_grad():
        return float(network(tensor.to(device)).reshape(-1)[0])


def _register(metric: str) -> Callable[..., float]:
    spec = METRICS[metric]

    def calculate(img: np.ndarray, crop_border: int = 0, input_order: str = 'HWC', weights: Optional[str] = None,
                  device: str = 'auto', **kwargs: Any) -> float:
        return score_image(metric, img, crop_border, weights, device, input_order)

    return register_metric(calculate, metric, f'{spec.title} of the SR image (higher is better) through pyiqa, from '
                           f'the weight file ``weights`` (default {spec.default_path()}; published at '
                           f'{spec.published_at}).')


def register_metric(calculate: Callable[..., float], metric: str, doc: str) -> Callable[..., float]:
    """``calculate`` named ``calculate_<metric>`` with ``doc``, in basicsr's METRIC_REGISTRY (once), for option
    files' ``val.metrics.*.type``."""
    calculate.__name__ = calculate.__qualname__ = f'calculate_{metric}'
    calculate.__doc__ = doc
    if calculate.__name__ not in METRIC_REGISTRY:
        METRIC_REGISTRY.register(calculate)
    return calculate


calculate_maniqa = _register('maniqa')
calculate_musiq = _register('musiq')
calculate_clipiqa = _register('clipiqa')
