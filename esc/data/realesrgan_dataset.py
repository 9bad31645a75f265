"""``ESCRealESRGANDataset``: basicsr's ``RealESRGANDataset`` with one-line errors for bad input.

basicsr's dataset reads GT images listed in a meta-info file (disk backend; one path per line,
relative to ``dataroot_gt``) or an LMDB's ``meta_info.txt``, pads or crops each to 400×400 and draws
the blur and sinc kernels of the second-order degradation; the degradation itself runs in the model
(:mod:`esc.models.real_model`). On bad input it fails deep inside (a KeyError for a missing option, a
FileNotFoundError for the meta-info file, retries with random other images for a file that cannot be
read). This subclass checks first and names the culprit:

- ``meta_info`` named but absent on disk, listing no images, or listing a file that does not exist;
  without ``meta_info`` (disk backend) the training set is every image in the ``dataroot_gt`` folder,
  sorted, as the official ESC repository's dataset of that name reads it (its ESC-Real option files name
  no list), and a missing or empty folder is one line;
- a missing degradation option;
- an image that does not decode, or whose sides are smaller than the crop (``gt_size``): basicsr would
  reflect-pad it to 400 pixels and train on mirrored borders.
"""
from __future__ import annotations

import io
import os
import os.path as osp
from pathlib import Path
from typing import Any, Dict, List, Optional

from basicsr.data.realesrgan_dataset import RealESRGANDataset as BasicsrRealESRGANDataset
from basicsr.utils import FileClient
from basicsr.utils.registry import DATASET_REGISTRY
from PIL import Image, UnidentifiedImageError

from esc.data.benchmark_prep import IMAGE_EXTENSIONS, list_files
from esc.errors import ESCError


class _SizeCheckingClient:
    """A basicsr file client whose images must decode and be at least ``min_size`` on both sides."""

    def __init__(self, client: FileClient, min_size: Optional[int], option: str) -> None:
        self.client, self.min_size, self.option = client, min_size, option

    def get(self, filepath: str, client_key: str = 'default') -> bytes:
        data = self.client.get(filepath, client_key)
        try:
            width, height = Image.open(io.BytesIO(data)).size
        except (UnidentifiedImageError, OSError, ValueError):
            raise ESCError(f'{filepath}: cannot decode as an image ({self.option} reads it)') from None
        if self.min_size and min(width, height) < self.min_size:
            raise ESCError(f'{filepath}: {width}x{height} is smaller than the {self.min_size}x{self.min_size} crop '
                           f'({self.option}.gt_size); cut larger sub-images or leave it out of the meta-info file')
        return data


def folder_images(root: Any, option: str) -> List[str]:
    """The images in the folder ``root`` (not recursive), sorted, as full paths; one line if there are none."""
    try:
        names = list_files(Path(str(root)))
    except ESCError:
        raise ESCError(f'{option}.dataroot_gt: no such folder {root}') from None
    paths = [osp.join(str(root), name) for name in names if Path(name).suffix.lower() in IMAGE_EXTENSIONS]
    if not paths:
        raise ESCError(f'{option}.dataroot_gt: no images in {root}')
    return paths


@DATASET_REGISTRY.register()
class ESCRealESRGANDataset(BasicsrRealESRGANDataset):
    """basicsr's ``RealESRGANDataset`` (same options; ``meta_info`` optional), checked as the module doc says."""

    def __init__(self, opt: Dict[str, Any]) -> None:
        option = f"datasets.{opt.get('phase', 'train')}"
        self.option = option
        backend = (opt.get('io_backend') or {}).get('type')
        meta_info = opt.get('meta_info')
        folder: Optional[List[str]] = None
        if backend != 'lmdb':
            if meta_info is None:
                folder = folder_images(opt.get('dataroot_gt'), option)
            elif not osp.isfile(meta_info):
                raise ESCError(f'{option}.meta_info: no such file {meta_info}')
        elif not osp.isfile(osp.join(str(opt.get('dataroot_gt')), 'meta_info.txt')):
            raise ESCError(f"{option}.dataroot_gt: {opt.get('dataroot_gt')} has no meta_info.txt")
        try:  # basicsr reads the list it is given; the folder's images replace the empty one read here
            super().__init__(opt if folder is None else {**opt, 'meta_info': os.devnull})
        except KeyError as exc:
            raise ESCError(f'{option}.{exc.args[0]}: missing (a RealESRGAN degradation option)') from None
        except ValueError as exc:
            raise ESCError(f'{option}: {exc}') from None
        if folder is not None:
            self.opt, self.paths = opt, folder
        source = meta_info if backend != 'lmdb' else osp.join(opt['dataroot_gt'], 'meta_info.txt')
        if not self.paths:
            raise ESCError(f'{option}.meta_info: {source} lists no images')
        if backend == 'disk':
            missing = next((path for path in self.paths if not osp.isfile(path)), None)
            if missing is not None:
                raise ESCError(f'{option}.meta_info: {source} lists {missing}, which does not exist')
        self.min_size = opt.get('gt_size')

    def __getitem__(self, index: int) -> Dict[str, Any]:
        if self.file_client is None:
            client = FileClient(self.io_backend_opt.pop('type'), **self.io_backend_opt)
            self.file_client = _SizeCheckingClient(client, self.min_size, self.option)
        return super().__getitem__(index)


@DATASET_REGISTRY.register()
class RealESRGANDataset(ESCRealESRGANDataset):
    """The official ``type: RealESRGANDataset`` (ESC-Real's option files): :class:`ESCRealESRGANDataset`.

    basicsr registers its own class as ``RealESRGANDataset_basicsr`` and its registry falls back to that entry only
    for a name nobody registered; registering this name makes an option file's ``RealESRGANDataset`` build the checked
    dataset, which lists ``dataroot_gt`` without ``meta_info`` as the official one does (:mod:`esc.models.official`
    lists the official names)."""


