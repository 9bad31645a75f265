"""ESC inside basicsr: registration with its registries and every patch of its code, in one place.

``import esc.compat`` (esc/train.py, esc/test.py and the scripts that run basicsr pipelines do) imports ESC's
basicsr-land modules, which register their models, datasets, losses, metrics and the ``Bicubic`` baseline
as they load, registers the plain-torch networks of :mod:`esc.archs`, and applies :data:`BASICSR_PATCHES`.
It sits above everything it registers: no module of the package imports it, so imports run one way.
(basicsr on current torchvision needs no import order: ``esc/__init__.py`` installs :mod:`esc.torchvision_alias`.)

Every patch, what it replaces and why (targets as basicsr 1.4.2 defines them; ``tests/test_compat.py`` fails,
naming the target, where one has gone or changed its signature, and applying one that has gone is one line):

- ``utils.dist_util:init_dist`` and ``utils.options:init_dist``: basicsr's calls ``torch.cuda.set_device`` and
  defaults to NCCL, so it cannot start on a CPU-only machine; :func:`esc.utils.dist.init_dist` (gloo on CPU).
- ``train:load_resume_state``: maps the state to the current CUDA device, so resuming fails without a GPU;
  :func:`esc.utils.checkpoint.load_resume_state`.
- ``train:parse_options`` and ``test:parse_options``: a missing folder or weight file surfaces deep inside
  construction; the options are validated and every path checked first
  (:func:`esc.utils.cli.checked_parse_options`).
- ``data.paired_image_dataset:PairedImageDataset.__getitem__``: a bad training pair is a bare ValueError naming
  no file, deep in a loader worker; one line naming the pair.
- ``train:create_train_val_dataloader``: an interrupted epoch restarts from its first batch and augmentations
  reseed per epoch; exact resume, per-sample seeds and the batch of an optimizer step
  (:func:`esc.data.resumable.create_train_val_dataloader`).
- ``train:dict2str``: the log states the per-GPU batch deep below the options; the batch of an optimizer step
  (world size, per-GPU batch, accumulation, total) comes first.

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
from esc.data.resumable import create_train_val_dataloader
from esc.errors import ESCError
from esc.patching import Patch
from esc.utils.batch import training_batch_plan
from esc.utils.checkpoint import load_resume_state
from esc.utils.cli import checked_parse_options
from esc.utils.dist import init_dist

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


def _batch_first(options_text: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(options_text)
    def batch_then_options(opt: Dict[str, Any], indent_level: int = 1) -> str:
        return f'{training_batch_plan(opt).describe()}\n{options_text(opt, indent_level)}'

    return batch_then_options


def _patch(target: str, signature: str, why: str, replace: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Patch:
    return Patch(f'basicsr.{target}', signature, why, replace, BASICSR_VERSION)


_CPU_LAUNCH = 'distributed set-up on CPU-only machines'
_OPTIONS_CHECKED = 'options and paths checked before anything is built'
BASICSR_PATCHES: Tuple[Patch, ...] = (
    _patch('utils.dist_util:init_dist', "(launcher, backend='nccl', **kwargs)", _CPU_LAUNCH, lambda _: init_dist),
    _patch('utils.options:init_dist', "(launcher, backend='nccl', **kwargs)", _CPU_LAUNCH, lambda _: init_dist),
    _patch('train:load_resume_state', '(opt)', 'resuming without a GPU', lambda _: load_resume_state),
    _patch('train:parse_options', '(root_path, is_train=True)', _OPTIONS_CHECKED, checked_parse_options),
    _patch('test:parse_options', '(root_path, is_train=True)', _OPTIONS_CHECKED, checked_parse_options),
    _patch('data.paired_image_dataset:PairedImageDataset.__getitem__', '(self, index)',
           'a bad training pair named in one line', _named_bad_pairs),
    _patch('train:create_train_val_dataloader', '(opt, logger)', 'exact resume and the batch of an optimizer step',
           lambda create: functools.partial(create_train_val_dataloader, create)),
    _patch('train:dict2str', '(opt, indent_level=1)', 'the batch of an optimizer step logged first', _batch_first),
)
"""basicsr's functions that ESC replaces (see the table above and :class:`esc.patching.Patch`)."""


def _register_networks() -> None:
    for network in NETWORKS.values():  # plain torch, so registered from here
        if network.__name__ not in ARCH_REGISTRY:
            ARCH_REGISTRY.register(network)


_register_networks()
for _basicsr_patch in BASICSR_PATCHES:
    _basicsr_patch.apply()
