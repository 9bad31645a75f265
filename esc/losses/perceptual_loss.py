"""A perceptual loss whose ImageNet VGG weights come from a local file and are never downloaded.

basicsr's ``PerceptualLoss`` builds ``VGGFeatureExtractor``, which fills torchvision's VGG from
``basicsr.archs.vgg_arch.VGG_PRETRAIN_PATH`` (``experiments/pretrained_models/vgg19-dcbb9e9d.pth``,
relative to the working directory) when that file exists and otherwise asks torchvision to download
the weights, which hangs or fails deep inside torchvision on a machine without network access.
:class:`OfflinePerceptualLoss` takes the weights from ``vgg_weights`` (a file, ``random`` for an
explicitly untrained VGG, or unset: the first of ``experiments/pretrained_models/<file>`` and torch
hub's checkpoint cache that exists) and otherwise stops with one line saying where to put the file.
"""
from __future__ import annotations

import contextlib
import os
import os.path as osp
from typing import Any, Dict, Iterator, List, Optional

import torch
from basicsr.archs import vgg_arch
from basicsr.losses.basic_loss import PerceptualLoss
from basicsr.utils import get_root_logger
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn
from torchvision import models

from esc.errors import ESCError

RANDOM = 'random'
OPTION = 'train.perceptual_opt.vgg_weights'
PRETRAINED_DIR = 'experiments/pretrained_models'


def vgg_weights_file(vgg_type: str) -> str:
    """torchvision's file name of the ImageNet weights of ``vgg_type``, e.g. ``vgg19-dcbb9e9d.pth``."""
    try:
        return models.get_model_weights(vgg_type).IMAGENET1K_V1.url.rsplit('/', 1)[-1]
    except (ValueError, AttributeError):
        raise ESCError(f'train.perceptual_opt.vgg_type: {vgg_type!r} is not a torchvision VGG') from None


def default_locations(vgg_type: str) -> List[str]:
    """Where the weights are looked for when ``vgg_weights`` is unset: basicsr's folder, then torch hub's cache."""
    name = vgg_weights_file(vgg_type)
    return [osp.join(PRETRAINED_DIR, name), osp.join(torch.hub.get_dir(), 'checkpoints', name)]


def resolve_vgg_weights(vgg_weights: Optional[str], vgg_type: str = 'vgg19') -> Optional[str]:
    """The weight file to load (None for ``random``); a one-line ESCError when there is none."""
    if vgg_weights == RANDOM:
        return None
    if vgg_weights is not None:
        if not isinstance(vgg_weights, str) or not osp.isfile(vgg_weights):
            raise ESCError(f'{OPTION}: no such file {vgg_weights} (paths are relative to {os.getcwd()})')
        return vgg_weights
    found = next((path for path in default_locations(vgg_type) if osp.isfile(path)), None)
    if found is None:
        raise ESCError(f'{OPTION}: the ImageNet {vgg_type.upper()} weights are not on this machine and are never '
                       f'downloaded; place {vgg_weights_file(vgg_type)} at {default_locations(vgg_type)[0]} '
                       f'or set {OPTION}: PATH')
    return found


def _initialise_features(features: nn.Module) -> None:
    """A VGG's convolutional part initialised as torchvision initialises it: He-normal convolutions by fan-out, zero
    biases, unit batch norms (not torchvision's draws: its constructor draws for the classifier first)."""
    for module in features.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class _OfflineVGGFactory:
    """Stands in for ``torchvision.models.vgg`` inside basicsr's ``vgg_arch``: ``vgg19(...)`` builds the
    network without weights and fills it from ``path`` (or leaves it random when ``path`` is None).

    The network is built on the meta device, so nothing is allocated or drawn for the classifier basicsr drops
    (123 M parameters of VGG19, 0.5 GB and a second of random draws): a file's tensors are assigned as they are
    read; of a random VGG only the convolutional part is allocated and initialised."""

    def __init__(self, path: Optional[str]) -> None:
        self.path = path

    def __getattr__(self, vgg_type: str):
        build = getattr(models.vgg, vgg_type)

        def offline(*args: Any, **kwargs: Any) -> nn.Module:
            with torch.device('meta'):
                net = build(weights=None)
            if self.path is not None:
                net.load_state_dict(_read_vgg_state_dict(self.path, net.state_dict()), assign=True)
            else:
                _initialise_features(net.features.to_empty(device='cpu'))
            return net

        return offline


def _read_vgg_state_dict(path: str, own: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    try:
        state_dict = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # noqa: BLE001  (pickle, zip and torch errors alike: the file is not usable)
        raise ESCError(f'{OPTION}: cannot read {path} as a VGG state dict ({type(exc).__name__})') from None
    if not isinstance(state_dict, dict):
        raise ESCError(f'{OPTION}: {path} does not hold a state dict')
    for key, value in own.items():
        got = getattr(state_dict.get(key), 'shape', None)
        if got != value.shape:
            raise ESCError(f'{OPTION}: {path} does not fit torchvision\'s VGG: {key!r} is '
                           f'{"missing" if got is None else tuple(got)}, expected {tuple(value.shape)}')
        state_dict[key] = state_dict[key].to(value.dtype)  # assigned as read: a half-precision file is widened
    return state_dict


@contextlib.contextmanager
def _basicsr_vgg_from(path: Optional[str]) -> Iterator[None]:
    """While open, basicsr's ``VGGFeatureExtractor`` takes its VGG from :class:`_OfflineVGGFactory`."""
    saved = vgg_arch.vgg, vgg_arch.VGG_PRETRAIN_PATH
    vgg_arch.vgg, vgg_arch.VGG_PRETRAIN_PATH = _OfflineVGGFactory(path), ''  # '' never exists: basicsr asks the factory
    try:
        yield
    finally:
        vgg_arch.vgg, vgg_arch.VGG_PRETRAIN_PATH = saved


@LOSS_REGISTRY.register()
class OfflinePerceptualLoss(PerceptualLoss):
    """basicsr's ``PerceptualLoss`` (same options) plus ``vgg_weights``: a local file, ``random``, or unset
    (see the module doc). Nothing is ever downloaded."""

    def __init__(self, layer_weights: Dict[str, float], vgg_type: str = 'vgg19', use_input_norm: bool = True,
                 range_norm: bool = False, perceptual_weight: float = 1.0, style_weight: float = 0.0,
                 criterion: str = 'l1', vgg_weights: Optional[str] = None) -> None:
        path = resolve_vgg_weights(vgg_weights, vgg_type)
        if path is None:
            get_root_logger().warning(f'{OPTION}: random — the perceptual loss uses an untrained {vgg_type} '
                                      '(for tests only)')
        else:
            get_root_logger().info(f'Perceptual loss: {vgg_type} weights from {path}')
        with _basicsr_vgg_from(path):
            super().__init__(layer_weights, vgg_type, use_input_norm, range_norm, perceptual_weight, style_weight,
                             criterion)
