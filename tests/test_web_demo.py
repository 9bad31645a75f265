"""esc-demo (esc/commands/demo.py): the page upscales with the command's code, and a real headless browser drives it.

The browser test starts ``python -m esc.commands.demo`` on a tiny random checkpoint, opens the page in Chromium from the
OS packages (Debian's ``chromium``) through Playwright, uploads a 32×32 photograph, waits for the before/after
slider, downloads the result and compares it byte for byte with what ``esc/commands/upscale.py`` writes for the same
image. It skips, with one reason, where Gradio, Playwright or the browser is missing.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as photographs

import esc
from esc.commands.demo import (Page, Settings, default_upload_limit, find_checkpoints, main, parser, precisions_for,
                               upscale_file)
from esc.commands.upscale import main as inference_main, run as run_inference
from esc.errors import ESCError
from esc.io.checkpoint import weights_metadata, write_safetensors
from esc.io.images import pixel_limit
from tests.helpers.paths import REPO

TINY = dict(dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=2, window_size=8, num_heads=2)
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync']


def tiny_checkpoint(path: Path, scale: int = 2) -> Path:
    """A tiny ESC with random weights (the dynamic-kernel generators too), saved as a release-style file."""
    torch.manual_seed(0)
    net = esc.ESC(**TINY, upscaling_factor=scale)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0, 0.05)
    torch.save({'params_ema': net.state_dict()}, path)
    return path


def photo_crop(path: Path, size: int = 32) -> Path:
    """A size×size crop of scikit-image's astronaut (the face and the flag: edges and texture), as PNG."""
    crop = photographs.astronaut()[60:60 + size, 190:190 + size]
    cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    return path


def command_output(image: Path, checkpoint: Path, folder: Path, options: Optional[List[str]] = None) -> Path:
    """What ``esc/commands/upscale.py`` writes for ``image`` (in this process: the same functions as the command)."""
    assert run_inference(['-i', str(image), '-o', str(folder), '--model', str(checkpoint), *(options or [])]) == 0
    (written,) = folder.iterdir()
    return written


def command_refusal(image: Path, checkpoint: Path, folder: Path, options: Optional[List[str]] = None) -> str:
    """The one line ``esc/commands/upscale.py`` prints (after ``error: ``) when it refuses ``image``, exit status 2."""
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer), pytest.raises(SystemExit) as stop:
        inference_main(['-i', str(image), '-o', str(folder), '--model', str(checkpoint), *(options or [])])
    assert stop.value.code == 2
    (line,) = buffer.getvalue().strip().splitlines()
    return line


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp('demo_ckpt') / 'tiny_x2.pth')


def test_folders_offer_esc_checkpoints_only_and_bad_names_are_one_line_errors(tmp_path, checkpoint):
    folder = tmp_path / 'experiments'
    (folder / 'run/models').mkdir(parents=True)
    (folder / 'run/training_states').mkdir()
    shutil.copy(checkpoint, folder / 'run/models/net_g_4.pth')
    torch.save({'state_dict': {}}, folder / 'run/training_states/4.state')
    torch.save({'features.0.weight': torch.zeros(2, 3, 3, 3)}, folder / 'vgg19.pth')
    offered, notes = find_checkpoints([folder])
    assert [(c.path.name, c.variant, c.scale) for c in offered] == [('net_g_4.pth', 'ESC (custom)', 2)]
    assert offered[0].label == f'{folder}/run/models/net_g_4.pth (ESC (custom), x2)'
    assert len(notes) == 1 and notes[0].startswith('not offered: ') and 'vgg19.pth' in notes[0]
    with pytest.raises(ESCError, match=r'^--model: no such file or folder nowhere$'):
        find_checkpoints([Path('nowhere')])
    with pytest.raises(ESCError, match='^--model: .*vgg19.pth'):
        find_checkpoints([folder / 'vgg19.pth'])
    empty = tmp_path / 'empty_folder'
    empty.mkdir()
    with pytest.raises(ESCError, match=r'^--model: no ESC checkpoint \(.pth, .safetensors\) in .*empty_folder'):
        find_checkpoints([empty])


def test_page_settings_default_to_the_commands_and_refuse_nonsense():
    assert Settings.from_page(None, None, None, 'fp32') == Settings(None, 1024, 64, 'fp32')
    assert Settings.from_page(2.0, 256, 32, 'bf16') == Settings(2, 256, 32, 'bf16')
    assert isinstance(Settings.from_page(2.0, 256, 32, 'bf16').scale, int)
    assert Settings.from_page(2.5, 0, 0, 'fp32').scale == 2.5
    with pytest.raises(ESCError, match=r'^tile: -8 is not a whole number of pixels \(0 or more\)$'):
        Settings.from_page(None, -8, 64, 'fp32')
    with pytest.raises(ESCError, match=r'^tile overlap: 3.5 is not a whole number'):
        Settings.from_page(None, 64, 3.5, 'fp32')
    assert precisions_for('cpu') == ['fp32', 'bf16'] and 'fp16' in precisions_for('cuda')


@pytest.mark.parametrize('kind', ['rgb_jpeg', 'gray16_png', 'rgba_png'])
def test_the_page_writes_what_the_command_writes(tmp_path, checkpoint, kind):
    """Byte for byte, name and format included, for the layouts the command keeps (grayscale, 16 bits, alpha)."""
    rgb = photographs.astronaut()[60:84, 190:218]
    if kind == 'rgb_jpeg':
        image, name = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), 'photo.jpg'
    elif kind == 'gray16_png':
        image, name = (cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257 + 3), 'depth.png'
    else:
        alpha = np.linspace(0, 255, rgb.shape[0] * rgb.shape[1]).reshape(rgb.shape[:2]).astype(np.uint8)
        image, name = np.dstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), alpha]), 'logo.png'
    source = tmp_path / name
    cv2.imwrite(str(source), image)
    stages = []
    settings = Settings.from_page(None, 16, 8, 'fp32')  # tiled: 24x28 is longer than 16
    target, before, after, printed = upscale_file(checkpoint, source, settings, 'cpu', tmp_path / 'page',
                                                  progress=lambda fraction, desc: stages.append(desc))
    expected = command_output(source, checkpoint, tmp_path / 'command', ['--tile', '16', '--tile-overlap', '8'])
    assert target.name == expected.name and target.read_bytes() == expected.read_bytes()
    assert target.parent.parent == tmp_path / 'page'
    assert before.shape == after.shape == (48, 56, after.shape[2]) and after.dtype == np.uint8
    assert stages == ['upscaling', 'showing the result']
    command, model_line = printed.splitlines()[:2]
    assert command == (f'python esc/commands/upscale.py -i {name} -o <folder> --model {checkpoint} --device cpu '
                       '--tile 16 --tile-overlap 8 --precision fp32')
    assert model_line == f'Upscaler(ESC (custom) x2, cpu, fp32, tile 16/8) from {checkpoint}'
    assert printed.splitlines()[-1].startswith('done 1, skipped 0, ')


def test_the_page_refuses_a_scale_the_checkpoint_does_not_have(tmp_path, checkpoint):
    source = photo_crop(tmp_path / 'photo.png')
    line = command_refusal(source, checkpoint, tmp_path / 'command', ['--scale', '3'])
    assert line.endswith('checkpoint is a x2 ESC; it cannot upscale x3')
    with pytest.raises(ESCError) as refusal:
        upscale_file(checkpoint, source, Settings.from_page(3, None, None, 'fp32'), 'cpu', tmp_path / 'page')
    assert f'error: {refusal.value}' == line
    assert list((tmp_path / 'page').iterdir()) == []


def test_the_command_fails_in_one_line_without_a_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(['--model', 'missing.pth'])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == 'error: --model: no such file or folder missing.pth'


def page_for(checkpoint: Path, output: Path, keep_results: int = 10) -> Tuple[Page, List[str]]:
    """The page's logic on ``checkpoint`` (no browser, no server) and the lines it logs."""
    logged: List[str] = []
    (offered,), _ = find_checkpoints([checkpoint])
    return Page([offered], 'cpu', output, keep_results, log=logged.append), logged


def click(page: Page, upload, scale: Optional[float] = None):
    """A click on *Upscale* with the page's defaults, the upload as Gradio hands it over (its FileData, unopened)."""
    payload = None if upload is None else {'path': str(upload), 'orig_name': Path(upload).name}
    return page.upscale(payload, next(iter(page.by_label)), scale, None, None, 'fp32')


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG of a few bytes whose header declares width×height RGB pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack('>I', len(payload)) + kind + payload + struct.pack('>I', zlib.crc32(kind + payload))
    header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(b'\0' * 64))
                     + chunk(b'IEND', b''))
    return path


def endless_gif(path: Path, side: int = 5000, frames: int = 1500) -> Path:
    """An animated GIF of a few kilobytes: ``frames`` frames on a side×side screen (each frame draws one pixel), so
    frames × side² pixels: far beyond any machine's memory, while one frame alone is not."""
    pictures = [Image.new('P', (1, 1), color=i % 2) for i in range(frames)]
    for picture in pictures:
        picture.putpalette([0, 0, 0, 255, 255, 255])
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=40, loop=0, optimize=False)
    data = bytearray(path.read_bytes())
    data[6:10] = struct.pack('<HH', side, side)  # the logical screen: the size every frame is shown at
    path.write_bytes(bytes(data))
    return path


def test_each_refusal_is_its_one_line_on_the_page_before_the_work(tmp_path, checkpoint):
    """Every refusal is the command's one line, in the summary box (and the console); no result folder is left."""
    page, logged = page_for(checkpoint, tmp_path / 'page')
    text = tmp_path / 'notes.png'
    text.write_text('not a picture\n')
    empty = tmp_path / 'empty.jpg'
    empty.write_bytes(b'')
    wide = tmp_path / 'wide.jpg'
    cv2.imwrite(str(wide), np.full((1, 40000, 3), 128, np.uint8))
    cases = [
        (None, 'error: image: upload an image first'),
        (text, f'error: {text}: not an image (no image format recognised)'),
        (empty, f'error: {empty}: empty file'),
        (wide, f'error: {wide}: its 80000x2 result is beyond what .jpg holds (65535 pixels a side); use --ext png'),
    ]
    for upload, line in cases:
        shown = click(page, upload)
        assert (shown.summary, shown.slider, shown.download, shown.refused) == (line, None, None, True)
        assert logged[-1] == 'refused: ' + line[len('error: '):]
        if upload is not None:  # the command's own line, word for word
            assert command_refusal(upload, checkpoint, tmp_path / 'command') == line
    photo = photo_crop(tmp_path / 'photo.png', size=16)
    shown = click(page, photo, scale=3)
    assert shown.summary == command_refusal(photo, checkpoint, tmp_path / 'command', ['--scale', '3'])
    assert shown.summary.endswith('checkpoint is a x2 ESC; it cannot upscale x3')
    shown = page.upscale({'path': str(wide)}, 'some other.pth', None, None, None, 'fp32')
    assert shown.summary == "error: checkpoint: 'some other.pth' is not one this page offers"
    shown = page.upscale({'path': str(wide)}, next(iter(page.by_label)), None, None, None, 'fp16')
    assert shown.summary == "error: precision: 'fp16' is not one of fp32, bf16"
    assert not (tmp_path / 'page').exists() or list((tmp_path / 'page').iterdir()) == []


def test_bombs_are_refused_from_their_header_without_the_memory(tmp_path, checkpoint, peak_memory):
    """A 100000×100000 PNG header (30 GB of pixels) and a GIF of 1500 frames of 5000×5000 (37.5 G pixels), each a few
    kilobytes: refused in one line, the peak memory of the whole click (the command's model included) small."""
    page, _ = page_for(checkpoint, tmp_path / 'page')
    bomb = png_header_only(tmp_path / 'bomb.png', 100000, 100000)
    animation = endless_gif(tmp_path / 'endless.gif')
    click(page, photo_crop(tmp_path / 'warm.png'))  # the first click imports and sets up what later ones reuse
    reasons = ((bomb, '100000x100000 is 10000.0 MP'), (animation, '1500 frames of 5000x5000 are 37500.0 MP'))
    for upload, reason in reasons:
        with peak_memory() as peak:
            shown = click(page, upload)
        assert re.fullmatch(rf'error: {re.escape(str(upload))}: {reason}, over the limit of \d+\.\d MP '
                            r'\(--max-pixels\)', shown.summary), shown.summary
        assert peak.bytes < 300 << 20, f'{upload.name}: {peak.bytes / 2**20:.0f} MiB'


def test_names_starting_with_a_dot_and_animations_are_upscaled_as_the_command_does(tmp_path, checkpoint):
    page, _ = page_for(checkpoint, tmp_path / 'page')
    hidden = photo_crop(tmp_path / '.hidden.png', size=16)
    shown = click(page, hidden)
    expected = command_output(hidden, checkpoint, tmp_path / 'command')
    assert Path(shown.download).name == '.hidden_x2.png' == expected.name
    assert Path(shown.download).read_bytes() == expected.read_bytes()
    frames = [Image.fromarray(photographs.astronaut()[60 + 4 * i:76 + 4 * i, 190:206]) for i in range(3)]
    gif = tmp_path / 'wave.gif'
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=[50, 60, 70], loop=0)
    shown = click(page, gif)
    assert not shown.refused, shown.summary
    result = Image.open(shown.download)
    assert (result.format, result.n_frames, result.size) == ('GIF', 3, (32, 32))
    assert shown.slider[0].shape == shown.slider[1].shape == (32, 32, 3)
    assert shown.summary.splitlines()[-1] == ('an animation of 3 frames: the slider shows the first, the download '
                                              'holds them all')


def test_the_page_keeps_only_its_last_results(tmp_path, checkpoint):
    output = tmp_path / 'page'
    output.mkdir()
    (output / 'result-of-someone-else').mkdir()  # not made by this page: never touched
    page, _ = page_for(checkpoint, output, keep_results=2)
    source = photo_crop(tmp_path / 'photo.png', size=16)
    downloads = [click(page, source).download for _ in range(3)]
    assert not Path(downloads[0]).parent.exists()
    assert all(Path(d).is_file() for d in downloads[1:])
    assert sorted(p.name for p in output.iterdir()) == sorted(
        ['result-of-someone-else', *(Path(d).parent.name for d in downloads[1:])])


def test_the_default_upload_limit_is_the_largest_image_the_memory_takes_uncompressed(checkpoint):
    (offered,), _ = find_checkpoints([checkpoint])
    model = esc.load_model(str(checkpoint), device='cpu', tile=1024)
    assert offered.max_pixels == pytest.approx(pixel_limit(model.bytes_per_input_pixel(channels=4)), rel=0.05)
    assert default_upload_limit([offered]) == offered.max_pixels * 8
    assert offered.page_scale == 2


def test_upload_and_cleanup_options_are_checked_in_one_line(capsys):
    args = parser().parse_args(['--max-upload', '200M', '--keep-results', '3'])
    assert (args.max_upload, args.keep_results, args.cache_minutes) == (200 << 20, 3, 60)
    assert parser().parse_args(['--max-upload', '4096']).max_upload == 4096
    for option, value, reason in (('--max-upload', 'lots', "not a size: 'lots' (bytes, or e.g. 200M)"),
                                  ('--max-upload', '0', "must be at least 1 byte: '0'"),
                                  ('--keep-results', '0', "must be at least 1: '0'")):
        with pytest.raises(SystemExit):
            parser().parse_args([option, value])
        assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f'argument {option}: {reason}')


def hostile_model_folder(folder: Path, checkpoint: Path) -> dict:
    """A model folder holding one good checkpoint beside hostile files; what each hostile one is."""
    folder.mkdir()
    shutil.copy(checkpoint, folder / 'good.pth')
    files = {name: folder / name for name in ('garbage.pth', 'nan.pth', 'huge.safetensors', 'loop.pth',
                                              'dangling.pth', 'fifo.pth', 'unreadable.pth')}
    files['garbage.pth'].write_bytes(os.urandom(4096))
    weights = torch.load(checkpoint, weights_only=True)['params_ema']
    weights = {k: v.clone() for k, v in weights.items()}
    next(iter(weights.values())).view(-1)[0] = float('nan')
    torch.save({'params_ema': weights}, files['nan.pth'])
    huge = dict(type='ESC', **{**TINY, 'dim': 200000}, upscaling_factor=2)
    write_safetensors({'w': torch.zeros(2)}, str(files['huge.safetensors']), weights_metadata(huge, 2, 'params_ema'))
    os.symlink('loop.pth', files['loop.pth'])
    os.symlink('nowhere.pth', files['dangling.pth'])
    os.mkfifo(files['fifo.pth'])
    shutil.copy(checkpoint, files['unreadable.pth'])
    files['unreadable.pth'].chmod(0)
    return files


def test_a_model_folder_with_hostile_files_offers_the_good_one_and_says_why_not_the_others(tmp_path, checkpoint):
    files = hostile_model_folder(tmp_path / 'models', checkpoint)
    offered, notes = find_checkpoints([tmp_path / 'models'])
    root = os.geteuid() == 0  # root reads a file whatever its mode: there it is offered, not refused
    assert [c.path.name for c in offered] == ['good.pth'] + ['unreadable.pth'] * root
    by_name = {}
    for note in notes:
        assert '\n' not in note and note.startswith('not offered: --model: '), note
        (name,) = [n for n in files if f'{files[n]}: ' in note]
        by_name[name] = note
    assert sorted(by_name) == sorted(n for n in files if not (root and n == 'unreadable.pth'))
    mine = {'loop.pth': 'cannot be read (Too many levels of symbolic links)',
            'dangling.pth': 'cannot be read (No such file or directory)', 'fifo.pth': 'not a regular file'}
    for name, reason in mine.items():
        assert by_name[name] == f'not offered: --model: {files[name]}: {reason}'
    assert by_name['garbage.pth'].startswith(f"not offered: --model: cannot read checkpoint {files['garbage.pth']}: ")
    assert by_name['nan.pth'] == (f"not offered: --model: {files['nan.pth']}: plk_filter holds NaN or infinite "
                                  'values; the checkpoint is damaged')
    assert by_name['huge.safetensors'] == (f"not offered: --model: {files['huge.safetensors']}: network option dim "
                                           'is 200000; a sane ESC network has 0 < dim <= 2048')
    if not root:
        assert 'Permission denied' in by_name['unreadable.pth']


def browser_missing() -> Optional[str]:
    """Why the browser test cannot run here, or None."""
    for module, install in (('gradio', 'pip install -e ".[demo]"'), ('playwright', 'pip install playwright')):
        if importlib.util.find_spec(module) is None:
            return f'{module} is not installed ({install})'
    if chromium() is None:
        return 'no Chromium is installed (apt-get install chromium)'
    return None


def chromium() -> Optional[str]:
    return shutil.which('chromium') or shutil.which('chromium-browser')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_for_page(server: subprocess.Popen, port: int, log: Path, timeout: float = 120) -> None:
    """Until the demo accepts connections; its log in the failure message if it stops or never listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f'esc-demo stopped ({server.returncode}): {log.read_text()[-2000:]}')
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f'esc-demo did not listen within {timeout} s: {log.read_text()[-2000:]}')


@pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or '')
def summary_when(page, fragment: str) -> str:
    """The summary box's text once it holds ``fragment``."""
    page.wait_for_function('fragment => document.querySelector("#esc-summary textarea").value.includes(fragment)',
                           arg=fragment)
    return page.locator('#esc-summary textarea').input_value()


@pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or '')
def test_a_browser_uploads_compares_and_downloads_what_the_command_writes(tmp_path, checkpoint):
    """From a model folder that also holds hostile files (listed as not offered, on the page and in the console): an
    upload whose name starts with a dot, the command's result on the slider and in the download, the scale field
    showing the checkpoint's, and refusals shown on the page in their one line."""
    from playwright.sync_api import sync_playwright

    models = tmp_path / 'models'
    models.mkdir()
    model = Path(shutil.copy(checkpoint, models / 'tiny_x2.pth'))
    (models / 'garbage.pth').write_bytes(b'\0' * 100)
    os.symlink('loop.pth', models / 'loop.pth')
    not_offered = [f"not offered: --model: {models / 'loop.pth'}: cannot be read (Too many levels of symbolic links)"]
    image = photo_crop(tmp_path / '.astronaut.png')
    expected = command_output(image, model, tmp_path / 'command')
    text = tmp_path / 'notes.png'
    text.write_text('not a picture\n')
    port, log = free_port(), tmp_path / 'demo.log'
    env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
    with open(log, 'w') as out:
        server = subprocess.Popen([sys.executable, '-m', 'esc.commands.demo', '--model', str(models), '--device', 'cpu',
                                   '--port', str(port), '--output', str(tmp_path / 'demo')],
                                  cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_page(server, port, log)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                tempfile.mkdtemp(dir=tmp_path, prefix='chromium-profile-'), executable_path=chromium(),
                args=CHROMIUM_ARGS, headless=True, accept_downloads=True)
            try:
                page = browser.new_page()
                page.set_default_timeout(60_000)
                page.goto(f'http://127.0.0.1:{port}/', wait_until='domcontentloaded')
                listed = page.locator('#esc-not-offered textarea').input_value().splitlines()
                assert len(listed) == 2 and listed[1] == not_offered[0], listed
                assert listed[0].startswith(f"not offered: --model: cannot read checkpoint {models / 'garbage.pth'}: ")
                console = log.read_text().splitlines()
                assert listed[0] in console and listed[1] in console
                field = page.locator('#esc-scale input')
                assert field.input_value() == '2'  # the checkpoint's scale, not 0
                page.locator('#esc-upload input[type=file]').set_input_files(str(image))
                page.locator('#esc-upload img').wait_for()
                page.locator('#esc-run').click()
                link = page.locator('#esc-download a[download]')
                link.wait_for()
                page.wait_for_function("() => { const shown = [...document.querySelectorAll('#esc-slider img')]"
                                       ".filter(i => i.complete && i.naturalWidth > 0); return shown.length == 2; }")
                sizes = page.locator('#esc-slider img').evaluate_all(
                    'images => images.map(i => [i.naturalWidth, i.naturalHeight])')
                assert sizes == [[64, 64], [64, 64]], sizes  # before and after, both shown at the output's size
                before_url, after_url = page.locator('#esc-slider img').evaluate_all('images => images.map(i => i.src)')
                shown = [cv2.imdecode(np.frombuffer(page.request.get(url).body(), np.uint8), cv2.IMREAD_UNCHANGED)
                         for url in (before_url, after_url)]
                np.testing.assert_array_equal(shown[1], cv2.imread(str(expected), cv2.IMREAD_UNCHANGED))
                assert np.abs(shown[0].astype(int) - shown[1].astype(int)).mean() > 1  # the bicubic input, not it
                with page.expect_download() as download_info:
                    link.click()
                download = download_info.value
                assert expected.name == '.astronaut_x2.png'  # Chromium saves downloads without a leading dot
                assert download.suggested_filename == 'astronaut_x2.png'
                saved = tmp_path / 'downloaded.png'
                download.save_as(saved)
                assert saved.read_bytes() == expected.read_bytes()
                printed = page.locator('#esc-summary textarea').input_value().splitlines()
                assert printed[0].startswith('python esc/commands/upscale.py -i .astronaut.png -o <folder> --model ')
                assert printed[1] == f'Upscaler(ESC (custom) x2, cpu, fp32, tile 1024/64) from {model}'
                field.fill('3')
                page.locator('#esc-run').click()  # a scale this checkpoint lacks: the command's one line, shown
                line = command_refusal(image, model, tmp_path / 'refused', ['--scale', '3'])
                assert line.endswith('checkpoint is a x2 ESC; it cannot upscale x3')
                assert summary_when(page, 'x3') == line
                page.get_by_text(line[len('error: '):]).first.wait_for()  # and as a notice
                page = browser.new_page()  # a fresh visit
                page.goto(f'http://127.0.0.1:{port}/', wait_until='domcontentloaded')
                page.locator('#esc-upload input[type=file]').set_input_files(str(text))
                page.locator('#esc-upload img').wait_for(state='attached')
                page.locator('#esc-run').click()  # no image: refused before the work, in the command's one line
                refusal = summary_when(page, 'notes.png')
                assert re.fullmatch(rf'error: {re.escape(str(tmp_path / "demo" / "uploads"))}/\S+/notes\.png: '
                                    r'not an image \(no image format recognised\)', refusal), refusal
                assert f'refused: {refusal[len("error: "):]}' in log.read_text().splitlines()
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
