"""Training data that resumes exactly and survives bad files.

A loop that restarts an interrupted epoch from its first batch, with augmentations drawn from per-worker
generators reseeded whenever an epoch starts (basicsr's), resumes from iteration k on other patches than an
uninterrupted run. :func:`create_train_val_dataloader` (the training loop's, :mod:`esc.train`) builds the
loaders from basicsr's datasets and:

- orders samples with basicsr's ``EnlargedSampler`` (same shuffles), but skips the batches of the
  resumed epoch that the interrupted run had already trained on (:class:`ResumableSampler`);
- gives every sample its own seed — from the run's ``manual_seed``, the epoch and the sample's
  position in the epoch's order over all processes — and draws its random crop and flips from
  generators seeded with it (:class:`TrainingSamples`), whichever worker or process loads it and
  whenever; the caller's generators are left as they were. With the batch of an optimizer step
  fixed (``total_batch_size``, :mod:`esc.config.batch`), one process and several train on the same
  crops, step for step, where the dataset size is a multiple of the world size;
- yields per iteration the samples one process contributes to an optimizer step (micro-batch ×
  gradient accumulation), so that an iteration is an optimizer step and resuming skips whole steps;
- gives every loader a private ``torch.Generator``, so starting an epoch does not draw from the
  global generator whose state :class:`esc.models.ESCModel` saves and restores with the training state.

Bad files, per training dataset: ``bad_samples: error`` (default) stops on the first sample that
fails to load with one line naming its file(s); ``bad_samples: skip`` logs a warning and uses the
next sample instead. ``scan: true`` loads every sample once at start-up and reports all bad files
at once (then stops, or with ``skip`` leaves them out of training).
"""
from __future__ import annotations

import math
import random
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from basicsr.data import build_dataloader, build_dataset
from basicsr.data.data_sampler import EnlargedSampler
from basicsr.utils import get_root_logger
from torch.utils import data

from esc.config.batch import training_batch_plan
from esc.config.validation import BAD_SAMPLE_MODES
from esc.errors import ESCError

MAX_CONSECUTIVE_BAD = 10


class SeededIndex(int):
    """A dataset index that carries the seed its sample's random augmentations draw from."""

    def __new__(cls, index: int, seed: int) -> 'SeededIndex':
        value = super().__new__(cls, index)
        value.seed = seed
        return value

    def __reduce__(self):  # DataLoader workers receive indices pickled
        return SeededIndex, (int(self), self.seed)


def sample_seed(base_seed: int, epoch: int, position: int) -> int:
    """The seed of the sample at ``position`` of ``epoch``'s order over all processes: the same in every run with
    this seed, on any number of processes. (The 0 is where the rank was once mixed in; keeping it keeps the
    seeds, and so the results, of one-process runs.)"""
    return int(np.random.SeedSequence([base_seed, epoch, 0, position]).generate_state(1)[0])


class ResumableSampler(data.Sampler):
    """basicsr's ``EnlargedSampler`` order (``inner``, which the training loop calls ``set_epoch`` on),
    each index tagged with its seed; after :meth:`resume_at` the first epoch skips what was trained on."""

    def __init__(self, inner: data.Sampler, base_seed: int, batch_size: int) -> None:
        self.inner, self.base_seed, self.batch_size = inner, int(base_seed), batch_size
        self._skip: Optional[Tuple[int, int]] = None  # (epoch, samples to skip)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch``: its shuffle (``EnlargedSampler``'s, seeded by the epoch)."""
        self.inner.set_epoch(epoch)

    def batches_per_epoch(self) -> int:
        return len(self.inner) // self.batch_size  # basicsr's train loader drops the last partial batch

    def resume_at(self, epoch: int, iteration: int) -> None:
        """Continue after ``iteration`` (1-based, in ``epoch``) as an uninterrupted run would."""
        done = iteration - epoch * self.batches_per_epoch()
        if not 0 <= done <= self.batches_per_epoch():
            raise ESCError(f'path.resume_state: iteration {iteration} is not in epoch {epoch} with '
                           f'{self.batches_per_epoch()} batches per epoch; was the dataset or the batch size changed?')
        self._skip = (epoch, done * self.batch_size)

    def __iter__(self) -> Iterator[SeededIndex]:
        # the resumed epoch may be iterated more than once (basicsr's prefetcher opens an iterator it discards),
        # but never after a later one: the skip keys on the epoch, it is not used up
        epoch, rank = self.inner.epoch, getattr(self.inner, 'rank', 0)
        world_size = getattr(self.inner, 'num_replicas', 1)
        skip = self._skip[1] if self._skip is not None and self._skip[0] == epoch else 0
        for position, index in enumerate(self.inner):
            if position >= skip:  # EnlargedSampler deals the epoch's order out to the processes in turn
                yield SeededIndex(index, sample_seed(self.base_seed, epoch, position * world_size + rank))

    def __len__(self) -> int:
        return len(self.inner)


class _IsolatedGenerators:
    """Seed python's, numpy's and torch's CPU generators for one sample; restore the caller's afterwards."""

    def __init__(self, seed: Optional[int]) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        if self.seed is None:
            return
        self.saved = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
        random.seed(self.seed)
        np.random.seed(self.seed)
        torch.random.default_generator.manual_seed(self.seed)

    def __exit__(self, *exc: Any) -> None:
        if self.seed is not None:
            random.setstate(self.saved[0])
            np.random.set_state(self.saved[1])
            torch.random.set_rng_state(self.saved[2])


def describe_sample(dataset: Any, index: int) -> str:
    """The file(s) behind ``dataset[index]``, as far as the dataset tells (basicsr keeps them in ``paths``)."""
    paths = getattr(dataset, 'paths', None)
    if isinstance(paths, Sequence) and len(paths):
        entry = paths[index % len(paths)]
        if isinstance(entry, dict):
            return ' / '.join(str(v) for k, v in entry.items() if k.endswith('_path'))
        return str(entry)
    return f'sample {index}'


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[-1] if text else type(exc).__name__
    prefix = f'{ESCError.__module__}.{ESCError.__name__}: '
    return line[len(prefix):] if line.startswith(prefix) else line


class TrainingSamples(data.Dataset):
    """A training dataset whose samples draw their randomness from their :class:`SeededIndex` and whose
    bad files stop the run with one line naming them, or are skipped (``bad_samples``)."""

    def __init__(self, dataset: data.Dataset, phase: str, bad_samples: str = 'error',
                 exclude: Sequence[int] = ()) -> None:
        if bad_samples not in BAD_SAMPLE_MODES:
            raise ESCError(f'datasets.{phase}.bad_samples: {bad_samples!r} is not one of {", ".join(BAD_SAMPLE_MODES)}')
        self.dataset, self.phase, self.bad_samples = dataset, phase, bad_samples
        excluded = set(exclude)
        self.indices: List[int] = [i for i in range(len(dataset)) if i not in excluded]
        if not self.indices:
            raise ESCError(f'datasets.{phase}: no usable samples left')

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int, seed: Optional[int]) -> Dict[str, Any]:
        """``dataset[indices[index]]`` with its generators seeded by ``seed``; an error names the file(s)."""
        source = self.indices[index]
        try:
            with _IsolatedGenerators(seed):
                return self.dataset[source]
        except ESCError as exc:  # ESC's datasets name their files already
            raise ESCError(_reason(exc)) from None
        except Exception as exc:
            raise ESCError(f'datasets.{self.phase}: {describe_sample(self.dataset, source)}: {_reason(exc)}') from None

    def __getitem__(self, index: int) -> Dict[str, Any]:
        seed = getattr(index, 'seed', None)
        for attempt in range(MAX_CONSECUTIVE_BAD):
            try:
                return self.load((index + attempt) % len(self), seed)
            except ESCError as exc:
                if self.bad_samples == 'error':
                    raise
                get_root_logger().warning(f'{exc}: skipped (bad_samples: skip)')
        raise ESCError(f'datasets.{self.phase}: {MAX_CONSECUTIVE_BAD} bad samples in a row from index {int(index)}; '
                       'is the dataset readable?')


def scan(samples: TrainingSamples, num_workers: int = 0) -> List[Tuple[int, str]]:
    """Load every sample once; the (index, one-line reason) of each that fails."""
    loader = data.DataLoader(_Probe(samples), batch_size=None, num_workers=num_workers)
    return [(index, reason) for index, reason in loader if reason is not None]


class _Probe(data.Dataset):
    def __init__(self, samples: TrainingSamples) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[int, Optional[str]]:
        try:
            self.samples.load(index, seed=index)
            return self.samples.indices[index], None
        except ESCError as exc:
            return self.samples.indices[index], str(exc)


def create_train_val_dataloader(opt: Dict[str, Any], logger: Any, resume_at: Optional[Tuple[int, int]] = None
                                ) -> Tuple[data.DataLoader, ResumableSampler, List[data.DataLoader], int, int]:
    """The training loader (basicsr's dataset and ``EnlargedSampler`` order, through :class:`ResumableSampler` and
    :class:`TrainingSamples`, one optimizer step's samples per iteration) and the validation loaders, each with a
    private generator; the number of epochs and iterations. ``resume_at`` is the (epoch, iteration) a resumed run
    continues after."""
    plan = training_batch_plan(opt)
    train_loader, sampler, val_loaders, total_epochs = None, None, [], 0
    total_iters = int(opt['train']['total_iter'])
    for phase, dataset_opt in opt['datasets'].items():
        if phase != 'train':
            val_set = build_dataset(dataset_opt)
            loader = build_dataloader(val_set, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'], sampler=None,
                                      seed=opt['manual_seed'])
            logger.info(f'Number of val images/folders in {dataset_opt["name"]}: {len(val_set)}')
            val_loaders.append(loader)
            continue
        dataset_opt = {**dataset_opt, 'batch_size_per_gpu': plan.per_process}  # what basicsr's loader reads
        samples = TrainingSamples(build_dataset(dataset_opt), 'train', dataset_opt.get('bad_samples', 'error'))
        if dataset_opt.get('scan'):
            samples = _scanned(samples, dataset_opt, logger)
        ratio = dataset_opt.get('dataset_enlarge_ratio', 1)
        order = EnlargedSampler(samples, opt['world_size'], opt['rank'], ratio)
        sampler = ResumableSampler(order, opt['manual_seed'], plan.per_process)
        if resume_at is not None:
            sampler.resume_at(*resume_at)
        train_loader = build_dataloader(samples, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'],
                                        sampler=sampler, seed=opt['manual_seed'])
        per_epoch = max(sampler.batches_per_epoch(), 1)  # the loader drops the last partial batch
        total_epochs = math.ceil(total_iters / per_epoch)
        logger.info(f'Training statistics: {len(samples)} training samples, dataset enlarge ratio {ratio}, '
                    f'{per_epoch} iterations per epoch; {total_epochs} epochs for {total_iters} iterations.')
    if train_loader is None:
        raise ESCError('datasets.train: missing (required for training)')
    for loader in (train_loader, *val_loaders):
        loader.generator = torch.Generator().manual_seed(int(opt['manual_seed']))
    return train_loader, sampler, val_loaders, total_epochs, total_iters


def _scanned(samples: TrainingSamples, dataset_opt: Dict[str, Any], logger: Any) -> TrainingSamples:
    logger.info(f'Scanning the {len(samples)} training samples (datasets.train.scan: true) ...')
    bad = scan(samples, int(dataset_opt.get('num_worker_per_gpu', 0)))
    for _, reason in bad:
        logger.warning(reason)
    if not bad:
        logger.info('Scan: every training sample loads.')
        return samples
    if samples.bad_samples == 'error':
        raise ESCError(f'datasets.train: {len(bad)} of {len(samples)} training samples do not load (listed above; '
                       'bad_samples: skip would leave them out)')
    logger.warning(f'Scan: leaving out {len(bad)} of {len(samples)} training samples (bad_samples: skip)')
    return TrainingSamples(samples.dataset, samples.phase, samples.bad_samples, exclude=[i for i, _ in bad])
