"""Benchmark preparation: MATLAB-bicubic ``LR_bicubic/X{r}`` folders from a benchmark's ``HR`` folder.

``<root>/HR/<name>.<ext>`` gives ``<root>/LR_bicubic/X{r}/<name>.png`` for every scale r:

- HR images are read with OpenCV's ``IMREAD_COLOR`` semantics, as basicsr's datasets read them: a
  grayscale image (Set14's ``bridge``) becomes three equal channels, an alpha channel is dropped
  and 16-bit images are reduced to 8 bits.
- The LR image is basicsr's MATLAB-compatible ``imresize`` (bicubic, antialiased) of the HR image
  mod-cropped to r (the last ``H mod r`` rows and ``W mod r`` columns dropped), rounded half up to
  8 bits as MATLAB's ``uint8`` conversion does: exactly ⌊H/r⌋×⌊W/r⌋ pixels, three channels.
- No mod-cropped HR copies are written. Outside training, basicsr's ``PairedImageDataset`` crops the
  ground truth to ``img_gt[0:h_lq * r, 0:w_lq * r]``, which is this same top-left mod-crop, so the
  untouched ``HR`` folder serves every scale.
- Re-running is safe: an output that already holds the same pixels is left alone (not even
  rewritten), an unreadable one is replaced, one with other pixels is kept with a warning and one
  of the wrong size is an error. Files are written to a hidden temporary file and renamed.

Because that crop hides an LR folder made for another scale (the HR image is simply cut down to
match), :func:`check_benchmark_pairs` checks every HR/LR pair before an evaluation starts.
"""
from __future__ import annotations

import os
import sys
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from basicsr.utils import scandir
from basicsr.utils.matlab_functions import imresize
from tqdm import tqdm

from esc.errors import ESCError
from esc.io.checkpoint import write_atomic

PathLike = Union[str, 'os.PathLike[str]']
Warn = Callable[[str], None]

IMAGE_EXTENSIONS = ('.bmp', '.jpeg', '.jpg', '.pgm', '.png', '.ppm', '.tif', '.tiff', '.webp')
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
STATUSES = ('written', 'unchanged', 'replaced', 'kept')


def warn_to_stderr(message: str) -> None:
    """Print ``warning: <message>`` on stderr without breaking a progress bar."""
    tqdm.write(f'warning: {message}', file=sys.stderr)


def quiet_opencv() -> None:
    """Silence OpenCV's own warnings on stderr, so bad input is reported by ESC's one-line errors only."""
    logging = getattr(getattr(cv2, 'utils', None), 'logging', None)
    if logging is not None:
        logging.setLogLevel(logging.LOG_LEVEL_ERROR)


def progress_disabled(progress: Optional[bool]) -> Optional[bool]:
    """tqdm's ``disable`` for ``progress``: None shows the bar only on a terminal."""
    return None if progress is None else not progress


def list_files(folder: Path) -> List[str]:
    """Names of the visible files in ``folder`` (not recursive), sorted; a one-line error if it is missing."""
    if not folder.is_dir():
        raise ESCError(f'{folder}: no such folder')
    return sorted(scandir(str(folder)))


def check_png_complete(data: bytes, path: PathLike) -> None:
    """Raise ESCError unless ``data`` is a whole PNG file: signature, intact chunks, IEND last."""
    if not data.startswith(PNG_SIGNATURE):
        raise ESCError(f'{path}: not a PNG file (bad signature)')
    pos = len(PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise ESCError(f'{path}: truncated PNG ({len(data)} bytes, ends before the IEND chunk)')
        length = int.from_bytes(data[pos:pos + 4], 'big')
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        name = kind.decode('latin-1')
        if end > len(data):
            raise ESCError(f'{path}: truncated PNG ({len(data)} bytes, ends inside the {name} chunk)')
        crc = int.from_bytes(data[end - 4:end], 'big')
        if zlib.crc32(data[pos + 4:end - 4]) != crc:
            raise ESCError(f'{path}: corrupt PNG (checksum mismatch in the {name} chunk at byte {pos})')
        if kind == b'IEND':
            return
        pos = end


def read_image_bytes(path: PathLike) -> bytes:
    """The bytes of an image file, after the checks that need no decoding (extension, size, PNG integrity)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise ESCError(f'{path}: not an image file (extension {suffix or "none"}; expected one of '
                       f'{", ".join(IMAGE_EXTENSIONS)})')
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ESCError(f'{path}: cannot read ({exc.strerror or exc})') from None
    if not data:
        raise ESCError(f'{path}: empty file (0 bytes)')
    if suffix == '.png':
        check_png_complete(data, path)
    return data


def read_image(path: PathLike) -> np.ndarray:
    """An image file as HxWx3 uint8 BGR (``cv2.IMREAD_COLOR``: gray → 3 equal channels); ESCError if bad."""
    data = read_image_bytes(path)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ESCError(f'{path}: cannot decode as an image (corrupt or unsupported format)')
    return image


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
    """Drop the last ``H mod scale`` rows and ``W mod scale`` columns."""
    h, w = image.shape[:2]
    return image[:h - h % scale, :w - w % scale]


def bicubic_downsample(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB ``imresize(mod_crop(hr, scale), 1/scale)`` for uint8 HxWxC: uint8, ⌊H/scale⌋×⌊W/scale⌋."""
    h, w = hr.shape[:2]
    if h < scale or w < scale:
        raise ValueError(f'a {w}x{h} image is smaller than scale {scale}')
    lr = imresize(mod_crop(hr, scale).astype(np.float32) / 255.0, 1 / scale)
    return np.clip(np.floor(lr * 255.0 + 0.5), 0, 255).astype(np.uint8)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image (OpenCV channel order)."""
    ok, buffer = cv2.imencode('.png', image)
    if not ok:
        raise ESCError(f'cannot encode a {image.shape} {image.dtype} image as PNG')
    return buffer.tobytes()


def decode_existing(path: Path) -> Optional[np.ndarray]:
    """An existing output read as basicsr reads it (``IMREAD_COLOR``), or None where it is unreadable."""
    try:
        return read_image(path)
    except ESCError:
        return None


def ensure_image(path: PathLike, image: np.ndarray, source: PathLike, warn: Warn = warn_to_stderr) -> str:
    """Make ``path`` hold ``image`` as PNG without touching a good existing file; returns the status.

    ``unchanged``: it already held these pixels; ``written``: it was new; ``replaced``: it was
    unreadable; ``kept``: it held other pixels of the right size (warned, left alone). A file of the
    wrong size raises ESCError: a stale output must be deleted by hand, never silently overwritten.
    """
    path = Path(path)
    if path.exists():
        existing = decode_existing(path)
        if existing is not None:
            if existing.shape != image.shape:
                h, w = existing.shape[:2]
                raise ESCError(f'{path} exists with size {w}x{h}, but {source} gives '
                               f'{image.shape[1]}x{image.shape[0]}; delete it to regenerate')
            if np.array_equal(existing, image):
                return 'unchanged'
            diff = int(np.abs(existing.astype(np.int16) - image).max())
            warn(f'{path} exists and differs from what {source} gives (by up to {diff} levels); kept it, '
                 f'delete it to regenerate')
            return 'kept'
        warn(f'replacing unreadable {path}')
        write_atomic(path, encode_png(image))
        return 'replaced'
    write_atomic(path, encode_png(image))
    return 'written'


def check_scales(scales: Sequence[int]) -> Tuple[int, ...]:
    """The scales as a tuple of distinct integers ≥ 2, or a one-line error."""
    if not scales:
        raise ESCError('scales: give at least one scale')
    for scale in scales:
        if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 2:
            raise ESCError(f'scales: {scale!r} is not an integer ≥ 2')
    return tuple(dict.fromkeys(int(s) for s in scales))


@dataclass
class BenchmarkReport:
    """What :func:`prepare_benchmark` did for one benchmark root."""

    root: Path
    scales: Tuple[int, ...]
    counts: Dict[int, Counter] = field(default_factory=dict)
    skipped: List[Path] = field(default_factory=list)

    def summary(self) -> str:
        """One line per scale, e.g. ``Set5 X2: 5 written, 0 unchanged``, and the skipped files."""
        lines = []
        for scale in self.scales:
            counts = self.counts.get(scale, Counter())
            parts = [f'{counts[s]} {s}' for s in STATUSES if counts[s] or s in ('written', 'unchanged')]
            lines.append(f'{self.root.name} X{scale}: {", ".join(parts)}')
        if self.skipped:
            lines.append(f'{self.root.name}: skipped {len(self.skipped)} bad HR file(s): '
                         f'{", ".join(p.name for p in self.skipped)}')
        return '\n'.join(lines)


def prepare_benchmark(root: PathLike, scales: Sequence[int] = (2, 3, 4), skip_bad: bool = False,
                      progress: Optional[bool] = None, warn: Warn = warn_to_stderr) -> BenchmarkReport:
    """Write ``<root>/LR_bicubic/X{r}/<name>.png`` for every image of ``<root>/HR`` and every scale r.

    Bad HR files (not an image, empty, truncated, unreadable) raise ESCError naming the file, or,
    with ``skip_bad``, are skipped with a warning. ``progress``: None shows a bar on terminals only.
    """
    root = Path(root)
    scales = check_scales(scales)
    if not root.is_dir():
        raise ESCError(f'{root}: no such folder')
    hr_dir = root / 'HR'
    if not hr_dir.is_dir():
        raise ESCError(f'{root}: no HR folder (expected {hr_dir})')
    names = list_files(hr_dir)
    if not names:
        raise ESCError(f'{hr_dir}: no files')
    outputs: Dict[str, str] = {}
    for name in names:
        out = f'{Path(name).stem}.png'
        if out in outputs:
            raise ESCError(f'{hr_dir / name}: {outputs[out]} already gives LR name {out}')
        outputs[out] = name
    not_png = [n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS and Path(n).suffix.lower() != '.png']
    if not_png:
        warn(f'{hr_dir}: {len(not_png)} HR file(s) are not PNG (first: {not_png[0]}); the LR files are PNG and '
             f'basicsr\'s PairedImageDataset pairs HR and LR by identical file names, so convert them to PNG')

    report = BenchmarkReport(root, scales, {scale: Counter() for scale in scales})
    lr_dirs = {scale: root / 'LR_bicubic' / f'X{scale}' for scale in scales}
    for lr_dir in lr_dirs.values():
        lr_dir.mkdir(parents=True, exist_ok=True)
    for name in tqdm(names, desc=root.name, unit='image', disable=progress_disabled(progress)):
        source = hr_dir / name
        try:
            hr = read_image(source)
            if min(hr.shape[:2]) < max(scales):
                raise ESCError(f'{source}: {hr.shape[1]}x{hr.shape[0]} is smaller than scale {max(scales)}')
        except ESCError as exc:
            if not skip_bad:
                raise
            warn(f'skipped {exc}')
            report.skipped.append(source)
            continue
        for scale, lr_dir in lr_dirs.items():
            status = ensure_image(lr_dir / f'{Path(name).stem}.png', bicubic_downsample(hr, scale), source, warn)
            report.counts[scale][status] += 1
    if report.skipped:
        warn(f'{hr_dir}: {len(report.skipped)} file(s) skipped have no LR image; basicsr\'s PairedImageDataset '
             f'needs the same files in HR and LR_bicubic/X{{r}}, so move them out of HR')
    return report


def image_size(path: PathLike) -> Tuple[int, int]:
    """(width, height) of an image file: from the PNG header where it is one, else by decoding."""
    with open(path, 'rb') as f:
        head = f.read(24)
    if head.startswith(PNG_SIGNATURE) and head[12:16] == b'IHDR':
        return int.from_bytes(head[16:20], 'big'), int.from_bytes(head[20:24], 'big')
    height, width = read_image(path).shape[:2]
    return width, height


def check_benchmark_pairs(gt_folder: PathLike, lq_folder: PathLike, scale: int, filename_tmpl: str = '{}') -> int:
    """Check, as basicsr's ``PairedImageDataset`` pairs them (same name, ``filename_tmpl`` on the LR side), that
    every HR image has its LR image and is its mod-crop ×``scale``: ⌊W/r⌋×⌊H/r⌋ = the LR size. Returns the
    number of pairs; the first problem is a one-line ESCError naming the file."""
    gt_folder, lq_folder = Path(gt_folder), Path(lq_folder)
    gt_names, lq_names = list_files(gt_folder), set(list_files(lq_folder))
    for name in gt_names:
        stem, ext = os.path.splitext(name)
        lq_path = lq_folder / f'{filename_tmpl.format(stem)}{ext}'
        if lq_path.name not in lq_names:
            raise ESCError(f'{gt_folder / name}: no LR image {lq_path}')
        (gw, gh), (lw, lh) = image_size(gt_folder / name), image_size(lq_path)
        if (gw // scale, gh // scale) != (lw, lh):
            raise ESCError(f'{gt_folder / name}: HR is {gw}x{gh}, so its x{scale} LR image should be '
                           f'{gw // scale}x{gh // scale}, but {lq_path} is {lw}x{lh}; was it made for another scale?')
    if len(lq_names) != len(gt_names):
        raise ESCError(f'{lq_folder}: {len(lq_names)} files, but {gt_folder} has {len(gt_names)}; '
                       f'basicsr pairs them one to one')
    return len(gt_names)
