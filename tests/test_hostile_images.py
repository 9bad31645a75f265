"""Issue 29, parts 3, 4 and 8: the one image and video reader keeps what a file holds and refuses the rest first.

Images keep their bit depth, channels (grey, grey with alpha, RGB, RGBA), alpha and colour profile in every format
the README lists, through ``esc.io.images`` and through ``esc/commands/upscale.py`` (in this process). The input files
are written here by other means than the code under test (PNG from its specification, TIFF by tifffile, the others
by Pillow or OpenCV where the reader is Pillow), and each result is compared with the network's output in memory.
Videos are refused on their frame size from the header, before a frame is decoded; a folder run names every entry
it leaves out and never blocks on a FIFO. Each refusal is one line, with its exit status, its peak memory, and
nothing changed outside the output folder.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import struct
import zlib
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence, Tuple

import av
import cv2
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import esc
from esc.archs.esc_arch import ESC
from esc.commands import upscale
from esc.errors import ESCError
from esc.io.images import load_image, pixel_limit, result_format, write_image
from esc.io.video import upscale_video
from tests.helpers.networks import SMALL

REFUSAL_MEMORY = 1_500_000_000
"""A refusal made before the allocation it guards stays far below this (bytes of peak resident memory)."""
HEIGHT, WIDTH = 8, 12
LAYOUTS = {'L': 1, 'LA': 2, 'RGB': 3, 'RGBA': 4}
"""Pixel layouts by Pillow's names, and their channel counts."""
CASES = [('.png', layout, dtype) for dtype in (np.uint8, np.uint16) for layout in LAYOUTS]
CASES += [('.tif', layout, dtype) for dtype in (np.uint8, np.uint16) for layout in ('L', 'RGB', 'RGBA')]
CASES += [('.bmp', layout, np.uint8) for layout in ('L', 'RGB', 'RGBA')]
CASES += [('.webp', layout, np.uint8) for layout in ('RGB', 'RGBA')]
CASES += [('.jpg', layout, np.uint8) for layout in ('L', 'RGB')]
"""Every format a result is written as, with every depth and layout it holds."""
LOSSY = ('.jpg',)


def as_jpeg(image: np.ndarray) -> np.ndarray:
    """``image`` after a trip through OpenCV's JPEG codec at its defaults, as results are written."""
    conversion = cv2.COLOR_RGB2BGR if image.ndim == 3 else None
    data = cv2.imencode('.jpg', image if conversion is None else cv2.cvtColor(image, conversion))[1]
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    return decoded if conversion is None else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def visible(image: np.ndarray, ext: str) -> np.ndarray:
    """``image`` with the colour of fully transparent pixels zeroed where the format keeps only what shows (lossless
    WebP as OpenCV writes it drops the colour under alpha 0)."""
    if ext != '.webp' or image.ndim != 3 or image.shape[2] != 4:
        return image
    return np.where(image[..., 3:] == 0, 0, image)


def case_id(case: Tuple[str, str, type]) -> str:
    ext, layout, dtype = case
    return f'{ext[1:]}-{layout}-{np.dtype(dtype).itemsize * 8}'


def pixels_of(layout: str, dtype: type, seed: int = 0) -> np.ndarray:
    """Smooth pictures over the whole range of ``dtype`` (JPEG keeps them close), alpha from clear to opaque."""
    peak = np.iinfo(dtype).max
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    planes = [(xx / (WIDTH - 1) + seed) % 1, yy / (HEIGHT - 1), (xx + yy) / (WIDTH + HEIGHT - 2)]
    colour = planes[:1] if layout in ('L', 'LA') else planes
    alpha = [((xx * 3 + yy) % 5) / 4] if layout in ('LA', 'RGBA') else []
    image = np.stack(colour + alpha, axis=-1)
    image = np.round(image * peak).astype(dtype)
    image[0, 0] = peak  # the extremes of the range are there, whatever the depth
    image[-1, -1] = 0
    return image[..., 0] if layout == 'L' else image


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack('>I', len(payload)) + kind + payload + struct.pack('>I', zlib.crc32(kind + payload))


def png_bytes(image: np.ndarray, key: Optional[Sequence[int]] = None, profile: Optional[bytes] = None) -> bytes:
    """``image`` as a PNG written from the specification (rows unfiltered): colour type by channels, bit depth by
    dtype, an optional ``tRNS`` colour key and ``iCCP`` profile."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    depth = 16 if image.dtype == np.uint16 else 8
    rows = np.ascontiguousarray(image, dtype='>u2' if depth == 16 else np.uint8).view(np.uint8)
    raw = b''.join(b'\0' + row.tobytes() for row in rows.reshape(image.shape[0], -1))
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    chunks = [png_chunk(b'IHDR', struct.pack('>IIBBBBB', image.shape[1], image.shape[0], depth, colour_type, 0, 0, 0))]
    if profile is not None:
        chunks.append(png_chunk(b'iCCP', b'test\0\0' + zlib.compress(profile)))
    if key is not None:
        chunks.append(png_chunk(b'tRNS', struct.pack(f'>{len(key)}H', *key)))
    chunks += [png_chunk(b'IDAT', zlib.compress(raw)), png_chunk(b'IEND', b'')]
    return b'\x89PNG\r\n\x1a\n' + b''.join(chunks)


def write_input(path: Path, image: np.ndarray, profile: Optional[bytes] = None) -> None:
    """``image`` as ``path``'s format, written without esc.io.images (PNG by :func:`png_bytes`, TIFF by
    tifffile, BMP by OpenCV, WebP losslessly (colour under clear alpha kept) and JPEG at quality 95 by Pillow)."""
    ext = path.suffix
    channels = 1 if image.ndim == 2 else image.shape[2]
    if ext == '.png':
        path.write_bytes(png_bytes(image, profile=profile))
    elif ext == '.tif':
        tifffile.imwrite(path, image, photometric='minisblack' if channels == 1 else 'rgb',
                         extrasamples=('unassalpha',) if channels == 4 else None, iccprofile=profile)
    elif ext == '.bmp':
        assert profile is None
        conversion = {3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}.get(channels)
        cv2.imwrite(str(path), image if conversion is None else cv2.cvtColor(image, conversion))
    else:
        options = {'lossless': True, 'exact': True} if ext == '.webp' else {'quality': 95}
        Image.fromarray(image).save(path, icc_profile=profile, **options)


def read_result(path: Path) -> np.ndarray:
    """A result as OpenCV decodes it (not through esc.io.images), as grey, grey and alpha, RGB or RGBA."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    if image.ndim == 2:
        return image
    if path.suffix == '.png' and path.read_bytes()[25] == 4:  # IHDR's colour type 4, grey and alpha: OpenCV gives BGRA
        return np.ascontiguousarray(image[..., (0, 3)])
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)


def srgb_profile() -> bytes:
    from PIL import ImageCms
    return ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes()


@pytest.fixture(scope='module')
def tiny(tmp_path_factory) -> Tuple[Path, esc.Upscaler]:
    """A tiny random ESC ×2 checkpoint and the Upscaler the command builds from it (so the in-memory result is
    the command's)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('tiny') / 'tiny_x2.pth'
    torch.save({'params_ema': ESC(**SMALL, upscaling_factor=2).eval().state_dict()}, path)
    return path, esc.load_model(str(path), device='cpu')


def command(capsys, *args) -> Tuple[int, str, str]:
    """esc/commands/upscale.py's ``main`` in this process (``esc.commands.upscale.run`` and its one-line errors):
    exit status, stdout, stderr."""
    with pytest.raises(SystemExit) as exit_info:
        upscale.main([*map(str, args), '--device', 'cpu'])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def tree(root: Path, leave_out: Path) -> Dict[str, Tuple[int, int, int]]:
    """Every entry under ``root`` but ``leave_out``: its path -> (mode, size, modification time in ns), links not
    followed; a folder's size and time are left out (they change with the output folder made in it), its entries
    are listed."""
    state = {}
    for folder, folders, files in os.walk(root):
        folders[:] = [name for name in folders if Path(folder, name) != leave_out]
        for name in folders + files:
            info = os.lstat(Path(folder, name))
            kept = not stat.S_ISDIR(info.st_mode)
            state[str(Path(folder, name))] = (info.st_mode, info.st_size * kept, info.st_mtime_ns * kept)
    return state


@contextlib.contextmanager
def unchanged_outside(root: Path, output: Path) -> Iterator[None]:
    before = tree(root, output)
    yield
    assert tree(root, output) == before, 'something outside the output folder changed'


@contextlib.contextmanager
def never_blocks(seconds: int = 60) -> Iterator[None]:
    """Fail, instead of hanging, where the block waits (on a FIFO no one writes to) longer than ``seconds``."""
    def blocked(signum, frame):
        raise AssertionError(f'blocked for {seconds} s (a FIFO was opened?)')

    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------------------------------------- what images keep


@pytest.mark.parametrize('case', CASES, ids=case_id)
def test_the_reader_returns_exactly_the_pixels_each_format_and_depth_holds(tmp_path, case):
    ext, layout, dtype = case
    image = pixels_of(layout, dtype)
    path = tmp_path / f'picture{ext}'
    write_input(path, image)
    loaded = load_image(path)
    expected = np.asarray(Image.open(path)) if ext in LOSSY else image
    assert loaded.pixels.dtype == dtype and loaded.pixels.shape == image.shape
    assert np.array_equal(loaded.pixels, expected)
    assert loaded.notes == []


@pytest.mark.parametrize('case', CASES, ids=case_id)
def test_the_writer_round_trips_each_format_and_depth(tmp_path, case):
    ext, layout, dtype = case
    image = pixels_of(layout, dtype, seed=1)
    assert result_format(ext, image) == (ext, None)
    write_image(tmp_path / f'written{ext}', image)
    back = read_result(tmp_path / f'written{ext}')
    assert back.dtype == dtype and back.shape == image.shape
    expected = as_jpeg(image) if ext in LOSSY else visible(image, ext)
    assert np.array_equal(visible(back, ext), expected)
    assert np.array_equal(visible(load_image(tmp_path / f'written{ext}').pixels, ext), expected)


@pytest.mark.parametrize('case', CASES, ids=case_id)
def test_the_command_keeps_depth_channels_and_alpha_in_each_format(tiny, tmp_path, capsys, case):
    """The result file holds the network's in-memory output for the file's own pixels, in the input's format,
    depth and layout: nothing rounded to 8 bits, no channel added or lost."""
    path, model = tiny
    ext, layout, dtype = case
    image = pixels_of(layout, dtype, seed=2)
    source = tmp_path / f'in{ext}'
    write_input(source, image)
    status, _, stderr = command(capsys, '-i', source, '-o', tmp_path / 'out', '--model', path)
    assert status == 0, stderr
    assert 'note:' not in stderr
    result = read_result(tmp_path / 'out' / f'in_x2{ext}')
    expected = model.upscale(load_image(source).pixels)
    assert result.dtype == dtype and result.shape == (HEIGHT * 2, WIDTH * 2, *image.shape[2:])
    assert np.array_equal(visible(result, ext), as_jpeg(expected) if ext in LOSSY else visible(expected, ext))


@pytest.mark.parametrize('ext,dtype', [('.png', np.uint8), ('.png', np.uint16), ('.tif', np.uint8),
                                       ('.tif', np.uint16), ('.jpg', np.uint8), ('.webp', np.uint8)])
def test_the_command_keeps_the_colour_profile_in_each_format_that_holds_one(tiny, tmp_path, capsys, ext, dtype):
    pytest.importorskip('PIL.ImageCms', reason='Pillow without LittleCMS cannot make a test profile')
    path, _ = tiny
    profile = srgb_profile()
    source = tmp_path / f'tagged{ext}'
    write_input(source, pixels_of('RGBA' if ext != '.jpg' else 'RGB', dtype), profile=profile)
    assert load_image(source).icc_profile == profile
    status, _, stderr = command(capsys, '-i', source, '-o', tmp_path / 'out', '--model', path)
    assert status == 0 and 'note:' not in stderr, stderr
    with Image.open(tmp_path / 'out' / f'tagged_x2{ext}') as result:
        assert result.info.get('icc_profile') == profile


@pytest.mark.parametrize('ext,layout,dtype,lacking', [
    ('.jpg', 'RGBA', np.uint8, 'alpha'), ('.jpg', 'RGB', np.uint16, '16 bits'),
    ('.webp', 'L', np.uint8, 'grayscale'), ('.tif', 'LA', np.uint16, 'grayscale with alpha'),
    ('.bmp', 'RGBA', np.uint16, '16 bits'), ('.webp', 'LA', np.uint8, 'grayscale with alpha')])
def test_a_result_its_format_cannot_hold_is_png_and_says_so(tiny, tmp_path, capsys, ext, layout, dtype, lacking):
    """--ext asks for a format that cannot hold the picture as it is: the result is PNG, with a note, not the
    format with the alpha, the depth or the grey lost."""
    path, model = tiny
    image = pixels_of(layout, dtype, seed=3)
    source = tmp_path / 'deep.png'
    source.write_bytes(png_bytes(image))
    status, _, stderr = command(capsys, '-i', source, '-o', tmp_path / 'out', '--model', path, '--ext', ext[1:])
    assert status == 0, stderr
    assert f'note: {source}: a {ext} file cannot hold its {lacking}: the result is PNG' in stderr
    assert [p.name for p in (tmp_path / 'out').iterdir()] == ['deep_x2.png']
    assert np.array_equal(read_result(tmp_path / 'out' / 'deep_x2.png'), model.upscale(image))
    with pytest.raises(ESCError, match=f'cannot hold its {lacking}; write it as .png'):
        write_image(tmp_path / f'forced{ext}', image)
    assert not (tmp_path / f'forced{ext}').exists()


def test_sixteen_bit_colour_png_without_exif_stays_sixteen_bit(tmp_path):
    """The regression: reading the EXIF of a PNG without an eXIf chunk made Pillow load its pixels, which emptied
    the tile that tells 16-bit colour from 8, and 48- and 64-bit PNGs came back as 8 bits without a word."""
    for layout in ('RGB', 'RGBA'):
        image = pixels_of(layout, np.uint16)
        image[1, 1] = 0x1234  # low bytes that 8 bits would lose
        (tmp_path / f'{layout}.png').write_bytes(png_bytes(image))
        loaded = load_image(tmp_path / f'{layout}.png').pixels
        assert loaded.dtype == np.uint16 and np.array_equal(loaded, image)


@pytest.mark.parametrize('dtype', [np.uint8, np.uint16])
def test_a_transparent_colour_key_becomes_alpha_at_the_files_depth(tmp_path, dtype):
    for layout in ('L', 'RGB'):
        image = pixels_of(layout, dtype)
        key = tuple(int(v) for v in np.atleast_1d(image[2, 3]))
        (tmp_path / 'keyed.png').write_bytes(png_bytes(image, key=key))
        loaded = load_image(tmp_path / 'keyed.png').pixels
        colour = image if image.ndim == 3 else image[..., None]
        transparent = np.all(colour == np.asarray(key, dtype=dtype), axis=-1)
        assert loaded.dtype == dtype and loaded.shape == (*image.shape[:2], colour.shape[2] + 1)
        assert np.array_equal(loaded[..., :-1], colour)
        assert np.array_equal(loaded[..., -1], np.where(transparent, 0, np.iinfo(dtype).max))
        assert 0 < transparent.sum() < transparent.size


def test_a_grey_palette_stays_grey_and_a_colour_palette_is_rgb(tmp_path):
    grey = pixels_of('L', np.uint8)
    Image.fromarray(grey).convert('P').save(tmp_path / 'grey.gif')
    loaded = load_image(tmp_path / 'grey.gif').pixels
    assert loaded.shape == grey.shape and np.array_equal(loaded, np.asarray(Image.open(tmp_path / 'grey.gif')
                                                                            .convert('L')))
    colour = pixels_of('RGB', np.uint8)
    Image.fromarray(colour).quantize(16).save(tmp_path / 'colour.gif')
    assert load_image(tmp_path / 'colour.gif').pixels.shape == colour.shape


def test_a_profile_that_no_longer_fits_the_pixels_is_dropped_with_a_note(tiny, tmp_path, capsys):
    """A CMYK JPEG is read as RGB: its CMYK profile would mislabel the result, so it is not carried over."""
    pytest.importorskip('PIL.ImageCms', reason='Pillow without LittleCMS cannot make a test profile')
    path, _ = tiny
    cmyk_profile = bytearray(srgb_profile())
    cmyk_profile[16:20] = b'CMYK'
    source = tmp_path / 'print.jpg'
    Image.new('CMYK', (WIDTH, HEIGHT), (10, 200, 30, 40)).save(source, icc_profile=bytes(cmyk_profile))
    loaded = load_image(source)
    assert loaded.icc_profile is None and loaded.pixels.shape == (HEIGHT, WIDTH, 3)
    line = f'{source}: its colour profile is for CMYK pixels, not the RGB pixels it is read as; not kept'
    assert loaded.notes == [line]
    status, _, stderr = command(capsys, '-i', source, '-o', tmp_path / 'out', '--model', path)
    assert status == 0 and f'note: {line}' in stderr, stderr
    with Image.open(tmp_path / 'out' / 'print_x2.jpg') as result:
        assert result.mode == 'RGB' and 'icc_profile' not in result.info


# ------------------------------------------------------------------------------------------- refusals, one line


@pytest.fixture(scope='module')
def huge_video(tmp_path_factory) -> Path:
    """One flat 8000×8000 H.264 frame: 189 KB on disk, 64 megapixels once decoded (about a second to encode)."""
    path = tmp_path_factory.mktemp('huge_video') / 'huge.mp4'
    with av.open(str(path), 'w') as container:
        stream = container.add_stream('libx264', rate=1)
        stream.width = stream.height = 8000
        stream.pix_fmt, stream.options = 'yuv420p', {'preset': 'ultrafast'}
        frame = av.VideoFrame(8000, 8000, 'yuv420p')
        for plane, value in zip(frame.planes, (90, 128, 128)):
            plane.update(np.full(plane.buffer_size, value, np.uint8))
        frame.pts = 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def test_a_video_frame_over_the_limit_is_refused_from_the_header_by_the_command(tiny, huge_video, tmp_path, capsys,
                                                                                peak_memory):
    path, _ = tiny
    source = tmp_path / 'huge.mp4'
    source.write_bytes(huge_video.read_bytes())
    out = tmp_path / 'out'
    with unchanged_outside(tmp_path, out), peak_memory() as peak:
        status, _, stderr = command(capsys, '-i', source, '-o', out, '--model', path, '--max-pixels', '1M')
    assert status == 2
    assert stderr.strip() == (f'error: {source}: its 8000x8000 frames are 64.0 MP each, over the limit of 1.0 MP '
                              '(--max-pixels)')
    assert peak.bytes < REFUSAL_MEMORY, f'{peak.bytes / 1e9:.2f} GB'
    assert list(out.iterdir()) == []


def test_a_video_frame_over_the_limit_is_refused_by_the_api_and_by_default_by_memory(tiny, huge_video, tmp_path,
                                                                                     peak_memory):
    _, model = tiny
    target = tmp_path / 'huge_x2.mp4'
    with peak_memory() as peak:
        with pytest.raises(ESCError) as info:
            upscale_video(model, huge_video, target, max_pixels=1_000_000)
    assert str(info.value) == (f'{huge_video}: its 8000x8000 frames are 64.0 MP each, over the limit of 1.0 MP '
                               '(--max-pixels)')
    assert peak.bytes < REFUSAL_MEMORY, f'{peak.bytes / 1e9:.2f} GB'
    assert not target.exists() and list(tmp_path.iterdir()) == []
    if pixel_limit(model.bytes_per_input_pixel()) >= 8000 * 8000:
        pytest.skip('this machine holds a 64 MP frame: the default limit lets it through')
    with pytest.raises(ESCError, match=r'its 8000x8000 frames are 64\.0 MP each, over the limit of [\d.]+ MP '
                                       r'\(the memory limit\)$'):
        upscale_video(model, huge_video, target)


def test_an_image_over_the_limit_is_refused_from_the_header_before_decoding(tiny, tmp_path, capsys, peak_memory):
    """A 20000×20000 grey PNG of a few hundred bytes: 400 MP declared, refused before a row is inflated."""
    path, _ = tiny
    header = struct.pack('>IIBBBBB', 20000, 20000, 16, 6, 0, 0, 0)
    data = zlib.compress(b'\0' * 20000)
    source = tmp_path / 'huge.png'
    source.write_bytes(b'\x89PNG\r\n\x1a\n' + png_chunk(b'IHDR', header) + png_chunk(b'IDAT', data)
                       + png_chunk(b'IEND', b''))
    out = tmp_path / 'out'
    line = f'{source}: 20000x20000 is 400.0 MP, over the limit of 1.0 MP (--max-pixels)'
    with unchanged_outside(tmp_path, out), peak_memory() as peak:
        with pytest.raises(ESCError) as info:
            load_image(source, max_pixels=1_000_000)
        status, _, stderr = command(capsys, '-i', source, '-o', out, '--model', path, '--max-pixels', '1M')
    assert str(info.value) == line and status == 2 and stderr.strip() == f'error: {line}'
    assert peak.bytes < REFUSAL_MEMORY, f'{peak.bytes / 1e9:.2f} GB'


@pytest.fixture
def special_files(tmp_path) -> Dict[str, str]:
    """A FIFO, a link to a character device, a socket and a broken link in ``tmp_path/in``: name -> the one line's
    reason."""
    folder = tmp_path / 'in'
    folder.mkdir()
    os.mkfifo(folder / 'pipe.png')
    os.mkfifo(folder / 'pipe.mp4')
    (folder / 'null.jpg').symlink_to('/dev/null')
    (folder / 'gone.png').symlink_to(folder / 'nowhere.png')
    server = socket.socket(socket.AF_UNIX)
    with contextlib.suppress(OSError):  # a path too long for a socket address: that case is left out
        server.bind(str(folder / 'socket.png'))
    reasons = {'pipe.png': 'a FIFO (named pipe), not an image or video file; not opened',
               'pipe.mp4': 'a FIFO (named pipe), not an image or video file; not opened',
               'null.jpg': 'a character device, not an image or video file; not opened',
               'gone.png': 'cannot be read (No such file or directory)'}
    if (folder / 'socket.png').exists():
        reasons['socket.png'] = 'a socket, not an image or video file; not opened'
    yield reasons
    server.close()


def test_a_folder_run_names_every_entry_it_leaves_out_and_never_blocks(tiny, tmp_path, capsys, special_files):
    path, _ = tiny
    folder, out = tmp_path / 'in', tmp_path / 'in' / 'out'
    (folder / 'sub').mkdir()
    (folder / '.hidden.png').write_bytes(png_bytes(pixels_of('RGB', np.uint8)))
    (folder / 'good.png').write_bytes(png_bytes(pixels_of('RGB', np.uint8)))
    with unchanged_outside(tmp_path, out), never_blocks():
        status, stdout, stderr = command(capsys, '-i', folder, '-o', out, '--model', path)
    assert status == 1
    skipped = [line for line in stderr.splitlines() if line.startswith('skipped: ')]
    expected = [f'skipped: {folder / name}: {reason}' for name, reason in special_files.items()]
    expected.append(f'skipped: {folder / "sub"}: a folder (subfolders are not searched; give it to -i on its own)')
    assert sorted(skipped) == sorted(expected)
    assert f'not inputs: 1 hidden entry in {folder} (.hidden.png)' in stdout
    assert f'done 1, skipped {len(expected)}' in stdout
    assert [p.name for p in out.iterdir()] == ['good_x2.png']


@pytest.mark.parametrize('name', ['pipe.png', 'pipe.mp4', 'null.jpg'])
def test_a_special_file_alone_is_one_line_and_never_opened(tiny, tmp_path, capsys, special_files, name):
    path, _ = tiny
    source, out = tmp_path / 'in' / name, tmp_path / 'out'
    with unchanged_outside(tmp_path, out), never_blocks():
        status, _, stderr = command(capsys, '-i', source, '-o', out, '--model', path)
        with pytest.raises(ESCError) as info:
            load_image(source) if name.endswith(('.png', '.jpg')) else upscale_video(tiny[1], source,
                                                                                     out / 'pipe_x2.mp4')
    assert status == 2 and stderr.strip() == f'error: {source}: {special_files[name]}'
    assert str(info.value).startswith(f'{source}: {special_files[name].split(",")[0]}, not an image or video file')
    assert list(out.iterdir()) == []
