"""Real-world SR training (paper Sec. 4.4): :class:`ESCModel` with RealESRGAN's degradation model.

``ESCRealESRNetModel`` (the L1 stage) and ``ESCRealESRGANModel`` (L1 + perceptual + GAN, from the L1 stage's weights)
are ESCModel configured with a :class:`~esc.models.degradation.RealESRGANDegradation`: ESCModel's ``feed_data`` turns
each training batch of HR images and blur kernels into LR/HR pairs with it (second-order blur, resize, noise and JPEG,
a final sinc filter, a training-pair queue that mixes degradations across batches), and its training state carries the
queue, so that a resumed run continues exactly as an uninterrupted one. Validation batches bring their own LR images
and are taken as they are. Everything else is ESCModel's (atomic checkpoints, any ``torch.optim`` optimizer,
non-finite loss checks, CPU DDP, padded/tiled evaluation); the degradation runs on the model's device.

The GAN stage's generator losses are ESCModel's :meth:`~ESCModel.training_losses` (L1 and perceptual, logged as
basicsr names them, ``l_g_*``) plus the adversarial term; its discriminator, built by basicsr's ``SRGANModel``, has a
step of its own, checked for non-finite losses like the generator's. Its perceptual loss never downloads VGG weights
(:class:`esc.losses.OfflinePerceptualLoss`).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, Optional, Tuple

import torch
from basicsr.archs.discriminator_arch import UNetDiscriminatorSN
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils import USMSharp, get_root_logger
from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY

import esc.losses  # noqa: F401  (registers OfflinePerceptualLoss)
from esc.config.validation import MODEL_KEYS
from esc.errors import ESCError
from esc.models.degradation import RealESRGANDegradation, check_degradation_options
from esc.models.esc_model import ESCModel, NonFiniteLoss

MAX_GT_SIZE = 400
"""basicsr's RealESRGANDataset pads or crops every GT image to 400×400 before the model crops ``gt_size``."""


if 'UNetDiscriminatorSN' not in ARCH_REGISTRY:  # basicsr files it as UNetDiscriminatorSN_basicsr; the plain name
    ARCH_REGISTRY.register(UNetDiscriminatorSN)  # that option files use then resolves without a printed warning


def real_world_degradation(opt: Mapping[str, Any], device: torch.device, required: Tuple[str, ...],
                           degrade_sharpened: bool, sharpened_target: bool) -> Optional[RealESRGANDegradation]:
    """The degradation a real-world model trains with, from the option file's top level, or None under
    ``high_order_degradation: false`` (paired training data); first one-line errors for a missing degradation or
    ``required`` option and a ``gt_size`` the data cannot give."""
    if opt.get('high_order_degradation', True):
        check_degradation_options(opt, also=required)
    gt_size = opt.get('gt_size')
    if not isinstance(gt_size, int) or isinstance(gt_size, bool) or gt_size < 1:
        raise ESCError(f'gt_size: the real-world models need the GT patch size at the top level, got {gt_size!r}')
    if gt_size % opt['scale'] or gt_size > MAX_GT_SIZE:
        raise ESCError(f"gt_size: {gt_size} must be a multiple of scale ({opt['scale']}) and at most "
                       f'{MAX_GT_SIZE} (the size RealESRGANDataset pads/crops GT images to)')
    dataset_gt_size = ((opt.get('datasets') or {}).get('train') or {}).get('gt_size', gt_size)
    if dataset_gt_size != gt_size:
        raise ESCError(f'datasets.train.gt_size ({dataset_gt_size}) differs from gt_size ({gt_size})')
    if not opt.get('high_order_degradation', True):
        return None
    return RealESRGANDegradation(opt, device, degrade_sharpened=degrade_sharpened, sharpened_target=sharpened_target)


@MODEL_REGISTRY.register()
class ESCRealESRNetModel(ESCModel):
    """The L1 ("MSE") stage of ESC-Real: RealESRNet training of an ESC network. With ``gt_usm`` the HR image is
    USM-sharpened before it is degraded and trained against."""

    def init_training_settings(self) -> None:
        sharpened = bool(self.opt.get('gt_usm'))
        self.degradation = real_world_degradation(self.opt, self.device, ('gt_usm',), degrade_sharpened=sharpened,
                                                  sharpened_target=sharpened)
        super().init_training_settings()


@MODEL_REGISTRY.register()
class ESCRealESRGANModel(ESCModel, SRGANModel):
    """The GAN stage of ESC-Real: RealESRGAN training (L1 + VGG perceptual + U-Net discriminator; basicsr's
    ``SRGANModel`` builds the discriminator, its loss and optimizer). The LR images come from the USM-sharpened HR
    image; ``l1_gt_usm``, ``percep_gt_usm`` and ``gan_gt_usm`` say which terms compare with the sharpened HR image
    rather than the plain one. Under ``use_amp`` the generator and its losses run in bf16 and the discriminator in
    fp32; fp16 training is refused. basicsr's ``ldl_opt`` (LDL artefact maps) is not supported: the option is
    refused."""

    supports_fp16_training = False
    micro_batch_fields = ()  # the generator's and the discriminator's steps interleave
    loss_prefix = 'l_g_'

    def init_training_settings(self) -> None:
        train = self.opt['train']
        if not self.opt.get('network_d'):
            raise ESCError('network_d: missing; the GAN stage needs a discriminator '
                           '(e.g. type: UNetDiscriminatorSN, num_in_ch: 3, num_feat: 64, skip_connection: true)')
        if train.get('ldl_opt'):
            raise ESCError('train.ldl_opt: LDL artefact maps are not supported by ESCRealESRGANModel; remove the '
                           'option')
        for key in ('gan_opt', 'optim_d'):
            if not train.get(key):
                raise ESCError(f'train.{key}: missing; the GAN stage needs it')
        perceptual = train.get('perceptual_opt')
        if perceptual and perceptual.get('type') == 'PerceptualLoss':
            perceptual['type'] = 'OfflinePerceptualLoss'  # the same loss, with local VGG weights only
            get_root_logger().info('train.perceptual_opt: PerceptualLoss built as OfflinePerceptualLoss '
                                   '(VGG weights from a local file, never downloaded)')
        targets = ('l1_gt_usm', 'percep_gt_usm', 'gan_gt_usm')
        self.degradation = real_world_degradation(self.opt, self.device, targets, degrade_sharpened=True,
                                                  sharpened_target=False)
        self.usm_sharpener = USMSharp().to(self.device)
        super().init_training_settings()

    def optimize_parameters(self, current_iter: int) -> None:
        """One GAN iteration, top to bottom, with :class:`ESCModel`'s pieces (losses, finite check, fp32 backward,
        step):

        1. the generator, every ``net_d_iters`` iterations after ``net_d_init_iters``, with the discriminator frozen:
           :meth:`ESCModel.training_losses` (L1 and perceptual, against the USM-sharpened or plain HR image as
           ``l1_gt_usm`` and ``percep_gt_usm`` say) under ``train``'s autocast, and the adversarial term
           (``gan_opt``) with the discriminator in fp32; in the other iterations only the SR image is made;
        2. the discriminator on the HR image (real; sharpened with ``gan_gt_usm``) and the detached SR image (fake);
        3. the EMA update.

        A non-finite generator loss leaves both networks as they were; a non-finite discriminator loss leaves the
        discriminator so (the generator has stepped by then)."""
        sharpened = self.usm_sharpener(self.gt)
        l1_gt, percep_gt, gan_gt = (sharpened if self.opt[key] else self.gt
                                    for key in ('l1_gt_usm', 'percep_gt_usm', 'gan_gt_usm'))
        generator_turn = current_iter % self.net_d_iters == 0 and current_iter > self.net_d_init_iters
        logged: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
        try:
            self.net_d.requires_grad_(False)
            self.optimizer_g.zero_grad(set_to_none=True)
            with self.acceleration['train'].autocast():
                generator_losses = self.training_losses({'lq': self.lq, 'gt': l1_gt, 'perceptual_gt': percep_gt})
            if generator_turn:
                generator_losses[f'{self.loss_prefix}gan'] = self.cri_gan(self.net_d(self.output), True, is_disc=False)
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


for _model, _basicsr_model in (('ESCRealESRNetModel', 'RealESRNetModel'), ('ESCRealESRGANModel', 'RealESRGANModel')):
    MODEL_KEYS[_model] = MODEL_KEYS[_basicsr_model]
"""Each real-world model accepts the top-level options of the basicsr model whose data flow it runs (the option
checks, :mod:`esc.config.validation`, read the keys of every class in a model's MRO)."""
