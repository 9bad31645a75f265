"""LPIPS, DISTS and FID: the quality scores the official ESC-Real table gives on RealSR and DRealSR beside PSNR and
SSIM, computed by pyiqa's networks from weight files on disk.

    metrics:
      lpips: {type: calculate_lpips}      # lower is better; per image, against the ground truth
      dists: {type: calculate_dists}

FID compares two sets of images, not an image with its ground truth, so it is no per-image basicsr metric:
:func:`fid_between_folders` computes it over a folder of SR images and the folder of ground truths (the real-world
table command, ``esc/commands/realworld_table.py``, does).

Each network reads local files only, by default under ``experiments/pretrained_models/iqa/`` (``weights`` and
``backbone_weights`` name others): pyiqa's file for the metric and, for LPIPS and DISTS, torchvision's ImageNet
AlexNet or VGG16 the metric is built on (pyiqa would download both; :mod:`esc.metrics.offline` builds them from
the files instead, strictly). A missing file stops ``esc/test.py`` before anything is built, in one line saying
where to put it and where it is published, as for the no-reference metrics (:mod:`esc.metrics.no_reference`).

The settings are pyiqa's defaults (pyiqa 0.1.16): LPIPS v0.1 on AlexNet, DISTS on VGG16, FID on the FID Inception
(pool3, 2048 features) with clean-fid's resizing ("clean" mode).
"""
from __future__ import annotations

import functools
import os
import os.path as osp
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn

from esc.errors import ESCError
from esc.metrics.no_reference import (DEVICES, PYIQA_WEIGHTS, WEIGHTS_DIR, as_rgb_tensor, register_metric,
                                      require_pyiqa, resolve_device)
from esc.metrics.offline import LocalWeights, pyiqa_offline

TORCHVISION_WEIGHTS = 'https://download.pytorch.org/models'
"""Where torchvision publishes its ImageNet weights."""


@dataclass(frozen=True)
class WeightFile:
    """One file a metric reads: its name under :data:`WEIGHTS_DIR`, where it is published, and what it holds."""

    name: str
    published_at: str
    title: str


@dataclass(frozen=True)
class FullReferenceMetric:
    """One pyiqa metric: its network, its own weight file and (LPIPS, DISTS) its torchvision backbone's."""

    title: str
    arch: str
    """pyiqa's network class."""
    weights: WeightFile
    backbone: Optional[WeightFile] = None
    backbone_constructor: Optional[str] = None
    """The torchvision constructor pyiqa builds the backbone with."""
    not_in_file: Tuple[str, ...] = ()
    """State-dict prefixes of pyiqa's network that its own file may leave out: the torchvision backbone, read from
    the backbone file, and constant buffers (normalisation, pooling filters)."""
    arch_options: Mapping[str, Any] = None

    def default_path(self, backbone: bool = False) -> str:
        return osp.join(WEIGHTS_DIR, (self.backbone if backbone else self.weights).name)


METRICS: Dict[str, FullReferenceMetric] = {
    'lpips': FullReferenceMetric(
        'LPIPS (AlexNet, v0.1)', 'LPIPS',
        WeightFile('LPIPS_v0.1_alex-df73285e.pth', f'{PYIQA_WEIGHTS}/blob/main/LPIPS_v0.1_alex-df73285e.pth',
                   'LPIPS (AlexNet, v0.1)'),
        WeightFile('alexnet-owt-7be5be79.pth', f'{TORCHVISION_WEIGHTS}/alexnet-owt-7be5be79.pth',
                   "torchvision's ImageNet AlexNet"),
        'alexnet', ('net.', 'scaling_layer.'), {'net': 'alex', 'version': '0.1'}),
    'dists': FullReferenceMetric(
        'DISTS', 'DISTS',
        WeightFile('DISTS_weights-f5e65c96.pth', f'{PYIQA_WEIGHTS}/blob/main/DISTS_weights-f5e65c96.pth', 'DISTS'),
        WeightFile('vgg16-397923af.pth', f'{TORCHVISION_WEIGHTS}/vgg16-397923af.pth', "torchvision's ImageNet VGG16"),
        'vgg16', ('stage', 'mean', 'std'), {}),
    'fid': FullReferenceMetric(
        'FID (the FID Inception)', 'FID',
        WeightFile('pt_inception-2015-12-05-6726825d.pth',
                   f'{PYIQA_WEIGHTS}/blob/main/pt_inception-2015-12-05-6726825d.pth', 'the FID Inception'),
        arch_options={'dims': 2048}),
}
"""The metrics by their names (basicsr's without ``calculate_``; FID has no basicsr metric)."""


def weight_paths(metric: str, weights: Optional[str] = None, backbone_weights: Optional[str] = None
                 ) -> Tuple[str, Optional[str]]:
    """The files a metric reads: ``weights`` and ``backbone_weights`` if given, else the defaults under
    :data:`WEIGHTS_DIR` (no backbone file for FID)."""
    spec = METRICS[metric]
    backbone = None if spec.backbone is None else backbone_weights or spec.default_path(backbone=True)
    return weights or spec.default_path(), backbone


def missing_file_message(file: WeightFile, path: str, option: str) -> str:
    return (f'{option}: no such file {path} (relative to {os.getcwd()}); put {file.title} weights, {file.name}, '
            f'there or name the file with {option}; published at {file.published_at}')


def check_metric_options(metric_options: Mapping[str, Any], option: str) -> None:
    """What a ``val.metrics.<name>`` entry of LPIPS or DISTS needs before evaluation starts: pyiqa and both weight
    files. ``option`` is the entry's key path; raises ESCError in one line. Other metrics pass."""
    metric = _metric_of_type(metric_options.get('type'))
    if metric is None:
        return
    if metric_options.get('device', 'auto') not in DEVICES:
        raise ESCError(f"{option}.device: must be one of {', '.join(DEVICES)}, got {metric_options['device']!r}")
    require_pyiqa(option)
    check_files(metric, metric_options.get('weights'), metric_options.get('backbone_weights'), option)


def check_files(metric: str, weights: Optional[str], backbone_weights: Optional[str], option: str) -> None:
    """A one-line ESCError naming the first of the metric's files that is missing (options ``<option>.weights``,
    ``<option>.backbone_weights``)."""
    spec = METRICS[metric]
    path, backbone = weight_paths(metric, weights, backbone_weights)
    if not osp.isfile(path):
        raise ESCError(missing_file_message(spec.weights, path, f'{option}.weights'))
    if backbone is not None and not osp.isfile(backbone):
        raise ESCError(missing_file_message(spec.backbone, backbone, f'{option}.backbone_weights'))


def _metric_of_type(metric_type: Any) -> Optional[str]:
    name = str(metric_type or '')
    metric = name[len('calculate_'):] if name.startswith('calculate_') else None
    return metric if metric in METRICS and metric != 'fid' else None


BACKBONE_HEAD = ('classifier.',)
"""The part of torchvision's ImageNet networks pyiqa never uses: a backbone file may leave it out."""


def build_network(metric: str, weights: Optional[str] = None, backbone_weights: Optional[str] = None,
                  device: str = 'cpu', option: Optional[str] = None, weights_option: Optional[str] = None
                  ) -> nn.Module:
    """pyiqa's network for ``metric`` from local files (see :func:`weight_paths`; nothing is downloaded), in
    evaluation mode on ``device``. ``option`` names the metric's options in errors (default ``val.metrics.<metric>``;
    its files ``<option>.weights`` and ``<option>.backbone_weights``, unless ``weights_option`` names the first)."""
    spec = METRICS[metric]
    option = option or f'val.metrics.{metric}'
    weights_option = weights_option or f'{option}.weights'
    path, backbone = weight_paths(metric, weights, backbone_weights)
    if not osp.isfile(path):
        raise ESCError(missing_file_message(spec.weights, path, weights_option))
    check_files(metric, path, backbone, option)
    local = {spec.weights.name: LocalWeights(path, weights_option, spec.title, spec.not_in_file)}
    if backbone is not None:
        local[spec.backbone_constructor] = LocalWeights(backbone, f'{option}.backbone_weights', spec.backbone.title,
                                                        BACKBONE_HEAD)
    with pyiqa_offline(local_weights=local):
        from pyiqa.archs import build_network as build_pyiqa_network

        network = build_pyiqa_network({'type': spec.arch, **(spec.arch_options or {})})
    return network.eval().to(device)


@functools.lru_cache(maxsize=4)
def _cached_network(metric: str, weights: str, backbone_weights: Optional[str], device: str) -> nn.Module:
    return build_network(metric, weights, backbone_weights, device)


def score_pair(metric: str, img: np.ndarray, img2: np.ndarray, crop_border: int = 0, weights: Optional[str] = None,
               backbone_weights: Optional[str] = None, device: str = 'auto', input_order: str = 'HWC') -> float:
    """LPIPS or DISTS of an SR image ``img`` against its ground truth ``img2`` (basicsr's layout; lower is better)."""
    option = f'val.metrics.{metric}'
    if img2 is None:
        raise ESCError(f'{option}: {METRICS[metric].title} compares the SR image with its ground truth; '
                       'this dataset has none (use a paired dataset)')
    if img.shape != img2.shape:
        raise ESCError(f'{option}: the SR image is {img.shape} and its ground truth {img2.shape}')
    device = resolve_device(device)
    path, backbone = weight_paths(metric, weights, backbone_weights)
    network = _cached_network(metric, osp.abspath(path), backbone and osp.abspath(backbone), device)
    sr, gt = (as_rgb_tensor(i, crop_border, input_order, option).to(device) for i in (img, img2))
    with torch.no_grad():
        return float(network(sr, gt).reshape(-1)[0])


def _register(metric: str) -> Callable[..., float]:
    spec = METRICS[metric]

    def calculate(img: np.ndarray, img2: np.ndarray, crop_border: int = 0, input_order: str = 'HWC',
                  weights: Optional[str] = None, backbone_weights: Optional[str] = None, device: str = 'auto',
                  **kwargs: Any) -> float:
        return score_pair(metric, img, img2, crop_border, weights, backbone_weights, device, input_order)

    return register_metric(calculate, metric, f'{spec.title} of the SR image against its ground truth (lower is '
                           f'better) through pyiqa, from the weight files ``weights`` (default {spec.default_path()}; '
                           f'published at {spec.weights.published_at}) and ``backbone_weights`` (default '
                           f'{spec.default_path(backbone=True)}; published at {spec.backbone.published_at}).')


calculate_lpips = _register('lpips')
calculate_dists = _register('dists')


def fid_between_folders(sr_folder: str, gt_folder: str, weights: Optional[str] = None, device: str = 'auto',
                        option: str = '--fid-weights') -> float:
    """FID (lower is better) between the images of two folders, through pyiqa's FID on the FID Inception read from
    ``weights`` (default under :data:`WEIGHTS_DIR`), with clean-fid's resizing to 299×299. ``option`` names the
    weight file's option in errors."""
    require_pyiqa(option)
    path = weights or METRICS['fid'].default_path()
    if not osp.isfile(path):
        raise ESCError(missing_file_message(METRICS['fid'].weights, path, option))
    for folder in (sr_folder, gt_folder):
        if not osp.isdir(folder) or not os.listdir(folder):
            raise ESCError(f'FID: {folder} is not a folder of images')
    device = resolve_device(device)
    network = build_network('fid', path, device=device, weights_option=option)
    score = network(sr_folder, gt_folder, mode='clean', num_workers=0, batch_size=8, device=torch.device(device),
                    verbose=False)
    return float(score)
