"""RealESRGAN's second-order degradation model, as one component a model holds (paper Sec. 4.4: ESC-Real trains on
LR images synthesised from HR crops on the fly).

:class:`RealESRGANDegradation` turns a batch of HR images and the blur kernels the dataset drew for them
(``ESCRealESRGANDataset``: ``gt``, ``kernel1``, ``kernel2``, ``sinc_kernel``) into a training pair (LR, HR) on the
model's device, with basicsr's building blocks (``filter2D``, the Gaussian and Poisson noise of
``basicsr.data.degradations``, ``DiffJPEG``, ``USMSharp``) in RealESRGAN's order:

1. blur with ``kernel1``, resize by a random factor (``resize_prob``: up, down or keep; ``resize_range``), add
   Gaussian or Poisson noise (``gaussian_noise_prob``, ``noise_range``, ``poisson_scale_range``,
   ``gray_noise_prob``), compress as JPEG (``jpeg_range``);
2. blur with ``kernel2`` with probability ``second_blur_prob``, then the same with the options ending in ``2``, the
   resize relative to the LR size;
3. with even odds, either resize to the LR size, filter with ``sinc_kernel`` and compress, or compress first;
4. round to 8 bits, crop a ``gt_size`` HR patch and its LR patch at one random place, and pass the pair through
   the training-pair queue (:class:`TrainingPairQueue`, ``queue_size``), which mixes degradations across batches.

Every random draw comes from the global generators (python's ``random``, NumPy's, torch's) in the order basicsr's
RealESRNet/RealESRGAN models draw them, so that a run seeded alike degrades alike, and a run resumed with the
generators' and the queue's states (:meth:`RealESRGANDegradation.state_dict`) continues as an uninterrupted one.
"""
from __future__ import annotations

import random
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from basicsr.data.degradations import random_add_gaussian_noise_pt, random_add_poisson_noise_pt
from basicsr.data.transforms import paired_random_crop
from basicsr.utils import DiffJPEG, USMSharp
from basicsr.utils.img_process_util import filter2D
from torch import Tensor
from torch.nn import functional as F

from esc.errors import ESCError

DEGRADATION_OPTIONS = ('resize_prob', 'resize_range', 'gaussian_noise_prob', 'noise_range', 'poisson_scale_range',
                       'gray_noise_prob', 'jpeg_range', 'second_blur_prob', 'resize_prob2', 'resize_range2',
                       'gaussian_noise_prob2', 'noise_range2', 'poisson_scale_range2', 'gray_noise_prob2',
                       'jpeg_range2')
"""Top-level options the degradation reads (RealESRGAN's values are in the shipped option files)."""
DEFAULT_QUEUE_SIZE = 180
"""``queue_size`` where the option file leaves it out (RealESRGAN's)."""
RESIZE_DIRECTIONS = ('up', 'down', 'keep')
"""What ``resize_prob`` and ``resize_prob2`` give the odds of, in this order."""
INTERPOLATIONS = ('area', 'bilinear', 'bicubic')
"""The resampling modes each resize picks from, with equal odds."""
BATCH_FIELDS = ('gt', 'kernel1', 'kernel2', 'sinc_kernel')
"""What a batch to degrade holds (``ESCRealESRGANDataset``'s fields)."""


def check_degradation_options(opt: Mapping[str, Any], also: Sequence[str] = ()) -> None:
    """One line naming the first of :data:`DEGRADATION_OPTIONS`, then of ``also``, that ``opt`` lacks."""
    missing = next((key for key in (*DEGRADATION_OPTIONS, *also) if key not in opt), None)
    if missing is not None:
        raise ESCError(f'{missing}: missing (a top-level option of the RealESRGAN degradation model; see '
                       f'options/train/ESC_Real/)')


class TrainingPairQueue:
    """A pool of ``size`` training pairs that mixes degradations across batches (all samples of a batch share one
    resize factor and one noise kind): the first batches fill it and pass through unchanged; once it is full, each
    batch is exchanged for as many pairs drawn at random from it (a permutation from torch's generator)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.lq: Optional[Tensor] = None
        self.gt: Optional[Tensor] = None
        self.filled = 0

    @torch.no_grad()
    def __call__(self, lq: Tensor, gt: Tensor) -> Tuple[Tensor, Tensor]:
        """The pair to train on in place of (``lq``, ``gt``), which joins the pool."""
        batch = lq.size(0)
        if self.lq is None or self.gt is None:
            if self.size % batch:
                raise ESCError(f'queue_size ({self.size}) must be a multiple of the batch size per GPU ({batch}, '
                               f'datasets.train.batch_size_per_gpu)')
            self.lq = lq.new_zeros(self.size, *lq.shape[1:])
            self.gt = gt.new_zeros(self.size, *gt.shape[1:])
            self.filled = 0
        if self.filled < self.size:
            self.lq[self.filled:self.filled + batch] = lq
            self.gt[self.filled:self.filled + batch] = gt
            self.filled += batch
            return lq, gt
        order = torch.randperm(self.size)
        self.lq, self.gt = self.lq[order], self.gt[order]
        drawn = self.lq[:batch].clone(), self.gt[:batch].clone()
        self.lq[:batch], self.gt[:batch] = lq, gt
        return drawn

    def state_dict(self) -> Dict[str, Any]:
        """The pool on the CPU (``lr``, ``gt``, ``ptr``: the keys training states have always used); empty before
        the first batch."""
        if self.lq is None or self.gt is None:
            return {}
        return {'lr': self.lq.cpu(), 'gt': self.gt.cpu(), 'ptr': self.filled}

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device) -> None:
        """Restore what :meth:`state_dict` returned, onto ``device``."""
        self.lq, self.gt, self.filled = state['lr'].to(device), state['gt'].to(device), state['ptr']


class RealESRGANDegradation:
    """RealESRGAN's degradation model (see the module doc), configured by an option file's top-level options.

    ``degrade_sharpened``: the first blur starts from the USM-sharpened HR image (RealESRGAN's GAN stage always;
    its L1 stage with ``gt_usm``); ``sharpened_target``: the HR image of the pair is the sharpened one (the L1
    stage's ``gt_usm``; the GAN stage sharpens its targets itself, after the queue)."""

    def __init__(self, opt: Mapping[str, Any], device: torch.device, degrade_sharpened: bool,
                 sharpened_target: bool) -> None:
        check_degradation_options(opt)
        self.options = {key: opt[key] for key in DEGRADATION_OPTIONS}
        self.scale: int = opt['scale']
        self.gt_size: int = opt['gt_size']
        self.degrade_sharpened, self.sharpened_target = degrade_sharpened, sharpened_target
        self.device = device
        self.jpeg = DiffJPEG(differentiable=False).to(device)
        self.sharpen = USMSharp().to(device)
        self.queue = TrainingPairQueue(opt.get('queue_size', DEFAULT_QUEUE_SIZE))

    def state_dict(self) -> Dict[str, Any]:
        """What the degradation carries from batch to batch, for a training state: its queue (empty before the first
        batch)."""
        return self.queue.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.queue.load_state_dict(state, self.device)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(scale={self.scale}, gt_size={self.gt_size}, queue_size={self.queue.size}, '
                f'degrade_sharpened={self.degrade_sharpened}, sharpened_target={self.sharpened_target})')

    @torch.no_grad()
    def __call__(self, gt: Tensor, kernel1: Tensor, kernel2: Tensor, sinc_kernel: Tensor) -> Tuple[Tensor, Tensor]:
        """The training pair (LR patch, HR patch) for a batch of HR images and their kernels, all on the device."""
        sharpened = self.sharpen(gt) if self.degrade_sharpened or self.sharpened_target else gt
        target = sharpened if self.sharpened_target else gt
        height, width = gt.shape[2:4]
        lr_size = (height // self.scale, width // self.scale)

        out = filter2D(sharpened if self.degrade_sharpened else gt, kernel1)
        out = F.interpolate(out, scale_factor=self._resize_factor(''), mode=random.choice(INTERPOLATIONS))
        out = self._compress(self._add_noise(out, ''), 'jpeg_range')

        if np.random.uniform() < self.options['second_blur_prob']:
            out = filter2D(out, kernel2)
        factor = self._resize_factor('2')
        out = F.interpolate(out, size=(int(height / self.scale * factor), int(width / self.scale * factor)),
                            mode=random.choice(INTERPOLATIONS))
        out = self._add_noise(out, '2')

        if np.random.uniform() < 0.5:
            out = self._compress(self._resize_and_sinc_filter(out, lr_size, sinc_kernel), 'jpeg_range2')
        else:
            out = self._resize_and_sinc_filter(self._compress(out, 'jpeg_range2'), lr_size, sinc_kernel)

        lq = torch.clamp((out * 255.0).round(), 0, 255) / 255.
        target, lq = paired_random_crop(target, lq, self.gt_size, self.scale)
        lq, target = self.queue(lq, target)
        return lq.contiguous(), target

    def _resize_factor(self, stage: str) -> float:
        """A random resize factor: up, down or none with the odds of ``resize_prob<stage>``, within
        ``resize_range<stage>``."""
        direction = random.choices(RESIZE_DIRECTIONS, self.options[f'resize_prob{stage}'])[0]
        low, high = self.options[f'resize_range{stage}']
        if direction == 'up':
            return np.random.uniform(1, high)
        if direction == 'down':
            return np.random.uniform(low, 1)
        return 1

    def _add_noise(self, image: Tensor, stage: str) -> Tensor:
        """Gaussian noise (odds ``gaussian_noise_prob<stage>``) or else Poisson noise, grey on a
        ``gray_noise_prob<stage>`` share of the images, clipped to [0, 1]."""
        gray = self.options[f'gray_noise_prob{stage}']
        if np.random.uniform() < self.options[f'gaussian_noise_prob{stage}']:
            return random_add_gaussian_noise_pt(image, sigma_range=self.options[f'noise_range{stage}'], clip=True,
                                                rounds=False, gray_prob=gray)
        return random_add_poisson_noise_pt(image, scale_range=self.options[f'poisson_scale_range{stage}'],
                                           gray_prob=gray, clip=True, rounds=False)

    def _compress(self, image: Tensor, quality_option: str) -> Tensor:
        """JPEG compression at a quality drawn per image from ``quality_option``'s range, of the image clamped to
        [0, 1] (JPEG of out-of-range values rings); contiguous again, since DiffJPEG returns a channels-last
        layout that ``filter2D`` cannot take."""
        quality = image.new_zeros(image.size(0)).uniform_(*self.options[quality_option])
        return self.jpeg(torch.clamp(image, 0, 1), quality=quality).contiguous()

    @staticmethod
    def _resize_and_sinc_filter(image: Tensor, size: Sequence[int], sinc_kernel: Tensor) -> Tensor:
        """Resize to the LR size (a random mode), then the final sinc filter (grouped: other orders of sinc, JPEG
        and resize leave twisted lines, RealESRGAN found)."""
        return filter2D(F.interpolate(image, size=tuple(size), mode=random.choice(INTERPOLATIONS)), sinc_kernel)
