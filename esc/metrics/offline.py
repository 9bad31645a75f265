"""Building pyiqa's networks without the network: the patches of :data:`PYIQA_PATCHES`, applied only while
:func:`pyiqa_offline` lasts.

- pyiqa downloads weights whenever a constructor is not handed a file, and MANIQA's constructor always fetches an
  ImageNet ViT that its checkpoint then overwrites: timm builds backbones untrained, and pyiqa's download
  functions raise an :class:`esc.errors.ESCError` naming what they were asked for.
- openai-clip 1.0.1 (CLIP-IQA's CLIP) imports ``packaging`` through setuptools' ``pkg_resources``, which
  setuptools 81 and later no longer ship: while ``clip`` is first imported, a ``pkg_resources`` holding only
  ``packaging`` stands in (:func:`clip_importable`).
"""
from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from typing import Any, Callable, Iterator, Mapping, Optional

from esc.errors import ESCError
from esc.patching import Patch, patched

_backbone_options: Mapping[str, Any] = {}
"""Options that override those of the timm backbones built inside :func:`pyiqa_offline` (tests shrink MANIQA's ViT)."""


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
def pyiqa_offline(backbone_options: Optional[Mapping[str, Any]] = None) -> Iterator[None]:
    """While it lasts, pyiqa builds networks without reaching the network (:data:`PYIQA_PATCHES`);
    ``backbone_options`` override the options of the timm backbones built meanwhile."""
    global _backbone_options
    saved, _backbone_options = _backbone_options, dict(backbone_options or {})
    try:
        with clip_importable():
            import pyiqa  # noqa: F401  (imports clip, which needs the stand-in)

            with patched(PYIQA_PATCHES):
                yield
    finally:
        _backbone_options = saved
