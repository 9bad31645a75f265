"""ESC inside basicsr: registration with its registries and every patch of its code, in one place.

``import esc.compat`` (esc/train.py, esc/test.py and the scripts that run basicsr pipelines do) imports ESC's
basicsr-land modules, which register their models, datasets, losses, metrics and the ``Bicubic`` baseline
as they load, registers the plain-torch networks of :mod:`esc.archs`, and applies :data:`BASICSR_PATCHES`.
It sits above everything it registers: no module of the package imports it, so imports run one way.
(basicsr on current torchvision needs no import order: ``esc/__init__.py`` installs :mod:`esc.torchvision_alias`.)

The one patch of basicsr, what it replaces and why (the target as basicsr 1.4.2 defines it; ``tests/test_compat.py``
fails, naming the target, where it has gone or changed its signature, and applying it where it has gone is one line):

- ``data.paired_image_dataset:PairedImageDataset.__getitem__``: a bad image pair of a validation or test set is a
  bare ValueError naming no file; one line naming the pair. (Training sets are wrapped by
  :class:`esc.data.resumable.TrainingSamples`, which names bad samples itself.)

Nothing reaches into basicsr's training or test loop: ESC runs its own (:mod:`esc.train`, :mod:`esc.test`), which
set up the process group, parse the options, resume and build the data loaders themselves (seven patches of
basicsr's loop did that before).

pyiqa's networks are built with patches of their own, applied only meanwhile (:mod:`esc.metrics.offline`).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Tuple

from basicsr.utils.registry import ARCH_REGISTRY

import esc.archs.bicubic_arch  # noqa: F401  (the modules below register themselves with basicsr as they load)
import esc.data  # noqa: F401
import esc.losses  # noqa: F401
import esc.metrics  # noqa: F401
import esc.models  # noqa: F401
from esc.archs import NETWORKS
from esc.errors import ESCError
from esc.patching import Patch

BASICSR_VERSION = 'basicsr 1.4.2'


def _named_bad_pairs(getitem: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(getitem)
    def checked_getitem(self: Any, index: int) -> Dict[str, Any]:
        try:
            return getitem(self, index)
        except (ValueError, AttributeError) as exc:
            pair = self.paths[index]
            reason = ''.join(map(str, exc.args))  # basicsr passes its message in pieces
            reason = 'an image does not decode' if "'NoneType'" in reason else reason
            raise ESCError(f"datasets ({self.opt.get('name')}): bad pair {pair['gt_path']} / {pair['lq_path']}: "
                           f'{reason}') from None

    return checked_getitem


def _patch(target: str, signature: str, why: str, replace: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Patch:
    return Patch(f'basicsr.{target}', signature, why, replace, BASICSR_VERSION)


BASICSR_PATCHES: Tuple[Patch, ...] = (
    _patch('data.paired_image_dataset:PairedImageDataset.__getitem__', '(self, index)',
           'a bad image pair named in one line', _named_bad_pairs),
)
"""basicsr's functions that ESC replaces (see the table above and :class:`esc.patching.Patch`)."""


def _register_networks() -> None:
    for network in NETWORKS.values():  # plain torch, so registered from here
        if network.__name__ not in ARCH_REGISTRY:
            ARCH_REGISTRY.register(network)


_register_networks()
for _basicsr_patch in BASICSR_PATCHES:
    _basicsr_patch.apply()
