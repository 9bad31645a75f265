"""``SampleImageDataset``: LR/HR pairs made from the photographs that ship inside scikit-image.

It lets the demo (``options/demo/``) and the tests train and validate without any download. HR
images are mod-cropped to the scale and LR images are made with MATLAB-compatible bicubic
downsampling (basicsr's ``imresize``), exactly as benchmark LR images are.

Options (besides basicsr's usual ``name``, ``type``, ``phase``, ``scale``):

- ``images``: names of ``skimage.data`` functions, e.g. ``[astronaut, chelsea, rocket]``;
  grayscale ones are used as 3-channel images with equal channels.
- ``gt_size`` (train): HR patch size, a multiple of ``scale``; ``use_hflip``/``use_rot``: augment.
- ``patches_per_image`` (train, default 100): how many random patches one pass draws per image.
- ``max_size`` (val, optional): centre-crop HR images to at most this many pixels per side.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
from basicsr.data.transforms import augment, paired_random_crop
from basicsr.utils import img2tensor
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from esc.config.validation import BOOL, DATASET_KEYS, INT, SEQ, optional
from esc.errors import ESCError


def load_sample_image(name: str) -> np.ndarray:
    """A scikit-image sample photograph as an HxWx3 float32 RGB array in [0, 1]."""
    import skimage.data

    loader = getattr(skimage.data, name, None)
    if not callable(loader) or name.startswith('_'):
        raise ESCError(f'datasets.*.images: {name!r} is not a scikit-image sample image (see skimage.data)')
    image = np.asarray(loader())
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ESCError(f'datasets.*.images: {name!r} is not an image (shape {image.shape})')
    return image[..., :3].astype(np.float32) / np.iinfo(image.dtype).max


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
    h, w = image.shape[:2]
    return image[:h - h % scale, :w - w % scale]


@DATASET_REGISTRY.register()
class SampleImageDataset(data.Dataset):
    """Paired LR/HR data from scikit-image's sample photographs (random patches or whole images)."""

    def __init__(self, opt: Dict[str, Any]) -> None:
        super().__init__()
        self.opt = opt
        self.scale = int(opt['scale'])
        self.train = opt['phase'] == 'train'
        names: List[str] = list(opt.get('images') or [])
        if not names:
            raise ESCError(f'datasets.{opt["phase"]}.images: list at least one skimage.data image')
        images = [mod_crop(load_sample_image(n), self.scale) for n in names]
        if self.train:
            self.gt_size = int(opt['gt_size'])
            if self.gt_size % self.scale:
                raise ESCError(f'datasets.train.gt_size: {self.gt_size} is not divisible by scale {self.scale}')
            for name, image in zip(names, images):
                if min(image.shape[:2]) < self.gt_size:
                    raise ESCError(f'datasets.train.images: {name!r} ({image.shape[1]}x{image.shape[0]}) is smaller '
                                   f'than gt_size {self.gt_size}')
            self.length = len(images) * int(opt.get('patches_per_image', 100))
        else:
            if opt.get('max_size'):
                images = [self._centre_crop(im, int(opt['max_size'])) for im in images]
            self.length = len(images)
        self.names = names
        self.hr = images
        self.lr = [np.clip(imresize(im, 1 / self.scale), 0, 1).astype(np.float32) for im in images]

    def _centre_crop(self, image: np.ndarray, size: int) -> np.ndarray:
        size -= size % self.scale
        h, w = image.shape[:2]
        top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
        top, left = top - top % self.scale, left - left % self.scale
        return image[top:top + size, left:left + size]

    def __getitem__(self, index: int) -> Dict[str, Any]:
        i = index % len(self.hr)
        gt, lq = self.hr[i], self.lr[i]
        if self.train:
            gt, lq = paired_random_crop(gt, lq, self.gt_size, self.scale, self.names[i])
            gt, lq = np.ascontiguousarray(gt), np.ascontiguousarray(lq)  # cv2 flips in place
            gt, lq = augment([gt, lq], self.opt.get('use_hflip', True), self.opt.get('use_rot', True))
        gt_t, lq_t = img2tensor([np.ascontiguousarray(gt), np.ascontiguousarray(lq)], bgr2rgb=False, float32=True)
        return {'lq': lq_t, 'gt': gt_t, 'lq_path': self.names[i], 'gt_path': self.names[i]}

    def __len__(self) -> int:
        return self.length


DATASET_KEYS['SampleImageDataset'] = {'images': SEQ, 'gt_size': INT, 'use_hflip': BOOL, 'use_rot': BOOL,
                                      'patches_per_image': INT, 'max_size': optional(INT)}
