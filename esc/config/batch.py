"""The training batch of one optimizer step, the same on any number of processes.

basicsr's ``datasets.train.batch_size_per_gpu`` is per process, so the batch an optimizer step sees
grows with the number of GPUs (16 per GPU is the official recipe's 64 only on four). Three options of
``datasets.train`` state the batch instead:

- ``total_batch_size``: samples per optimizer step over all processes; each process takes
  ``total_batch_size / world size`` of them;
- ``max_batch_size_per_gpu``: the most samples one process runs through the network at once; a larger
  share is split into equal micro-batches whose gradients are accumulated before the step (the fewest
  micro-batches that fit);
- ``accumulate_grad_batches``: the number of micro-batches per step, stated instead of derived.

``batch_size_per_gpu`` keeps its meaning (samples per process per forward pass); with ``total_batch_size``
it fixes the micro-batch and must agree with the total on this world size. Without ``total_batch_size``
the total is ``world size × batch_size_per_gpu × accumulate_grad_batches``, as in basicsr.

One iteration is one optimizer step: the training loader of each process yields ``micro-batch ×
accumulation`` samples per iteration (:mod:`esc.data.resumable`), which
:meth:`esc.models.esc_model.ESCModel.optimize_parameters` splits into micro-batches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from esc.errors import ESCError

BATCH_KEYS = ('total_batch_size', 'batch_size_per_gpu', 'accumulate_grad_batches', 'max_batch_size_per_gpu')
"""The options of ``datasets.train`` that :func:`plan_batch` reads."""


@dataclass(frozen=True)
class BatchPlan:
    """How the samples of one optimizer step are spread over processes and forward/backward passes."""

    world_size: int
    micro_batch: int
    """Samples one process runs through the network in one forward/backward pass."""
    accumulation: int
    """Forward/backward passes (micro-batches) per process per optimizer step."""

    @property
    def per_process(self) -> int:
        """Samples one process contributes to an optimizer step: the batch its training loader yields."""
        return self.micro_batch * self.accumulation

    @property
    def total(self) -> int:
        """Samples per optimizer step over all processes."""
        return self.per_process * self.world_size

    def describe(self) -> str:
        return (f'Batch: world size {self.world_size}, per-GPU batch {self.micro_batch}, gradient accumulation '
                f'{self.accumulation}, total batch {self.total} per optimizer step (iteration)')


def _positive(dataset_opt: Mapping[str, Any], key: str, where: str) -> Optional[int]:
    value = dataset_opt.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ESCError(f'{where}.{key}: must be a positive integer, got {value!r}')
    return value


def check_batch_options(dataset_opt: Mapping[str, Any], where: str = 'datasets.train') -> None:
    """What holds on any number of processes: positive integers, and the keys that need ``total_batch_size``."""
    values = {key: _positive(dataset_opt, key, where) for key in BATCH_KEYS}
    if values['total_batch_size'] is None:
        if values['batch_size_per_gpu'] is None:
            raise ESCError(f'{where}.total_batch_size: missing (required for training; or batch_size_per_gpu)')
        if values['max_batch_size_per_gpu'] is not None:
            raise ESCError(f'{where}.max_batch_size_per_gpu: applies to total_batch_size only, which is not given')
    cap, micro = values['max_batch_size_per_gpu'], values['batch_size_per_gpu']
    if cap is not None and micro is not None and micro > cap:
        raise ESCError(f'{where}.batch_size_per_gpu: {micro} exceeds max_batch_size_per_gpu {cap}')


def plan_batch(dataset_opt: Mapping[str, Any], world_size: int, where: str = 'datasets.train') -> BatchPlan:
    """The :class:`BatchPlan` the options ask for on ``world_size`` processes; a one-line ESCError naming the
    option at fault where the total cannot be split that way."""
    check_batch_options(dataset_opt, where)
    total, micro = dataset_opt.get('total_batch_size'), dataset_opt.get('batch_size_per_gpu')
    accumulation, cap = dataset_opt.get('accumulate_grad_batches'), dataset_opt.get('max_batch_size_per_gpu')
    if total is None:
        return BatchPlan(world_size, micro, accumulation or 1)
    if total % world_size:
        raise ESCError(f'{where}.total_batch_size: {total} is not divisible by the world size {world_size} '
                       f'(the number of processes); choose a total that is, or another number of GPUs')
    share = total // world_size
    if micro is not None:
        if share % micro:
            raise ESCError(f'{where}.batch_size_per_gpu: {micro} disagrees with total_batch_size {total} on {world_size} '
                           f'process(es) ({share} per process is not a multiple of it); leave batch_size_per_gpu out '
                           f'and bound the per-GPU batch with max_batch_size_per_gpu')
        if accumulation is not None and accumulation != share // micro:
            raise ESCError(f'{where}.accumulate_grad_batches: {accumulation} × batch_size_per_gpu {micro} × world size '
                           f'{world_size} is {accumulation * micro * world_size}, not total_batch_size {total}')
        return BatchPlan(world_size, micro, share // micro)
    if accumulation is not None:
        if share % accumulation:
            raise ESCError(f'{where}.total_batch_size: {total} is not divisible by world size {world_size} × '
                           f'accumulate_grad_batches {accumulation} = {world_size * accumulation}')
        if cap is not None and share // accumulation > cap:
            raise ESCError(f'{where}.accumulate_grad_batches: {accumulation} leaves {share // accumulation} samples per '
                           f'GPU and pass, over max_batch_size_per_gpu {cap}')
        return BatchPlan(world_size, share // accumulation, accumulation)
    accumulation = next(n for n in range(1, share + 1) if share % n == 0 and (cap is None or share // n <= cap))
    return BatchPlan(world_size, share // accumulation, accumulation)


def training_batch_plan(opt: Mapping[str, Any]) -> BatchPlan:
    """The :class:`BatchPlan` of a parsed training option set (``world_size`` as the training loop set it)."""
    return plan_batch(opt['datasets']['train'], int(opt.get('world_size', 1)))
