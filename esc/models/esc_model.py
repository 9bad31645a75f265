"""``ESCModel``: ESC's training step and evaluation on basicsr's SRModel (networks, losses, optimizers, schedulers).

- the training step is :meth:`ESCModel.optimize_parameters`, one optimizer step read top to bottom (micro-batches,
  autocast, finite check, scaled backward, step, EMA); subclasses change only the losses
  (:meth:`ESCModel.training_losses`) or, for two networks, reuse its pieces (:mod:`esc.models.real_model`);
- gradient accumulation, so that the batch of an optimizer step is the same on any number of GPUs
  (``datasets.train.total_batch_size``, :mod:`esc.config.batch`): each iteration's batch is split into
  micro-batches, DDP synchronises the last one's gradients only, and each micro-batch's loss is divided by their
  number (the mean over the whole batch); the learning-rate schedule, the warm-up and checkpoints count
  iterations, which are optimizer steps;
- a non-finite loss never reaches the weights: training stops with a line naming the iteration and the loss term,
  or skips the step (``train.nonfinite_loss: stop | skip``, at most ``train.nonfinite_max_skips`` in a row), on
  every rank together; weights with non-finite values are saved only with an error line saying so;
- mixed precision, ``torch.compile`` and channels-last for training and evaluation (``use_amp``, ``amp_bf16``,
  ``use_compile``, ``use_channels_last`` in ``train`` and ``val``; :mod:`esc.acceleration`), a compiled network
  being a wrapper beside the plain one (:meth:`ESCModel.runner`), which alone is saved, EMA-averaged and loaded;
- evaluation pads the LR input by reflection to a multiple of ``val.pad_to_multiple`` (the
  official evaluation uses the window size, 32) and crops the output back to ``scale``×; large
  images can be evaluated in overlapping tiles (``val.tile``) to bound memory; validation during training shows
  the first ``val.tb_images`` SR images of each set in tensorboard;
- any ``torch.optim`` optimizer (the official recipe uses AdamW);
- DistributedDataParallel also on CPU (gloo), where basicsr assumes a CUDA device;
- pretrained weights load with one-line errors (missing file, missing ``param_key_g``, a
  checkpoint of another architecture) and ×2 checkpoints resample into ×3/×4 networks;
- checkpoints and training states are written to a temporary file and renamed, so a kill during
  a save never leaves a truncated file behind; network weights as ``.pth`` or, with
  ``logger.weights_format: safetensors``, as safetensors files that carry the network options and scale
  (:mod:`esc.io.checkpoint`);
- a model with a :attr:`ESCModel.degradation` (the real-world models) synthesises each training batch's LR images
  from its HR images in :meth:`ESCModel.feed_data` (:mod:`esc.models.degradation`); batches with LR images
  (validation) are taken as they are;
- training states carry every rank's random-generator states and the degradation's queue (and what a subclass adds,
  see :meth:`ESCModel.rank_training_state`), restored on resume, so that with
  :mod:`esc.data.resumable` a resumed run continues exactly as an uninterrupted one; only the newest
  ``logger.keep_last`` states (and the weights they need) are kept, pruned after the new one is complete.
"""
from __future__ import annotations

import contextlib
import os.path as osp
import random
from collections import OrderedDict
from typing import Any, ContextManager, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

import torch
import torch.distributed as dist
from basicsr.models.sr_model import SRModel
from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger, imwrite, tensor2img
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY
from torch import Tensor, nn
from torch.nn.parallel import DataParallel, DistributedDataParallel
from tqdm import tqdm

from esc.acceleration import AMP_KEYS, CompiledNetworks, mark_dynamic_size, read_acceleration
from esc.archs.attention import describe_attention
from esc.archs.layers import pad_to_multiple
from esc.config.batch import BatchPlan, training_batch_plan
from esc.config.validation import INT, MODEL_KEYS, STR, optional
from esc.errors import ESCError
from esc.io.checkpoint import atomic_torch_save, prune_checkpoints, read_state_dict, save_weights
from esc.io.memory_estimate import Workload, check_memory, window_workload
from esc.io.state_dict_checks import check_weights
from esc.models.degradation import BATCH_FIELDS, RealESRGANDegradation
from esc.utils.tiling import DEFAULT_OVERLAP, tiled_forward


NONFINITE_MODES = ('stop', 'skip')
DEFAULT_TB_IMAGES = 3
"""``val.tb_images``: SR images per validation set shown in tensorboard during training."""
DEFAULT_MAX_SKIPS = 10
"""``train.nonfinite_max_skips``: non-finite steps in a row that ``nonfinite_loss: skip`` skips before stopping."""


def network_workload(opt: Mapping[str, Any]) -> Workload:
    """What ``network_g`` runs on in this run, for its memory estimate (:mod:`esc.io.memory_estimate`): training,
    one micro-batch of LR patches (``datasets.train.gt_size`` / ``scale``); testing, a ``val.tile`` tile, else one
    attention window (image sizes are not known before the images are read)."""
    network = opt.get('network_g') or {}
    if opt.get('is_train'):
        dataset = (opt.get('datasets') or {}).get('train') or {}
        gt_size, scale = dataset.get('gt_size'), opt.get('scale')
        try:
            batch = training_batch_plan(opt).micro_batch
        except (ESCError, KeyError, TypeError):
            batch = 1
        if isinstance(gt_size, int) and isinstance(scale, int) and scale > 0 and gt_size >= scale:
            side = gt_size // scale
            return Workload(side, side, batch, training=True,
                            description=f'training on {batch} × {side}×{side} LR patches a pass')
        window = window_workload(network, batch)
        return Workload(window.height, window.width, batch, training=True, description=f'training ({window.text})')
    tile = (opt.get('val') or {}).get('tile')
    if isinstance(tile, int) and tile > 0:
        return Workload(tile, tile, description=f'testing in tiles of {tile}×{tile}')
    return window_workload(network)


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

    def __init__(self, name: str, value: float, losses: Dict[str, Tensor]) -> None:
        super().__init__(f'loss {name} is {value}')
        self.name, self.value, self.losses = name, value, losses


def mean_losses(parts: Sequence[Dict[str, Tensor]]) -> 'OrderedDict[str, Tensor]':
    """The micro-batches' loss terms averaged, term by term (what one pass over the whole batch logs)."""
    return OrderedDict((key, sum(part[key].detach() for part in parts) / len(parts)) for key in parts[0])


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
    loss_prefix = 'l_'
    """How :meth:`training_losses` names its terms in the log (``l_pix``, ``l_percep``, ``l_style``)."""
    degradation: Optional[RealESRGANDegradation] = None
    """What synthesises LR images from the training batches' HR images, where the model has one (the real-world
    models, :mod:`esc.models.real_model`); :meth:`feed_data` uses it, and the training state carries its queue."""

    def __init__(self, opt: Dict[str, Any]) -> None:
        self._attention_lines: set = set()  # what check_attention has logged (it runs inside SRModel.__init__)
        # basicsr's BaseModel picks the device the same way; the options are read before any network is built
        device = torch.device('cuda' if opt['num_gpu'] != 0 else 'cpu')
        self.acceleration = read_acceleration(opt, device)
        self._check_acceleration()
        self.compiled_networks = CompiledNetworks()
        check_memory(opt['network_g'], network_workload(opt), 'network_g', device)  # before basicsr builds it
        super().__init__(opt)
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

    def runner(self, phase: str, net: nn.Module) -> nn.Module:
        """What runs ``net`` in ``phase`` ('train' or 'val'): ``net`` itself, or where that phase compiles
        (``use_compile``), a compiled wrapper of it that shares its parameters, built once and kept beside it.
        ``net`` stays what is saved, EMA-averaged and loaded, and runs eagerly when called directly, so a network
        compiled for one phase only runs eagerly in the other. Training compiles for its fixed patch shape;
        evaluation for height and width marked dynamic (:func:`esc.acceleration.mark_dynamic_size`)."""
        fast = self.acceleration[phase].fast
        return self.compiled_networks.runner(phase, net, fast, dynamic=False if phase == 'train' else None)

    def evaluation_mode(self, net: nn.Module) -> ContextManager:
        """What evaluation of ``net`` runs under: no gradients and ``val``'s autocast."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad())
        stack.enter_context(self.acceleration['val'].autocast())
        return stack

    def init_training_settings(self) -> None:
        train = self.opt['train']
        mode = train.get('nonfinite_loss', 'stop')
        if mode not in NONFINITE_MODES:
            raise ESCError(f"train.nonfinite_loss: {mode!r} is not one of {', '.join(NONFINITE_MODES)}")
        self.nonfinite_loss, self.skipped_in_a_row = mode, 0
        self.max_skipped_in_a_row = train.get('nonfinite_max_skips', DEFAULT_MAX_SKIPS)
        if isinstance(self.max_skipped_in_a_row, bool) or not isinstance(self.max_skipped_in_a_row, int) \
                or self.max_skipped_in_a_row < 1:
            raise ESCError(f'train.nonfinite_max_skips: must be a whole number of at least 1, '
                           f'got {self.max_skipped_in_a_row!r}')
        has_training_data = 'train' in (self.opt.get('datasets') or {})  # not so for a model built by hand
        self.batch_plan: Optional[BatchPlan] = training_batch_plan(self.opt) if has_training_data else None
        if self.batch_plan is not None and self.batch_plan.accumulation > 1 and not self.micro_batch_fields:
            raise ESCError(f'datasets.train.total_batch_size: {type(self).__name__} cannot accumulate gradients (its '
                           f'step updates more than one network), but {self.batch_plan.describe().lower()}; raise '
                           f'max_batch_size_per_gpu or use more GPUs')
        super().init_training_settings()
        training = self.acceleration['train']
        self.grad_scaler: Optional[torch.amp.GradScaler] = (
            torch.amp.GradScaler(training.device_type) if training.precision == 'fp16' else None)
        if hasattr(self, 'net_g_ema'):
            self.net_g_ema.to(memory_format=self.memory_format())

    # --- the training step -------------------------------------------------------------------------------------
    def optimize_parameters(self, current_iter: int) -> None:
        """One optimizer step (one iteration), top to bottom:

        1. the batch is split into micro-batches (gradient accumulation: ``datasets.train.total_batch_size``);
        2. for each: the forward pass and the losses under ``train``'s autocast (:meth:`training_losses`), a check
           that every term is finite on every rank, and backward of their sum divided by the number of
           micro-batches (the mean over the whole batch), scaled by the fp16 gradient scaler where there is one;
           DDP synchronises gradients on the last micro-batch only;
        3. the optimizer step (with fp16: unscaled, and skipped on an overflow by the scaler);
        4. the EMA update.

        A non-finite loss stops the run in one line, or with ``train.nonfinite_loss: skip`` skips the step (at most
        ``train.nonfinite_max_skips`` in a row); nothing is updated either way, and the log shows the real value."""
        count = 1 if self.batch_plan is None else self.batch_plan.accumulation
        self.optimizer_g.zero_grad(set_to_none=True)
        parts = []
        try:
            for index, batch in enumerate(self.micro_batches(count, current_iter)):
                with self.gradient_sync(last=index == count - 1):
                    with self.acceleration['train'].autocast():
                        losses = self.training_losses(batch)
                    losses = OrderedDict((key, value.float()) for key, value in losses.items())
                    self.check_finite(losses)
                    self.backward(sum(losses.values()) / count)
                parts.append(losses)
        except NonFiniteLoss as exc:
            self.optimizer_g.zero_grad(set_to_none=True)
            self.skip_step(exc, current_iter, 'the weights were')
            return
        self.skipped_in_a_row = 0
        self.optimizer_step(self.optimizer_g)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
        self.log_dict = self.reduce_loss_dict(mean_losses(parts))

    def training_losses(self, batch: Dict[str, Tensor]) -> 'OrderedDict[str, Tensor]':
        """The loss terms of one (micro-)batch: L1 (``pixel_opt``) and perceptual/style (``perceptual_opt``) of
        ``net_g(lq)`` against ``gt`` (the perceptual terms against ``perceptual_gt`` where the batch has one: the GAN
        stage sharpens its targets per term), named with :attr:`loss_prefix`. Subclasses with another data flow
        override this and nothing else; the GAN stage adds its adversarial term to these."""
        self.output = self.runner('train', self.net_g)(self.acceleration['train'].fast.input(batch['lq'])).float()
        losses: 'OrderedDict[str, Tensor]' = OrderedDict()
        prefix = self.loss_prefix
        if self.cri_pix:
            losses[f'{prefix}pix'] = self.cri_pix(self.output, batch['gt'])
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(self.output, batch.get('perceptual_gt', batch['gt']))
            for key, value in ((f'{prefix}percep', l_percep), (f'{prefix}style', l_style)):
                if value is not None:
                    losses[key] = value
        return losses

    def micro_batches(self, count: int, current_iter: int) -> List[Dict[str, Tensor]]:
        """The batch's :attr:`micro_batch_fields`, split into ``count`` equal parts along the batch."""
        whole = {name: getattr(self, name) for name in self.micro_batch_fields if hasattr(self, name)}
        if count == 1:
            return [whole]
        sizes = {batch.shape[0] for batch in whole.values()}
        if len(sizes) != 1 or next(iter(sizes)) % count:
            raise ESCError(f'iteration {current_iter}: a batch of {sorted(sizes)} samples does not split into {count} '
                           f'equal micro-batches ({self.batch_plan.describe()})')
        parts = {name: batch.chunk(count) for name, batch in whole.items()}
        return [{name: parts[name][index] for name in whole} for index in range(count)]

    def gradient_sync(self, last: bool) -> ContextManager:
        """DDP all-reduces gradients on the last micro-batch only; the others accumulate locally."""
        if last or not isinstance(self.net_g, DistributedDataParallel):
            return contextlib.nullcontext()
        return self.net_g.no_sync()

    def check_finite(self, losses: Dict[str, Tensor]) -> None:
        """Raise :class:`NonFiniteLoss` naming the first term that is NaN or infinite; under DDP every rank stops
        or skips together (the ranks agree first)."""
        finite = torch.stack([torch.isfinite(value.detach()).all() for value in losses.values()]).all().float()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite:
            return
        bad = next((key for key, value in losses.items() if not torch.isfinite(value.detach()).all()),
                   next(iter(losses)))  # another rank's term was the bad one
        raise NonFiniteLoss(bad, losses[bad].detach().float().mean().item(), losses)

    def backward(self, loss: Tensor) -> None:
        """Backward of ``loss``, scaled by the fp16 gradient scaler where there is one."""
        (loss if self.grad_scaler is None else self.grad_scaler.scale(loss)).backward()

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Step ``optimizer``; under fp16 through the gradient scaler (which skips a step whose gradients overflowed
        and adapts its scale)."""
        if self.grad_scaler is None:
            optimizer.step()
            return
        self.grad_scaler.step(optimizer)
        self.grad_scaler.update()

    def skip_step(self, exc: NonFiniteLoss, current_iter: int, untouched: str) -> None:
        """After a non-finite loss: stop in one line (``nonfinite_loss: stop``), or log the real values and skip the
        step, stopping once ``nonfinite_max_skips`` steps in a row were skipped."""
        message = f'iteration {current_iter}: {exc}; {untouched} not updated'
        if self.nonfinite_loss == 'stop':
            raise ESCError(f'{message} (train.nonfinite_loss: skip would skip such steps)')
        self.skipped_in_a_row += 1
        self.log_dict = OrderedDict((key, value.detach().float().mean().item()) for key, value in exc.losses.items())
        if self.skipped_in_a_row >= self.max_skipped_in_a_row:
            raise ESCError(f'{message}: {self.skipped_in_a_row} steps in a row skipped for non-finite losses '
                           f'(train.nonfinite_max_skips: {self.max_skipped_in_a_row}); the run has diverged: resume '
                           f'from an earlier state with a lower learning rate')
        get_root_logger().warning(f'{message}: step skipped ({self.skipped_in_a_row} in a row)')

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
        """Take a batch; an HR image that is not ``scale``× its LR image is a one-line error naming both files. A
        model with a :attr:`degradation` synthesises the LR images of a batch that has none (a training batch of HR
        images and blur kernels); a batch with LR images (validation, paired training) is taken as it is."""
        if self.degradation is not None and 'lq' not in data:
            missing = [field for field in BATCH_FIELDS if field not in data]
            if missing:
                raise ESCError(f"datasets.train: a batch without LR images needs {', '.join(BATCH_FIELDS)} for "
                               f"{type(self).__name__}'s degradation (ESCRealESRGANDataset gives them); this one lacks "
                               f"{', '.join(missing)}")
            self.lq, self.gt = self.degradation(*(data[field].to(self.device) for field in BATCH_FIELDS))
            return
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
        source = f'pretrained weights {load_path}'
        net = self.get_bare_model(net)
        tables = {key for key, value in net.state_dict().items() if not value.is_floating_point()}
        check_weights({k: v for k, v in state_dict.items() if k not in tables}, source)  # index tables are no weights
        get_root_logger().info(f'Loading {type(net).__name__} from {load_path} [{param_key}].')
        try:
            net.load_state_dict(state_dict, strict=strict)
        except ESCError as exc:
            raise ESCError(f'{source}: {exc}') from None

    def nondist_validation(self, dataloader: Any, current_iter: Any, tb_logger: Any, save_img: bool) -> None:
        """Evaluate every image of ``dataloader`` (:meth:`test`), score it with ``val.metrics``, save it where asked
        (``val.save_img``) and, during training with tensorboard on, show the first ``val.tb_images`` SR images of
        each set there (default 3), so that a run's progress can be looked at as well as read."""
        val_opt = self.opt['val']
        dataset_name = dataloader.dataset.opt['name']
        metrics = val_opt.get('metrics') or {}
        if metrics:
            self._initialize_best_metric_results(dataset_name)
        self.metric_results = {name: 0.0 for name in metrics}
        shown = int(val_opt.get('tb_images', DEFAULT_TB_IMAGES)) if tb_logger is not None else 0
        bar = tqdm(total=len(dataloader), unit='image') if val_opt.get('pbar', False) else None
        count = 0
        for index, data in enumerate(dataloader):
            image_name = osp.splitext(osp.basename(data['lq_path'][0]))[0]
            self.feed_data(data)
            self.test()
            visuals = self.get_current_visuals()
            scored = {'img': tensor2img([visuals['result']])}
            if 'gt' in visuals:
                scored['img2'] = tensor2img([visuals['gt']])
                del self.gt
            del self.lq, self.output
            if save_img:
                imwrite(scored['img'], self._visualization_path(dataset_name, image_name, current_iter))
            if index < shown:
                tb_logger.add_image(f'images/{dataset_name}/{image_name}', scored['img'][..., ::-1].copy(),
                                    current_iter, dataformats='HWC')  # BGR to RGB
            for name, metric in metrics.items():
                self.metric_results[name] += calculate_metric(scored, metric)
            count += 1
            if bar is not None:
                bar.update(1)
                bar.set_description(f'Test {image_name}')
        if bar is not None:
            bar.close()
        if metrics:
            for name in self.metric_results:
                self.metric_results[name] /= max(count, 1)
                self._update_best_metric_result(dataset_name, name, self.metric_results[name], current_iter)
            self._log_validation_metric_values(current_iter, dataset_name, tb_logger)

    def _visualization_path(self, dataset_name: str, image_name: str, current_iter: Any) -> str:
        """Where a validation image goes: ``<image>/<image>_<iter>.png`` in training, ``<set>/<image>_<suffix or
        name>.png`` in testing (basicsr's layout, which the README's paths follow)."""
        folder = self.opt['path']['visualization']
        if self.opt['is_train']:
            return osp.join(folder, image_name, f'{image_name}_{current_iter}.png')
        return osp.join(folder, dataset_name, f"{image_name}_{self.opt['val'].get('suffix') or self.opt['name']}.png")

    def test(self) -> None:
        """Super-resolve ``self.lq``, whole or in overlapping tiles (``val.tile`` and ``val.tile_overlap``,
        in LR pixels; e.g. ``--force_yml val:tile=256`` for Urban100/Manga109 on a small GPU or the CPU)."""
        net = self.evaluation_network()
        was_training = net.training
        net.eval()
        val_opt = self.opt.get('val') or {}
        multiple, scale = val_opt.get('pad_to_multiple'), self.opt.get('scale', 1)
        evaluation, run = self.acceleration['val'], self.runner('val', net)

        def upscale(lq: torch.Tensor) -> torch.Tensor:
            h, w = lq.shape[-2:]
            x = evaluation.fast.input(pad_to_multiple(lq, multiple) if multiple else lq)
            output = run(mark_dynamic_size(x) if evaluation.compiled else x)
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
        nonfinite = {key: sum(int((~torch.isfinite(v)).sum()) for v in weights.values() if v.is_floating_point())
                     for key, weights in save_dict.items()}
        if any(nonfinite.values()):
            counts = ', '.join(f'{count} in {key}' for key, count in nonfinite.items() if count)
            get_root_logger().error(f'{net_label}_{label}: the weights hold non-finite values ({counts}); they are '
                                    'written as they are, but the run has diverged: resume from an earlier state')
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
        states and its :attr:`degradation`'s training-pair queue, once filling (subclasses add what else they carry
        from step to step)."""
        state: Dict[str, Any] = {'rng': rng_states()}
        queue = self.degradation.state_dict() if self.degradation is not None else {}
        if queue:
            state['queue'] = queue
        return state

    def load_rank_training_state(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`rank_training_state` returned."""
        set_rng_states(state['rng'])
        if 'queue' in state and self.degradation is not None:
            self.degradation.load_state_dict(state['queue'])

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
        if self.grad_scaler is not None:
            state['grad_scaler'] = self.grad_scaler.state_dict()
        atomic_torch_save(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def resume_training(self, resume_state: Dict[str, Any]) -> None:
        """Optimizers and schedulers (basicsr), then this rank's :meth:`rank_training_state` as it was saved."""
        super().resume_training(resume_state)
        scaler = self.grad_scaler
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


MODEL_KEYS['ESCModel'] = {'train': {'nonfinite_loss': STR, 'nonfinite_max_skips': INT, **AMP_KEYS},
                          'val': {'pad_to_multiple': optional(INT), 'tile': optional(INT), 'tile_overlap': INT,
                                  'tb_images': INT, **AMP_KEYS}}
