"""Upscale a video frame by frame with an :class:`~esc.upscaler.Upscaler`: ``upscale_video(model, source, target)``.

Frames are decoded, upscaled and encoded one at a time through PyAV (FFmpeg), so memory stays bounded by a
frame and the encoder's look-ahead, whatever the length of the video. The result keeps the input's container
(``.mp4`` stays MP4, ``.webm`` stays WebM), its frame timestamps (so its frame rate, constant or variable) and
its colour tags; the picture is encoded as 8-bit 4:2:0 H.264 (VP9 in WebM) at the quality ``crf`` asks for,
and every audio stream is copied packet for packet, without re-encoding. It is written to a hidden temporary
file renamed into place at the end, so a failed or interrupted run leaves nothing behind.

The frame size the container's header declares is checked against the pixel limit images are checked against
(:func:`esc.io.images.check_pixels`: ``--max-pixels``, by default what the available memory holds) before
any frame is decoded, and every frame decoded later is checked against it too (a stream may change size).
A damaged or truncated input is refused rather than upscaled with its damage: the whole file is demuxed and
decoded once before any frame is upscaled (seconds, against minutes or hours of upscaling), and every error
FFmpeg's demuxer or decoders report (audio included; the audio is decoded for that check only), then or during
the work, stops the run with a one-line :class:`~esc.errors.ESCError` naming the file. That first pass also counts
the frames the progress bar runs over; a tiled model shows no bar of its own per frame. Corruption the bitstream
format cannot detect (H.264 has no checksums) is out of reach of this check, as it is of any player.
"""
from __future__ import annotations

import contextlib
import dataclasses
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Protocol, Tuple, Union

import av
import av.logging
import numpy as np
from tqdm import tqdm

from esc.errors import ESCError
from esc.io.checkpoint import atomic_path
from esc.io.images import MAX_PIXELS_OPTION, check_pixels, open_regular_file, pixel_limit

CONTAINERS = {'.mp4': 'mp4', '.m4v': 'mp4', '.mov': 'mov', '.mkv': 'matroska', '.webm': 'webm'}
"""The video file extensions results are written as, and FFmpeg's name for each container."""
REWRAPPED = {'.avi': '.mkv'}
"""Inputs whose results go to another container: AVI stores no presentation times, so FFmpeg reads H.264 with
reordered frames back from it a frame late; Matroska holds whatever audio an AVI has."""
VIDEO_EXTENSIONS = frozenset(CONTAINERS) | frozenset(REWRAPPED)
"""The extensions a file is taken for a video by."""


class FrameUpscaler(Protocol):
    """What a video is upscaled with: :class:`esc.upscaler.Upscaler`, named here by what this module asks of it
    (the upscaler sits above the I/O it reads checkpoints and images with, so this module cannot import it)."""

    progress: bool
    """Whether a tiled upscale shows a progress bar of its own (set aside while a video's bar runs)."""

    def upscale(self, image: np.ndarray) -> np.ndarray:
        """An H×W×3 uint8 RGB image, upscaled."""

    def bytes_per_input_pixel(self, channels: int = 3, bytes_per_channel: int = 1) -> int:
        """The memory one input pixel costs, for the pixel limit."""


DEFAULT_CRF = 18
"""Constant-rate-factor quality of the encoded picture: 0 is lossless for H.264, 18 is close to it, 23 is
x264's default; VP9 takes 0–63."""
CRF_LIMITS = {'libx264': 51, 'libvpx-vp9': 63}
PIXEL_FORMAT = 'yuv420p'
"""What players expect; 4:2:0 halves the chroma resolution, which H.264 then needs even sides for."""
COLOURSPACES = {1: 'ITU709', 4: 'FCC', 5: 'ITU601', 6: 'ITU601', 7: 'SMPTE240M', 9: 'BT2020', 10: 'BT2020'}
"""FFmpeg's colour matrices (AVColorSpace) that swscale converts with; any other is converted as BT.601,
FFmpeg's default, both when decoding and when encoding, so colours come back as they went in."""

NoteCallback = Callable[[str], None]


@dataclasses.dataclass
class VideoSummary:
    """What :func:`upscale_video` wrote."""

    frames: int
    width: int
    height: int
    frame_rate: Optional[Fraction]
    audio_streams: int
    notes: List[str]
    """Anything the result does not carry over from the input (odd sizes padded, streams left out, bit depth)."""


def is_video(path: Union[str, Path]) -> bool:
    """Whether ``path`` is a video by its extension (see :data:`VIDEO_EXTENSIONS`)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def result_extension(source: Union[str, Path]) -> str:
    """The extension of the upscaled ``source`` video: its own (lower case), or Matroska's for an AVI."""
    suffix = Path(source).suffix.lower()
    return REWRAPPED.get(suffix, suffix)


def encoder_for(path: Union[str, Path]) -> str:
    """The video encoder a result at ``path`` is written with: VP9 for WebM (which holds nothing else), else H.264."""
    return 'libvpx-vp9' if Path(path).suffix.lower() == '.webm' else 'libx264'


def check_crf(crf: int, encoder: str) -> int:
    """``crf`` if ``encoder`` accepts it, else a one-line ESCError."""
    limit = CRF_LIMITS[encoder]
    if not isinstance(crf, int) or not 0 <= crf <= limit:
        raise ESCError(f'crf: {encoder} takes a whole number from 0 to {limit}, got {crf!r}')
    return crf


class _FFmpegLog:
    """FFmpeg's error messages while it is open, so that errors a decoder only logs (and conceals) are not
    missed; :meth:`since` returns what was said after a mark taken with ``len(log)``."""

    def __init__(self) -> None:
        self.messages: list = []

    def __len__(self) -> int:
        return len(self.messages)

    def since(self, mark: int) -> Optional[str]:
        new = [message for _, _, message in self.messages[mark:]]
        return '; '.join(' '.join(m.split()) for m in new[:2]) if new else None

    @contextlib.contextmanager
    def capture(self) -> Iterator['_FFmpegLog']:
        level, skip_repeated = av.logging.get_level(), av.logging.get_skip_repeated()
        av.logging.set_level(av.logging.ERROR)
        av.logging.set_skip_repeated(False)  # the same damage in the next file must be heard again
        try:
            with av.logging.Capture(local=False) as self.messages:  # FFmpeg's worker threads log too
                yield self
        finally:
            av.logging.set_level(level)
            av.logging.set_skip_repeated(skip_repeated)


def _reason(exc: BaseException, log: _FFmpegLog, mark: int) -> str:
    """A short reason for an FFmpeg failure: its own words, then what it logged before failing."""
    words = getattr(exc, 'strerror', None) or str(exc)
    logged = log.since(mark)
    return f'{words}: {logged}' if logged and logged not in words else words


class _Reader:
    """The input side: every call that demuxes or decodes goes through :meth:`checked`, which turns an FFmpeg
    failure, or an error FFmpeg logged on the way, into a one-line ESCError naming the file."""

    def __init__(self, source: Path, log: _FFmpegLog) -> None:
        self.source, self.log = source, log

    def checked(self, call: Callable[[], object], mark: Optional[int] = None) -> object:
        """``call()``, failing on what FFmpeg logged during it (or since ``mark``)."""
        mark = len(self.log) if mark is None else mark
        try:
            result = call()
        except av.FFmpegError as exc:
            raise ESCError(f'{self.source}: damaged or truncated video ({_reason(exc, self.log, mark)})') from None
        logged = self.log.since(mark)
        if logged:
            raise ESCError(f'{self.source}: damaged or truncated video ({logged})')
        return result


def _video_stream(container: av.container.InputContainer, source: Path) -> av.VideoStream:
    """The first video stream that is a picture sequence (not cover art)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            if stream.codec_context is None:
                raise ESCError(f'{source}: FFmpeg has no decoder for its {stream.codec.name} video')
            return stream
    raise ESCError(f'{source}: no video stream in it')


def _colour_matrix(frame: av.VideoFrame) -> Optional[str]:
    return COLOURSPACES.get(int(frame.colorspace))


class _Writer:
    """The output side: a video encoder set up from the first upscaled frame, then copies of the audio streams
    (the video stream comes first, as in the input); audio packets that arrive before that wait in
    :attr:`waiting`."""

    def __init__(self, container: av.container.OutputContainer, video: av.VideoStream, audio: List[av.AudioStream],
                 crf: int, encoder: str, target: Path) -> None:
        self.container, self.source_video, self.source_audio, self.target = container, video, audio, target
        self.audio: dict = {}
        self.crf, self.encoder = crf, encoder
        self.stream: Optional[av.VideoStream] = None
        self.size: Optional[Tuple[int, int]] = None
        self.padding = (0, 0)
        self.matrix: Optional[str] = None
        self.waiting: list = []

    def open_video(self, first: av.VideoFrame, height: int, width: int) -> None:
        """Add the video stream for ``height``×``width`` upscaled frames, its timing and colour tags from the input."""
        source = self.source_video
        self.size, self.padding = (height, width), (height % 2, width % 2)
        rate = source.average_rate or source.guessed_rate
        stream = self.container.add_stream(self.encoder, rate=rate)
        stream.width, stream.height = width + self.padding[1], height + self.padding[0]
        stream.pix_fmt = PIXEL_FORMAT
        stream.time_base = source.time_base
        context = stream.codec_context
        context.time_base = source.time_base
        self.matrix = _colour_matrix(first)
        context.colorspace = first.colorspace
        decoder = source.codec_context  # the primaries and transfer are tags only: copied, never converted
        context.color_primaries, context.color_trc = decoder.color_primaries, decoder.color_trc
        context.color_range = 2 if int(first.color_range) == 2 else 1  # full range stays full, else limited
        options = {'crf': str(self.crf)}
        if self.encoder == 'libvpx-vp9':
            options.update(b='0', **{'row-mt': '1'})  # constant quality; rows in parallel
        stream.options = options
        self.stream = stream
        self.audio = {audio.index: self.container.add_stream_from_template(audio) for audio in self.source_audio}
        for packet in self.waiting:
            self.mux_audio(packet)
        self.waiting.clear()

    def write_frame(self, upscaled: np.ndarray, pts: int) -> None:
        """Encode one upscaled RGB frame shown at ``pts`` (in the input's time base)."""
        pad_h, pad_w = self.padding
        if pad_h or pad_w:
            upscaled = np.pad(upscaled, ((0, pad_h), (0, pad_w), (0, 0)), mode='edge')
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(upscaled), format='rgb24')
        frame = frame.reformat(format=PIXEL_FORMAT, dst_colorspace=self.matrix,
                               dst_color_range=self.stream.codec_context.color_range)
        frame.pts, frame.time_base = pts, self.source_video.time_base
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def mux_audio(self, packet: av.Packet) -> None:
        """Copy one audio packet (held back until the video stream exists, since the file header needs it)."""
        if self.stream is None:
            self.waiting.append(packet)
            return
        packet.stream = self.audio[packet.stream.index]
        self.container.mux(packet)

    def finish(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)


@contextlib.contextmanager
def _open_input(reader: _Reader) -> Iterator[av.container.InputContainer]:
    """The input container, open; a file FFmpeg cannot open, or that ends badly while it reads ahead, is one line."""
    source, log = reader.source, reader.log
    mark = len(log)
    try:
        container = av.open(str(source), 'r')
    except av.FFmpegError as exc:
        raise ESCError(f'{source}: not a video FFmpeg can read ({_reason(exc, log, mark)})') from None
    with container:
        reader.checked(lambda: None, mark=mark)  # opening reads ahead: a short file may end (badly) right there
        yield container


def _streams(container: av.container.InputContainer, source: Path) -> Tuple[av.VideoStream, List[av.AudioStream]]:
    """The video stream upscaled and the audio streams copied."""
    video = _video_stream(container, source)
    return video, [stream for stream in container.streams.audio if stream.codec_context is not None]


def _scan(container: av.container.InputContainer, reader: _Reader, limit: int, option: str) -> int:
    """Demux and decode the whole input once, before the long work, so that a truncated or damaged file is
    refused in seconds rather than after its good part has been upscaled, and a frame larger than ``limit``
    pixels (which the header did not declare) before any is upscaled; the number of video frames."""
    video, audio = _streams(container, reader.source)
    packets = iter(container.demux(video, *audio))
    frames = 0
    while True:
        packet = reader.checked(lambda: next(packets, None))
        if packet is None:
            return frames
        decoded = reader.checked(packet.decode)
        if packet.stream.type == 'video':
            for frame in decoded:
                check_pixels(f'{reader.source}: frame {frames}', frame.width, frame.height, limit, option)
                frames += 1


def _upscale_frame(model: FrameUpscaler, frame: av.VideoFrame) -> np.ndarray:
    rgb = frame.to_ndarray(format='rgb24', src_colorspace=_colour_matrix(frame),
                           src_color_range=2 if int(frame.color_range) == 2 else 1)
    return model.upscale(rgb)


def upscale_video(model: FrameUpscaler, source: Union[str, Path], target: Union[str, Path], crf: int = DEFAULT_CRF,
                  progress: bool = False, note: Optional[NoteCallback] = None,
                  max_pixels: Optional[int] = None) -> VideoSummary:
    """Upscale every frame of the video ``source`` with ``model`` (its tiling and precision apply) into
    ``target``, whose extension (.mp4, .m4v, .mov, .mkv or .webm) names the container written.

    ``crf`` sets the picture quality (:data:`DEFAULT_CRF`); ``progress`` shows a bar over the frames; ``note``
    receives, as they arise, one line for anything the result does not carry over (they are also returned).
    ``max_pixels``: the largest frame accepted, width × height, checked from the header before any frame is
    decoded (None: what the available memory holds for ``model``, as for images).
    An upscaled size with an odd side is padded by one row or column, a copy of the last, because 4:2:0
    video needs even sides. Raises :class:`ESCError` (one line naming the file) for an input that cannot be
    read or is damaged, and for a ``target`` that cannot be written; ``target`` is then left as it was.
    """
    source, target = Path(source), Path(target)
    if target.suffix.lower() not in CONTAINERS:
        raise ESCError(f"{target}: videos are written as {', '.join(sorted(CONTAINERS))}, not {target.suffix!r}")
    encoder = encoder_for(target)
    check_crf(crf, encoder)
    file, size = open_regular_file(source)  # FFmpeg opens it by name below; a FIFO must not block that open
    file.close()
    if size == 0:
        raise ESCError(f'{source}: empty file')
    option = MAX_PIXELS_OPTION if max_pixels is not None else ' (the memory limit)'
    limit = max_pixels if max_pixels is not None else pixel_limit(model.bytes_per_input_pixel(channels=3))
    notes: List[str] = []

    def tell(line: str) -> None:
        notes.append(line)
        if note is not None:
            note(line)

    with _FFmpegLog().capture() as log:
        reader = _Reader(source, log)
        with _open_input(reader) as container:
            video = _video_stream(container, source)
            check_pixels(str(source), video.codec_context.width, video.codec_context.height, limit, option,
                         each=True)
            total = _scan(container, reader, limit, option)
        with _open_input(reader) as container:
            video, audio = _streams(container, source)
            left_out = [s for s in container.streams if s is not video and s not in audio]
            if left_out:
                tell(f'{source}: not kept: ' + ', '.join(f'stream {s.index} ({s.type}, {s.codec.name})'
                                                         for s in left_out))
            bar = tqdm(total=total, desc=source.name, unit='frame', disable=not progress, leave=False)
            tile_bar, model.progress = model.progress, False  # one line per video: the frames', no bar per frame
            try:
                with atomic_path(target) as tmp:
                    frames, height, width = _transcode(model, container, video, audio, tmp, target, crf, encoder,
                                                       reader, bar, tell)
            finally:
                model.progress = tile_bar
                bar.close()
    return VideoSummary(frames=frames, width=width, height=height, frame_rate=video.average_rate or video.guessed_rate,
                        audio_streams=len(audio), notes=notes)


def _transcode(model: FrameUpscaler, container: av.container.InputContainer, video: av.VideoStream,
               audio: List[av.AudioStream], tmp: str, target: Path, crf: int, encoder: str, reader: _Reader,
               bar: tqdm, tell: NoteCallback) -> Tuple[int, int, int]:
    """Demux ``container``, upscale its video frames and copy its audio into ``tmp``; (frames, height, width)."""
    source = reader.source
    try:
        output = av.open(tmp, 'w', format=CONTAINERS[target.suffix.lower()])
    except av.FFmpegError as exc:
        raise ESCError(f'{target}: cannot be written ({getattr(exc, "strerror", None) or exc})') from None
    count, size = 0, None
    with _closing(output, target):
        writer = _Writer(output, video, audio, crf, encoder, target)
        packets = iter(container.demux(video, *audio))
        while True:
            packet = reader.checked(lambda: next(packets, None))
            if packet is None:
                break
            if packet.stream.type == 'audio':
                reader.checked(packet.decode)  # only to hear of damage; the packet itself is copied as it is
                if packet.size:
                    _output_step(target, reader.log, lambda: writer.mux_audio(packet))
                continue
            for frame in reader.checked(packet.decode):
                if frame.pts is None:
                    raise ESCError(f'{source}: frame {count} has no timestamp; cannot keep the timing')
                size = size or (frame.width, frame.height)
                if (frame.width, frame.height) != size:  # refused before the work, not after
                    raise ESCError(f'{source}: the frame size changes at frame {count} '
                                   f'({frame.width}x{frame.height}); one size per video is supported')
                try:
                    upscaled = _upscale_frame(model, frame)
                except ESCError as exc:
                    raise ESCError(f'{source}: frame {count}: {exc}') from None
                if writer.stream is None:
                    _output_step(target, reader.log, lambda: writer.open_video(frame, *upscaled.shape[:2]))
                    if any(writer.padding):
                        height, width = writer.size
                        tell(f'{source}: upscaled frames are {width}x{height}; padded to '
                             f'{width + writer.padding[1]}x{height + writer.padding[0]} (4:2:0 needs even sides)')
                    bits = max(component.bits for component in frame.format.components)
                    if bits > 8:
                        tell(f'{source}: {bits}-bit video is written as 8-bit')
                _output_step(target, reader.log, lambda: writer.write_frame(upscaled, frame.pts))
                count += 1
                bar.update()
        if writer.stream is None:
            raise ESCError(f'{source}: its video stream holds no frames')
        _output_step(target, reader.log, writer.finish)
    return count, writer.size[0], writer.size[1]


@contextlib.contextmanager
def _closing(output: av.container.OutputContainer, target: Path) -> Iterator[None]:
    """Close ``output`` however its block ends (writing the trailer); a failure to close names ``target``."""
    try:
        with output:
            yield
    except av.FFmpegError as exc:
        raise ESCError(f'{target}: cannot be written ({getattr(exc, "strerror", None) or exc})') from None


def _output_step(target: Path, log: _FFmpegLog, call: Callable[[], object]) -> object:
    """``call`` (encoding or muxing), with an FFmpeg failure as a one-line ESCError naming the result file."""
    mark = len(log)
    try:
        return call()
    except av.FFmpegError as exc:
        raise ESCError(f'{target}: cannot be written ({_reason(exc, log, mark)})') from None
