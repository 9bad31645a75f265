"""Building pyiqa's networks without the network: the patches of :data:`PYIQA_PATCHES`, applied only while
:func:`pyiqa_offline` lasts.

- pyiqa downloads weights whenever a constructor is not handed a file, and MANIQA's constructor always fetches an
  ImageNet ViT that its checkpoint then overwrites: timm builds backbones untrained, and pyiqa's download
  functions raise an :class:`esc.errors.ESCError` naming what they were asked for.
- pyiqa's full-reference networks (LPIPS, DISTS, FID's Inception) take their ImageNet backbones from torchvision's
  constructors with ``weights='IMAGENET1K_V1'`` and their own weights from pyiqa's URLs: while
  :func:`pyiqa_offline` lasts, the constructors build the backbone and load it from a local file, and pyiqa's
  ``load_pretrained_network`` reads the local file standing for the URL's file name (:class:`LocalWeights`),
  both strictly: a file of another network is a one-line :class:`~esc.errors.ESCError`.
- openai-clip 1.0.1 (CLIP-IQA's CLIP) imports ``packaging`` through setuptools' ``pkg_resources``, which
  setuptools 81 and later no longer ship: while ``clip`` is first imported, a ``pkg_resources`` holding only
  ``packaging`` stands in (:func:`clip_importable`).
"""
from __future__ import annotations

import contextlib
import importlib.util
import os.path as osp
import sys
import types
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple

from esc.errors import ESCError
from esc.patching import Patch, patched

_backbone_options: Mapping[str, Any] = {}
"""Options that override those of the timm backbones built inside :func:`pyiqa_offline` (tests shrink MANIQA's ViT)."""


@dataclass(frozen=True)
class LocalWeights:
    """A local file standing for a file pyiqa would download (or torchvision, for an ImageNet backbone)."""

    path: str
    option: str
    """The option that names the file (``val.metrics.lpips.weights``), for errors."""
    title: str
    """What the file holds, in words (``LPIPS (AlexNet, v0.1)``)."""
    optional_prefixes: Tuple[str, ...] = ()
    """State-dict prefixes of the network's parts this file may leave out (loaded from another file, constant
    buffers, parts never used); every other entry must be in it."""


_local_weights: Dict[str, LocalWeights] = {}
"""While :func:`pyiqa_offline` lasts: the local files by the name pyiqa's URL ends in, or by the torchvision
constructor (``alexnet``, ``vgg16``) whose ImageNet weights they hold."""


def load_local_weights(network: Any, weights: LocalWeights, partial: bool = False) -> None:
    """Load ``weights`` into ``network``: every key of the file must fit, and every entry of the network's state must
    be in the file except, with ``partial``, those under its optional prefixes. One-line ESCError otherwise."""
    import torch

    if not osp.isfile(weights.path):
        raise ESCError(f'{weights.option}: no such file {weights.path}')
    try:
        state = torch.load(weights.path, map_location='cpu', weights_only=True)
    except Exception as exc:  # not a PyTorch file, or one holding more than tensors
        raise ESCError(f'{weights.option}: cannot read {weights.path}: {str(exc).strip().splitlines()[0]}') from None
    state = state.get('params', state) if isinstance(state, dict) else state
    own = network.state_dict()
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state
               and not (partial and any(k.startswith(prefix) for prefix in weights.optional_prefixes))]
    wrong = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if unexpected or missing or wrong or not state:
        first = (f'unexpected key {unexpected[0]!r}' if unexpected else f'missing key {missing[0]!r}' if missing
                 else f'{wrong[0]!r} has another shape' if wrong else 'it is empty')
        raise ESCError(f'{weights.option}: {weights.path} does not hold {weights.title} weights ({first})')
    network.load_state_dict(state, strict=False)


def _from_local_file(constructor: Callable[..., Any]) -> Callable[..., Any]:
    def build(*args: Any, weights: Any = None, **kwargs: Any) -> Any:
        network = constructor(*args, weights=None, **kwargs)
        if weights is not None:
            local = _local_weights.get(constructor.__name__)
            if local is None:
                raise ESCError(f'pyiqa asked for torchvision\'s ImageNet {constructor.__name__} weights; the IQA '
                               'metrics read local files only')
            load_local_weights(network, local, partial=True)  # the classifier pyiqa drops may be left out
        return network

    return build


def _local_pyiqa_file(load_pretrained_network: Callable[..., Any]) -> Callable[..., Any]:
    def load(net: Any, model_path: str, strict: bool = True, weight_keys: Optional[str] = None) -> None:
        local = _local_weights.get(osp.basename(str(model_path)))
        if local is None:
            raise ESCError(f'pyiqa tried to load {model_path}; the IQA metrics read local files only')
        load_local_weights(net, local, partial=not strict)

    return load


def _untrained(create_model: Callable[..., Any]) -> Callable[..., Any]:
    def create_untrained(name: str, pretrained: bool = False, **kwargs: Any) -> Any:
        return create_model(name, pretrained=False, **{**kwargs, **_backbone_options})

    return create_untrained


def _refused(download: Callable[..., Any]) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ESCError(f'pyiqa tried to download {args[0] if args else kwargs}; the IQA metrics read local files only')

    return refuse


PYIQA_VERSION = 'pyiqa 0.1.16, timm 1.0'
PYIQA_PATCHES = (
    Patch('timm:create_model', '(model_name, pretrained=False, ...)',
          'backbones are built untrained: their weights come from the metric checkpoint', _untrained, PYIQA_VERSION),
    Patch('pyiqa.utils.download_util:load_file_from_url', '(url, model_dir=None, progress=True, file_name=None)',
          'nothing is downloaded', _refused, PYIQA_VERSION),
    Patch('pyiqa.utils.download_util:download_url_to_file', '(url, dst, hash_prefix=None, progress=True)',
          'nothing is downloaded', _refused, PYIQA_VERSION),
    Patch('pyiqa.archs.arch_util:load_file_from_url', '(url, model_dir=None, progress=True, file_name=None)',
          'nothing is downloaded', _refused, PYIQA_VERSION),
    *(Patch(f'torchvision.models:{name}', '(*, weights=None, progress=True, **kwargs)',
            'ImageNet backbones are read from a local file', _from_local_file, f'{PYIQA_VERSION}, torchvision 0.29')
      for name in ('alexnet', 'vgg16')),
    *(Patch(f'pyiqa.archs.{module}:load_pretrained_network', '(net, model_path, strict=True, weight_keys=None)',
            "pyiqa's weights are read from a local file", _local_pyiqa_file, PYIQA_VERSION)
      for module in ('lpips_arch', 'dists_arch', 'inception')),
)
"""What :func:`pyiqa_offline` replaces, and why (see :class:`esc.patching.Patch`)."""


@contextlib.contextmanager
def clip_importable() -> Iterator[None]:
    """While it lasts, ``import clip`` (openai-clip) works without setuptools' ``pkg_resources``."""
    if 'clip' in sys.modules or importlib.util.find_spec('pkg_resources') is not None:
        yield  # imported already, or setuptools < 81: nothing to lend
        return
    import packaging.version

    stand_in = types.ModuleType('pkg_resources')
    stand_in.packaging = packaging
    sys.modules['pkg_resources'] = stand_in
    try:
        yield
    finally:
        if sys.modules.get('pkg_resources') is stand_in:
            del sys.modules['pkg_resources']


@contextlib.contextmanager
def pyiqa_offline(backbone_options: Optional[Mapping[str, Any]] = None,
                  local_weights: Optional[Mapping[str, LocalWeights]] = None) -> Iterator[None]:
    """While it lasts, pyiqa builds networks without reaching the network (:data:`PYIQA_PATCHES`);
    ``backbone_options`` override the options of the timm backbones built meanwhile, and ``local_weights`` name the
    files read in place of pyiqa's and torchvision's downloads (by file name or constructor name)."""
    global _backbone_options, _local_weights
    saved = _backbone_options, _local_weights
    _backbone_options, _local_weights = dict(backbone_options or {}), dict(local_weights or {})
    try:
        with clip_importable():
            import pyiqa  # noqa: F401  (imports clip, which needs the stand-in)

            with patched(PYIQA_PATCHES):
                yield
    finally:
        _backbone_options, _local_weights = saved
