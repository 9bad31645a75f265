"""``DownsampleImageDataset``: HR crops downsampled as they are read, the training set of the official DFLIP files.

The official repository's ``ESC_DFLIP_X{2,3,4}`` option files train on DFLIP (DIV2K, Flickr2K, LSDIR, ...; too many
images to store an LR copy) through a dataset of this name, which keeps only the HR images and makes each LR patch on
the fly. This is that dataset, written for this project, with the same options and the same samples:

- GT images from an LMDB (``io_backend: {type: lmdb}``; its keys are the ones its ``meta_info.txt`` lists), from the
  files a ``meta_info_file`` lists relative to ``dataroot_gt`` (first word of each line), or else every image in the
  ``dataroot_gt`` folder (sorted);
- per sample one random ``gt_size`` crop (top, then left, from python's ``random``), basicsr's ``augment``
  (``use_hflip``, ``use_rot``), RGB float in [0, 1];
- the LR patch is PIL's bicubic resize of the crop's 8-bit image to (h // scale, w // scale), back in [0, 1]
  (torchvision's ToPILImage → Resize(BICUBIC) → ToTensor, as the official one does);
- ``mean``/``std`` normalise both when given; ``lq_path`` is the GT's path.

ToPILImage truncates ``x · 255`` to 8 bits where :func:`esc.data.arbitrary_scale_dataset.pil_bicubic` rounds; the
crop is decoded from an 8-bit file, so every value is k/255 in float32, and for each of the 256 levels both give
back k (``tests/test_official_training_files.py`` checks the LR patch against torchvision's pipeline).

All randomness comes from python's ``random``, which :mod:`esc.data.resumable` seeds per sample, so resumed and
multi-process runs draw the same crops. Bad input is one line: a missing folder, LMDB or list, a listed file that
does not exist, a file that does not decode or is smaller than the crop (named).
"""
from __future__ import annotations

import os.path as osp
import random
from typing import Any, Dict, List, Optional

import numpy as np
from basicsr.data.data_util import paths_from_lmdb
from basicsr.data.transforms import augment
from basicsr.utils import FileClient, imfrombytes, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data
from torchvision.transforms.functional import normalize

from esc.config.validation import BOOL, DATASET_KEYS, INT, SEQ, STR, optional
from esc.data.arbitrary_scale_dataset import pil_bicubic
from esc.data.realesrgan_dataset import folder_images
from esc.errors import ESCError


def gt_paths(opt: Dict[str, Any], option: str) -> List[str]:
    """The GT images of ``opt`` in sample order: LMDB keys, a meta-info file's entries or the folder's images."""
    root = opt.get('dataroot_gt')
    if not isinstance(root, str):
        raise ESCError(f'{option}.dataroot_gt: missing (the HR images: a folder or an LMDB)')
    if (opt.get('io_backend') or {}).get('type') == 'lmdb':
        if not osp.isfile(osp.join(root, 'meta_info.txt')):
            raise ESCError(f'{option}.dataroot_gt: {root} is not an LMDB with a meta_info.txt')
        try:
            paths = paths_from_lmdb(root)
        except ValueError as exc:  # basicsr wants the folder to end in .lmdb
            raise ESCError(f'{option}.dataroot_gt: {exc}') from None
        source = osp.join(root, 'meta_info.txt')
    elif opt.get('meta_info_file') is not None:
        source = opt['meta_info_file']
        if not osp.isfile(source):
            raise ESCError(f'{option}.meta_info_file: no such file {source}')
        with open(source) as listing:
            paths = [osp.join(root, line.split()[0]) for line in listing if line.strip()]
        missing = next((path for path in paths if not osp.isfile(path)), None)
        if missing is not None:
            raise ESCError(f'{option}.meta_info_file: {source} lists {missing}, which does not exist')
    else:
        return folder_images(root, option)
    if not paths:
        raise ESCError(f'{option}: {source} lists no images')
    return paths


@DATASET_REGISTRY.register()
class DownsampleImageDataset(data.Dataset):
    """Random HR crops and their PIL-bicubic LR patches (see the module doc).

    Options: ``dataroot_gt``, ``io_backend`` (disk or lmdb), ``meta_info_file`` (optional list), ``gt_size``
    (required), ``use_hflip``/``use_rot`` (off unless set), ``mean``/``std`` (optional normalisation), ``scale``
    (basicsr copies the top-level one here). ``filename_tmpl`` is accepted and unread, as in the official dataset.
    """

    def __init__(self, opt: Dict[str, Any]) -> None:
        super().__init__()
        self.opt = opt
        self.option = f"datasets.{opt.get('phase', 'train')}"
        if not isinstance(opt.get('gt_size'), int) or opt['gt_size'] < 1:
            raise ESCError(f'{self.option}.gt_size: must be a positive integer (the HR crop), '
                           f"got {opt.get('gt_size')!r}")
        if not isinstance(opt.get('scale'), int) or opt['scale'] < 1:
            raise ESCError(f"scale: must be a positive integer for {opt.get('type', 'DownsampleImageDataset')}, "
                           f"got {opt.get('scale')!r}")
        self.gt_size, self.scale = opt['gt_size'], opt['scale']
        self.mean, self.std = opt.get('mean'), opt.get('std')
        self.paths = gt_paths(opt, self.option)
        self.io_backend = dict(opt.get('io_backend') or {'type': 'disk'})
        if self.io_backend['type'] == 'lmdb':
            self.io_backend.update(db_paths=[opt['dataroot_gt']], client_keys=['gt'])
        self.file_client: Optional[FileClient] = None

    def read(self, index: int) -> np.ndarray:
        """The GT image ``index``: BGR float32 in [0, 1], checked to decode and to hold a crop."""
        if self.file_client is None:
            backend = dict(self.io_backend)
            self.file_client = FileClient(backend.pop('type'), **backend)
        path = self.paths[index]
        try:
            image = imfrombytes(self.file_client.get(path, 'gt'), float32=True)
        except (AttributeError, ValueError, TypeError):  # cv2.imdecode returns None; an LMDB returns None for a key
            raise ESCError(f'{self.option}: {path} cannot be decoded as an image') from None
        height, width = image.shape[:2]
        if min(height, width) < self.gt_size:
            raise ESCError(f'{self.option}: {path} ({width}x{height}) is smaller than the {self.gt_size}x'
                           f'{self.gt_size} crop (gt_size)')
        return image

    def __getitem__(self, index: int) -> Dict[str, Any]:
        image = self.read(index)
        height, width = image.shape[:2]
        size = self.gt_size
        top, left = random.randint(0, height - size), random.randint(0, width - size)
        crop = augment(image[top:top + size, left:left + size], self.opt.get('use_hflip', False),
                       self.opt.get('use_rot', False))
        gt = img2tensor(np.ascontiguousarray(crop), bgr2rgb=True, float32=True)
        lq = pil_bicubic(gt, (gt.shape[1] // self.scale, gt.shape[2] // self.scale))
        if self.mean is not None or self.std is not None:
            normalize(gt, self.mean, self.std, inplace=True)
            normalize(lq, self.mean, self.std, inplace=True)
        path = self.paths[index]
        return {'gt': gt, 'lq': lq, 'gt_path': path, 'lq_path': path}

    def __len__(self) -> int:
        return len(self.paths)


DATASET_KEYS['DownsampleImageDataset'] = {
    'dataroot_gt': STR, 'meta_info_file': optional(STR), 'filename_tmpl': STR, 'gt_size': INT, 'use_hflip': BOOL,
    'use_rot': BOOL, 'mean': optional(SEQ), 'std': optional(SEQ)}
