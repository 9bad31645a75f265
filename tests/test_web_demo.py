"""esc-demo (esc/demo.py): the page upscales with the command's code, and a real headless browser drives it.

The browser test starts ``python -m esc.demo`` on a tiny random checkpoint, opens the page in Chromium from the
OS packages (Debian's ``chromium``) through Playwright, uploads a 32×32 photograph, waits for the before/after
slider, downloads the result and compares it byte for byte with what ``esc/inference.py`` writes for the same
image. It skips, with one reason, where Gradio, Playwright or the browser is missing.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np
import pytest
import torch
from skimage import data as photographs

import esc
from esc.demo import Settings, find_checkpoints, main, precisions_for, upscale_file
from esc.errors import ESCError
from esc.inference import run as run_inference
from tests.conftest import REPO

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
    """What ``esc/inference.py`` writes for ``image`` (run in this process: the same functions as the command)."""
    assert run_inference(['-i', str(image), '-o', str(folder), '--model', str(checkpoint), *(options or [])]) == 0
    (written,) = folder.iterdir()
    return written


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
    assert command == (f'python esc/inference.py -i {name} -o <folder> --model {checkpoint} --device cpu '
                       '--tile 16 --tile-overlap 8 --precision fp32')
    assert model_line == f'Upscaler(ESC (custom) x2, cpu, fp32, tile 16/8) from {checkpoint}'
    assert printed.splitlines()[-1].startswith('done 1, skipped 0, ')


def test_the_page_refuses_a_scale_the_checkpoint_does_not_have(tmp_path, checkpoint):
    source = photo_crop(tmp_path / 'photo.png')
    with pytest.raises(ESCError, match=r'^checkpoint is a x2 ESC; it cannot upscale x3$'):
        upscale_file(checkpoint, source, Settings.from_page(3, None, None, 'fp32'), 'cpu', tmp_path / 'page')
    assert list((tmp_path / 'page').iterdir()) == []


def test_the_command_fails_in_one_line_without_a_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(['--model', 'missing.pth'])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == 'error: --model: no such file or folder missing.pth'


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
def test_a_browser_uploads_compares_and_downloads_what_the_command_writes(tmp_path, checkpoint):
    from playwright.sync_api import sync_playwright

    image = photo_crop(tmp_path / 'astronaut.png')
    expected = command_output(image, checkpoint, tmp_path / 'command')
    port, log = free_port(), tmp_path / 'demo.log'
    env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
    with open(log, 'w') as out:
        server = subprocess.Popen([sys.executable, '-m', 'esc.demo', '--model', str(checkpoint), '--device', 'cpu',
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
                assert download.suggested_filename == expected.name == 'astronaut_x2.png'
                saved = tmp_path / 'downloaded.png'
                download.save_as(saved)
                assert saved.read_bytes() == expected.read_bytes()
                printed = page.locator('#esc-summary textarea').input_value().splitlines()
                assert printed[0].startswith('python esc/inference.py -i astronaut.png -o <folder> --model ')
                assert printed[1] == f'Upscaler(ESC (custom) x2, cpu, fp32, tile 1024/64) from {checkpoint}'
                page.locator('#esc-scale input').fill('3')
                page.locator('#esc-run').click()  # a scale this checkpoint lacks: the command's one line, shown
                page.get_by_text('checkpoint is a x2 ESC; it cannot upscale x3').first.wait_for()
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
