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
5. ESC's networks (plain torch, :mod:`esc.archs`), the ``Bicubic`` baseline, ``ESCModel`` and ESC's
   datasets are registered with basicsr's registries.
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

Import this module before anything from ``basicsr`` (esc/train.py, esc/test.py, :mod:`esc.models`
and :mod:`esc.data` do). ``import esc`` alone does not: inference needs neither basicsr nor torchvision.
"""
from __future__ import annotations

import sys
import types


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


def _register_esc() -> None:
    from basicsr.utils.registry import ARCH_REGISTRY

    import esc.archs.bicubic_arch  # noqa: F401  (basicsr-land modules register themselves)
    import esc.data  # noqa: F401
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
