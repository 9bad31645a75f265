"""``ESCModel``: basicsr's SRModel with what ESC training and evaluation need on top.

- evaluation pads the LR input by reflection to a multiple of ``val.pad_to_multiple`` (the
  official evaluation uses the window size, 32) and crops the output back to ``scale``×; large
  images can be evaluated in overlapping tiles (``val.tile``) to bound memory;
- any ``torch.optim`` optimizer (the official recipe uses AdamW);
- DistributedDataParallel also on CPU (gloo), where basicsr assumes a CUDA device;
- pretrained weights load with one-line errors (missing file, missing ``param_key_g``, a
  checkpoint of another architecture) and ×2 checkpoints resample into ×3/×4 networks;
- checkpoints and training states are written to a temporary file and renamed, so a kill during
  a save never leaves a truncated file behind; network weights as ``.pth`` or, with
  ``logger.weights_format: safetensors``, as safetensors files that carry the network options and scale
  (:mod:`esc.utils.checkpoint`);
- a non-finite loss never reaches the weights: training stops with a line naming the iteration and
  the loss term, or skips the step (``train.nonfinite_loss: stop | skip``), on every rank together;
- training states carry every rank's random-generator states (and what a subclass adds, see
  :meth:`ESCModel.rank_training_state`), restored on resume, so that with
  :mod:`esc.data.resumable` a resumed run continues exactly as an uninterrupted one; only the newest
  ``logger.keep_last`` states (and the weights they need) are kept, pruned after the new one is complete;
- mixed precision, ``torch.compile`` and channels-last for training and evaluation (``use_amp``, ``amp_bf16``,
  ``use_compile``, ``use_channels_last`` in ``train`` and ``val``; :mod:`esc.models.amp`);
- gradient accumulation, so that the batch of an optimizer step is the same on any number of GPUs
  (``datasets.train.total_batch_size``, :mod:`esc.utils.batch`): each iteration's batch is split into
  micro-batches, DDP synchronises the last one's gradients only, the summed gradients are divided by the
  number of micro-batches before the (one) optimizer step and EMA update; the learning-rate schedule, the
  warm-up and checkpoints count iterations, which are optimizer steps.
"""
from __future__ import annotations

import contextlib
import os.path as osp
import random
from collections import OrderedDict
from typing import Any, ContextManager, Dict, List, Optional, Sequence, Tuple

import numpy as np

import torch
import torch.distributed as dist
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from esc.archs.attention import describe_attention
from esc.archs.layers import pad_to_multiple
from esc.errors import ESCError
from esc.models.amp import (AMP_KEYS, ScaledStep, TrainingPrecision, accelerate_training, is_compiled,
                            mark_dynamic_size, read_acceleration, uncompiled)
from esc.utils.batch import BatchPlan, training_batch_plan
from esc.utils.checkpoint import atomic_torch_save, prune_checkpoints, read_state_dict, save_weights
from esc.utils.options import INT, MODEL_KEYS, STR, optional
from esc.utils.tiling import DEFAULT_OVERLAP, tiled_forward


NONFINITE_MODES = ('stop', 'skip')


def rng_states() -> Dict[str, Any]:
    """This process's python, numpy, torch and CUDA generator states, as tensors and ints (weights-only loadable)."""
    version, mt_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        'python': [version, torch.tensor(mt_state, dtype=torch.int64), gauss],
        'numpy': [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        'torch': torch.random.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    version, mt_state, gauss = states['python']
    random.setstate((version, tuple(int(v) for v in mt_state.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = states['numpy']
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.random.set_rng_state(states['torch'].cpu())
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states['cuda']])


class NonFiniteLoss(Exception):
    """A loss term came out NaN or infinite (raised before backward, so nothing was updated)."""

    def __init__(self, name: str, value: float) -> None:
        super().__init__(f'loss {name} is {value}')
        self.name, self.value = name, value


class FiniteLoss(nn.Module):
    """A loss module whose result terms (``names``, in the order it returns them) are checked finite;
    under DDP the ranks agree first, so that all of them stop or skip together."""

    def __init__(self, loss: nn.Module, names: Sequence[str], precision: Optional[TrainingPrecision] = None) -> None:
        super().__init__()
        self.loss, self.names, self.precision = loss, tuple(names), precision

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with self.precision.autocast() if self.precision else contextlib.nullcontext():
            result = self.loss(*args, **kwargs)
        terms = result if isinstance(result, tuple) else (result,)
        for name, value in zip(self.names, terms):
            if value is None:
                continue
            finite = torch.isfinite(value.detach()).all().float()
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(finite, op=dist.ReduceOp.MIN)
            if not finite:
                raise NonFiniteLoss(name, value.detach().float().mean().item())
        if self.precision is None:
            return result
        return tuple(map(self.precision.loss_term, result)) if isinstance(result, tuple) else self.precision.loss_term(result)


class AccumulatedStep:
    """Stands in for the optimizer (or :class:`esc.models.amp.ScaledStep`) during micro-batch ``index`` of ``count``
    whose gradients make one optimizer step: gradients are zeroed before the first micro-batch only; after the
    last, their sum is divided by ``count`` — the mean over the whole batch, as one pass over it gives with a
    mean-reduced loss — and the optimizer steps."""

    def __init__(self, optimizer: Any, index: int, count: int) -> None:
        self.optimizer, self.index, self.count = optimizer, index, count

    @property
    def steps(self) -> bool:
        """Whether this micro-batch ends the optimizer step."""
        return self.index == self.count - 1

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self.index == 0:
            self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        if not self.steps:
            return
        with torch.no_grad():
            for group in self.optimizer.param_groups:
                for parameter in group['params']:
                    if parameter.grad is not None:
                        parameter.grad.div_(self.count)
        self.optimizer.step()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)


@MODEL_REGISTRY.register()
class ESCModel(SRModel):
    """Single-image SR with an ESC network (any basicsr SR network works too)."""

    supports_compile = True
    """Whether ``use_compile`` applies: the model calls its networks (not another method of them) to evaluate."""
    supports_fp16_training = True
    """Whether the training step can take the fp16 gradient scaler (one optimizer stepped per iteration)."""
    micro_batch_fields: Tuple[str, ...] = ('lq', 'gt')
    """The batch tensors the training step reads, split along the batch for gradient accumulation; empty where
    the step cannot accumulate."""

    def __init__(self, opt: Dict[str, Any]) -> None:
        if opt.get('val') is not None:
            opt['val'].setdefault('suffix', None)  # basicsr reads it unguarded when saving images
        self._attention_lines: set = set()  # what check_attention has logged (it runs inside SRModel.__init__)
        # basicsr's BaseModel picks the device the same way; the options are read before any network is built
        self.acceleration = read_acceleration(opt, torch.device('cuda' if opt['num_gpu'] != 0 else 'cpu'))
        self._check_acceleration()
        super().__init__(opt)
        evaluated, evaluation = self.evaluation_network(), self.acceleration['val']
        if evaluation.compiled and not is_compiled(evaluated):
            evaluation.fast.apply(evaluated, dynamic=None)  # test() marks height and width dynamic
        phases = (('training', 'train'),) * bool(self.is_train) + (('evaluation', 'val'),)
        get_root_logger().info('Precision and compilation: ' + '; '.join(
            f'{name} {self.acceleration[phase]}' for name, phase in phases))

    def _check_acceleration(self) -> None:
        """Refuse, in one line, what this model cannot accelerate."""
        for phase, acceleration in self.acceleration.items():
            if acceleration.compiled and not self.supports_compile:
                raise ESCError(f'{phase}.use_compile: {type(self).__name__} does not support torch.compile '
                               f'(it evaluates through a method other than the forward pass)')
        if self.acceleration['train'].precision == 'fp16' and not self.supports_fp16_training:
            raise ESCError(f'train.amp_bf16: {type(self).__name__} cannot train in fp16 (its step updates two '
                           f'networks, one gradient scaler would serve both); set amp_bf16: true for bf16')

    def evaluation_network(self) -> nn.Module:
        """The network evaluation runs: the EMA network where there is one, else the bare trained network (under
        DDP only rank 0 validates, and a DDP forward would wait for the others)."""
        return self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)

    def evaluation_mode(self, net: nn.Module) -> ContextManager:
        """What evaluation of ``net`` runs under: no gradients, ``val``'s autocast, and eagerly where ``net`` was
        compiled for training only."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad())
        stack.enter_context(self.acceleration['val'].autocast())
        if is_compiled(net) and not self.acceleration['val'].compiled:
            stack.enter_context(uncompiled(net))
        return stack

    def init_training_settings(self) -> None:
        mode = self.opt['train'].get('nonfinite_loss', 'stop')
        if mode not in NONFINITE_MODES:
            raise ESCError(f"train.nonfinite_loss: {mode!r} is not one of {', '.join(NONFINITE_MODES)}")
        self.nonfinite_loss = mode
        has_training_data = 'train' in (self.opt.get('datasets') or {})  # not so for a model built by hand
        self.batch_plan: Optional[BatchPlan] = training_batch_plan(self.opt) if has_training_data else None
        if self.batch_plan is not None and self.batch_plan.accumulation > 1 and not self.micro_batch_fields:
            raise ESCError(f'datasets.train.total_batch_size: {type(self).__name__} cannot accumulate gradients (its '
                           f'step updates more than one network), but {self.batch_plan.describe().lower()}; raise '
                           f'max_batch_size_per_gpu or use more GPUs')
        super().init_training_settings()
        training = self.acceleration['train']
        self.training_precision = TrainingPrecision(training)
        for attr, names in (('cri_pix', ('l_pix',)), ('cri_perceptual', ('l_percep', 'l_style'))):
            loss: Optional[nn.Module] = getattr(self, attr, None)
            if loss is not None:
                setattr(self, attr, FiniteLoss(loss, names, self.training_precision))
        if hasattr(self, 'net_g_ema'):
            self.net_g_ema.to(memory_format=self.memory_format())
        net = self.get_bare_model(self.net_g)
        if training.precision != 'fp32' or training.fast.channels_last:
            accelerate_training(net, training)
        if training.compiled:
            training.fast.apply(net, dynamic=None if self.evaluation_network() is net else False)

    def optimize_parameters(self, current_iter: int) -> None:
        """basicsr's step, refused before backward when a loss term is not finite (see the module doc); under
        fp16 with a gradient scaler (:class:`esc.models.amp.ScaledStep`)."""
        optimizer, scaler, net = self.optimizer_g, self.training_precision.scaler, self.get_bare_model(self.net_g)
        try:
            stepper = optimizer if scaler is None else ScaledStep(optimizer, scaler)
            compiled_for_evaluation_only = is_compiled(net) and not self.acceleration['train'].compiled
            with uncompiled(net) if compiled_for_evaluation_only else contextlib.nullcontext():
                self._accumulated_step(stepper, current_iter)
        except NonFiniteLoss as exc:
            self.optimizer_g.zero_grad(set_to_none=True)
            # GAN steps update G before D computes its losses (l_d_real, l_d_fake)
            untouched = 'the discriminator was' if exc.name.startswith('l_d_') else 'the weights were'
            message = f'iteration {current_iter}: {exc}; {untouched} not updated'
            if self.nonfinite_loss == 'stop':
                raise ESCError(f'{message} (train.nonfinite_loss: skip would skip such steps)') from None
            get_root_logger().warning(f'{message}: step skipped')
        finally:
            self.optimizer_g = optimizer

    def _accumulated_step(self, stepper: Any, current_iter: int) -> None:
        """The parent class's training step, once per micro-batch of :attr:`batch_plan` (once for the whole batch
        without accumulation); the logged losses are the micro-batches' mean."""
        count = 1 if self.batch_plan is None else self.batch_plan.accumulation
        if count == 1:
            self.optimizer_g = stepper
            super().optimize_parameters(current_iter)
            return
        whole = {name: getattr(self, name) for name in self.micro_batch_fields if hasattr(self, name)}
        sizes = {batch.shape[0] for batch in whole.values()}
        if len(sizes) != 1 or next(iter(sizes)) % count:
            raise ESCError(f'iteration {current_iter}: a batch of {sorted(sizes)} samples does not split into {count} '
                           f'equal micro-batches ({self.batch_plan.describe()})')
        parts = {name: batch.chunk(count) for name, batch in whole.items()}
        logs = []
        try:
            for index in range(count):
                for name in whole:
                    setattr(self, name, parts[name][index])
                self.optimizer_g = AccumulatedStep(stepper, index, count)
                synchronise = index == count - 1 or not isinstance(self.net_g, DistributedDataParallel)
                with contextlib.nullcontext() if synchronise else self.net_g.no_sync():
                    super().optimize_parameters(current_iter)
                logs.append(self.log_dict)
        finally:
            for name, batch in whole.items():
                setattr(self, name, batch)
            self.optimizer_g = stepper
        self.log_dict = OrderedDict((key, sum(log[key] for log in logs) / count) for key in logs[0])

    def model_ema(self, decay: float = 0.999) -> None:
        """basicsr's EMA update, after optimizer steps only (not after a micro-batch that only accumulated)."""
        step = getattr(self, 'optimizer_g', None)
        if isinstance(step, AccumulatedStep) and not step.steps:
            return
        super().model_ema(decay)

    def memory_format(self) -> torch.memory_format:
        """The networks' weight layout: channels-last where training or evaluation asks for it."""
        channels_last = any(a.fast.channels_last for a in self.acceleration.values())
        return torch.channels_last if channels_last else torch.preserve_format

    def model_to_device(self, net: nn.Module) -> nn.Module:
        net = net.to(self.device, memory_format=self.memory_format())  # before DDP builds its gradient buckets
        self.check_attention(net)
        if self.opt['dist']:
            find_unused = self.opt.get('find_unused_parameters', False)
            device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
            return DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused)
        if self.opt['num_gpu'] > 1:
            return DataParallel(net)
        return net

    def check_attention(self, net: nn.Module) -> None:
        """Log which attention backend each attention configuration of ``net`` runs here and why; an explicit
        ``attn_type`` that cannot run on this device stops here, before any training or evaluation."""
        for line in describe_attention(net, self.device, training=bool(self.opt.get('is_train'))):
            if line not in self._attention_lines:
                self._attention_lines.add(line)
                get_root_logger().info(line)

    def get_optimizer(self, optim_type: str, params, lr: float, **kwargs) -> torch.optim.Optimizer:
        """Any optimizer of ``torch.optim`` by name (basicsr 1.4.2 knows only Adam; ESC trains with AdamW)."""
        optimizer = getattr(torch.optim, optim_type, None)
        if not (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)):
            raise ESCError(f'train.optim_g.type: {optim_type!r} is not an optimizer of torch.optim')
        return optimizer(params, lr, **kwargs)

    def feed_data(self, data: Dict[str, Any]) -> None:
        """Take a batch; an HR image that is not ``scale``× its LR image is a one-line error naming both files
        (a batch of HR images only, which a real-world model degrades itself, passes unchecked)."""
        if 'gt' in data and 'lq' in data:
            scale = self.opt.get('scale', 1)
            (lh, lw), (gh, gw) = data['lq'].shape[-2:], data['gt'].shape[-2:]
            if (gh, gw) != (lh * scale, lw * scale):
                gt_path, lq_path = (data.get(k, ['?'])[0] for k in ('gt_path', 'lq_path'))
                raise ESCError(f'{gt_path}: HR is {gw}x{gh}, but its LR image {lq_path} ({lw}x{lh}) x{scale} is '
                               f'{lw * scale}x{lh * scale}; was the LR folder made for another scale?')
        super().feed_data(data)

    def load_network(self, net: nn.Module, load_path: str, strict: bool = True, param_key: str = 'params') -> None:
        state_dict = read_state_dict(load_path, param_key)
        net = self.get_bare_model(net)
        get_root_logger().info(f'Loading {type(net).__name__} from {load_path} [{param_key}].')
        net.load_state_dict(state_dict, strict=strict)

    def test(self) -> None:
        """Super-resolve ``self.lq``, whole or in overlapping tiles (``val.tile`` and ``val.tile_overlap``,
        in LR pixels; e.g. ``--force_yml val:tile=256`` for Urban100/Manga109 on a small GPU or the CPU)."""
        net = self.evaluation_network()
        was_training = net.training
        net.eval()
        val_opt = self.opt.get('val') or {}
        multiple, scale = val_opt.get('pad_to_multiple'), self.opt.get('scale', 1)
        evaluation = self.acceleration['val']

        def upscale(lq: torch.Tensor) -> torch.Tensor:
            h, w = lq.shape[-2:]
            x = evaluation.fast.input(pad_to_multiple(lq, multiple) if multiple else lq)
            output = net(mark_dynamic_size(x) if evaluation.compiled else x)
            return output[..., :h * scale, :w * scale].float()

        with self.evaluation_mode(net):
            tile = val_opt.get('tile')
            if tile:
                self.output = tiled_forward(upscale, self.lq, scale, int(tile), int(val_opt.get('tile_overlap', DEFAULT_OVERLAP)),
                                            align=getattr(net, 'window_size', 1))
            else:
                self.output = upscale(self.lq)
        net.train(was_training)

    @master_only
    def save_network(self, net, net_label: str, current_iter, param_key='params') -> None:
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ESCError(f'save_network: {len(nets)} networks but {len(keys)} param keys')
        save_dict = {
            key: {k: v.cpu() for k, v in self.get_bare_model(n).state_dict().items()} for n, key in zip(nets, keys)
        }
        label = 'latest' if current_iter == -1 else current_iter
        network_key = 'network_' + net_label[len('net_'):] if net_label.startswith('net_') else None
        fixed_scale = getattr(self.get_bare_model(nets[0]), 'fixed_scale', True)  # ESC+LTE serves any scale
        save_weights(osp.join(self.opt['path']['models'], f'{net_label}_{label}'), save_dict,
                     (self.opt.get('logger') or {}).get('weights_format', 'pth'), network=self.opt.get(network_key),
                     scale=self.opt.get('scale') if network_key == 'network_g' and fixed_scale else None)

    def save(self, epoch: int, current_iter: int) -> None:
        """Weights, then the training state (with every rank's :meth:`rank_training_state`), then pruning
        (``logger.keep_last``)."""
        self._rank_states: List[Dict[str, Any]] = [self.rank_training_state()]
        if dist.is_available() and dist.is_initialized():
            gathered: List[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, self._rank_states[0])
            self._rank_states = gathered
        super().save(epoch, current_iter)
        keep_last = (self.opt.get('logger') or {}).get('keep_last')
        if keep_last and current_iter != -1 and self.opt['rank'] == 0:
            prune_checkpoints(self.opt['path']['models'], self.opt['path']['training_states'], keep_last)

    def rank_training_state(self) -> Dict[str, Any]:
        """What this process must get back on resume besides weights, optimizers and schedulers: its generator
        states (subclasses add what else they carry from step to step)."""
        return {'rng': rng_states()}

    def load_rank_training_state(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`rank_training_state` returned."""
        set_rng_states(state['rng'])

    @master_only
    def save_training_state(self, epoch: int, current_iter: int) -> None:
        if current_iter == -1:
            return
        state = {
            'epoch': epoch,
            'iter': current_iter,
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
            'ranks': getattr(self, '_rank_states', [self.rank_training_state()]),
        }
        if self.training_precision.scaler is not None:
            state['grad_scaler'] = self.training_precision.scaler.state_dict()
        atomic_torch_save(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def resume_training(self, resume_state: Dict[str, Any]) -> None:
        """Optimizers and schedulers (basicsr), then this rank's :meth:`rank_training_state` as it was saved."""
        super().resume_training(resume_state)
        scaler = self.training_precision.scaler
        if scaler is not None and 'grad_scaler' in resume_state:
            scaler.load_state_dict(resume_state['grad_scaler'])
        elif scaler is not None:
            get_root_logger().warning('The training state holds no gradient scaler state (not written by an fp16 run): '
                                      'the scale starts afresh.')
        states = resume_state.get('ranks')
        rank, world_size = self.opt.get('rank', 0), self.opt.get('world_size', 1)
        if not states:
            get_root_logger().warning('The training state holds no per-process state (written by an older version): '
                                      'the resumed run will not repeat an uninterrupted one exactly.')
        elif len(states) != world_size:
            get_root_logger().warning(f'The training state was written by {len(states)} processes, not {world_size}: '
                                      'the resumed run will not repeat an uninterrupted one exactly.')
            self.load_rank_training_state(states[0])
        else:
            self.load_rank_training_state(states[rank])


MODEL_KEYS['ESCModel'] = {'train': {'nonfinite_loss': STR, **AMP_KEYS},
                          'val': {'pad_to_multiple': optional(INT), 'tile': optional(INT), 'tile_overlap': INT,
                                  **AMP_KEYS}}
