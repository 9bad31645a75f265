"""basicsr 1.4.2 on current torchvision: the module ``torchvision.transforms.functional_tensor`` on demand.

basicsr's degradation code imports ``rgb_to_grayscale`` from ``torchvision.transforms.functional_tensor``, a
private module that torchvision removed in 0.17; the public ``torchvision.transforms.functional`` still has the
function. :func:`install` adds a finder at the end of ``sys.meta_path`` that answers for that one module name,
and only when the regular finders have not found it (so older torchvision keeps its own module). Nothing is
imported until basicsr asks: ``import esc`` stays torch-only.

This module is a leaf (it imports nothing from ``esc``); ``esc/__init__.py`` installs the finder, so every
module of the package, and anything that imports ``esc`` first, may import basicsr.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import Optional, Sequence

REMOVED_MODULE = 'torchvision.transforms.functional_tensor'


class _FunctionalTensorAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds :data:`REMOVED_MODULE` where torchvision no longer ships it and fills it from the public API."""

    def find_spec(self, fullname: str, path: Optional[Sequence[str]],
                  target: Optional[types.ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname != REMOVED_MODULE:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        from torchvision.transforms import functional

        module.rgb_to_grayscale = functional.rgb_to_grayscale


def install() -> None:
    """Add the finder once, after the regular ones."""
    if not any(isinstance(finder, _FunctionalTensorAlias) for finder in sys.meta_path):
        sys.meta_path.append(_FunctionalTensorAlias())
