"""Real-world SR training (paper Sec. 4.4): basicsr's RealESRNet/RealESRGAN models with ESCModel on top.

``ESCRealESRNetModel`` (the L1 stage) and ``ESCRealESRGANModel`` (L1 + perceptual + GAN, from the
L1 stage's weights) synthesise LR images on the fly with basicsr's second-order degradations
(blur, resize, noise, JPEG twice, final sinc filter; USM-sharpened GT; a queue of training pairs
that mixes degradations across batches). Both put ``ESCModel`` before basicsr's real-world model in
the method resolution order (atomic checkpoints, any ``torch.optim`` optimizer, non-finite loss checks,
CPU DDP, padded/tiled evaluation, exact resume — the queue travels in the training state).

Where basicsr assumes a GPU, these run on ``self.device``: the JPEG simulator, the USM sharpener and
the training-pair queue are created there (basicsr calls ``.cuda()``). The GAN model checks its
discriminator losses for non-finite values like the generator's, and its perceptual loss never
downloads VGG weights (:class:`esc.losses.OfflinePerceptualLoss`).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict

import torch
from basicsr.models.realesrgan_model import RealESRGANModel
from basicsr.models.realesrnet_model import RealESRNetModel
from basicsr.utils import DiffJPEG, USMSharp, get_root_logger
from basicsr.archs.discriminator_arch import UNetDiscriminatorSN
from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY
from torch import nn

import esc.losses  # noqa: F401  (registers OfflinePerceptualLoss)
from esc.errors import ESCError
from esc.models.esc_model import ESCModel, NonFiniteLoss

MAX_GT_SIZE = 400
"""basicsr's RealESRGANDataset pads or crops every GT image to 400×400 before the model crops ``gt_size``."""
DEGRADATION_OPTIONS = ('resize_prob', 'resize_range', 'gaussian_noise_prob', 'noise_range', 'poisson_scale_range',
                       'gray_noise_prob', 'jpeg_range', 'second_blur_prob', 'resize_prob2', 'resize_range2',
                       'gaussian_noise_prob2', 'noise_range2', 'poisson_scale_range2', 'gray_noise_prob2',
                       'jpeg_range2')
"""Top-level options basicsr's degradation pipeline reads (RealESRGAN's values are in the shipped option files)."""


if 'UNetDiscriminatorSN' not in ARCH_REGISTRY:  # basicsr files it as UNetDiscriminatorSN_basicsr; the plain name
    ARCH_REGISTRY.register(UNetDiscriminatorSN)  # that option files use then resolves without a printed warning


class _ContiguousJPEG(nn.Module):
    """basicsr's DiffJPEG, its output made contiguous: under current torch it comes back in a channels-last
    layout, which basicsr's ``filter2D`` (a ``view``) cannot take in the second degradation."""

    def __init__(self) -> None:
        super().__init__()
        self.jpeg = DiffJPEG(differentiable=False)

    def forward(self, x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        return self.jpeg(x, quality=quality).contiguous()


class _DegradationsOnDevice:
    """Sits between ESCModel and basicsr's RealESRNetModel/RealESRGANModel in the MRO: builds what their
    constructors put on CUDA on ``self.device`` instead (the JPEG simulator with a contiguous output), and
    creates the training-pair queue there."""

    def __init__(self, opt: Dict[str, Any]) -> None:
        real = next(c for c in type(self).__mro__ if c in (RealESRNetModel, RealESRGANModel))
        super(real, self).__init__(opt)  # the real-world model's base; its own constructor only adds the below
        self.jpeger = _ContiguousJPEG().to(self.device)
        self.usm_sharpener = USMSharp().to(self.device)
        self.queue_size = opt.get('queue_size', 180)

    required_options: tuple = ()
    """Top-level options the subclass's training step reads besides :data:`DEGRADATION_OPTIONS`."""

    def init_training_settings(self) -> None:
        if self.opt.get('high_order_degradation', True):
            missing = next((k for k in DEGRADATION_OPTIONS + self.required_options if k not in self.opt), None)
            if missing is not None:
                raise ESCError(f'{missing}: missing (a top-level option of the RealESRGAN degradation model; see '
                               f'options/train/ESC_Real/)')
        gt_size = self.opt.get('gt_size')
        if not isinstance(gt_size, int) or isinstance(gt_size, bool) or gt_size < 1:
            raise ESCError(f'gt_size: the real-world models need the GT patch size at the top level, got {gt_size!r}')
        if gt_size % self.opt['scale'] or gt_size > MAX_GT_SIZE:
            raise ESCError(f"gt_size: {gt_size} must be a multiple of scale ({self.opt['scale']}) and at most "
                           f'{MAX_GT_SIZE} (the size RealESRGANDataset pads/crops GT images to)')
        dataset_gt_size = ((self.opt.get('datasets') or {}).get('train') or {}).get('gt_size', gt_size)
        if dataset_gt_size != gt_size:
            raise ESCError(f'datasets.train.gt_size ({dataset_gt_size}) differs from gt_size ({gt_size})')
        super().init_training_settings()

    @torch.no_grad()
    def _dequeue_and_enqueue(self) -> None:
        if not hasattr(self, 'queue_lr'):
            batch = self.lq.size(0)
            if self.queue_size % batch:
                raise ESCError(f'queue_size ({self.queue_size}) must be a multiple of the batch size per GPU '
                               f'({batch}, datasets.train.batch_size_per_gpu)')
            self.queue_lr = self.lq.new_zeros(self.queue_size, *self.lq.shape[1:])
            self.queue_gt = self.gt.new_zeros(self.queue_size, *self.gt.shape[1:])
            self.queue_ptr = 0
        super()._dequeue_and_enqueue()


class _RealWorldTraining:
    """First in the MRO: ESCModel's per-process training state plus the training-pair queue, so that a resumed
    run mixes the same degraded pairs as an uninterrupted one; validation on the validation set's own LR images
    (the degradations are for training batches only)."""

    def nondist_validation(self, dataloader: Any, current_iter: Any, tb_logger: Any, save_img: bool) -> None:
        was_training, self.is_train = self.is_train, False
        try:
            super().nondist_validation(dataloader, current_iter, tb_logger, save_img)
        finally:
            self.is_train = was_training

    def rank_training_state(self) -> Dict[str, Any]:
        state = super().rank_training_state()
        if hasattr(self, 'queue_lr'):
            state['queue'] = {'lr': self.queue_lr.cpu(), 'gt': self.queue_gt.cpu(), 'ptr': self.queue_ptr}
        return state

    def load_rank_training_state(self, state: Dict[str, Any]) -> None:
        super().load_rank_training_state(state)
        if 'queue' in state:
            queue = state['queue']
            self.queue_lr, self.queue_gt = queue['lr'].to(self.device), queue['gt'].to(self.device)
            self.queue_ptr = queue['ptr']


@MODEL_REGISTRY.register()
class ESCRealESRNetModel(_RealWorldTraining, ESCModel, _DegradationsOnDevice, RealESRNetModel):
    """The L1 ("MSE") stage of ESC-Real: RealESRNet training of an ESC network."""

    required_options = ('gt_usm',)


@MODEL_REGISTRY.register()
class ESCRealESRGANModel(_RealWorldTraining, ESCModel, _DegradationsOnDevice, RealESRGANModel):
    """The GAN stage of ESC-Real: RealESRGAN training (L1 + VGG perceptual + U-Net discriminator). Under
    ``use_amp`` the generator and its losses run in bf16 and the discriminator in fp32; fp16 training is refused.
    basicsr's ``ldl_opt`` (LDL artefact maps) is not supported: the option is refused."""

    supports_fp16_training = False
    micro_batch_fields = ()  # the generator's and the discriminator's steps interleave

    required_options = ('l1_gt_usm', 'percep_gt_usm', 'gan_gt_usm')

    def init_training_settings(self) -> None:
        train = self.opt['train']
        if not self.opt.get('network_d'):
            raise ESCError('network_d: missing; the GAN stage needs a discriminator '
                           '(e.g. type: UNetDiscriminatorSN, num_in_ch: 3, num_feat: 64, skip_connection: true)')
        if train.get('ldl_opt'):
            raise ESCError('train.ldl_opt: LDL artefact maps are not supported by ESCRealESRGANModel; remove the option')
        for key in ('gan_opt', 'optim_d'):
            if not train.get(key):
                raise ESCError(f'train.{key}: missing; the GAN stage needs it')
        perceptual = train.get('perceptual_opt')
        if perceptual and perceptual.get('type') == 'PerceptualLoss':
            perceptual['type'] = 'OfflinePerceptualLoss'  # the same loss, with local VGG weights only
            get_root_logger().info('train.perceptual_opt: PerceptualLoss built as OfflinePerceptualLoss '
                                   '(VGG weights from a local file, never downloaded)')
        super().init_training_settings()

    def optimize_parameters(self, current_iter: int) -> None:
        """One GAN iteration, top to bottom, with :class:`ESCModel`'s pieces (finite check, fp32 backward, step):

        1. the generator, every ``net_d_iters`` iterations after ``net_d_init_iters``, with the discriminator frozen:
           L1 (``pixel_opt``), perceptual/style (``perceptual_opt``) and adversarial (``gan_opt``) losses against
           the USM-sharpened or plain HR image (``l1_gt_usm``, ``percep_gt_usm``, ``gan_gt_usm``); the generator
           and its losses run under ``train``'s autocast, the discriminator in fp32;
        2. the discriminator on the HR image (real) and the detached SR image (fake);
        3. the EMA update.

        A non-finite generator loss leaves both networks as they were; a non-finite discriminator loss leaves the
        discriminator so (the generator has stepped by then)."""
        l1_gt = self.gt_usm if self.opt['l1_gt_usm'] else self.gt
        percep_gt = self.gt_usm if self.opt['percep_gt_usm'] else self.gt
        gan_gt = self.gt_usm if self.opt['gan_gt_usm'] else self.gt
        logged: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
        try:
            self.net_d.requires_grad_(False)
            self.optimizer_g.zero_grad(set_to_none=True)
            with self.acceleration['train'].autocast():
                self.output = self.runner('train', self.net_g)(self.acceleration['train'].fast.input(self.lq)).float()
                generator_losses: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
                if current_iter % self.net_d_iters == 0 and current_iter > self.net_d_init_iters:
                    if self.cri_pix:
                        generator_losses['l_g_pix'] = self.cri_pix(self.output, l1_gt)
                    if self.cri_perceptual:
                        l_percep, l_style = self.cri_perceptual(self.output, percep_gt)
                        for key, value in (('l_g_percep', l_percep), ('l_g_style', l_style)):
                            if value is not None:
                                generator_losses[key] = value
            if generator_losses:
                generator_losses['l_g_gan'] = self.cri_gan(self.net_d(self.output), True, is_disc=False)
                generator_losses = OrderedDict((key, value.float()) for key, value in generator_losses.items())
                self.check_finite(generator_losses)
                self.backward(sum(generator_losses.values()))
                self.optimizer_step(self.optimizer_g)
                logged.update(generator_losses)

            self.net_d.requires_grad_(True)
            self.optimizer_d.zero_grad(set_to_none=True)
            real_prediction = self.net_d(gan_gt)
            fake_prediction = self.net_d(self.output.detach().clone())
            discriminator_losses = OrderedDict(l_d_real=self.cri_gan(real_prediction, True, is_disc=True),
                                               l_d_fake=self.cri_gan(fake_prediction, False, is_disc=True))
            self.check_finite(discriminator_losses)
            self.backward(sum(discriminator_losses.values()))
            self.optimizer_step(self.optimizer_d)
        except NonFiniteLoss as exc:
            self.optimizer_g.zero_grad(set_to_none=True)
            self.optimizer_d.zero_grad(set_to_none=True)
            self.skip_step(exc, current_iter, 'the discriminator was' if exc.name.startswith('l_d_') else
                           'the weights were')
            return
        self.skipped_in_a_row = 0
        logged.update(discriminator_losses, out_d_real=real_prediction.detach().mean(),
                      out_d_fake=fake_prediction.detach().mean())
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
        self.log_dict = self.reduce_loss_dict(logged)
