"""Videos through esc/commands/upscale.py and esc.io.video.upscale_video (issue 16): frames, timing and audio kept,
tiles, odd sizes, and damaged or unreadable videos refused in one line with nothing left behind.

Every video here is written by the test itself with PyAV: a few frames of 32×24 or smaller.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import List, Tuple

import av
import numpy as np
import pytest
import torch

import esc
from esc.archs.esc_arch import ESC
from esc.commands import upscale
from esc.commands.upscale import video_output_path
from esc.errors import ESCError
from esc.io.video import upscale_video
from tests.helpers.networks import SMALL
from tests.helpers.runs import run_in_process
from tests.helpers.videos import RATE, SAMPLE_RATE, picture, write_video


def decoded(path: Path) -> List[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def audio_payloads(path: Path) -> List[bytes]:
    with av.open(str(path)) as container:
        return [bytes(packet) for packet in container.demux(audio=0) if packet.size]


def as_yuv420(rgb: np.ndarray) -> np.ndarray:
    """An RGB frame converted as esc.io.video converts before encoding (no colour tags: BT.601, limited range)."""
    frame = av.VideoFrame.from_ndarray(rgb, format='rgb24')
    return frame.reformat(format='yuv420p', dst_color_range=1).to_ndarray().astype(int)


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = ESC(**SMALL, upscaling_factor=2)
    path = tmp_path_factory.mktemp('video_ckpt') / 'tiny_x2.pth'
    torch.save({'params_ema': net.state_dict()}, path)
    return path


def run_cli(*args) -> subprocess.CompletedProcess:
    return run_in_process('esc.commands.upscale', [*map(str, args), '--device', 'cpu'], Path.cwd())


def run_command(capsys, *args) -> Tuple[int, str, str]:
    """esc/commands/upscale.py's ``main`` in this process (a new interpreter costs seconds): exit status, stdout,
    stderr."""
    with pytest.raises(SystemExit) as exit_info:
        upscale.main([*map(str, args), '--device', 'cpu'])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_cli_upscales_every_frame_and_keeps_rate_timing_and_audio(checkpoint, tmp_path):
    clip, out = tmp_path / 'clip.mp4', tmp_path / 'out'
    write_video(clip, frames=4)
    result = run_cli('-i', clip, '-o', out, '--model', checkpoint, '--crf', '0')
    assert result.returncode == 0, result.stderr[-2000:]
    target = out / 'clip_x2.mp4'
    assert f'{clip} -> {target}: 4 frames of 64x48 at 12 fps, 1 audio stream copied' in result.stdout
    # a bar over the 4 frames (how far it got when last drawn depends on the machine's speed: it refreshes at most
    # every 0.1 s and is cleared when done)
    assert '/4 [' in result.stderr and ('frame/s' in result.stderr or 's/frame' in result.stderr)
    assert sorted(p.name for p in out.iterdir()) == ['clip_x2.mp4']  # no temporary file left

    source_frames, result_frames = decoded(clip), decoded(target)
    assert len(result_frames) == 4 and {(f.width, f.height) for f in result_frames} == {(64, 48)}
    assert [f.time for f in result_frames] == pytest.approx([f.time for f in source_frames])
    with av.open(str(target)) as container:
        assert container.streams.video[0].average_rate == RATE
        assert container.streams.video[0].codec_context.name == 'h264'
        sound = container.streams.audio[0]
        assert (sound.codec_context.name, sound.sample_rate) == ('aac', SAMPLE_RATE)
    assert audio_payloads(target) == audio_payloads(clip)  # copied packet for packet, not re-encoded

    model = esc.load_model(str(checkpoint), device='cpu')
    for source, upscaled in zip(source_frames, result_frames):  # --crf 0: lossless after the 4:2:0 conversion
        expected = as_yuv420(model.upscale(source.to_ndarray(format='rgb24')))
        assert np.abs(upscaled.to_ndarray().astype(int) - expected).max() <= 1


def test_api_tiles_frames_and_keeps_variable_frame_timing(checkpoint, tmp_path, monkeypatch):
    clip, target = tmp_path / 'vfr.mkv', tmp_path / 'vfr_x2.mkv'
    times = [0, 40, 300]
    write_video(clip, frames=3, size=(24, 32), audio=False, times=times)
    model = esc.load_model(str(checkpoint), device='cpu', tile=24, tile_overlap=8)  # two tiles a frame
    shapes = []
    forward = model.net.forward
    monkeypatch.setattr(model.net, 'forward', lambda x: shapes.append(tuple(x.shape)) or forward(x))
    summary = upscale_video(model, clip, target, crf=0)
    assert (summary.frames, summary.width, summary.height, summary.audio_streams) == (3, 64, 48, 0)
    assert shapes == [(1, 3, 24, 24), (1, 3, 24, 16)] * 3  # every frame went through in two tiles
    frames = decoded(target)
    assert [round(f.time * 1000) for f in frames] == times
    for source, upscaled in zip(decoded(clip), frames):
        expected = as_yuv420(model.upscale(source.to_ndarray(format='rgb24')))
        assert np.abs(upscaled.to_ndarray().astype(int) - expected).max() <= 1


def test_colour_tags_and_full_range_are_kept(checkpoint, tmp_path):
    """A BT.709 full-range input is converted with its own matrix and range both ways and tagged the same."""
    clip, target = tmp_path / 'hd.mkv', tmp_path / 'hd_x2.mkv'
    with av.open(str(clip), 'w') as container:
        video = container.add_stream('libx264', rate=RATE)
        video.width, video.height, video.pix_fmt, video.options = 32, 24, 'yuv420p', {'crf': '0'}
        context = video.codec_context
        context.colorspace = context.color_primaries = context.color_trc = 1  # BT.709
        context.color_range = 2  # full
        for index in range(2):
            frame = av.VideoFrame.from_ndarray(picture(index), format='rgb24')
            frame = frame.reformat(format='yuv420p', dst_colorspace='ITU709', dst_color_range=2)
            frame.pts = index
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
    model = esc.load_model(str(checkpoint), device='cpu')
    upscale_video(model, clip, target, crf=0)
    with av.open(str(target)) as container:
        context = container.streams.video[0].codec_context
        assert (int(context.colorspace), int(context.color_primaries), int(context.color_trc),
                int(context.color_range)) == (1, 1, 1, 2)
    for source, upscaled in zip(decoded(clip), decoded(target)):
        rgb = model.upscale(source.to_ndarray(format='rgb24', src_colorspace='ITU709', src_color_range=2))
        expected = av.VideoFrame.from_ndarray(rgb, format='rgb24').reformat(
            format='yuv420p', dst_colorspace='ITU709', dst_color_range=2).to_ndarray().astype(int)
        assert np.abs(upscaled.to_ndarray().astype(int) - expected).max() <= 1


def test_an_odd_upscaled_size_is_padded_and_said(tmp_path):
    clip, target = tmp_path / 'odd.mkv', tmp_path / 'odd_x3.mkv'
    write_video(clip, frames=3, size=(9, 11), audio=False, codec='ffv1', pix_fmt='yuv444p')
    net = ESC(**SMALL, upscaling_factor=3)
    torch.save({'params': net.state_dict()}, tmp_path / 'tiny_x3.pth')
    model = esc.load_model(str(tmp_path / 'tiny_x3.pth'), device='cpu')
    said = []
    summary = upscale_video(model, clip, target, note=said.append)
    assert said == [f'{clip}: upscaled frames are 33x27; padded to 34x28 (4:2:0 needs even sides)']
    assert summary.notes == said and (summary.width, summary.height) == (33, 27)
    frames = decoded(target)
    assert len(frames) == 3 and {(f.width, f.height) for f in frames} == {(34, 28)}
    last_column = frames[0].to_ndarray(format='rgb24').astype(int)
    assert np.abs(last_column[:, -1] - last_column[:, -2]).max() <= 2  # the padding repeats the edge


def test_damaged_videos_and_subfolders_are_skipped_in_one_line_each(checkpoint, tmp_path, capsys):
    src = tmp_path / 'in'
    out = src / 'results'  # the output folder inside the input folder is not an input
    out.mkdir(parents=True)
    write_video(src / 'good.avi', frames=2, audio=False, codec='mpeg4')  # its result is good_x2.mkv ...
    write_video(src / 'good.mkv', frames=3)  # ... which this one's would overwrite
    write_video(tmp_path / 'long.mkv', frames=12)
    data = (tmp_path / 'long.mkv').read_bytes()
    (src / 'cut.mkv').write_bytes(data[:len(data) * 9 // 10])  # ends inside the last frames
    (src / 'notes.mp4').write_text('not a video')
    (src / 'more').mkdir()
    status, stdout, stderr = run_command(capsys, '-i', src, '-o', out, '--model', checkpoint)
    assert status == 1, stderr[-2000:]
    assert 'done 1, skipped 4' in stdout and f'skipped: {out}:' not in stderr
    assert f'skipped: {src / "good.mkv"}: its output {out / "good_x2.mkv"} was already written from ' \
           f'{src / "good.avi"} in this run' in stderr
    assert f'skipped: {src / "cut.mkv"}: damaged or truncated video (File ended prematurely)' in stderr
    assert f'skipped: {src / "notes.mp4"}: not a video FFmpeg can read' in stderr
    assert f'skipped: {src / "more"}: a folder (subfolders are not searched' in stderr
    assert sorted(p.name for p in out.iterdir()) == ['good_x2.mkv']  # nothing half-written, no temporary file
    assert len(decoded(out / 'good_x2.mkv')) == 2


def test_a_video_damaged_midway_is_refused_before_any_frame_is_upscaled(checkpoint, tmp_path):
    """The whole file is read once first: a cut video used to be upscaled up to its cut before it stopped."""
    write_video(tmp_path / 'long.mkv', frames=24, size=(16, 16), audio=False)  # opening reads the first frames
    data = (tmp_path / 'long.mkv').read_bytes()
    cut = tmp_path / 'cut.mkv'
    cut.write_bytes(data[:len(data) // 2])
    model = esc.load_model(str(checkpoint), device='cpu')
    upscaled = []
    upscale = model.upscale
    model.upscale = lambda image: upscaled.append(1) or upscale(image)
    out = tmp_path / 'out'
    out.mkdir()
    for attempt in range(2):  # FFmpeg's message, the same both times, must be heard the second time too
        with pytest.raises(ESCError, match=rf'^{cut}: damaged or truncated video \(File ended prematurely\)$'):
            upscale_video(model, cut, out / 'cut_x2.mkv')
        assert upscaled == [] and list(out.iterdir()) == []


def test_single_bad_videos_are_one_line_errors(checkpoint, tmp_path, capsys):
    whole = tmp_path / 'whole.mp4'
    write_video(whole, frames=3)
    data = whole.read_bytes()
    (tmp_path / 'cut.mp4').write_bytes(data[:len(data) // 2])  # the index (moov) is at the end: gone
    (tmp_path / 'empty.webm').write_bytes(b'')
    for name, message in (('cut.mp4', 'not a video FFmpeg can read (Invalid data found when processing input'),
                          ('empty.webm', 'empty file')):
        status, _, stderr = run_command(capsys, '-i', tmp_path / name, '-o', tmp_path / 'out', '--model', checkpoint)
        lines = stderr.strip().splitlines()
        assert status == 2 and len(lines) == 1, stderr
        assert lines[0].startswith(f'error: {tmp_path / name}: {message}'), lines
    assert not (tmp_path / 'out').exists() or list((tmp_path / 'out').iterdir()) == []
    status, _, stderr = run_command(capsys, '-i', whole, '-o', tmp_path / 'out', '--model', checkpoint, '--crf', '60')
    assert status == 2 and stderr.strip() == 'error: --crf: 60 is not from 0 to 51'


def test_video_results_keep_their_container_but_avi_becomes_matroska(tmp_path):
    assert video_output_path(Path('a/Clip.MOV'), tmp_path, 4) == tmp_path / 'Clip_x4.mov'
    assert video_output_path(Path('old.avi'), tmp_path, 2.5) == tmp_path / 'old_x2.5.mkv'
