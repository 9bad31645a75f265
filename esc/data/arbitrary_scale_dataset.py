"""Data for arbitrary-scale SR with ESC+LTE (paper Sec. 4.3, supplementary Sec. 6.2), LIIF/LTE-style.

Training (``ArbitraryScaleTrainDataset`` + :func:`make_queries`): every sample of a batch shares one scale
s ~ U(scale_min, scale_max). A dataset item is an HR patch of ⌈lq_size·scale_max⌉ pixels (random crop,
flips and transposition); ``ESCLTEModel.feed_data`` draws s once per batch and calls :func:`make_queries`,
which crops round(lq_size·s) HR pixels from each patch, downsamples them to lq_size×lq_size and samples
``sample_q`` HR pixels with their coordinates and cells: the (LR patch, coords, cells, RGB targets) batch.
The draw sits in the model because basicsr's loader collates items that each worker makes on its own.

Evaluation (``ArbitraryScaleTestDataset``): HR images; for scale s the LR image has ⌊H/s⌋×⌊W/s⌋ pixels
and the HR image is cropped (top left) to round(⌊H/s⌋·s)×round(⌊W/s⌋·s), as LIIF's evaluation does.

The official esc_arb test configurations (LIIF's protocol) read the published LR folders at ×2–×4
(``dataroot_lq``: LR_bicubic/X{s}, DIV2K_valid_LR_bicubic/X{s}) and make the LR image of every other scale
with PIL's bicubic resize of the 8-bit HR image (``downsample: pil``). Without either, LR images are made with
MATLAB's bicubic kernel (:func:`esc.archs.bicubic_arch.imresize_to`, basicsr's ``imresize`` weights) and rounded
to 8 bits, which is how those published folders were made.

Training draws one scale per batch and downsamples with MATLAB's kernel; esc_arb's training draws one scale per
sample and downsamples with PIL (docs/official_files.md).
"""
from __future__ import annotations

import math
import random
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from basicsr.data.transforms import augment
from basicsr.utils import FileClient, imfrombytes, img2tensor, scandir
from basicsr.utils.registry import DATASET_REGISTRY
from torch import Tensor
from torch.utils import data

from esc.archs.bicubic_arch import imresize_to
from esc.archs.lte_arch import check_scale, make_coord
from esc.config.validation import BOOL, DATASET_KEYS, INT, NUM, STR, optional
from esc.errors import ESCError


def quantize(image: Tensor) -> Tensor:
    """Clip to [0, 1] and round to 8-bit levels, as an LR image written to PNG and read back."""
    return image.clamp(0, 1).mul(255).round().div(255)


def make_queries(hr: Tensor, lq_size: int, scale: float, sample_q: int) -> Dict[str, Tensor]:
    """LTE's training pairs at one scale for a batch of HR patches (B, 3, P, P): LR patches ``lq``
    (B, 3, lq_size, lq_size), ``coord`` and ``cell`` (B, sample_q, 2) and RGB targets ``gt`` (B, sample_q, 3)."""
    b, _, height, width = hr.shape
    size = round(lq_size * scale)
    if size > min(height, width):
        raise ESCError(f'scale: x{scale:g} needs {size}-pixel HR patches, got {height}x{width}')
    if sample_q > size * size:
        raise ESCError(f'datasets.train.sample_q: {sample_q} queries exceed the {size * size} pixels of an HR crop')
    tops = torch.randint(0, height - size + 1, (b,)).tolist()
    lefts = torch.randint(0, width - size + 1, (b,)).tolist()
    crops = torch.stack([patch[:, t:t + size, x:x + size] for patch, t, x in zip(hr, tops, lefts)])
    lq = quantize(imresize_to(crops, (lq_size, lq_size)))
    picks = torch.stack([torch.randperm(size * size)[:sample_q] for _ in range(b)]).to(hr.device)
    coord = make_coord((size, size), hr.device)[picks]
    gt = crops.flatten(2).transpose(1, 2).gather(1, picks.unsqueeze(-1).expand(-1, -1, 3))
    cell = torch.full_like(coord, 2 / size)
    return {'lq': lq, 'coord': coord, 'cell': cell, 'gt': gt}


def _image_paths(opt: Dict[str, Any], key: str) -> List[str]:
    root = opt[key]
    if (opt.get('io_backend') or {}).get('type') == 'lmdb':
        from basicsr.data.data_util import paths_from_lmdb
        return paths_from_lmdb(root)
    paths = sorted(scandir(root, full_path=True))
    if not paths:
        raise ESCError(f'datasets.{opt["phase"]}.{key}: no images in {root}')
    return paths


class _Images:
    """The images of ``opt[key]`` (a folder, or LMDB) through basicsr's file client, decoded to RGB float32 in
    [0, 1]: the HR images (``dataroot_gt``), or the LR ones of a paired test set (``dataroot_lq``)."""

    def __init__(self, opt: Dict[str, Any], key: str = 'dataroot_gt') -> None:
        self.opt = opt
        self.client_key = key[len('dataroot_'):]
        self.io_backend = dict(opt.get('io_backend') or {'type': 'disk'})
        if self.io_backend['type'] == 'lmdb':
            self.io_backend.update(db_paths=[opt[key]], client_keys=[self.client_key])
        self.paths = _image_paths(opt, key)[:opt.get('first_k')]
        self.file_client: Optional[FileClient] = None
        self.cache: Optional[List[np.ndarray]] = None
        if opt.get('cache', False):  # LIIF's `cache: in_memory`; decoded once, kept as uint8
            self.cache = [np.round(self._read(i) * 255).astype(np.uint8) for i in range(len(self.paths))]

    def _read(self, index: int) -> np.ndarray:
        if self.file_client is None:
            self.file_client = FileClient(self.io_backend.pop('type'), **self.io_backend)
        path = self.paths[index]
        try:
            image = imfrombytes(self.file_client.get(path, self.client_key), float32=True)
        except (AttributeError, ValueError, TypeError):
            raise ESCError(f'datasets.{self.opt["phase"]}: {path} does not decode as an image') from None
        return image[..., ::-1].copy()  # BGR → RGB

    def __getitem__(self, index: int) -> np.ndarray:
        if self.cache is not None:
            return self.cache[index].astype(np.float32) / 255
        return self._read(index)

    def __len__(self) -> int:
        return len(self.paths)


@DATASET_REGISTRY.register()
class ArbitraryScaleTrainDataset(data.Dataset):
    """Random HR patches of ⌈lq_size·scale_max⌉ pixels for LTE training (see the module doc).

    Options: ``dataroot_gt`` (HR folder, or LMDB with ``io_backend: {type: lmdb}``), ``lq_size`` (LR patch,
    64), ``scale_min``/``scale_max`` (1, 4), ``sample_q`` (queries per patch, 2304), ``use_hflip``/``use_rot``
    (flips and transposition, on by default), ``cache`` (keep the decoded images in memory).
    """

    def __init__(self, opt: Dict[str, Any]) -> None:
        super().__init__()
        self.opt = opt
        self.lq_size, self.sample_q = int(opt.get('lq_size', 64)), int(opt.get('sample_q', 2304))
        self.scale_min, self.scale_max = float(opt.get('scale_min', 1)), float(opt.get('scale_max', 4))
        check_training_options(opt)
        self.patch_size = math.ceil(self.lq_size * self.scale_max - 1e-9)
        self.images = _Images(opt)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        image = self.images[index]
        h, w = image.shape[:2]
        p = self.patch_size
        if min(h, w) < p:
            raise ESCError(f'datasets.train: {self.images.paths[index]} ({w}x{h}) is smaller than the {p}-pixel HR '
                           f'patch that lq_size x scale_max needs')
        top, left = random.randint(0, h - p), random.randint(0, w - p)
        patch = np.ascontiguousarray(image[top:top + p, left:left + p])
        patch = augment(patch, self.opt.get('use_hflip', True), self.opt.get('use_rot', True))
        return {'hr': img2tensor(np.ascontiguousarray(patch), bgr2rgb=False, float32=True),
                'gt_path': self.images.paths[index]}

    def __len__(self) -> int:
        return len(self.images)


def check_training_options(opt: Dict[str, Any]) -> None:
    """One-line errors for LTE training options that cannot work (see ``ArbitraryScaleTrainDataset``)."""
    lq_size, sample_q = opt.get('lq_size', 64), opt.get('sample_q', 2304)
    low, high = opt.get('scale_min', 1), opt.get('scale_max', 4)
    for key, value in (('lq_size', lq_size), ('sample_q', sample_q)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ESCError(f'datasets.train.{key}: must be a positive integer, got {value!r}')
    for key, value in (('scale_min', low), ('scale_max', high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 1:
            raise ESCError(f'datasets.train.{key}: must be a finite number of at least 1, got {value!r}')
    if low > high:
        raise ESCError(f'datasets.train.scale_min: {low} exceeds scale_max {high}')
    if sample_q > lq_size * lq_size:
        raise ESCError(f'datasets.train.sample_q: {sample_q} queries exceed the {lq_size * lq_size} HR pixels of '
                       f'a x1 patch (lq_size {lq_size})')


DOWNSAMPLERS = ('matlab', 'pil')
"""How ``ArbitraryScaleTestDataset`` makes LR images: MATLAB's bicubic (the published ×2–×4 LR folders) or PIL's
(LIIF/LTE/esc_arb at the scales without published folders)."""


def pil_bicubic(hr: Tensor, size: Tuple[int, int]) -> Tensor:
    """``hr`` (3, H, W) in [0, 1], 8-bit levels, resized to ``size`` (h, w) by PIL's bicubic filter on its 8-bit
    image, as LIIF's ``resize_fn`` (torchvision's ToPILImage → Resize(BICUBIC) → ToTensor) does."""
    from PIL import Image

    levels = hr.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    resized = Image.fromarray(levels).resize((size[1], size[0]), Image.BICUBIC)
    return torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255).permute(2, 0, 1).contiguous()


@DATASET_REGISTRY.register()
class ArbitraryScaleTestDataset(data.Dataset):
    """HR images and their LR images at ``scale`` (any number above 1) for evaluation (see the module doc).

    Options: ``dataroot_gt`` (HR folder), ``scale`` (basicsr copies the top-level ``scale`` here),
    ``downsample`` ('matlab', the default, or 'pil': how the LR image is made), ``quantize_lq`` (round the LR image
    to 8 bits, default true; PIL's is always 8-bit), ``first_k`` (only the first k images).
    ``dataroot_lq``: read the LR images from this folder instead (the published LR_bicubic/X{s} folders, paired
    with the HR images by sorted name as LIIF's paired folders are); the scale is then HR height // LR height, which
    must be ``scale``, and the HR image is cropped to the LR image times it.
    """

    def __init__(self, opt: Dict[str, Any]) -> None:
        super().__init__()
        self.opt = opt
        phase = opt.get('phase', 'test')
        self.scale = check_scale(opt.get('scale'), f'datasets.{phase}.scale')
        self.downsample = opt.get('downsample', 'matlab')
        if self.downsample not in DOWNSAMPLERS:
            raise ESCError(f"datasets.{phase}.downsample: must be one of {', '.join(DOWNSAMPLERS)}, got "
                           f'{self.downsample!r}')
        self.images = _Images(opt)
        self.lq_images: Optional[_Images] = None
        if opt.get('dataroot_lq'):
            if self.scale != int(self.scale):
                raise ESCError(f'datasets.{phase}.dataroot_lq: LR folders serve whole scales, got x{self.scale:g}')
            self.lq_images = _Images(opt, 'dataroot_lq')
            if len(self.lq_images) != len(self.images):
                raise ESCError(f"datasets.{phase}.dataroot_lq: {len(self.lq_images)} LR images in "
                               f"{opt['dataroot_lq']} for {len(self.images)} HR images in {opt['dataroot_gt']}")

    def _paired(self, index: int, hr: Tensor) -> Tuple[Tensor, Tensor]:
        """The published LR image and the HR image cropped to it × scale (LIIF's ``sr-implicit-paired``)."""
        path = self.lq_images.paths[index]
        lq = img2tensor(np.ascontiguousarray(self.lq_images[index]), bgr2rgb=False, float32=True)
        lh, lw = lq.shape[-2:]
        ratio = hr.shape[-2] // lh
        if ratio != self.scale:
            raise ESCError(f'datasets.{self.opt.get("phase")}: {path} ({lw}x{lh}) is x{ratio} of its HR image '
                           f'{self.images.paths[index]}, not x{self.scale:g}')
        return lq, hr[:, :lh * ratio, :lw * ratio]

    def __getitem__(self, index: int) -> Dict[str, Any]:
        hr = img2tensor(np.ascontiguousarray(self.images[index]), bgr2rgb=False, float32=True)
        path = self.images.paths[index]
        if self.lq_images is not None:
            lq, hr = self._paired(index, hr)
            return {'lq': lq, 'gt': hr, 'lq_path': self.lq_images.paths[index], 'gt_path': path}
        h, w = hr.shape[-2:]
        lh, lw = math.floor(h / self.scale + 1e-9), math.floor(w / self.scale + 1e-9)
        if min(lh, lw) < 1:
            raise ESCError(f'datasets.{self.opt.get("phase")}: {path} ({w}x{h}) is too small for x{self.scale:g}')
        hr = hr[:, :round(lh * self.scale), :round(lw * self.scale)]
        if self.downsample == 'pil':
            lq = pil_bicubic(hr, (lh, lw))
        else:
            lq = imresize_to(hr, (lh, lw))
            lq = quantize(lq) if self.opt.get('quantize_lq', True) else lq.clamp(0, 1)
        return {'lq': lq, 'gt': hr, 'lq_path': path, 'gt_path': path}

    def __len__(self) -> int:
        return len(self.images)


_IMAGES = {'dataroot_gt': STR, 'cache': BOOL, 'first_k': optional(INT)}
DATASET_KEYS['ArbitraryScaleTrainDataset'] = {**_IMAGES, 'lq_size': INT, 'scale_min': NUM, 'scale_max': NUM,
                                              'sample_q': INT, 'use_hflip': BOOL, 'use_rot': BOOL}
DATASET_KEYS['ArbitraryScaleTestDataset'] = {**_IMAGES, 'quantize_lq': BOOL, 'downsample': STR,
                                             'dataroot_lq': optional(STR)}
