"""Training-data preparation: overlapping sub-images of HR/LR folders, and LMDB packing (basicsr's layout).

Sub-images follow basicsr's convention (HR crop 480, step 240, threshold 0): along each side a crop
starts every ``step`` pixels, plus one flush with the far edge when more than ``thresh`` pixels would
otherwise be left out. The far edge is that of the HR image mod-cropped to ``mod`` (by default the
least common multiple of the scales, 12 for ×2/×3/×4), so every crop lands on every LR grid and one
``*_sub`` HR folder serves all scales; for HR sides that are multiples of ``mod`` (DIV2K's are
multiples of 12) the crops are exactly basicsr's. The LR crop of HR crop ``(y, x, size)`` is
``(y/r, x/r, size/r)`` of the LR image, which must be ⌊H/r⌋×⌊W/r⌋ (LR folders such as DIV2K's
``LR_bicubic/X2`` with names ``0001x2.png`` are matched to ``0001.png``). Sub-image ``k`` (row-major,
from 1) of ``0001.png`` is ``0001_s{k:03d}.png`` in every output folder.

LMDB packing calls basicsr's ``make_lmdb_from_imgs`` (keys: file names without extension, and a
``meta_info.txt``) on a hidden temporary ``.lmdb`` folder that is renamed when complete.

Real-world SR (ESC-Real, RealESRGAN's recipe on DF2K+OST) trains on GT images only:
:func:`write_multiscale` adds downscaled copies of each HR image (Lanczos, ×0.75, ×0.5, ×1/3 and
the copy whose shorter side is 400 pixels, ``0001T0.png`` … ``0001T3.png``), :func:`extract_subimages`
cuts them and the originals into 400×400 sub-images every 200 pixels, and :func:`write_meta_info`
lists the sub-images, relative to the data root, for basicsr's ``RealESRGANDataset``;
:func:`prepare_real_training_data` does all three.
"""
from __future__ import annotations

import math
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from tqdm import tqdm

from esc.data.benchmark_prep import (IMAGE_EXTENSIONS, STATUSES, PathLike, Warn, ensure_image, list_files,
                                     progress_disabled, read_image, read_image_bytes, warn_to_stderr)
from esc.errors import ESCError
from esc.io.checkpoint import write_atomic


class LRFolder(NamedTuple):
    """An LR folder to cut alongside the HR folder: where it is, where its sub-images go, its scale."""

    source: Path
    target: Path
    scale: int


@dataclass
class ExtractReport:
    """What :func:`extract_subimages` did: sub-image statuses per output folder, skipped HR files."""

    counts: Dict[Path, Counter] = field(default_factory=dict)
    skipped: List[Path] = field(default_factory=list)

    def summary(self) -> str:
        """One line per output folder, e.g. ``DIV2K_train_HR_sub: 40 written, 0 unchanged``."""
        lines = []
        for folder, counts in self.counts.items():
            parts = [f'{counts[s]} {s}' for s in STATUSES if counts[s] or s in ('written', 'unchanged')]
            lines.append(f'{folder}: {", ".join(parts)}')
        if self.skipped:
            lines.append(f'skipped {len(self.skipped)} bad HR file(s): {", ".join(p.name for p in self.skipped)}')
        return '\n'.join(lines)


def crop_positions(size: int, crop: int, step: int, thresh: int = 0) -> List[int]:
    """Crop offsets along a side of ``size`` pixels: every ``step``, plus one at ``size - crop`` if more
    than ``thresh`` pixels would be left over (none when ``size < crop``)."""
    if size < crop:
        return []
    positions = list(range(0, size - crop + 1, step))
    if size - (positions[-1] + crop) > thresh:
        positions.append(size - crop)
    return positions


def lr_index(folder: Path, scale: int) -> Dict[str, Path]:
    """LR images of ``folder`` by the HR stem they belong to (``0001x2.png`` and ``0001.png`` → ``0001``)."""
    suffix = re.compile(rf'x{scale}$', re.IGNORECASE)
    index: Dict[str, Path] = {}
    for name in list_files(folder):
        if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        stem = suffix.sub('', Path(name).stem)
        if stem in index:
            raise ESCError(f'{folder / name}: {index[stem].name} already is the LR image of {stem}')
        index[stem] = folder / name
    return index


def check_geometry(crop: int, step: int, thresh: int, scales: Sequence[int]) -> None:
    """One-line errors for crop/step/thresh that cannot work, or do not divide by every scale."""
    if crop < 1 or step < 1 or thresh < 0:
        raise ESCError(f'crop size ({crop}) and step ({step}) must be positive, thresh ({thresh}) not negative')
    for scale in scales:
        if scale < 1 or crop % scale or step % scale:
            raise ESCError(f'crop size {crop} and step {step} must both be multiples of scale {scale}')


def _off_grid(hr_path: Path, side: str, size: int, positions: List[int], scale: int) -> None:
    bad = [p for p in positions if p % scale]
    if bad:
        raise ESCError(f'{hr_path}: its {side} ({size} px) leaves the sub-image at {bad[0]} off the x{scale} LR grid; '
                       f'use a mod that is a multiple of {scale}')


def extract_subimages(hr_dir: PathLike, hr_out: PathLike, lr_folders: Sequence[LRFolder] = (), crop: int = 480,
                      step: int = 240, thresh: int = 0, mod: Optional[int] = None, skip_bad: bool = False,
                      progress: Optional[bool] = None, warn: Warn = warn_to_stderr) -> ExtractReport:
    """Cut every HR image (and its LR images) into overlapping sub-images; idempotent, see the module doc.

    ``mod``: crop positions are computed on the HR image mod-cropped to it (default: the least
    common multiple of the LR scales); runs that share an HR sub-image folder must use the same.

    Bad inputs (unreadable images, a missing or wrongly sized LR image, an HR side that puts a crop
    off the LR grid) raise ESCError naming the file, or are skipped with a warning under ``skip_bad``.
    """
    hr_dir, hr_out = Path(hr_dir), Path(hr_out)
    check_geometry(crop, step, thresh, [f.scale for f in lr_folders])
    mod = math.lcm(*(f.scale for f in lr_folders)) if mod is None else mod
    if mod < 1:
        raise ESCError(f'mod must be a positive integer, got {mod}')
    names = list_files(hr_dir)
    if not names:
        raise ESCError(f'{hr_dir}: no files')
    indexes = [lr_index(Path(f.source), f.scale) for f in lr_folders]
    targets = [hr_out] + [Path(f.target) for f in lr_folders]
    for target in targets:
        if target.resolve() in (hr_dir.resolve(), *(Path(f.source).resolve() for f in lr_folders)):
            raise ESCError(f'{target}: an output folder must not be an input folder')
        target.mkdir(parents=True, exist_ok=True)
    report = ExtractReport({target: Counter() for target in targets})

    for name in tqdm(names, desc=f'extract {hr_dir.name}', unit='image', disable=progress_disabled(progress)):
        hr_path = hr_dir / name
        stem = Path(name).stem
        try:
            hr = read_image(hr_path)
            h, w = hr.shape[:2]
            ys = crop_positions(h - h % mod, crop, step, thresh)
            xs = crop_positions(w - w % mod, crop, step, thresh)
            if not ys or not xs:
                warn(f'{hr_path}: {w}x{h} is smaller than the {crop}x{crop} crop; no sub-images')
                continue
            pairs = [(hr, 1, hr_out)]
            for folder, index in zip(lr_folders, indexes):
                r = folder.scale
                lr_path = index.get(stem)
                if lr_path is None:
                    raise ESCError(f'{hr_path}: no LR image in {folder.source} (looked for {stem}.* and {stem}x{r}.*)')
                lr = read_image(lr_path)
                if lr.shape[:2] != (h // r, w // r):
                    raise ESCError(f'{lr_path}: {lr.shape[1]}x{lr.shape[0]}, but 1/{r} of {hr_path} ({w}x{h}) '
                                   f'is {w // r}x{h // r}')
                _off_grid(hr_path, 'height', h, ys, r)
                _off_grid(hr_path, 'width', w, xs, r)
                pairs.append((lr, r, Path(folder.target)))
        except ESCError as exc:
            if not skip_bad:
                raise
            warn(f'skipped {exc}')
            report.skipped.append(hr_path)
            continue
        for image, scale, target in pairs:
            size = crop // scale
            index = 0
            for y in ys:
                for x in xs:
                    index += 1
                    top, left = y // scale, x // scale
                    sub = np.ascontiguousarray(image[top:top + size, left:left + size])
                    status = ensure_image(target / f'{stem}_s{index:03d}.png', sub, hr_path, warn)
                    report.counts[target][status] += 1
    return report


def lmdb_keys(folder: Path, names: Sequence[str]) -> List[str]:
    """LMDB keys (file names without extension) of ``names``; one-line errors for names basicsr cannot key."""
    keys, seen = [], {}
    for name in names:
        key = Path(name).stem
        if not key.isascii() or '.' in key or any(c.isspace() for c in key):
            raise ESCError(f'{folder / name}: an LMDB key must be ASCII without dots or spaces (basicsr splits '
                           f'meta_info.txt on them); rename the file')
        if key in seen:
            raise ESCError(f'{folder / name}: {seen[key]} already has the key {key}')
        seen[key] = name
        keys.append(key)
    return keys


def read_meta_info(lmdb_path: Path) -> Dict[str, str]:
    """Key → shape (as written, e.g. ``(480,480,3)``) of every line of an LMDB folder's ``meta_info.txt``."""
    meta = lmdb_path / 'meta_info.txt'
    if not meta.is_file():
        raise ESCError(f'{lmdb_path} exists but has no meta_info.txt (incomplete?); delete it to rebuild')
    entries = {}
    for line in meta.read_text().splitlines():
        if line.strip():
            name, shape = (line.split(' ') + [''])[:2]
            entries[name.rsplit('.', 1)[0]] = shape
    return entries


def stored_shape(path: Path) -> str:
    """The shape basicsr's ``make_lmdb_from_imgs`` records for an image file, e.g. ``(480,480,3)``."""
    image = cv2.imdecode(np.frombuffer(read_image_bytes(path), np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ESCError(f'{path}: cannot decode as an image (corrupt or unsupported format)')
    h, w = image.shape[:2]
    return f'({h},{w},{image.shape[2] if image.ndim == 3 else 1})'


def pack_lmdb(folder: PathLike, lmdb_path: PathLike, compress_level: int = 1, batch: int = 5000,
              progress: Optional[bool] = None) -> str:
    """Pack the images of ``folder`` into ``lmdb_path`` (basicsr's layout); 'written' or 'unchanged'.

    An existing LMDB with the same keys (and the same shape for the first) is left alone; any other
    existing LMDB is an error (never overwritten). Every file is checked first (image extension, not empty, whole PNG).
    """
    folder, lmdb_path = Path(folder), Path(lmdb_path)
    if lmdb_path.suffix != '.lmdb':
        raise ESCError(f'{lmdb_path}: an LMDB folder name must end with .lmdb (basicsr recognises it by that)')
    names = list_files(folder)
    if not names:
        raise ESCError(f'{folder}: no files')
    keys = lmdb_keys(folder, names)
    if lmdb_path.exists():
        existing = read_meta_info(lmdb_path)
        if sorted(existing) != sorted(keys):
            raise ESCError(f'{lmdb_path} exists but holds {len(existing)} keys, not the {len(keys)} images of '
                           f'{folder} (first difference: {sorted(set(existing) ^ set(keys))[0]}); delete it to rebuild')
        shape = stored_shape(folder / names[0])
        if existing[keys[0]] != shape:
            raise ESCError(f'{lmdb_path} exists but holds {keys[0]} as {existing[keys[0]]}, while {folder / names[0]} '
                           f'is {shape}; delete it to rebuild')
        return 'unchanged'
    for name in tqdm(names, desc=f'check {folder.name}', unit='image', disable=progress_disabled(progress)):
        read_image_bytes(folder / name)
    lmdb_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = lmdb_path.with_name(f'.{lmdb_path.stem}.{os.getpid()}.tmp.lmdb')
    try:
        make_lmdb_from_imgs(str(folder), str(tmp), names, keys, batch=batch, compress_level=compress_level)
        os.rename(tmp, lmdb_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return 'written'


MULTISCALE_FACTORS = (0.75, 0.5, 1 / 3)
"""RealESRGAN's downscaling factors for DF2K; a last copy has its shorter side at ``SHORTEST_EDGE``."""
SHORTEST_EDGE = 400


def multiscale_sizes(width: int, height: int, factors: Sequence[float] = MULTISCALE_FACTORS,
                     shortest_edge: Optional[int] = SHORTEST_EDGE) -> List[Tuple[int, int]]:
    """(width, height) of each downscaled copy: ``int(side · factor)`` per factor, then (if ``shortest_edge``)
    the copy whose shorter side is ``shortest_edge`` and whose longer side keeps the aspect ratio."""
    sizes = [(int(width * f), int(height * f)) for f in factors]
    if shortest_edge:
        if width < height:
            sizes.append((shortest_edge, int(shortest_edge * height / width)))
        else:
            sizes.append((int(shortest_edge * width / height), shortest_edge))
    return sizes


def lanczos_resize(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """``image`` (uint8 BGR) resized to ``size`` (width, height) with PIL's Lanczos filter."""
    from PIL import Image

    rgb = Image.fromarray(np.ascontiguousarray(image[..., ::-1]))
    return np.ascontiguousarray(np.asarray(rgb.resize(size, resample=Image.LANCZOS))[..., ::-1])


def write_multiscale(hr_dir: PathLike, out_dir: PathLike, factors: Sequence[float] = MULTISCALE_FACTORS,
                     shortest_edge: Optional[int] = SHORTEST_EDGE, progress: Optional[bool] = None,
                     warn: Warn = warn_to_stderr) -> Counter:
    """Write the downscaled copies of every image of ``hr_dir`` to ``out_dir`` as ``<stem>T<k>.png``
    (:func:`multiscale_sizes`); idempotent like the other outputs. Returns the count per status."""
    hr_dir, out_dir = Path(hr_dir), Path(out_dir)
    if any(not 0 < f <= 1 for f in factors) or (shortest_edge is not None and shortest_edge < 1):
        raise ESCError(f'multiscale factors must lie in (0, 1] and the shortest edge be positive, got '
                       f'{list(factors)} / {shortest_edge}')
    names = [n for n in list_files(hr_dir) if Path(n).suffix.lower() in IMAGE_EXTENSIONS]
    if not names:
        raise ESCError(f'{hr_dir}: no images')
    if out_dir.resolve() == hr_dir.resolve():
        raise ESCError(f'{out_dir}: an output folder must not be an input folder')
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: Counter = Counter()
    for name in tqdm(names, desc=f'multiscale {hr_dir.name}', unit='image', disable=progress_disabled(progress)):
        path = hr_dir / name
        image = read_image(path)
        height, width = image.shape[:2]
        for index, size in enumerate(multiscale_sizes(width, height, factors, shortest_edge)):
            if min(size) < 1:
                warn(f'{path}: {width}x{height} is too small for a {size[0]}x{size[1]} copy; skipped')
                continue
            counts[ensure_image(out_dir / f'{Path(name).stem}T{index}.png', lanczos_resize(image, size), path,
                                warn)] += 1
    return counts


def write_meta_info(root: PathLike, folders: Sequence[PathLike], meta_path: PathLike) -> int:
    """List the images of ``folders`` (paths relative to ``root``, the dataset's ``dataroot_gt``), one per
    line and sorted, in ``meta_path`` (written atomically); returns how many. basicsr splits the lines on
    spaces, so a name with whitespace is a one-line error."""
    root = Path(root).resolve()
    lines = []
    for folder in folders:
        folder = Path(folder)
        try:
            relative = folder.resolve().relative_to(root)
        except ValueError:
            raise ESCError(f'{folder}: not inside the data root {root}') from None
        for name in list_files(folder):
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            entry = (relative / name).as_posix()
            if any(c.isspace() for c in entry):
                raise ESCError(f'{folder / name}: basicsr splits meta-info lines on spaces; rename the file')
            lines.append(entry)
    if not lines:
        raise ESCError(f'{meta_path}: no images to list in {", ".join(str(f) for f in folders)}')
    write_atomic(Path(meta_path), ''.join(f'{line}\n' for line in sorted(lines)).encode())
    return len(lines)


@dataclass
class RealDataReport:
    """What :func:`prepare_real_training_data` did."""

    multiscale: Dict[Path, Counter] = field(default_factory=dict)
    subimages: List[ExtractReport] = field(default_factory=list)
    meta_info: Optional[Path] = None
    listed: int = 0

    def summary(self) -> str:
        """One line per output folder and one for the meta-info file."""
        lines = [f'{folder}: ' + ', '.join(f'{counts[s]} {s}' for s in STATUSES
                                           if counts[s] or s in ('written', 'unchanged'))
                 for folder, counts in self.multiscale.items()]
        lines += [report.summary() for report in self.subimages]
        lines.append(f'{self.meta_info}: {self.listed} sub-images listed')
        return '\n'.join(lines)


def prepare_real_training_data(folders: Sequence[PathLike], out: PathLike, multiscale: Sequence[PathLike] = (),
                               crop: int = 400, step: int = 200, thresh: int = 0,
                               factors: Sequence[float] = MULTISCALE_FACTORS,
                               shortest_edge: Optional[int] = SHORTEST_EDGE, skip_bad: bool = False,
                               progress: Optional[bool] = None, warn: Warn = warn_to_stderr) -> RealDataReport:
    """GT data for RealESRGAN-style training under ``out`` (the option files' ``dataroot_gt``):

    ``<out>/<name>_multiscale/`` downscaled copies of each folder in ``multiscale`` (:func:`write_multiscale`),
    ``<out>/<name>_sub/`` and ``<out>/<name>_multiscale_sub/`` their sub-images (:func:`extract_subimages`,
    RealESRGAN's crop 400, step 200), and ``<out>/meta_info.txt`` listing every sub-image.
    """
    out = Path(out)
    folders = [Path(f) for f in folders]
    names = [f.resolve().name for f in folders]
    repeated = next((n for n in names if names.count(n) > 1), None)
    if repeated is not None:
        raise ESCError(f'two input folders are named {repeated}; their outputs would collide')
    resolved = {f.resolve() for f in folders}
    for folder in multiscale:
        if Path(folder).resolve() not in resolved:
            raise ESCError(f'--multiscale {folder}: not one of the input folders')
    sources = list(folders)
    report = RealDataReport()
    for folder in multiscale:
        target = out / f'{Path(folder).resolve().name}_multiscale'
        report.multiscale[target] = write_multiscale(folder, target, factors, shortest_edge, progress, warn)
        sources.append(target)
    sub_folders = []
    for source in sources:
        target = out / f'{source.resolve().name}_sub'
        report.subimages.append(extract_subimages(source, target, crop=crop, step=step, thresh=thresh, mod=1,
                                                  skip_bad=skip_bad, progress=progress, warn=warn))
        sub_folders.append(target)
    report.meta_info = out / 'meta_info.txt'
    report.listed = write_meta_info(out, sub_folders, report.meta_info)
    return report
