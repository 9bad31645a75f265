"""Every adaptation of third-party code that ESC needs lives in this module, and nowhere else.

1. basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor``, a private module that
   torchvision removed in 0.17. Its only use there is ``rgb_to_grayscale``, which the public
   ``torchvision.transforms.functional`` still provides, so an alias module is installed before
   basicsr is imported.
2. basicsr's distributed set-up calls ``torch.cuda.set_device`` unconditionally and defaults to
   NCCL, so it cannot start on a CPU-only machine. :func:`esc.utils.dist.init_dist` replaces it
   (gloo on CPU, NCCL on GPU) wherever basicsr looks it up.
3. basicsr's ``load_resume_state`` maps the training state to ``torch.cuda.current_device()``, so
   resuming fails without a GPU; :func:`esc.utils.checkpoint.load_resume_state` replaces it.
4. basicsr's train and test pipelines meet a missing dataset folder or weight file deep inside
   dataset or model construction (a traceback); their ``parse_options`` is wrapped so that every
   path the options name is checked first (:func:`esc.utils.cli.check_paths`, one line each).
5. ESC's networks (plain torch, :mod:`esc.archs`), the ``Bicubic`` baseline, ``ESCModel``, ESC's
   datasets and the pyiqa metrics (:mod:`esc.metrics`) are registered with basicsr's registries.
6. basicsr's ``PairedImageDataset`` meets a bad training pair (HR not ``scale``× its LR, an LR
   smaller than the patch, a file that does not decode) as a bare ValueError/AttributeError naming
   no file, deep inside a data-loader worker; its ``__getitem__`` is wrapped to say which pair.
7. basicsr's training loop restarts an interrupted epoch from its first batch and reseeds its
   augmentations per epoch, so a resumed run differs from an uninterrupted one; its
   ``create_train_val_dataloader`` is wrapped by :func:`esc.data.resumable.create_train_val_dataloader`
   (exact resume, per-sample seeds, bad-file policy and scan, and the loader batch of
   :mod:`esc.utils.batch`).
8. basicsr's training log states the per-GPU batch and world size deep below the options; the batch
   of an optimizer step (world size, per-GPU batch, accumulation, total) is logged right after the
   environment, before the options, by wrapping the ``dict2str`` that ``basicsr.train`` dumps them with.
9. pyiqa (:mod:`esc.metrics`) downloads weights whenever a constructor is not handed a file, and MANIQA's
   always fetches an ImageNet ViT that its checkpoint then overwrites; openai-clip 1.0.1, its CLIP, imports
   ``packaging`` through ``pkg_resources``, which setuptools 81 and later no longer ship. While
   :func:`pyiqa_offline` lasts, timm builds backbones untrained, pyiqa's download functions raise, and
   ``import clip`` finds a ``pkg_resources`` holding only ``packaging`` (:func:`clip_importable`).

Import this module before anything from ``basicsr`` (esc/train.py, esc/test.py, :mod:`esc.models`
and :mod:`esc.data` do). ``import esc`` alone does not: inference needs neither basicsr nor torchvision.
"""
from __future__ import annotations

import contextlib
import sys
import types
from typing import Any, Iterator, Mapping, Optional


def _alias_torchvision_functional_tensor() -> None:
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401  (torchvision < 0.17)
        return
    except ImportError:
        pass
    from torchvision.transforms import functional

    alias = types.ModuleType(name)
    alias.rgb_to_grayscale = functional.rgb_to_grayscale
    sys.modules[name] = alias


def _use_esc_launch_resume_and_checks() -> None:
    import basicsr.test
    import basicsr.train
    import basicsr.utils.dist_util
    import basicsr.utils.options

    from esc.utils.checkpoint import load_resume_state
    from esc.utils.cli import checked_parse_options
    from esc.utils.dist import init_dist

    basicsr.utils.dist_util.init_dist = init_dist
    basicsr.utils.options.init_dist = init_dist
    basicsr.train.load_resume_state = load_resume_state
    for pipeline in (basicsr.train, basicsr.test):
        pipeline.parse_options = checked_parse_options(basicsr.utils.options.parse_options)


def _name_the_files_of_bad_pairs() -> None:
    import functools

    from basicsr.data.paired_image_dataset import PairedImageDataset

    from esc.errors import ESCError

    getitem = PairedImageDataset.__getitem__

    @functools.wraps(getitem)
    def checked_getitem(self, index):
        try:
            return getitem(self, index)
        except (ValueError, AttributeError) as exc:
            pair = self.paths[index]
            reason = ''.join(map(str, exc.args))  # basicsr passes its message in pieces
            reason = 'an image does not decode' if "'NoneType'" in reason else reason
            raise ESCError(f"datasets ({self.opt.get('name')}): bad pair {pair['gt_path']} / {pair['lq_path']}: "
                           f'{reason}') from None

    PairedImageDataset.__getitem__ = checked_getitem


def _resume_training_data_exactly() -> None:
    import functools

    import basicsr.train

    from esc.data.resumable import create_train_val_dataloader

    basicsr.train.create_train_val_dataloader = functools.partial(create_train_val_dataloader,
                                                                  basicsr.train.create_train_val_dataloader)


def _log_the_batch_first() -> None:
    import functools

    import basicsr.train

    from esc.utils.batch import training_batch_plan

    options_text = basicsr.train.dict2str

    @functools.wraps(options_text)
    def batch_then_options(opt, indent_level=1):
        return f'{training_batch_plan(opt).describe()}\n{options_text(opt, indent_level)}'

    basicsr.train.dict2str = batch_then_options


@contextlib.contextmanager
def clip_importable() -> Iterator[None]:
    """While it lasts, ``import clip`` (openai-clip) works without setuptools' ``pkg_resources``."""
    import importlib.util

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
    """While it lasts, pyiqa builds networks without reaching the network (item 9); ``backbone_options``
    override the options of the timm backbones built meanwhile (tests shrink MANIQA's ViT with them)."""
    import timm

    from esc.errors import ESCError

    with clip_importable():
        import pyiqa.archs.arch_util as arch_util
        import pyiqa.utils.download_util as download_util

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ESCError(f'pyiqa tried to download {args[0] if args else kwargs}; the IQA metrics read local files only')

    create_model = timm.create_model

    def untrained(name: str, pretrained: bool = False, **kwargs: Any) -> Any:
        return create_model(name, pretrained=False, **{**kwargs, **(backbone_options or {})})

    replacements = [(timm, 'create_model', untrained), (download_util, 'load_file_from_url', refuse),
                    (download_util, 'download_url_to_file', refuse), (arch_util, 'load_file_from_url', refuse)]
    originals = [(module, name, getattr(module, name)) for module, name, _ in replacements]
    try:
        with clip_importable():
            for module, name, replacement in replacements:
                setattr(module, name, replacement)
            yield
    finally:
        for module, name, original in originals:
            setattr(module, name, original)


def _register_esc() -> None:
    from basicsr.utils.registry import ARCH_REGISTRY

    import esc.archs.bicubic_arch  # noqa: F401  (basicsr-land modules register themselves)
    import esc.data  # noqa: F401
    import esc.metrics  # noqa: F401
    import esc.models  # noqa: F401
    from esc.archs import NETWORKS

    for network in NETWORKS.values():  # plain torch: registered from here
        if network.__name__ not in ARCH_REGISTRY:
            ARCH_REGISTRY.register(network)


_alias_torchvision_functional_tensor()
_use_esc_launch_resume_and_checks()
_name_the_files_of_bad_pairs()
_register_esc()
_resume_training_data_exactly()
_log_the_batch_first()
