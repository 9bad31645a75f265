"""Issue 23: upscaling never ends in a traceback, a sideways or silently truncated image, or a file it should not
touch. The tests build their own corpus of hostile files (images, checkpoints, videos), each small, and run it
through esc/commands/upscale.py and the Python API (esc.io.images.load_image, esc.load_model)."""
from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Dict, Tuple

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import esc
from esc.archs.esc_arch import ESC
from esc.commands import upscale
from esc.errors import ESCError
from esc.io.checkpoint import weights_metadata, write_safetensors
from esc.io.images import load_image, pixel_limit
from tests.helpers.networks import SMALL
from tests.helpers.paths import REPO
from tests.helpers.runs import run_in_process
from tests.helpers.videos import write_video


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack('>I', len(payload)) + kind + payload + struct.pack('>I', zlib.crc32(kind + payload))


def png_declaring(width: int, height: int, rows: int = 0) -> bytes:
    """An 8-bit grey PNG whose header declares width × height, holding ``rows`` rows of zeros (compressed as they
    are produced, so a real 15000×15000 image costs a fraction of a second and a few hundred kilobytes)."""
    packer = zlib.compressobj(9)
    row = b'\0' * (width + 1)
    data = b''.join(packer.compress(row) for _ in range(rows)) + packer.flush()
    header = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + png_chunk(b'IHDR', header) + png_chunk(b'IDAT', data) + png_chunk(b'IEND', b'')


def photo(height: int = 12, width: int = 20) -> np.ndarray:
    """An RGB picture whose corners differ, so a rotation or flip shows."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 7 * 30], axis=-1).astype(np.uint8)


def with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = image.getexif()
    exif[0x0112] = orientation
    return exif.tobytes()


def srgb_profile() -> bytes:
    from PIL import ImageCms
    return ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes()


def save_frames(path: Path, count: int = 3, **options) -> None:
    frames = [Image.fromarray(np.full((8, 8, 3), 60 * i, dtype=np.uint8)) for i in range(count)]
    frames[0].save(path, save_all=True, append_images=frames[1:], **options)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory) -> Tuple[Path, ESC]:
    torch.manual_seed(0)
    net = ESC(**SMALL, upscaling_factor=2).eval()
    path = tmp_path_factory.mktemp('hostile_ckpt') / 'tiny_x2.pth'
    torch.save({'params_ema': net.state_dict()}, path)
    return path, net


def command(capsys, *args) -> Tuple[int, str, str]:
    """esc/commands/upscale.py's ``main`` in this process: exit status, stdout, stderr."""
    with pytest.raises(SystemExit) as exit_info:
        upscale.main([*map(str, args), '--device', 'cpu'])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def hostile_images(folder: Path) -> Dict[str, str]:
    """Write the image corpus into ``folder``: file name -> the start of the one line that refuses it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'huge_header.png').write_bytes(png_declaring(100000, 100000))
    (folder / 'bomb.png').write_bytes(png_declaring(15000, 15000, rows=15000))
    save_frames(folder / 'pages.tif')
    ok, encoded = cv2.imencode('.jpg', photo(48, 64))
    (folder / 'cut.jpg').write_bytes(encoded.tobytes()[:len(encoded) * 6 // 10])
    (folder / 'empty.png').write_bytes(b'')
    (folder / 'text.png').write_text('not an image')
    (folder / 'garbage.jpg').write_bytes(b'\xff\xd8\xff\xe0' + os.urandom(200))
    return {
        'huge_header.png': '100000x100000 is 10000.0 MP, over the limit of 1.0 MP (--max-pixels)',
        'bomb.png': '15000x15000 is 225.0 MP, over the limit of 1.0 MP (--max-pixels)',
        'pages.tif': '3 frames (TIFF); only still images and animated GIF, WebP and PNG are upscaled',
        'cut.jpg': 'damaged or truncated image',
        'empty.png': 'empty file',
        'text.png': 'not an image (no image format recognised)',
        'garbage.jpg': '',
    }


def test_every_hostile_image_is_one_line_in_a_folder_run_and_the_good_ones_are_done(tiny, tmp_path):
    """A real process (no traceback can hide): each hostile file one line, the rest written, exit 1 and a count."""
    path, _ = tiny
    src, out = tmp_path / 'in', tmp_path / 'out'
    refusals = hostile_images(src)
    cv2.imwrite(str(src / 'good.png'), photo())
    (src / 'photo.jfif').write_bytes(cv2.imencode('.jpg', photo())[1].tobytes())
    (src / 'no_extension').write_bytes(cv2.imencode('.png', photo())[1].tobytes())
    Image.fromarray(photo()).save(src / 'still.gif')
    save_frames(src / 'anim.gif', duration=100, loop=0)
    result = run_in_process('esc.commands.upscale', ['-i', str(src), '-o', str(out), '--model', str(path),
                                                     '--device', 'cpu', '--max-pixels', '1M'], tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr
    skipped = [line for line in result.stderr.splitlines() if line.startswith('skipped: ')]
    assert len(skipped) == len(refusals)
    for name, reason in refusals.items():
        assert any(line.startswith(f'skipped: {src / name}: {reason}') for line in skipped), (name, skipped)
    assert f'done 5, skipped {len(refusals)}' in result.stdout
    assert 'note: .jfif images give .jpg results' in result.stderr
    assert 'note: extension-less images give .png results' in result.stderr
    assert 'note: .gif images give .png results' in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ['anim_x2.gif', 'good_x2.png', 'no_extension_x2.png',
                                                     'photo_x2.jpg', 'still_x2.png']
    assert cv2.imread(str(out / 'photo_x2.jpg')).shape == (24, 40, 3)


def test_the_api_refuses_every_hostile_image_in_one_line(tmp_path):
    for name, reason in hostile_images(tmp_path).items():
        with pytest.raises(ESCError) as info:
            load_image(tmp_path / name, max_pixels=1_000_000)
        message = str(info.value)
        assert message.startswith(f'{tmp_path / name}: {reason}') and '\n' not in message, message


def animation_frames(count: int = 3) -> list:
    """Distinct smooth frames (identical neighbours would be merged by the encoder)."""
    return [np.roll(photo(), 3 * index, axis=1) for index in range(count)]


@pytest.mark.parametrize('ext,loop', [('.gif', 0), ('.gif', None), ('.webp', 2), ('.png', 0)])
def test_animations_keep_every_frame_their_durations_and_loop(tiny, tmp_path, capsys, ext, loop):
    path, _ = tiny
    source = tmp_path / f'anim{ext}'
    pictures = [Image.fromarray(frame) for frame in animation_frames()]
    options = dict(save_all=True, append_images=pictures[1:], duration=[100, 200, 300])
    options.update({} if loop is None else {'loop': loop}, **({'lossless': True} if ext == '.webp' else {}))
    pictures[0].save(source, **options)
    with pytest.raises(ESCError, match=rf'an animation of 3 frames \({Image.open(source).format}\); load_image'):
        load_image(source)
    animation = load_image(source, animations=True)
    assert len(animation.frames) == 3 and animation.durations == [100, 200, 300] and animation.loop == loop

    status, _, stderr = command(capsys, '-i', source, '-o', tmp_path / 'out', '--model', path, '--ext', 'jpg')
    assert status == 0, stderr
    assert f'note: {source}: animated; its result keeps the {ext} format (--ext is for still images)' in stderr
    model = esc.load_model(str(path), device='cpu')
    with Image.open(tmp_path / 'out' / f'anim_x2{ext}') as result:
        assert result.n_frames == 3 and result.size == (40, 24) and result.info.get('loop') == loop
        for index, frame in enumerate(animation.frames):
            result.seek(index)
            result.load()
            assert result.info['duration'] == [100, 200, 300][index]
            got = np.asarray(result.convert('RGB')).astype(int)
            expected = [model.upscale(each).astype(int) for each in animation.frames]
            if ext == '.gif':  # 256 colours a frame: this frame's result, quantised, and nearest to it of all
                errors = [np.abs(got - each).mean() for each in expected]
                assert errors[index] < 12 and int(np.argmin(errors)) == index, errors
            else:
                assert np.array_equal(got, expected[index])


def test_a_declared_size_is_refused_from_the_header_by_default_too(tmp_path):
    """Without --max-pixels the API applies Pillow's decompression-bomb limit, as a one-line ESCError."""
    (tmp_path / 'huge.png').write_bytes(png_declaring(100000, 100000))
    with pytest.raises(ESCError, match=r"100000x100000 is 10000.0 MP, over the limit of 89.5 MP \(Pillow's "):
        load_image(tmp_path / 'huge.png')
    assert Image.MAX_IMAGE_PIXELS == 89478485  # Pillow's own limit is put back


def test_the_command_refuses_a_huge_declared_size_by_its_memory_limit_in_one_line(tiny, tmp_path, capsys):
    path, _ = tiny
    (tmp_path / 'huge.png').write_bytes(png_declaring(100000, 100000))
    status, _, stderr = command(capsys, '-i', tmp_path / 'huge.png', '-o', tmp_path / 'out', '--model', path)
    assert status == 2 and len(stderr.strip().splitlines()) == 1
    assert re.match(rf'error: {re.escape(str(tmp_path / "huge.png"))}: 100000x100000 is 10000.0 MP, over the limit '
                    r'of \d+\.\d MP \(--max-pixels\)$', stderr.strip()), stderr


def test_the_default_pixel_limit_follows_memory_scale_and_tiling(tiny):
    path, _ = tiny
    tiled = esc.load_model(str(path), device='cpu', tile=64, tile_overlap=16)
    whole = esc.load_model(str(path), device='cpu')
    per_tiled, per_whole = tiled.bytes_per_input_pixel(4), whole.bytes_per_input_pixel(4)
    assert per_whole - per_tiled == 1024  # the network's own features when the image runs whole
    assert per_tiled == 4 * 5 + 4 * (16 + 4 + 8)  # decoded and float input; float output, weights, result
    assert pixel_limit(per_tiled, memory=8 << 30) == int((8 << 30) * 0.75) // per_tiled
    assert pixel_limit(per_whole, memory=8 << 30) < pixel_limit(per_tiled, memory=8 << 30)


@pytest.mark.parametrize('orientation', [3, 6, 8, 5, 7])
def test_exif_orientation_is_applied_before_upscaling_and_not_left_in_the_result(tiny, tmp_path, capsys, orientation):
    path, _ = tiny
    picture = Image.fromarray(photo())
    source = tmp_path / f'phone_{orientation}.png'
    picture.save(source, exif=with_orientation(picture, orientation))
    upright = np.asarray(ImageOps.exif_transpose(Image.open(source)))
    assert np.array_equal(load_image(source).pixels, upright)
    status, _, stderr = command(capsys, '-i', source, '-o', tmp_path / 'out', '--model', path)
    assert status == 0, stderr
    result = Image.open(tmp_path / 'out' / f'phone_{orientation}_x2.png')
    assert result.getexif().get(0x0112) is None  # nothing left to turn it again
    expected = esc.load_model(str(path), device='cpu').upscale(upright)
    assert np.array_equal(np.asarray(result), expected)


def test_a_sideways_jpeg_phone_photo_comes_out_upright(tiny, tmp_path, capsys):
    path, _ = tiny
    picture = Image.fromarray(photo(12, 20))
    picture.save(tmp_path / 'IMG_0001.JPG', exif=with_orientation(picture, 6), quality=95)
    status, _, stderr = command(capsys, '-i', tmp_path / 'IMG_0001.JPG', '-o', tmp_path / 'out', '--model', path)
    assert status == 0, stderr
    result = Image.open(tmp_path / 'out' / 'IMG_0001_x2.jpg')
    assert result.size == (24, 40) and result.getexif().get(0x0112) is None  # portrait, as the phone showed it


def test_sixteen_bit_png_with_orientation_stays_sixteen_bit_and_upright(tiny, tmp_path):
    """Pillow reads 16-bit colour as 8 bits: OpenCV decodes it, checked against Pillow's upright reading."""
    deep = (photo().astype(np.uint16) * 257 + np.arange(20, dtype=np.uint16)[None, :, None])
    data = cv2.imencode('.png', cv2.cvtColor(deep, cv2.COLOR_RGB2BGR))[1].tobytes()
    exif = with_orientation(Image.new('RGB', (1, 1)), 6)
    source = tmp_path / 'deep.png'
    source.write_bytes(data[:33] + png_chunk(b'eXIf', exif[6:] if exif.startswith(b'Exif') else exif) + data[33:])
    loaded = load_image(source).pixels
    assert loaded.dtype == np.uint16 and np.array_equal(loaded, np.rot90(deep, -1))


@pytest.mark.parametrize('ext', ['.png', '.jpg', '.webp'])
def test_the_colour_profile_is_kept(tiny, tmp_path, capsys, ext):
    pytest.importorskip('PIL.ImageCms', reason='Pillow without LittleCMS cannot make a test profile')
    path, _ = tiny
    profile = srgb_profile()
    rgba = ext == '.webp'
    picture = Image.fromarray(np.dstack([photo(), np.full((12, 20), 200, np.uint8)]) if rgba else photo())
    picture.save(tmp_path / f'tagged{ext}', icc_profile=profile, **({'quality': 95} if ext == '.jpg' else {}))
    status, _, stderr = command(capsys, '-i', tmp_path / f'tagged{ext}', '-o', tmp_path / 'out', '--model', path)
    assert status == 0, stderr
    with Image.open(tmp_path / 'out' / f'tagged_x2{ext}') as result:
        result.load()
        assert result.info.get('icc_profile') == profile and result.size == (40, 24)
        assert result.mode == ('RGBA' if rgba else 'RGB')


def test_the_output_folder_is_checked_before_the_work(tiny, tmp_path, capsys):
    path, _ = tiny
    cv2.imwrite(str(tmp_path / 'a.png'), photo())
    (tmp_path / 'taken').write_text('a file')
    status, _, stderr = command(capsys, '-i', tmp_path / 'a.png', '-o', tmp_path / 'taken', '--model', path)
    assert status == 2 and stderr.strip() == f'error: -o: {tmp_path / "taken"} is a file; -o names the folder the ' \
                                             'results go to'
    status, _, stderr = command(capsys, '-i', tmp_path / 'a.png', '-o', tmp_path / 'taken' / 'sub', '--model', path)
    assert status == 2 and stderr.strip().startswith(f'error: -o: cannot write in {tmp_path / "taken" / "sub"} (')
    assert len(stderr.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders; the check cannot fail as root')
def test_a_read_only_output_folder_stops_the_run_before_the_work(tiny, tmp_path, capsys):
    path, _ = tiny
    cv2.imwrite(str(tmp_path / 'a.png'), photo())
    locked = tmp_path / 'locked'
    locked.mkdir()
    locked.chmod(0o555)
    try:
        status, stdout, stderr = command(capsys, '-i', tmp_path / 'a.png', '-o', locked, '--model', path)
    finally:
        locked.chmod(0o755)
    assert status == 2 and stderr.strip().startswith(f'error: -o: cannot write in {locked} (Permission denied')
    assert 'Upscaler(' not in stdout  # refused before the model was loaded


def test_a_file_this_run_did_not_write_is_never_replaced_unasked(tiny, tmp_path, capsys):
    path, _ = tiny
    src, out = tmp_path / 'in', tmp_path / 'out'
    src.mkdir()
    out.mkdir()
    cv2.imwrite(str(src / 'a.png'), photo())
    cv2.imwrite(str(src / 'b.png'), photo())
    (out / 'a_x2.png').write_bytes(b'somebody else\'s file')
    status, stdout, stderr = command(capsys, '-i', src, '-o', out, '--model', path)
    assert status == 1 and 'done 1, skipped 1' in stdout
    assert f'skipped: {src / "a.png"}: its output {out / "a_x2.png"} already exists and this run did not write ' \
           'it; left as it is (--overwrite replaces it)' in stderr
    assert (out / 'a_x2.png').read_bytes() == b'somebody else\'s file'
    status, stdout, _ = command(capsys, '-i', src, '-o', out, '--model', path, '--overwrite')
    assert status == 0 and 'done 2, skipped 0' in stdout
    assert cv2.imread(str(out / 'a_x2.png')).shape == (24, 40, 3)


def test_a_result_too_large_for_its_format_is_refused_before_the_work(tiny, tmp_path, capsys, monkeypatch):
    path, _ = tiny
    Image.new('RGB', (8200, 2), 'white').save(tmp_path / 'wide.webp', lossless=True)
    model_upscale = esc.Upscaler.upscale
    calls = []
    monkeypatch.setattr(esc.Upscaler, 'upscale', lambda self, image: calls.append(1) or model_upscale(self, image))
    status, _, stderr = command(capsys, '-i', tmp_path / 'wide.webp', '-o', tmp_path / 'out', '--model', path)
    assert status == 2 and calls == []
    assert stderr.strip() == (f'error: {tmp_path / "wide.webp"}: its 16400x4 result is beyond what .webp holds '
                              '(16383 pixels a side); use --ext png')


def hostile_checkpoints(folder: Path, net: ESC) -> Dict[str, str]:
    """Write the checkpoint corpus: file name -> what its one line says after 'model: <path>: '."""
    state = net.state_dict()
    options = dict(type='ESC', **SMALL)
    torch.save({'params_ema': {**state, 'proj.weight': [1.0, 2.0]}}, folder / 'list_weight.pth')
    torch.save({'params_ema': {**state, 'proj.weight': torch.tensor(1.0)}}, folder / 'zero_d.pth')
    torch.save({'params_ema': 5, 'params': state}, folder / 'params_ema_5.pth')
    torch.save({'params_ema': {**state, 'plk_filter': state['plk_filter'].long()}}, folder / 'int_weight.pth')
    nan = {key: value.clone() for key, value in state.items()}
    nan['proj.bias'][0] = float('nan')
    torch.save({'params_ema': nan}, folder / 'nan.pth')
    write_safetensors(state, str(folder / 'dim_20000.safetensors'),
                      weights_metadata({**options, 'dim': 20000}, 2, 'params_ema'))
    write_safetensors(state, str(folder / 'dim_32.safetensors'),
                      weights_metadata({**options, 'dim': 32}, 2, 'params_ema'))
    extra = {**state, 'blocks.0.surprise': torch.zeros(3)}
    torch.save({'params_ema': extra}, folder / 'extra_key.pth')
    return {
        'list_weight.pth': 'proj.weight is not a tensor but list',
        'zero_d.pth': 'proj.weight is a single number (a 0-d tensor), not a weight',
        'params_ema_5.pth': 'params_ema is not a state dict but int',
        'int_weight.pth': 'plk_filter holds int64 values; the ESC (custom) x2 network it declares holds float32 there',
        'nan.pth': 'proj.bias holds NaN or infinite values; the checkpoint is damaged',
        'dim_20000.safetensors': 'network option dim is 20000; a sane ESC network has 0 < dim <= 2048',
        'dim_32.safetensors': 'is (16, 3, 3, 3) in the file; the ESC (custom) x2 network it declares needs '
                              '(32, 3, 3, 3)',
        'extra_key.pth': 'blocks.0.surprise is no parameter of the ESC (custom) x2 network it declares',
    }


def test_hostile_checkpoints_are_one_line_naming_the_key_before_a_network_is_built(tiny, tmp_path, capsys, monkeypatch):
    _, net = tiny
    built = []  # the device each network was built on
    init = ESC.__init__
    monkeypatch.setattr(ESC, '__init__',
                        lambda self, *a, **k: built.append(torch.empty(0).device.type) or init(self, *a, **k))
    cv2.imwrite(str(tmp_path / 'a.png'), photo())
    for name, reason in hostile_checkpoints(tmp_path, net).items():
        with pytest.raises(ESCError) as info:
            esc.load_model(str(tmp_path / name), device='cpu')
        message = str(info.value)
        assert message.startswith(f'model: {tmp_path / name}: ') and reason in message, message
        assert set(built) <= {'meta'}, (name, built)  # only shape checks, on the meta device: no memory
        built.clear()
        status, stdout, stderr = command(capsys, '-i', tmp_path / 'a.png', '-o', tmp_path / 'out', '--model',
                                         tmp_path / name)
        assert status == 2 and stderr.strip() == f'error: {message}' and '\n' not in stderr.strip(), stderr
        built.clear()


def test_a_non_finite_output_is_an_error_naming_the_file_and_the_checkpoint(tiny, tmp_path, capsys):
    """Finite weights so large that the features overflow: the output would be written as a black image."""
    _, net = tiny
    state = {key: value.clone() for key, value in net.state_dict().items()}
    state['proj.weight'].fill_(3e38)
    checkpoint = tmp_path / 'overflowing.pth'
    torch.save({'params_ema': state}, checkpoint)
    src = tmp_path / 'in'
    src.mkdir()
    cv2.imwrite(str(src / 'a.png'), photo())
    cv2.imwrite(str(src / 'b.png'), photo())
    status, stdout, stderr = command(capsys, '-i', src, '-o', tmp_path / 'out', '--model', checkpoint)
    assert status == 1 and 'done 0, skipped 2' in stdout
    assert (f'skipped: {src / "a.png"}: the network output holds NaN or infinite values: the checkpoint '
            f'{checkpoint} is likely damaged') in stderr
    assert list((tmp_path / 'out').iterdir()) == []
    with pytest.raises(ESCError, match='the network output holds NaN or infinite values'):
        esc.load_model(str(checkpoint), device='cpu').upscale(photo())


def test_tiled_videos_show_one_bar_and_stale_temporaries_of_killed_runs_are_removed(tiny, tmp_path, capsys):
    path, _ = tiny
    clip, out = tmp_path / 'clip.mkv', tmp_path / 'out'
    write_video(clip, frames=3, audio=False)
    out.mkdir()
    stale = out / '.clip_x2.mkv.4194305.tmp'  # above any pid: the run that wrote it is gone
    stale.write_bytes(b'half a video')
    status, _, stderr = command(capsys, '-i', clip, '-o', out, '--model', path, '--tile', '16', '--tile-overlap', '4')
    assert status == 0, stderr
    assert '/3 [' in stderr and 'tile' not in stderr.replace('--tile', '')  # the frames' bar, none per frame's tiles
    assert sorted(p.name for p in out.iterdir()) == ['clip_x2.mkv']


@pytest.mark.slow
def test_a_terminated_run_leaves_no_temporary_file(tiny, tmp_path):
    """SIGTERM while a video is being written: the hidden temporary file goes, the exit status says why. (Slow: the
    temporary file appears with the first encoded packet, after x264's look-ahead of about 40 frames.)"""
    path, _ = tiny
    clip, out = tmp_path / 'long.mkv', tmp_path / 'out'
    write_video(clip, frames=120, size=(16, 16), audio=False)
    process = subprocess.Popen([sys.executable, str(REPO / 'esc' / 'commands' / 'upscale.py'), '-i', str(clip),
                                '-o', str(out), '--model', str(path), '--device', 'cpu'],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.is_dir() and any(p.name.endswith('.tmp') for p in out.iterdir()):
            break
        time.sleep(0.05)
    assert process.poll() is None, 'the run ended before it could be stopped'
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert 'stopped by SIGTERM: done 0, skipped 0; the file in progress was not written' in stderr
    assert 'Traceback' not in stderr
    assert list(out.iterdir()) == []


def test_a_camera_mpo_is_its_first_picture_not_a_refused_animation(tiny, tmp_path, capsys):
    """Cameras store a JPEG with previews after it as MPO (Pillow counts them as frames); the first is the photo."""
    path, _ = tiny
    first, preview = Image.fromarray(photo()), Image.fromarray(photo()[::-1].copy())
    first.save(tmp_path / 'camera.jpg', format='MPO', save_all=True, append_images=[preview], quality=95)
    with Image.open(tmp_path / 'camera.jpg') as opened:
        assert opened.format == 'MPO' and opened.n_frames == 2
        expected = np.asarray(opened.convert('RGB'))
    assert np.array_equal(load_image(tmp_path / 'camera.jpg').pixels, expected)
    status, _, stderr = command(capsys, '-i', tmp_path / 'camera.jpg', '-o', tmp_path / 'out', '--model', path)
    assert status == 0, stderr
    assert cv2.imread(str(tmp_path / 'out' / 'camera_x2.jpg')).shape == (24, 40, 3)


def test_a_colour_profile_a_result_cannot_hold_is_said(tiny, tmp_path, capsys):
    pytest.importorskip('PIL.ImageCms', reason='Pillow without LittleCMS cannot make a test profile')
    path, _ = tiny
    Image.fromarray(photo()).save(tmp_path / 'scan.png', icc_profile=srgb_profile())
    status, _, stderr = command(capsys, '-i', tmp_path / 'scan.png', '-o', tmp_path / 'out', '--model', path,
                                '--ext', 'bmp')
    assert status == 0, stderr
    assert f'note: {tmp_path / "scan.png"}: its colour profile is not kept in a .bmp result' in stderr
    assert cv2.imread(str(tmp_path / 'out' / 'scan_x2.bmp')).shape == (24, 40, 3)
