"""Little videos written with PyAV for the video tests: a few lossless frames of a smooth moving pattern, with a tone
as audio."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence

import av
import numpy as np

RATE = 12
"""Frames per second of the videos :func:`write_video` writes."""
SAMPLE_RATE = 8000
"""Audio samples per second of their tone."""


def picture(index: int, height: int = 24, width: int = 32) -> np.ndarray:
    """A smooth moving colour pattern (little chroma detail, so 4:2:0 keeps it well)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 128 + 100 * np.sin(xx / 5 + index / 2)
    green = 128 + 100 * np.cos(yy / 4 - index / 3)
    blue = 128 + 60 * np.sin((xx + yy) / 7)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def write_video(path: Path, frames: int = 5, size=(24, 32), audio: bool = True, codec: str = 'libx264',
                pix_fmt: str = 'yuv420p', times: Optional[Sequence[int]] = None) -> None:
    """A lossless little video: ``frames`` pictures at RATE fps (or shown at ``times`` milliseconds), with a
    440 Hz tone as AAC (MP4) or FLAC (Matroska) audio as long as the pictures."""
    height, width = size
    with av.open(str(path), 'w') as container:
        video = container.add_stream(codec, rate=RATE)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        if codec == 'libx264':
            video.options = {'crf': '0'}
        if times is not None:
            video.codec_context.time_base = Fraction(1, 1000)
        if audio:
            sound = container.add_stream('aac' if path.suffix == '.mp4' else 'flac', rate=SAMPLE_RATE)
            sound.layout = 'mono'
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(picture(index, height, width), format='rgb24')
            frame.pts = index if times is None else times[index]
            if times is not None:
                frame.time_base = Fraction(1, 1000)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if audio:
            seconds = np.arange(SAMPLE_RATE * frames // RATE) / SAMPLE_RATE
            tone = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * seconds)).astype(np.float32)[None],
                                              format='fltp', layout='mono')
            tone.sample_rate, tone.pts = SAMPLE_RATE, 0
            for packet in [*sound.encode(tone), *sound.encode(None)]:
                container.mux(packet)
