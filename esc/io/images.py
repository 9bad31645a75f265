"""Reading and writing the image files people upscale, with every failure a one-line :class:`~esc.errors.ESCError`.

Reading goes through Pillow, which parses a file's header before any pixel is decoded: the declared size is
checked against a pixel limit first (:func:`check_pixels`, which videos share: a 100000×100000 PNG of a few bytes
is refused without allocating anything), multi-frame files are never cut to their first frame (animated GIF, WebP
and PNG are read as an :class:`Animation` where the caller asks for one, and refused otherwise; multi-page TIFFs
are refused), and decoding the whole file reports truncation and corruption (OpenCV returns a truncated JPEG grey
below the cut). Only regular files are opened, and without blocking: a FIFO or a device is refused unread.
The EXIF orientation is applied, as viewers show the photo, and the ICC colour profile is returned to be written
into the result. What the file holds is kept: grey stays grey (a grey palette too), grey with alpha stays two
channels, a transparent colour key becomes alpha, 16-bit stays 16-bit. Pillow reads 16-bit colour (and 16-bit
grey with alpha) as 8 bits, so those images are decoded by OpenCV and checked against Pillow's 8-bit reading
(orientation included) before they are used. A profile that does not describe the pixels as read (a CMYK
profile once the pixels are RGB) is dropped with a note in :attr:`LoadedImage.notes`.

Writing goes through OpenCV's encoders, by extension (grey with alpha, which they do not take, is written as PNG
here); the colour profile is embedded in PNG, JPEG, WebP and TIFF results, which carry no EXIF and so no stale
orientation. :func:`result_format` sends a result its format cannot hold (16 bits, alpha, grey) to PNG instead.
Animations are written by Pillow in their own format, with every frame's duration and the loop count.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import stat
import struct
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Dict, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from esc.errors import ESCError
from esc.io.checkpoint import write_atomic

WRITABLE = ('.png', '.jpg', '.jpeg', '.webp', '.tif', '.tiff', '.bmp')
"""Extensions results are written as."""
JPEG_ALIASES = ('.jfif', '.jpe', '.jif', '.jfi')
"""Other names of JPEG files, whose results are written as ``.jpg`` (OpenCV has no encoder by these names)."""
DEEP_FORMATS = ('.png', '.tif', '.tiff')
"""Extensions that hold 16-bit results; a 16-bit image asked for in another format is written as PNG."""
CHANNELS_HELD = {'.png': (1, 2, 3, 4), '.tif': (1, 3, 4), '.tiff': (1, 3, 4), '.bmp': (1, 3, 4), '.webp': (3, 4),
                 '.jpg': (1, 3), '.jpeg': (1, 3)}
"""The channel counts (grey, grey with alpha, RGB, RGBA) each result format is written with as they are; any other
goes to PNG (:func:`result_format`)."""
SIDE_LIMITS = {'.jpg': 65535, '.jpeg': 65535, '.webp': 16383}
"""The longest side each format can hold (JPEG's header stores 16 bits, WebP's 14)."""
PROFILE_FORMATS = ('.png', '.jpg', '.jpeg', '.webp', '.tif', '.tiff')
"""Result formats an ICC colour profile is embedded in."""
DAMAGE = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, TypeError)
"""What Pillow's decoders raise on damaged data."""
ORIENTATIONS: Dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}
"""EXIF orientation → the array operation that shows the image upright (as Pillow's ``exif_transpose``)."""


ANIMATIONS = {'GIF': '.gif', 'WEBP': '.webp', 'PNG': '.png'}
"""Multi-frame formats (by Pillow's name) read frame by frame and written back in the same format."""


@dataclasses.dataclass
class Animation:
    """An animated image's frames, each the whole picture as shown (RGB, or RGBA where any frame is not opaque),
    uint8 and upright, with how long each is shown (milliseconds) and how often the animation plays again (0: for
    ever; None: the file said nothing, so it plays once)."""

    frames: List[np.ndarray]
    durations: List[int]
    loop: Optional[int]
    format: str
    icc_profile: Optional[bytes]

    @property
    def suffix(self) -> str:
        """The extension the animation is written back as."""
        return ANIMATIONS[self.format]


@dataclasses.dataclass
class LoadedImage:
    """An image file's pixels, upright, as H×W (grey), H×W×2 (grey and alpha) or H×W×3/4 (RGB/RGBA), uint8 or
    uint16 as the file holds them, with what its result should carry: the ICC profile (or None), the format Pillow
    identified, and a line for each thing the reading could not keep (a profile that no longer fits)."""

    pixels: np.ndarray
    icc_profile: Optional[bytes]
    format: str
    notes: List[str] = dataclasses.field(default_factory=list)


def available_memory() -> Optional[int]:
    """Bytes of memory the system can still give (``MemAvailable`` on Linux), or None where it cannot tell."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
    except (AttributeError, OSError, ValueError):
        return None


MEMORY_SHARE = 0.75
"""The share of the available memory one image may take (the rest is left to the system and the network)."""
FALLBACK_MEMORY = 4 << 30
"""The memory assumed where the system does not say how much is available."""


def pixel_limit(bytes_per_pixel: int, memory: Optional[int] = None) -> int:
    """The most input pixels that fit in :data:`MEMORY_SHARE` of ``memory`` (default: what is available now) at
    ``bytes_per_pixel``."""
    memory = memory if memory is not None else (available_memory() or FALLBACK_MEMORY)
    return max(1, int(memory * MEMORY_SHARE) // max(1, bytes_per_pixel))


def megapixels(pixels: int) -> str:
    return f'{pixels / 1e6:.1f} MP'


MAX_PIXELS_OPTION = ' (--max-pixels)'
"""How :func:`check_pixels` names a limit the caller chose: the command's option."""


def check_pixels(subject: str, width: int, height: int, limit: int, option: str = MAX_PIXELS_OPTION,
                 frames: int = 1, each: bool = False) -> None:
    """The one size check of every image and video, made from the header before a pixel is decoded: refuse more
    than ``limit`` pixels in one line naming ``subject``, the size and the limit (``option`` says where the limit
    came from). ``frames``: an animation's frame count, its frames all held at once; ``each``: the size is every
    frame's of a video, which holds one at a time."""
    total = frames * width * height
    if total <= limit:
        return
    if each:
        size = f'its {width}x{height} frames are {megapixels(total)} each'
    elif frames > 1:
        size = f'{frames} frames of {width}x{height} are {megapixels(total)}'
    else:
        size = f'{width}x{height} is {megapixels(total)}'
    raise ESCError(f'{subject}: {size}, over the limit of {megapixels(limit)}{option}')


def special_file_kind(mode: int) -> Optional[str]:
    """What a non-regular, non-folder file is, in words ('a FIFO (named pipe)', 'a character device', ...), from its
    ``st_mode``; None for a regular file or a folder. Such files are never opened: a FIFO blocks its reader."""
    for test, name in ((stat.S_ISFIFO, 'a FIFO (named pipe)'), (stat.S_ISCHR, 'a character device'),
                       (stat.S_ISBLK, 'a block device'), (stat.S_ISSOCK, 'a socket')):
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) or stat.S_ISDIR(mode) else 'not a regular file'


def open_regular_file(path: Path) -> Tuple[BinaryIO, int]:
    """``path`` opened for reading, and its size, where it is a regular file (symbolic links followed); anything
    else is a one-line ESCError, and is neither opened nor waited for (``O_NONBLOCK``: a FIFO swapped in after the
    check does not block the open, and is refused by the check on the open file)."""
    try:
        kind = special_file_kind(path.stat().st_mode)
        if kind is None and path.is_dir():
            kind = 'a folder'
        if kind is not None:
            raise ESCError(f'{path}: {kind}, not an image or video file; not opened')
        descriptor = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0) | getattr(os, 'O_CLOEXEC', 0))
    except OSError as exc:
        raise ESCError(f'{path}: cannot be read ({exc.strerror})') from None
    opened = os.fstat(descriptor)
    kind = special_file_kind(opened.st_mode)
    if kind is not None:
        os.close(descriptor)
        raise ESCError(f'{path}: {kind}, not an image or video file; not read')
    return os.fdopen(descriptor, 'rb'), opened.st_size


@contextlib.contextmanager
def _own_size_limit() -> Iterator[int]:
    """Pillow's decompression-bomb check off while a file is opened (its limit is applied here instead, as an
    ESCError, and only where the caller gives none); yields that limit."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            yield saved if saved is not None else 2 ** 63
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def load_image(path: Union[str, Path], max_pixels: Optional[int] = None,
               animations: bool = False) -> Union[LoadedImage, Animation]:
    """Read an image file, upright, refusing in one line what cannot be read whole.

    ``max_pixels``: the largest width × height accepted (an animation's: times its frames), checked from the header
    before any pixel is decoded (None: Pillow's decompression-bomb limit). ``animations``: return an animated GIF,
    WebP or PNG as an :class:`Animation` instead of refusing it."""
    path = Path(path)
    file, size = open_regular_file(path)
    with file, _own_size_limit() as default_limit:
        if size == 0:
            raise ESCError(f'{path}: empty file')
        limit = default_limit if max_pixels is None else max_pixels
        try:
            image = Image.open(file)
        except UnidentifiedImageError:
            raise ESCError(f'{path}: not an image (no image format recognised)') from None
        except DAMAGE as exc:
            raise ESCError(f'{path}: damaged image header ({_reason(exc)})') from None
        with image:
            return _decode(path, file, image, limit, max_pixels is not None, animations)


def read_image(path: Union[str, Path], max_pixels: Optional[int] = None) -> np.ndarray:
    """The pixels of a still image (:func:`load_image`)."""
    return load_image(path, max_pixels).pixels


def colour_of(image: np.ndarray) -> np.ndarray:
    """The colour of an image as :func:`load_image` reads it, as H×W×3 RGB of its dtype: grey repeated, alpha
    dropped (for measures and pictures that compare colour only)."""
    if image.ndim == 3 and image.shape[2] in (1, 2):
        image = image[..., 0]
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def _reason(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _decode(path: Path, file: BinaryIO, image: Image.Image, limit: int, chosen: bool,
            animations: bool) -> Union[LoadedImage, Animation]:
    deep = _sixteen_bit_rawmode(image)  # first: reading a PNG's EXIF loads its pixels, which empties image.tile
    width, height = image.size
    option = MAX_PIXELS_OPTION if chosen else " (Pillow's decompression-bomb limit)"
    check_pixels(str(path), width, height, limit, option)
    if width == 0 or height == 0:
        raise ESCError(f'{path}: empty image ({width}x{height})')
    try:
        frames = getattr(image, 'n_frames', 1)
        orientation = image.getexif().get(0x0112, 1)
    except DAMAGE as exc:
        raise ESCError(f'{path}: damaged or truncated image ({_reason(exc)})') from None
    if frames > 1 and image.format != 'MPO':  # MPO: a camera's JPEG with previews after it; the first is the photo
        if image.format in ANIMATIONS and not animations:
            raise ESCError(f'{path}: an animation of {frames} frames ({image.format}); '
                           'load_image(..., animations=True) reads every frame')
        if image.format not in ANIMATIONS:
            raise ESCError(f'{path}: {frames} frames ({image.format}); only still images and animated GIF, WebP and '
                           'PNG are upscaled, and its first frame alone would not be this file (split it first)')
        check_pixels(str(path), width, height, limit, option, frames=frames)
        if deep:
            raise ESCError(f'{path}: a 16-bit animation ({image.format}), whose frames would be read at 8 bits; '
                           'only 16-bit still images keep their depth')
        return _decode_animation(path, image, frames, orientation)
    profile = image.info.get('icc_profile') or None
    try:
        image.load()
        upright = ImageOps.exif_transpose(image)
    except DAMAGE as exc:
        raise ESCError(f'{path}: damaged or truncated image ({_reason(exc)})') from None
    if deep:
        pixels = _opencv_deep_pixels(path, file, np.asarray(upright), orientation, deep,
                                     image.info.get('transparency'))
    else:
        pixels = _pillow_pixels(path, upright, grey_palette=profile is None or _profile_space(profile) == 'GRAY')
    notes = []
    if profile is not None:
        space, wanted = _profile_space(profile), 'GRAY' if pixels.ndim == 2 or pixels.shape[2] == 2 else 'RGB'
        if space != wanted:
            notes.append(f'{path}: its colour profile is for {space or "unknown"} pixels, not the {wanted} pixels it '
                         'is read as; not kept')
            profile = None
    return LoadedImage(pixels=pixels, icc_profile=profile, format=image.format, notes=notes)


def _decode_animation(path: Path, image: Image.Image, count: int, orientation: int) -> Animation:
    """Every frame of an animated GIF, WebP or PNG as Pillow composes it for display, with its duration."""
    loop = image.info.get('loop')
    upright = ORIENTATIONS.get(orientation, ORIENTATIONS[1])
    frames, durations = [], []
    try:
        for index in range(count):
            image.seek(index)
            image.load()
            durations.append(int(round(float(image.info.get('duration') or 0))))
            frames.append(np.ascontiguousarray(upright(np.asarray(image.convert('RGBA')))))
    except DAMAGE as exc:
        raise ESCError(f'{path}: damaged or truncated image ({_reason(exc)})') from None
    if all(frame[..., 3].min() == 255 for frame in frames):
        frames = [np.ascontiguousarray(frame[..., :3]) for frame in frames]
    return Animation(frames=frames, durations=durations, loop=None if loop is None else int(loop),
                     format=image.format, icc_profile=image.info.get('icc_profile') or None)


def write_animation(path: Union[str, Path], frames: List[np.ndarray], durations: List[int], loop: Optional[int],
                    icc_profile: Optional[bytes] = None) -> None:
    """Write ``frames`` as an animated GIF, WebP (lossless) or PNG by ``path``'s extension, each shown for its
    duration (milliseconds), playing ``loop`` more times (0: for ever; None: once), atomically. GIF holds 256
    colours a frame, so each frame is quantised; Pillow merges consecutive identical frames, adding durations."""
    path = Path(path)
    suffix = path.suffix.lower()
    formats = {extension: name for name, extension in ANIMATIONS.items()}
    if suffix not in formats:
        raise ESCError(f"{path}: animations are written as {', '.join(sorted(formats))}, not {suffix!r}")
    pictures = [Image.fromarray(frame) for frame in frames]
    options: Dict[str, object] = dict(save_all=True, append_images=pictures[1:], duration=list(durations))
    if loop is not None:
        options['loop'] = loop
    if suffix == '.webp':
        options['lossless'] = True
    if suffix == '.gif' and frames[0].ndim == 3 and frames[0].shape[2] == 4:
        options['disposal'] = 2  # clear each frame before the next: transparent parts must not show the last one
    if icc_profile and suffix != '.gif':
        options['icc_profile'] = icc_profile
    buffer = io.BytesIO()
    try:
        pictures[0].save(buffer, format=formats[suffix], **options)
    except DAMAGE as exc:
        raise ESCError(f'{path}: Pillow cannot write this animation ({_reason(exc)})') from None
    try:
        write_atomic(path, buffer.getbuffer())
    except OSError as exc:
        raise ESCError(f'{path}: cannot be written ({exc.strerror or exc})') from None


def _sixteen_bit_rawmode(image: Image.Image) -> str:
    """The raw mode of a colour image (or grey with alpha) Pillow would read as 8 bits from 16 (e.g. 'RGB;16B',
    'LA;16B', which Pillow opens as RGBA), else ''. Read from ``image.tile``, which loading the pixels empties."""
    if image.mode not in ('RGB', 'RGBA'):
        return ''
    for tile in image.tile:
        args = tile[3] if len(tile) > 3 else None
        rawmode = args if isinstance(args, str) else args[0] if isinstance(args, tuple) and args else ''
        if isinstance(rawmode, str) and ';16' in rawmode:
            return rawmode
    return ''


def _profile_space(profile: bytes) -> str:
    """The colour space an ICC profile describes ('RGB', 'GRAY', 'CMYK', ...), from its header."""
    return profile[16:20].decode('latin-1').strip()


def _is_grey_palette(image: Image.Image) -> bool:
    palette = image.getpalette('RGB') or []
    return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))


def _key_alpha(pixels: np.ndarray, key: Union[int, Tuple[int, ...]]) -> np.ndarray:
    """Grey or RGB ``pixels`` with an alpha channel: transparent where they equal the colour ``key`` (PNG's
    ``tRNS``, at the pixels' own depth), opaque elsewhere."""
    peak = np.iinfo(pixels.dtype).max
    match = pixels == key if pixels.ndim == 2 else np.all(pixels == np.asarray(key, dtype=pixels.dtype), axis=-1)
    alpha = np.where(match, 0, peak).astype(pixels.dtype)
    return np.dstack([pixels, alpha])


def _pillow_pixels(path: Path, image: Image.Image, grey_palette: bool = True) -> np.ndarray:
    """Pillow's pixels as grey (8 or 16 bit), grey and alpha, RGB or RGBA NumPy arrays; a transparent colour key
    becomes alpha; a palette of greys is grey where ``grey_palette`` (no colour profile says otherwise)."""
    mode, key = image.mode, image.info.get('transparency')
    if mode.startswith('I;16'):
        grey = np.asarray(image).astype(np.uint16)
        return _key_alpha(grey, key) if isinstance(key, int) else grey
    if mode in ('I', 'F') or mode.startswith('I;'):
        raise ESCError(f'{path}: {mode} pixels (32-bit) are not supported (8- or 16-bit images)')
    if mode in ('1', 'L'):
        return np.asarray(image.convert('RGBA'))[..., (0, 3)] if key is not None else np.asarray(image.convert('L'))
    if mode in ('P', 'PA'):
        transparent = mode == 'PA' or key is not None
        pixels = np.asarray(image.convert('RGBA' if transparent else 'RGB'))
        if grey_palette and _is_grey_palette(image):
            return np.ascontiguousarray(pixels[..., (0, 3)] if transparent else pixels[..., 0])
        return pixels
    if mode == 'LA':
        return np.asarray(image)
    if mode == 'La':
        return np.asarray(image.convert('RGBA'))[..., (0, 3)]
    if mode == 'RGB':
        return np.asarray(image.convert('RGBA')) if key is not None else np.asarray(image)
    if mode in ('RGBA', 'RGBa'):
        return np.asarray(image.convert('RGBA'))
    return np.asarray(image.convert('RGB'))  # CMYK, YCbCr, LAB, HSV


def _opencv_deep_pixels(path: Path, file: BinaryIO, eight_bit: np.ndarray, orientation: int, rawmode: str,
                        key: Optional[Tuple[int, ...]]) -> np.ndarray:
    """A 16-bit colour image (or grey with alpha) decoded by OpenCV, upright, in the layout the file holds: its
    high bytes must equal Pillow's 8-bit reading ``eight_bit``, which also tells whether OpenCV already applied the
    orientation (it does for TIFF, not for PNG). A colour ``key`` (16-bit RGB with PNG's ``tRNS``) becomes alpha."""
    try:
        file.seek(0)
        decoded = cv2.imdecode(np.frombuffer(file.read(), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except (cv2.error, OSError, MemoryError) as exc:
        raise ESCError(f'{path}: OpenCV cannot decode its 16-bit pixels ({_reason(exc)})') from None
    if decoded is None or decoded.dtype != np.uint16 or decoded.ndim != 3 or decoded.shape[2] not in (3, 4):
        raise ESCError(f'{path}: OpenCV cannot decode its 16-bit colour pixels')
    rgb = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB if decoded.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    rgb = rgb[..., :eight_bit.shape[2]]  # OpenCV turns a tRNS key into alpha; the key is applied below instead
    for candidate in (rgb, ORIENTATIONS.get(orientation, ORIENTATIONS[1])(rgb)):
        if candidate.shape == eight_bit.shape and np.array_equal(candidate >> 8, eight_bit):
            break
    else:
        raise ESCError(f'{path}: OpenCV and Pillow decode its 16-bit pixels differently; not upscaled')
    if rawmode.startswith('LA'):
        return np.ascontiguousarray(candidate[..., (0, 3)])
    if key is not None and candidate.shape[2] == 3:
        return _key_alpha(candidate, key)
    return np.ascontiguousarray(candidate)


def result_suffix(source: Path, ext: Optional[str] = None) -> Tuple[str, Optional[str]]:
    """The extension ``source``'s result is written as, and a note where it is not the input's own: ``ext`` if
    given, the input's if writable, ``.jpg`` for another name of JPEG, else ``.png``."""
    if ext is not None:
        return ext, None
    suffix = source.suffix.lower()
    if suffix in WRITABLE:
        return suffix, None
    if suffix in JPEG_ALIASES:
        return '.jpg', f'{suffix} images give .jpg results'
    shown = suffix or 'extension-less'
    return '.png', f"{shown} images give .png results (results are written as {', '.join(WRITABLE)})"


def result_format(suffix: str, image: np.ndarray) -> Tuple[str, Optional[str]]:
    """The extension ``image`` is written as when ``suffix`` is asked for: ``suffix`` where that format holds its
    depth and channels as they are, else ``.png`` (which holds them all), with what ``suffix`` could not hold."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    lacking = []
    if image.dtype == np.uint16 and suffix not in DEEP_FORMATS:
        lacking.append('16 bits')
    if channels not in CHANNELS_HELD.get(suffix, (channels,)):
        lacking.append({1: 'grayscale', 2: 'grayscale with alpha', 4: 'alpha'}.get(channels, f'{channels} channels'))
    if not lacking:
        return suffix, None
    return '.png', f"a {suffix} file cannot hold its {' and '.join(lacking)}: the result is PNG"


def check_result_size(source: Path, suffix: str, height: int, width: int) -> None:
    """Refuse, before the work, a result larger than its format can hold."""
    limit = SIDE_LIMITS.get(suffix)
    if limit is not None and max(height, width) > limit:
        raise ESCError(f'{source}: its {width}x{height} result is beyond what {suffix} holds ({limit} pixels a side); '
                       'use --ext png')


def encode_image(image: np.ndarray, suffix: str, icc_profile: Optional[bytes] = None) -> bytes:
    """``image`` (grey, grey and alpha, RGB or RGBA; uint8 or uint16) encoded as ``suffix``, with ``icc_profile``
    embedded where the format is one of :data:`PROFILE_FORMATS`. A format that cannot hold the image's depth or
    channels as they are is refused (:func:`result_format` names one that can) rather than written with less."""
    held, lacking = result_format(suffix, image)
    if held != suffix and suffix in CHANNELS_HELD:
        raise ESCError(f"{lacking.split(':')[0]}; write it as {held}")
    if image.ndim == 3 and image.shape[2] == 2:
        if suffix != '.png':
            raise ESCError(f'grayscale with alpha is written as .png, not {suffix}')
        data = _png_grey_alpha(image)
    else:
        if image.ndim == 3 and image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        elif image.ndim == 3 and image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
        try:
            ok, encoded = cv2.imencode(suffix, image)
        except cv2.error as exc:
            raise ESCError(f'OpenCV cannot encode this {image.dtype} image as {suffix} ({_reason(exc)})') from None
        if not ok:
            raise ESCError(f'OpenCV cannot encode {image.dtype} images as {suffix}')
        data = encoded.tobytes()
    if icc_profile and suffix in PROFILE_FORMATS:
        embed = {'.png': _png_with_profile, '.webp': _webp_with_profile, '.tif': _tiff_with_profile,
                 '.tiff': _tiff_with_profile}.get(suffix, _jpeg_with_profile)
        data = embed(data, icc_profile, image)
    return data


def write_image(path: Union[str, Path], image: np.ndarray, icc_profile: Optional[bytes] = None) -> None:
    """Encode by ``path``'s extension (:func:`encode_image`) and write atomically: a killed run leaves no
    half-written file, and a failed write is one line naming ``path``."""
    path = Path(path)
    try:
        data = encode_image(image, path.suffix.lower(), icc_profile)
    except ESCError as exc:
        raise ESCError(f'{path}: {exc}') from None
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise ESCError(f'{path}: cannot be written ({exc.strerror or exc})') from None


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack('>I', len(payload)) + kind + payload + struct.pack('>I', zlib.crc32(kind + payload))


PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
PNG_IDAT_BYTES = 1 << 24
"""Compressed bytes per IDAT chunk written (a chunk holds at most 2**31 - 1)."""


def _png_grey_alpha(image: np.ndarray) -> bytes:
    """An H×W×2 grey-and-alpha image (8 or 16 bits) as a PNG of colour type 4, which OpenCV's encoder does not
    write: every row unfiltered, compressed by zlib."""
    height, width = image.shape[:2]
    depth = 16 if image.dtype == np.uint16 else 8
    rows = np.ascontiguousarray(image, dtype='>u2' if depth == 16 else np.uint8).view(np.uint8).reshape(height, -1)
    compressed = zlib.compress(np.hstack([np.zeros((height, 1), np.uint8), rows]).tobytes(), 6)
    header = struct.pack('>IIBBBBB', width, height, depth, 4, 0, 0, 0)
    chunks = [_png_chunk(b'IDAT', compressed[at:at + PNG_IDAT_BYTES])
              for at in range(0, len(compressed), PNG_IDAT_BYTES)]
    return PNG_SIGNATURE + _png_chunk(b'IHDR', header) + b''.join(chunks) + _png_chunk(b'IEND', b'')


def _png_with_profile(data: bytes, profile: bytes, image: np.ndarray) -> bytes:
    """An ``iCCP`` chunk after the PNG's ``IHDR`` (the first chunk, 25 bytes after the 8-byte signature)."""
    if data[12:16] != b'IHDR':
        return data
    chunk = _png_chunk(b'iCCP', b'ICC profile\0\0' + zlib.compress(profile))
    return data[:33] + chunk + data[33:]


JPEG_ICC_CHUNK = 65519
"""Profile bytes per JPEG APP2 segment: 65535 less the length field and the 14-byte 'ICC_PROFILE' header."""


def _jpeg_with_profile(data: bytes, profile: bytes, image: np.ndarray) -> bytes:
    """APP2 ``ICC_PROFILE`` segments after the JPEG's SOI marker and its JFIF APP0 segment."""
    if data[:2] != b'\xff\xd8':
        return data
    at = 2
    if data[2:4] == b'\xff\xe0':
        at = 4 + struct.unpack('>H', data[4:6])[0]
    pieces = [profile[i:i + JPEG_ICC_CHUNK] for i in range(0, len(profile), JPEG_ICC_CHUNK)]
    if len(pieces) > 255:
        return data
    segments = b''.join(b'\xff\xe2' + struct.pack('>H', 2 + 14 + len(piece)) + b'ICC_PROFILE\0'
                        + bytes([index + 1, len(pieces)]) + piece for index, piece in enumerate(pieces))
    return data[:at] + segments + data[at:]


def _riff_chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack('<I', len(payload)) + payload + b'\0' * (len(payload) % 2)


def _webp_with_profile(data: bytes, profile: bytes, image: np.ndarray) -> bytes:
    """An ``ICCP`` chunk in the WebP's extended (``VP8X``) layout, which a simple ``VP8 ``/``VP8L`` file is turned
    into (its canvas size and alpha flag from ``image``)."""
    if data[:4] != b'RIFF' or data[8:12] != b'WEBP':
        return data
    first = data[12:16]
    iccp = _riff_chunk(b'ICCP', profile)
    if first == b'VP8X':
        flags = data[20] | 0x20
        body = data[12:20] + bytes([flags]) + data[21:30] + iccp + data[30:]
    else:
        height, width = image.shape[:2]
        alpha = 0x10 if image.ndim == 3 and image.shape[2] == 4 else 0
        header = bytes([0x20 | alpha, 0, 0, 0]) + (width - 1).to_bytes(3, 'little') + (height - 1).to_bytes(3, 'little')
        body = _riff_chunk(b'VP8X', header) + iccp + data[12:]
    return b'RIFF' + struct.pack('<I', 4 + len(body)) + b'WEBP' + body


TIFF_ICC_TAG = 34675
"""The TIFF tag holding an ICC profile (type UNDEFINED)."""


def _tiff_with_profile(data: bytes, profile: bytes, image: np.ndarray) -> bytes:
    """The single-image TIFF ``data`` with an ICC profile tag: the profile and a copy of the first IFD, the tag
    added in order, are appended, and the header points to the new IFD (the old one is left unused). Classic and
    BigTIFF, either byte order; anything else is returned as it is."""
    order = {b'II': '<', b'MM': '>'}.get(data[:2])
    if order is None:
        return data
    version = struct.unpack(order + 'H', data[2:4])[0]
    if version == 42:
        count_format, entry_format, offset_format, header_end = 'H', 'HHI4s', 'I', 8
    elif version == 43:
        count_format, entry_format, offset_format, header_end = 'Q', 'HHQ8s', 'Q', 16
    else:
        return data
    offset_size = struct.calcsize(order + offset_format)
    first = struct.unpack(order + offset_format, data[header_end - offset_size:header_end])[0]
    count_size, entry_size = struct.calcsize(order + count_format), struct.calcsize(order + entry_format)
    count = struct.unpack(order + count_format, data[first:first + count_size])[0]
    entries = [struct.unpack(order + entry_format, data[at:at + entry_size])
               for at in range(first + count_size, first + count_size + count * entry_size, entry_size)]
    following = data[first + count_size + count * entry_size:][:offset_size]
    body = data + b'\0' * (len(data) % 2)
    profile_at = len(body)
    body += profile + b'\0' * (len(profile) % 2)
    packed_offset = struct.pack(order + offset_format, profile_at)
    entries = [entry for entry in entries if entry[0] != TIFF_ICC_TAG]
    entries.append((TIFF_ICC_TAG, 7, len(profile), packed_offset))
    entries.sort(key=lambda entry: entry[0])
    ifd_at = len(body)
    body += struct.pack(order + count_format, len(entries))
    body += b''.join(struct.pack(order + entry_format, *entry) for entry in entries) + following
    header = data[:header_end - offset_size] + struct.pack(order + offset_format, ifd_at)
    return header + body[header_end:]
