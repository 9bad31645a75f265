"""Upscale your own images and videos with a trained ESC checkpoint: one file or every one in a folder.

    python esc/inference.py -i photo.jpg -o results/ --model ESC_DIV2K_X4.pth
    python esc/inference.py -i photos/ -o results/ --model ESC_DIV2K_X4.pth --tile 256 --tile-overlap 64
    python esc/inference.py -i clip.mp4 -o results/ --model ESC_DIV2K_X4.pth --crf 18

The variant, its options and the scale are read off the checkpoint (esc.upscaler.detect_network);
``--arch`` and ``--scale`` only confirm or override. Grayscale stays grayscale, RGBA keeps its alpha
(upscaled on its own), 16-bit PNG/TIFF stay 16-bit; images longer than ``--tile`` (1024 LR pixels by
default) are processed in overlapping tiles; outputs are named ``<name>_x<scale>.<ext>``, are
written whole or not at all, and never replace an input. Videos (by extension: mp4, m4v, mov, mkv,
webm, avi, which becomes mkv) are upscaled frame by frame with their timing and audio kept (esc.video). A
folder run skips files it cannot read, and subfolders, with one line each and ends with a summary; the exit
status is 1 if anything was skipped.
"""
import argparse
import os.path as osp
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set

if sys.path and osp.abspath(sys.path[0]) == osp.dirname(osp.abspath(__file__)):
    # run as a script: import the `esc` package, not the folder esc/ itself, first
    sys.path[0] = osp.dirname(osp.dirname(osp.abspath(__file__)))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402
from tqdm import tqdm  # noqa: E402

from esc.archs.streaming import tune_glibc_malloc  # noqa: E402
from esc.errors import ESCError  # noqa: E402
from esc.upscaler import DTYPES, Upscaler, load_model  # noqa: E402
from esc.utils.checkpoint import write_atomic  # noqa: E402
from esc.utils.tiling import DEFAULT_OVERLAP  # noqa: E402
from esc.utils.cli import run_command  # noqa: E402
from esc.video import CRF_LIMITS, DEFAULT_CRF, VIDEO_EXTENSIONS, is_video, result_extension, upscale_video  # noqa: E402

WRITABLE = {'.png', '.jpg', '.jpeg', '.webp', '.tif', '.tiff', '.bmp'}


def read_image(path: Path) -> np.ndarray:
    """An image file as RGB(A) or grayscale, 8 or 16 bit; a one-line ESCError for anything unreadable."""
    if path.stat().st_size == 0:
        raise ESCError(f'{path}: empty file')
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ESCError(f'{path}: not an image OpenCV can read')
    check_complete(path)
    if image.dtype not in (np.uint8, np.uint16):
        raise ESCError(f'{path}: {image.dtype} pixels are not supported (8- or 16-bit images)')
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def check_complete(path: Path) -> None:
    """Decode ``path`` once more with Pillow, which reports truncated or corrupt data: OpenCV returns a truncated
    JPEG as a whole image, grey below the cut. Formats Pillow does not know are left to OpenCV's verdict."""
    try:
        with Image.open(path) as image:
            image.load()
    except UnidentifiedImageError:
        return
    except (OSError, SyntaxError, ValueError) as exc:
        raise ESCError(f'{path}: damaged or truncated image ({exc})') from None


def write_image(path: Path, image: np.ndarray) -> None:
    """Encode by the file extension and write atomically (a killed run leaves no half-written file)."""
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(path.suffix, image)
    if not ok:
        raise ESCError(f'{path}: OpenCV cannot encode {image.dtype} images as {path.suffix}')
    write_atomic(path, encoded.tobytes())


def output_path(source: Path, out_dir: Path, scale: float, ext: Optional[str], image: np.ndarray) -> Path:
    """``<out_dir>/<stem>_x<scale><ext>``, in the input's format unless ``ext``; a 16-bit result goes to PNG
    where the format asked for cannot hold 16 bits."""
    suffix = ext if ext is not None else source.suffix.lower()
    if image.dtype == np.uint16 and suffix not in ('.png', '.tif', '.tiff'):
        suffix = '.png'
    return out_dir / f'{source.stem}_x{scale:g}{suffix}'


def list_inputs(path: Path, output: Optional[Path] = None) -> List[Path]:
    """The file itself, or the visible entries of a folder in name order: its files, and its subfolders (which
    the run reports as skipped) except ``output``, where the results go."""
    if path.is_file():
        return [path]
    if path.is_dir():
        skip = output.resolve() if output is not None else None
        return sorted(p for p in path.iterdir() if not p.name.startswith('.') and (p.is_file() or p.is_dir())
                      and not (p.is_dir() and p.resolve() == skip))
    raise ESCError(f'-i: no such file or folder {path}')


def video_output_path(source: Path, out_dir: Path, scale: float) -> Path:
    """``<out_dir>/<stem>_x<scale><ext>``: a video keeps its container (``--ext`` is for images), but for AVI,
    whose result is Matroska (``.mkv``)."""
    return out_dir / f'{source.stem}_x{scale:g}{result_extension(source)}'


def check_target(source: Path, target: Path, inputs: Set[Path], written: Dict[Path, Path]) -> None:
    """Refuse a result that would replace an input, or one this run already wrote from another input
    (``clip.avi`` and ``clip.mkv`` both give ``clip_x2.mkv``; with ``--ext``, so do ``a.jpg`` and ``a.png``)."""
    resolved = target.resolve()
    if resolved in inputs:
        raise ESCError(f'{source}: its output {target} would replace an input; choose another -o')
    if resolved in written:
        raise ESCError(f'{source}: its output {target} was already written from {written[resolved]} in this run')


def upscale_one_video(model: Upscaler, source: Path, target: Path, crf: int) -> None:
    """``source`` upscaled into ``target`` with a bar over its frames, then one line saying what was written."""
    summary = upscale_video(model, source, target, crf=crf, progress=True,
                            note=lambda line: tqdm.write(f'note: {line}', file=sys.stderr))
    rate = f' at {float(summary.frame_rate):g} fps' if summary.frame_rate else ''
    streams = summary.audio_streams
    audio = f", {streams} audio stream{'s' * (streams != 1)} copied" if streams else ', no audio'
    frames = f"{summary.frames} frame{'s' * (summary.frames != 1)}"
    tqdm.write(f'{source} -> {target}: {frames} of {summary.width}x{summary.height}{rate}{audio}')


def _scale(text: str) -> float:
    """--scale: a whole number stays an int (fixed-scale checkpoints are checked against it)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a number: {text!r}') from None
    return int(value) if value.is_integer() else value


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
    p.add_argument('--param-key', default='params_ema', help="state dict inside the checkpoint (falls back to 'params')")
    p.add_argument('--tile', type=int, default=1024, help='LR tile size in pixels: images with a longer side are '
                   'processed in overlapping tiles, which bounds memory (default 1024; 0: never tile)')
    p.add_argument('--tile-overlap', type=int, default=DEFAULT_OVERLAP,
                   help=f'LR pixels shared by neighbouring tiles (default {DEFAULT_OVERLAP})')
    p.add_argument('--device', default='auto', help='auto (CUDA where available), cpu or cuda')
    p.add_argument('--precision', default='fp32', help=f"{', '.join(DTYPES)} (fp16 on CUDA only)")
    p.add_argument('--ext', default=None, help='image output format, e.g. png (default: the input\'s; videos keep '
                   'their container)')
    p.add_argument('--crf', type=int, default=DEFAULT_CRF,
                   help=f'video quality, 0 (lossless) to {CRF_LIMITS["libx264"]}: lower is better and larger '
                   f'(default {DEFAULT_CRF}); H.264, VP9 for .webm')
    return p


def run(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    ext = None if args.ext is None else '.' + args.ext.lower().lstrip('.')
    if ext is not None and ext not in WRITABLE:
        raise ESCError(f"--ext: {args.ext!r} is not one of {', '.join(sorted(e[1:] for e in WRITABLE))}")
    if not 0 <= args.crf <= CRF_LIMITS['libx264']:
        raise ESCError(f"--crf: {args.crf} is not from 0 to {CRF_LIMITS['libx264']}")
    sources = list_inputs(args.input, args.output)
    tune_glibc_malloc()
    model: Upscaler = load_model(args.model, scale=args.scale, arch=args.arch, device=args.device,
                                 precision=args.precision, tile=args.tile or None, tile_overlap=args.tile_overlap,
                                 param_key=args.param_key)
    model.progress = True
    print(f'{model} from {args.model}', flush=True)
    for line in model.attention:
        print(line, flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    inputs = {p.resolve() for p in sources}
    written: Dict[Path, Path] = {}  # result -> the input it came from, in this run
    done, skipped, start = 0, 0, time.perf_counter()
    for source in tqdm(sources, desc='upscaling', unit='file', disable=len(sources) == 1):
        try:
            if source.is_dir():
                raise ESCError(f'{source}: a folder (subfolders are not searched; give it to -i on its own)')
            if is_video(source):
                target = video_output_path(source, args.output, model.scale)
                check_target(source, target, inputs, written)
                upscale_one_video(model, source, target, args.crf)
            else:
                image = read_image(source)
                target = output_path(source, args.output, model.scale, ext, image)
                check_target(source, target, inputs, written)
                write_image(target, model.upscale(image))
            written[target.resolve()] = source
            done += 1
        except ESCError as exc:
            if len(sources) == 1:
                raise
            tqdm.write(f'skipped: {exc}', file=sys.stderr)
            skipped += 1
    print(f'done {done}, skipped {skipped}, {time.perf_counter() - start:.1f} s -> {args.output}', flush=True)
    return 1 if skipped else 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_command(run, argv)


if __name__ == '__main__':
    main()
