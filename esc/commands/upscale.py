"""Upscale your own images and videos with a trained ESC checkpoint: one file or every one in a folder.

    python esc/commands/upscale.py -i photo.jpg -o results/ --model ESC_DIV2K_X4.pth
    python esc/commands/upscale.py -i photos/ -o results/ --model ESC_DIV2K_X4.pth --tile 256 --tile-overlap 64
    python esc/commands/upscale.py -i clip.mp4 -o results/ --model ESC_DIV2K_X4.pth --crf 18

The variant, its options and the scale are read off the checkpoint (esc.upscaler.detect_network), which is checked
before any network is built (esc.io.state_dict_checks); ``--arch`` and ``--scale`` only confirm or override.
Images are read by esc.io.images: upright (EXIF orientation applied), their size checked from the header
against ``--max-pixels`` (by default what the available memory holds at this scale and tiling) before a pixel
is decoded, damaged, truncated and multi-page files refused; animated GIF, WebP and PNG are upscaled frame by frame
and keep their format, frame durations and loop count. Grayscale stays grayscale (with its alpha, if any), RGBA
keeps its alpha (upscaled on its own), 16-bit PNG/TIFF stay 16-bit, colour profiles are kept in PNG, JPEG, WebP
and TIFF results; images longer than ``--tile`` (1024 LR pixels by default) are processed in overlapping tiles.
Outputs are named ``<name>_x<scale>.<ext>``, in a format settled before the work (PNG where the input's cannot be
written, or cannot hold the image's depth or channels: said in a note), are written whole or not at all, and never
replace an input or a file this run did not write (``--overwrite`` allows the latter). Videos (by extension: mp4,
m4v, mov, mkv, webm, avi, which becomes mkv) are upscaled frame by frame with their timing and audio kept
(esc.io.video), their frame size checked against ``--max-pixels`` from the header. Only regular files are opened: a
FIFO, device or socket is refused unopened. A folder run reports every entry it cannot do (subfolders, FIFOs,
devices, broken links) in one line each and names the hidden ones it leaves out, goes on with the rest and ends
with a summary; the exit status is 1 if anything was skipped. A single file that fails is one line and exit
status 2.
"""
import argparse
import contextlib
import os
import re
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

try:
    import esc  # noqa: F401
except ModuleNotFoundError as missing:  # `python esc/commands/upscale.py` in a checkout that was never installed
    sys.exit('error: the esc package is not installed: run `pip install -e .` in the checkout first'
             if missing.name == 'esc' else f'error: {missing}')

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from esc.acceleration import DTYPES  # noqa: E402
from esc.archs.streaming import tune_glibc_malloc  # noqa: E402
from esc.errors import ESCError  # noqa: E402
from esc.io.images import (PROFILE_FORMATS, WRITABLE, Animation, check_result_size, load_image,  # noqa: E402
                                pixel_limit, read_image, result_format, result_suffix, special_file_kind,
                                write_animation, write_image)
from esc.io.video import (CRF_LIMITS, DEFAULT_CRF, VIDEO_EXTENSIONS, is_video, result_extension,  # noqa: E402
                          upscale_video)
from esc.upscaler import Upscaler, load_model  # noqa: E402
from esc.utils.cli import Stopped, run_command, stop_signals_as_exception  # noqa: E402
from esc.utils.tiling import DEFAULT_OVERLAP  # noqa: E402

__all__ = ['main', 'output_path', 'read_image', 'run', 'video_output_path', 'write_image']

NoteCallback = Callable[[str], None]


def output_path(source: Path, out_dir: Path, scale: float, ext: Optional[str], image: np.ndarray) -> Path:
    """``<out_dir>/<stem>_x<scale><ext>``: ``ext``, else the input's format where it can be written, else PNG
    (:func:`esc.io.images.result_suffix`); PNG where that format cannot hold the image's depth or channels
    (:func:`esc.io.images.result_format`)."""
    suffix = result_format(result_suffix(source, ext)[0], image)[0]
    return out_dir / f'{source.stem}_x{scale:g}{suffix}'


def video_output_path(source: Path, out_dir: Path, scale: float) -> Path:
    """``<out_dir>/<stem>_x<scale><ext>``: a video keeps its container (``--ext`` is for images), but for AVI,
    whose result is Matroska (``.mkv``)."""
    return out_dir / f'{source.stem}_x{scale:g}{result_extension(source)}'


def list_inputs(path: Path, output: Optional[Path] = None) -> Tuple[List[Path], List[str]]:
    """What a run tries, and a line for each kind of entry it leaves out untried.

    For a file (or anything else that is not a folder: a FIFO is then refused unopened), the file itself. For a
    folder, its entries in name order, whatever they are (subfolders, FIFOs, devices, broken links are each
    reported as skipped, in one line naming them, without being opened), except hidden ones (named in one line)
    and ``output``, where the results go (said too)."""
    if path.is_dir():
        skip = output.resolve() if output is not None else None
        try:
            entries = sorted(path.iterdir())
        except OSError as exc:
            raise ESCError(f'-i: cannot list {path} ({exc.strerror})') from None
        hidden = [p for p in entries if p.name.startswith('.')]
        results = [p for p in entries if not p.name.startswith('.') and p.is_dir() and p.resolve() == skip]
        left_out = []
        if hidden:
            left_out.append(f'{len(hidden)} hidden entr{"ies" if len(hidden) != 1 else "y"} in {path} ('
                            + ', '.join(p.name for p in hidden) + ')')
        left_out.extend(f'{p}, the output folder' for p in results)
        return [p for p in entries if not p.name.startswith('.') and p not in results], left_out
    if path.exists() or path.is_symlink():
        return [path], []
    raise ESCError(f'-i: no such file or folder {path}')


def own_results(sources: Sequence[Path], output: Path, scale: float) -> Set[Path]:
    """The files among ``sources`` that are results of this tool for other sources at ``scale``, where they lie in
    the output folder (``-o`` equal to ``-i``): named ``<stem>_x<scale>.<any extension>`` beside a ``<stem>.*``."""
    out = output.resolve()
    stems = {f'{p.stem}_x{scale:g}' for p in sources}
    return {p for p in sources if p.is_file() and p.parent.resolve() == out and p.stem in stems}


def prepare_output_folder(output: Path) -> None:
    """Create ``output`` and make sure a file can be written in it, before any work; one line if not."""
    if output.exists() and not output.is_dir():
        raise ESCError(f'-o: {output} is a file; -o names the folder the results go to')
    try:
        output.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix='.esc-write-check-', dir=output)
    except OSError as exc:
        raise ESCError(f'-o: cannot write in {output} ({exc.strerror or exc})') from None
    os.close(handle)
    os.remove(probe)


TEMPORARY = re.compile(r'^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$')
"""The hidden file an atomic write goes through (esc.io.checkpoint.atomic_path): ``.<name>.<pid>.tmp``."""


def remove_stale_temporaries(target: Path) -> None:
    """Delete the hidden temporary files of ``target`` left by runs that were killed (their process is gone)."""
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        match = TEMPORARY.match(entry.name)
        if match and match.group('name') == target.name and not _running(int(match.group('pid'))):
            with contextlib.suppress(OSError):
                entry.unlink()


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


class Run:
    """One run of the command: the model, where results go, and what has been written and said so far."""

    def __init__(self, model: Upscaler, args: argparse.Namespace, ext: Optional[str], inputs: Set[Path],
                 max_pixels: int, note: NoteCallback) -> None:
        self.model, self.args, self.ext, self.inputs = model, args, ext, inputs
        self.max_pixels, self.note = max_pixels, note
        self.written: Dict[Path, Path] = {}
        """result -> the input it came from, in this run"""
        self.said: Set[str] = set()

    def say_once(self, line: Optional[str]) -> None:
        if line is not None and line not in self.said:
            self.said.add(line)
            self.note(line)

    def check_target(self, source: Path, target: Path) -> None:
        """Refuse a result that would replace an input, one this run already wrote from another input (``clip.avi``
        and ``clip.mkv`` both give ``clip_x2.mkv``), or a file this run did not write (unless ``--overwrite``)."""
        resolved = target.resolve()
        if resolved in self.inputs:
            raise ESCError(f'{source}: its output {target} would replace an input; choose another -o')
        if resolved in self.written:
            raise ESCError(f'{source}: its output {target} was already written from {self.written[resolved]} '
                           'in this run')
        if target.is_dir():
            raise ESCError(f'{source}: its output {target} is a folder')
        if target.exists() and not self.args.overwrite:
            raise ESCError(f'{source}: its output {target} already exists and this run did not write it; '
                           'left as it is (--overwrite replaces it)')
        remove_stale_temporaries(target)

    def image(self, source: Path) -> Path:
        loaded = load_image(source, self.max_pixels, animations=True)
        if isinstance(loaded, Animation):
            return self.animation(source, loaded)
        height, width = loaded.pixels.shape[:2]
        self.say_once(result_suffix(source, self.ext)[1])
        for line in loaded.notes:
            self.note(line)
        target = output_path(source, self.args.output, self.model.scale, self.ext, loaded.pixels)
        lacking = result_format(result_suffix(source, self.ext)[0], loaded.pixels)[1]
        if lacking is not None:
            self.note(f'{source}: {lacking}')
        check_result_size(source, target.suffix.lower(), round(height * self.model.scale),
                          round(width * self.model.scale))
        self.check_target(source, target)
        if loaded.icc_profile and target.suffix.lower() not in PROFILE_FORMATS:
            self.note(f'{source}: its colour profile is not kept in a {target.suffix} result')
        try:
            result = self.model.upscale(loaded.pixels)
        except ESCError as exc:
            raise ESCError(f'{source}: {exc}') from None
        write_image(target, result, loaded.icc_profile)
        return target

    def animation(self, source: Path, animation: Animation) -> Path:
        """Every frame upscaled (one bar over the frames), written back in the animation's own format with its
        durations and loop count."""
        suffix = animation.suffix
        if self.ext is not None and self.ext != suffix:
            self.note(f'{source}: animated; its result keeps the {suffix} format (--ext is for still images)')
        height, width = animation.frames[0].shape[:2]
        target = self.args.output / f'{source.stem}_x{self.model.scale:g}{suffix}'
        check_result_size(source, suffix, round(height * self.model.scale), round(width * self.model.scale))
        self.check_target(source, target)
        tile_bar, self.model.progress = self.model.progress, False
        try:
            frames = [self.model.upscale(frame) for frame in tqdm(animation.frames, desc=source.name, unit='frame',
                                                                  leave=False)]
        except ESCError as exc:
            raise ESCError(f'{source}: {exc}') from None
        finally:
            self.model.progress = tile_bar
        write_animation(target, frames, animation.durations, animation.loop, animation.icc_profile)
        return target

    def video(self, source: Path) -> Path:
        target = video_output_path(source, self.args.output, self.model.scale)
        self.check_target(source, target)
        summary = upscale_video(self.model, source, target, crf=self.args.crf, progress=True, note=self.note,
                                max_pixels=self.max_pixels)
        rate = f' at {float(summary.frame_rate):g} fps' if summary.frame_rate else ''
        streams = summary.audio_streams
        audio = f", {streams} audio stream{'s' * (streams != 1)} copied" if streams else ', no audio'
        frames = f"{summary.frames} frame{'s' * (summary.frames != 1)}"
        tqdm.write(f'{source} -> {target}: {frames} of {summary.width}x{summary.height}{rate}{audio}')
        return target

    def one(self, source: Path) -> None:
        """Upscale ``source``; every failure is an ESCError naming it. Only regular files are opened (a FIFO would
        block the run)."""
        try:
            mode = source.stat().st_mode
        except OSError as exc:
            raise ESCError(f'{source}: cannot be read ({exc.strerror})') from None
        if stat.S_ISDIR(mode):
            raise ESCError(f'{source}: a folder (subfolders are not searched; give it to -i on its own)')
        kind = special_file_kind(mode)
        if kind is not None:
            raise ESCError(f'{source}: {kind}, not an image or video file; not opened')
        try:
            target = self.video(source) if is_video(source) else self.image(source)
        except ESCError:
            raise
        except MemoryError:
            raise ESCError(f'{source}: out of memory (lower --max-pixels or --tile)') from None
        except Exception as exc:  # whatever a hostile file provokes in a library: one line, and the run goes on
            reason = (str(exc).strip().splitlines() or [''])[0]
            raise ESCError(f'{source}: {type(exc).__name__}: {reason}') from None
        self.written[target.resolve()] = source


def _scale(text: str) -> float:
    """--scale: a whole number stays an int (fixed-scale checkpoints are checked against it)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a number: {text!r}') from None
    return int(value) if value.is_integer() else value


def _pixels(text: str) -> int:
    """--max-pixels: a whole number of pixels, or megapixels with an M suffix (e.g. 50M)."""
    try:
        value = float(text[:-1]) * 1e6 if text[-1:] in ('M', 'm') else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a number of pixels: {text!r}') from None
    if not value >= 1:
        raise argparse.ArgumentTypeError(f'must be at least 1 pixel: {text!r}')
    return int(value)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    videos = ', '.join(sorted(e[1:] for e in VIDEO_EXTENSIONS))
    p.add_argument('-i', '--input', required=True, type=Path,
                   help=f'an image or video ({videos}), or a folder of them')
    p.add_argument('-o', '--output', required=True, type=Path, help='folder for the results (created)')
    p.add_argument('--model', required=True, help='checkpoint (.pth): official release file or this project\'s')
    p.add_argument('--scale', type=_scale, default=None,
                   help="the checkpoint's scale (detected; checked if given); ESC+LTE: any number above 1, e.g. 2.5")
    p.add_argument('--arch', default=None, help='ESC, ESCFP, ESCReal or ESCLTE (detected)')
    p.add_argument('--param-key', default='params_ema',
                   help="state dict inside the checkpoint (falls back to 'params')")
    p.add_argument('--tile', type=int, default=1024, help='LR tile size in pixels: images with a longer side are '
                   'processed in overlapping tiles, which bounds memory (default 1024; 0: never tile)')
    p.add_argument('--tile-overlap', type=int, default=DEFAULT_OVERLAP,
                   help=f'LR pixels shared by neighbouring tiles (default {DEFAULT_OVERLAP})')
    p.add_argument('--max-pixels', type=_pixels, default=None,
                   help='largest image accepted, width × height, e.g. 50000000 or 50M (default: what the available '
                   'memory holds at this scale and tiling); checked from the file header before decoding')
    p.add_argument('--overwrite', action='store_true',
                   help='replace existing files that have a result\'s name (never an input)')
    p.add_argument('--device', default='auto', help='auto (CUDA where available), cpu or cuda')
    p.add_argument('--precision', default='fp32', help=f"{', '.join(DTYPES)} (fp16 on CUDA only)")
    p.add_argument('--ext', default=None, help='image output format, e.g. png (default: the input\'s where it can be '
                   'written, else png; videos keep their container)')
    p.add_argument('--crf', type=int, default=DEFAULT_CRF,
                   help=f'video quality, 0 (lossless) to {CRF_LIMITS["libx264"]}: lower is better and larger '
                   f'(default {DEFAULT_CRF}); H.264, VP9 for .webm')
    return p


def _note(line: str) -> None:
    tqdm.write(f'note: {line}', file=sys.stderr)


def run(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    ext = None if args.ext is None else '.' + args.ext.lower().lstrip('.')
    if ext is not None and ext not in WRITABLE:
        raise ESCError(f"--ext: {args.ext!r} is not one of {', '.join(sorted(e[1:] for e in WRITABLE))}")
    if not 0 <= args.crf <= CRF_LIMITS['libx264']:
        raise ESCError(f"--crf: {args.crf} is not from 0 to {CRF_LIMITS['libx264']}")
    sources, left_out = list_inputs(args.input, args.output)
    prepare_output_folder(args.output)
    tune_glibc_malloc()
    model: Upscaler = load_model(args.model, scale=args.scale, arch=args.arch, device=args.device,
                                 precision=args.precision, tile=args.tile or None, tile_overlap=args.tile_overlap,
                                 param_key=args.param_key)
    model.progress = True
    print(f'{model} from {args.model}', flush=True)
    for line in model.attention:
        print(line, flush=True)
    for line in left_out:
        print(f'not inputs: {line}', flush=True)
    earlier = own_results(sources, args.output, model.scale)
    if earlier:
        names = ', '.join(p.name for p in sorted(earlier)[:3]) + (', ...' if len(earlier) > 3 else '')
        print(f'not inputs: {len(earlier)} earlier result{"s" * (len(earlier) != 1)} of this tool in '
              f'{args.output} ({names})', flush=True)
        sources = [p for p in sources if p not in earlier]
    max_pixels = args.max_pixels or pixel_limit(model.bytes_per_input_pixel(channels=4))
    job = Run(model, args, ext, {p.resolve() for p in sources}, max_pixels, _note)
    single = not args.input.is_dir()
    done, skipped, start = 0, 0, time.perf_counter()
    try:
        with stop_signals_as_exception():
            for source in tqdm(sources, desc='upscaling', unit='file', disable=len(sources) <= 1):
                try:
                    job.one(source)
                    done += 1
                except ESCError as exc:
                    if single:
                        raise
                    tqdm.write(f'skipped: {exc}', file=sys.stderr)
                    skipped += 1
    except Stopped as exc:
        reason = 'interrupted' if exc.name == 'SIGINT' else f'stopped by {exc.name}'
        print(f'{reason}: done {done}, skipped {skipped}; the file in progress was not written', file=sys.stderr,
              flush=True)
        return exc.status
    print(f'done {done}, skipped {skipped}, {time.perf_counter() - start:.1f} s -> {args.output}', flush=True)
    return 1 if skipped else 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_command(run, argv)


if __name__ == '__main__':
    main()
