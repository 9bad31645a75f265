"""Try a checkpoint in the browser: upload an image, compare before and after on a slider, download the result.

    pip install -e ".[demo]"
    esc-demo --model experiments/pretrained_models/ESC_DIV2K_X4.pth      # or: python -m esc.commands.demo --model ...
    esc-demo --model experiments/ --port 7860                             # every ESC checkpoint under a folder

The page (Gradio) runs the command line itself on the upload: ``esc.commands.upscale.run`` with the checkpoint, scale,
tile and precision chosen on the page (so ``esc.load_model(...).upscale`` and the command's reading, naming and
writing), so the download is byte for byte what ``python esc/commands/upscale.py -i <image> -o <folder> --model <ckpt>``
writes with the same settings. Gradio hands the page the uploaded file unopened, so every refusal is the command's
one line, made before the work and shown on the page (and in the console): a file that is no image, one larger
than the memory takes (checked from its header before a pixel is decoded), a result larger than its format holds.
Animated GIF, WebP and PNG are upscaled frame by frame, as the command does; the slider shows the first frame.

Checkpoints are opened when the page starts as the command opens them (``esc.load_model``); a file in a model
folder that this refuses, whatever it holds, is listed as not offered with its one-line reason, on the page and
in the console, and the page starts with the others.

Bounds: an upload may be ``--max-upload`` bytes (default: the uncompressed size of the largest image the available
memory takes with the offered checkpoints); the page keeps its last ``--keep-results`` result folders under
``--output`` (``results/demo`` by default); Gradio's copies of uploads and results (``<output>/uploads``) are
deleted once ``--cache-minutes`` old, and all of them when the page stops.
The server listens on 127.0.0.1 unless ``--host`` says otherwise, and makes no outside connection.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import io
import os
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

try:
    import esc  # noqa: F401
except ModuleNotFoundError as missing:  # `python esc/commands/demo.py` in a checkout that was never installed
    sys.exit('error: the esc package is not installed: run `pip install -e .` in the checkout first'
             if missing.name == 'esc' else f'error: {missing}')

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from esc.acceleration import DTYPES
from esc.commands.upscale import parser as inference_parser, run as run_inference
from esc.errors import ESCError  # noqa: E402
from esc.io.checkpoint import read_checkpoint
from esc.io.images import Animation, load_image, pixel_limit
from esc.upscaler import checkpoint_network, load_model, resolve_device, variant_name
from esc.utils.cli import run_command
from esc.utils.tiling import DEFAULT_OVERLAP

if TYPE_CHECKING:
    import gradio

CHECKPOINT_SUFFIXES = ('.pth', '.safetensors')
DEFAULT_SEARCH = Path('experiments')
DEFAULT_OUTPUT = Path('results/demo')
DEFAULT_TILE: int = inference_parser().get_default('tile')
"""The command's ``--tile``, the page's default."""
DEFAULT_KEEP_RESULTS = 10
DEFAULT_CACHE_MINUTES = 60
FILE_BYTES_PER_PIXEL = 8
"""The most an image file needs a pixel, uncompressed (16-bit RGBA): an upload larger than this times the largest
image the memory takes cannot be an image the page upscales."""
ANY_SCALE = 2
"""The scale an ESC+LTE checkpoint (it serves any) is opened at when the page starts, and the page's default for it."""
SIZE_UNITS = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}


@dataclass(frozen=True)
class Checkpoint:
    """An ESC checkpoint offered on the page: its file, what it holds and the largest image the command takes with it
    at the page's default tiling (read once, at start-up)."""

    path: Path
    variant: str
    scale: Optional[float]  # None: ESC+LTE, which serves any scale
    max_pixels: int

    @property
    def label(self) -> str:
        scale = 'any scale' if self.scale is None else f'x{self.scale:g}'
        return f'{self.path} ({self.variant}, {scale})'

    @property
    def page_scale(self) -> float:
        """What the scale field holds while this checkpoint is chosen, until changed: its scale (Gradio 6 shows an
        empty number field as 0, which would read as a scale)."""
        return ANY_SCALE if self.scale is None else self.scale


def describe_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint at ``path``, opened as the command opens it (:func:`esc.load_model`, on the CPU: every check a
    file must pass before the command builds its network); a one-line ESCError where the command would refuse it."""
    source = f'--model: {path}'
    state_dict, metadata = read_checkpoint(str(path), 'params_ema', option='--model')
    try:
        options = checkpoint_network(state_dict, metadata, source=source)
    except ESCError as exc:  # detection's messages name the tensors at fault, not the file
        raise ESCError(str(exc) if str(exc).startswith(source) else f'{source}: {exc}') from None
    del state_dict
    scale = options.get('upscaling_factor')
    try:
        model = load_model(str(path), scale=ANY_SCALE if scale is None else None, device='cpu',
                           tile=DEFAULT_TILE or None)
    except ESCError as exc:  # load_model names its argument `model`; this command's option is --model
        raise ESCError(f'--{exc}' if str(exc).startswith('model: ') else f'{source}: {exc}') from None
    return Checkpoint(path, variant_name(options), scale, pixel_limit(model.bytes_per_input_pixel(channels=4)))


def _is_weights_name(name: str) -> bool:
    """Network weights a folder search offers: not training states, not the trained (non-EMA) twin of a
    safetensors pair, which ``read_checkpoint`` reaches through the EMA file anyway."""
    return name.endswith(CHECKPOINT_SUFFIXES) and not name.endswith('.params.safetensors')


def weight_files(folder: Path) -> Tuple[List[Path], List[str]]:
    """The entries under ``folder`` (searched recursively; links to folders are not followed) named as network
    weights, in name order, whatever they are (a file, a link to nowhere, a FIFO), and a note for each subfolder
    that cannot be listed."""
    found: List[Path] = []
    notes: List[str] = []

    def unlisted(exc: OSError) -> None:
        notes.append(f'not searched: {exc.filename}: {exc.strerror or exc}')

    for root, _, names in os.walk(folder, onerror=unlisted):
        found.extend(Path(root) / name for name in names if _is_weights_name(name))
    return sorted(found), notes


def offer(path: Path) -> Checkpoint:
    """:func:`describe_checkpoint` for an entry a folder search found, which must first be a regular file that can
    be reached (a FIFO would block the page's start; a link loop or a dangling link says why here)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ESCError(f'--model: {path}: cannot be read ({exc.strerror or exc})') from None
    if not stat.S_ISREG(mode):
        raise ESCError(f'--model: {path}: not a regular file')
    return describe_checkpoint(path)


def find_checkpoints(sources: Sequence[Path]) -> Tuple[List[Checkpoint], List[str]]:
    """The ESC checkpoints named by ``sources`` (files, or folders searched recursively), in name order, and one
    line per entry a folder held that is not offered, with the reason (VGG weights beside the release files, a
    damaged or hostile file, a link loop). A file named on its own that the command would refuse, or nothing found
    at all, is an ESCError."""
    found: Dict[Path, Checkpoint] = {}
    notes: List[str] = []
    for source in sources:
        if source.is_dir():
            paths, unlisted = weight_files(source)
            notes.extend(unlisted)
            for path in paths:
                if path in found:
                    continue
                try:
                    found[path] = offer(path)
                except (ESCError, OSError) as exc:
                    notes.append(f'not offered: {exc}')
                except Exception as exc:  # whatever a hostile file provokes in a library: one line, the page starts
                    reason = (str(exc).strip().splitlines() or [''])[0]
                    notes.append(f'not offered: --model: {path}: {type(exc).__name__}: {reason}')
        elif source.is_file():
            if source not in found:
                found[source] = describe_checkpoint(source)
        else:
            raise ESCError(f'--model: no such file or folder {source}')
    if not found:
        names = ', '.join(str(s) for s in sources)
        raise ESCError(f'--model: no ESC checkpoint (.pth, .safetensors) in {names}; name one with --model')
    return list(found.values()), notes


def default_upload_limit(checkpoints: Sequence[Checkpoint]) -> int:
    """Bytes an upload may have by default: the largest image any offered checkpoint takes in the memory available
    now (the command's own limit), stored uncompressed."""
    return max(c.max_pixels for c in checkpoints) * FILE_BYTES_PER_PIXEL


def precisions_for(device: str) -> List[str]:
    """The precisions the page offers on ``device``: fp16 autocast runs on CUDA only."""
    return [name for name in DTYPES if name != 'fp16' or device == 'cuda']


def display_image(image: np.ndarray) -> np.ndarray:
    """An image as the browser shows it: 8 bits per channel, grayscale as RGB (16-bit values rounded)."""
    if image.dtype == np.uint16:
        image = np.round(image / 257.0).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 2:  # grayscale and alpha
        image = image[..., (0, 0, 0, 1)]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return image


def before_image(source: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """The input enlarged bicubically to ``size`` (width, height), the slider's "before"."""
    return cv2.resize(display_image(source), size, interpolation=cv2.INTER_CUBIC)


def shown_picture(path: Path) -> Tuple[np.ndarray, int]:
    """The picture the slider shows for an image the command took or wrote (a still, or an animation's first
    frame; read without a size limit, the command having applied its own), and its number of frames."""
    loaded = load_image(path, max_pixels=sys.maxsize, animations=True)
    if isinstance(loaded, Animation):
        return loaded.frames[0], len(loaded.frames)
    return loaded.pixels, 1


@dataclass(frozen=True)
class Settings:
    """What the page lets one choose, checked as the command checks its options."""

    scale: Optional[float]
    tile: int
    tile_overlap: int
    precision: str

    @classmethod
    def from_page(cls, scale: Optional[float], tile: Optional[float], tile_overlap: Optional[float],
                  precision: str) -> 'Settings':
        """The page's fields, empty ones at the command's defaults; whole numbers where the command wants them."""
        scale = None if not scale else (int(scale) if float(scale).is_integer() else float(scale))
        tile = DEFAULT_TILE if tile is None else tile
        tile_overlap = DEFAULT_OVERLAP if tile_overlap is None else tile_overlap
        for name, value in (('tile', tile), ('tile overlap', tile_overlap)):
            if not float(value).is_integer() or value < 0:
                raise ESCError(f'{name}: {value:g} is not a whole number of pixels (0 or more)')
        return cls(scale, int(tile), int(tile_overlap), precision)

    def command_options(self) -> List[str]:
        """These settings as ``esc/commands/upscale.py`` options."""
        options = ['--tile', str(self.tile), '--tile-overlap', str(self.tile_overlap), '--precision', self.precision]
        return (['--scale', f'{self.scale:g}'] if self.scale is not None else []) + options


def upscale_file(checkpoint: Path, source: Path, settings: Settings, device: str, output: Path,
                 progress: Any = None) -> Tuple[Path, np.ndarray, np.ndarray, str]:
    """Upscale ``source`` by running the command itself (``esc.commands.upscale.run``, in this process) into a fresh
    folder under ``output``: the result is the command's by construction, not by imitation.

    Returns the written result, the before/after pair for the slider and what the command printed, after the
    equivalent command line (and, for an animation, that the slider shows its first frame). ``progress`` (a
    ``gradio.Progress``) is told the stages; its tqdm tracking follows the command's bar over the tiles of a tiled
    image. The command's one-line refusals come through as ESCError, and leave no folder behind."""
    def tell(fraction: float, stage: str) -> None:
        if progress is not None:
            progress(fraction, desc=stage)

    output.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix='result-', dir=output))
    options = ['--model', str(checkpoint), '--device', device, *settings.command_options()]
    tell(0.0, 'upscaling')
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            run_inference(['-i', str(source), '-o', str(folder), *options])
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # the command wrote nothing to keep: leave no folder behind
        raise
    (target,) = folder.iterdir()  # a fresh folder holds the one result, whatever its name (``.hidden_x2.png``)
    tell(0.9, 'showing the result')
    result, frames = shown_picture(target)
    before = before_image(shown_picture(source)[0], (result.shape[1], result.shape[0]))
    command = ' '.join(['python esc/commands/upscale.py -i', source.name, '-o <folder>', *options])
    lines = [command, *printed.getvalue().strip().splitlines()]
    if frames > 1:
        lines.append(f'an animation of {frames} frames: the slider shows the first, the download holds them all')
    return target, before, display_image(result), '\n'.join(lines)


def upload_path(upload: Any) -> Path:
    """The file an upload was stored in: the page receives Gradio's ``FileData`` as it came (a dict; Gradio has
    checked that the file is one of its uploads, and opens nothing), or a path."""
    path = upload.get('path') if isinstance(upload, dict) else upload
    if not path:
        raise ESCError('image: upload an image first')
    return Path(path)


@dataclass(frozen=True)
class Shown:
    """What the page shows after a click: the slider's before/after pair and the download (None where refused),
    and the summary box: the command and what it printed, or ``error: <the refusal's one line>``."""

    slider: Optional[Tuple[np.ndarray, np.ndarray]]
    download: Optional[str]
    summary: str

    @property
    def refused(self) -> bool:
        return self.download is None


class Page:
    """What the page does, apart from its widgets (so every refusal is tested without a browser): upscale an upload
    with the command, turn any refusal into one line on the page and in the console, and keep only the last
    ``keep_results`` result folders it made (Gradio serves its own copy of each)."""

    def __init__(self, checkpoints: Sequence[Checkpoint], device: str, output: Path,
                 keep_results: int = DEFAULT_KEEP_RESULTS, log: Callable[[str], None] = print) -> None:
        self.by_label = {checkpoint.label: checkpoint for checkpoint in checkpoints}
        self.device, self.output, self.keep_results, self.log = device, output, keep_results, log
        self.results: Deque[Path] = collections.deque()

    def checkpoint(self, label: str) -> Checkpoint:
        try:
            return self.by_label[label]
        except (KeyError, TypeError):
            raise ESCError(f'checkpoint: {label!r} is not one this page offers') from None

    def upscale(self, upload: Any, label: str, scale: Optional[float], tile: Optional[float],
                tile_overlap: Optional[float], precision: str, progress: Any = None) -> Shown:
        """The click on *Upscale*."""
        try:
            source = upload_path(upload)
            checkpoint = self.checkpoint(label)
            if precision not in precisions_for(self.device):
                raise ESCError(f"precision: {precision!r} is not one of {', '.join(precisions_for(self.device))}")
            settings = Settings.from_page(scale, tile, tile_overlap, precision)
            target, before, after, summary = upscale_file(checkpoint.path, source, settings, self.device,
                                                          self.output, progress)
        except ESCError as exc:
            self.log(f'refused: {exc}')
            return Shown(None, None, f'error: {exc}')
        self.keep(target.parent)
        return Shown((before, after), str(target), summary)

    def keep(self, folder: Path) -> None:
        """Remember a result folder; delete the oldest this page made beyond ``keep_results``."""
        self.results.append(folder)
        while len(self.results) > self.keep_results:
            shutil.rmtree(self.results.popleft(), ignore_errors=True)


def build_page(page: Page, not_offered: Sequence[str] = (),
               cache_minutes: int = DEFAULT_CACHE_MINUTES) -> 'gradio.Blocks':
    """The Gradio page: upload, checkpoint and settings, a before/after slider, progress, a download, and the
    checkpoints not offered with their reasons."""
    import gradio as gr

    checkpoints = list(page.by_label.values())
    age = cache_minutes * 60

    def click(upload: Optional[Dict[str, Any]], label: str, scale: Optional[float], tile: Optional[float],
              tile_overlap: Optional[float], precision: str, progress: gr.Progress = gr.Progress(track_tqdm=True)):
        shown = page.upscale(upload, label, scale, tile, tile_overlap, precision, progress)
        if shown.refused:
            gr.Warning(shown.summary[len('error: '):])
        return shown.slider, shown.download, shown.summary

    def scale_of(label: str) -> Optional[float]:
        known = page.by_label.get(label)
        return known.page_scale if known else None

    with gr.Blocks(title='ESC super-resolution', analytics_enabled=False,
                   delete_cache=(min(age, 600), age)) as blocks:
        gr.Markdown('## ESC super-resolution\nUpload an image, choose a checkpoint and press *Upscale*. '
                    'The result is what `esc/commands/upscale.py` writes with the same settings.')
        with gr.Row():
            with gr.Column():
                upload = gr.Image(label='Image', type='filepath', image_mode=None, sources=['upload'],
                                  elem_id='esc-upload')
                checkpoint = gr.Dropdown([c.label for c in checkpoints], value=checkpoints[0].label,
                                         label='Checkpoint', elem_id='esc-checkpoint')
                with gr.Row():
                    scale = gr.Number(value=checkpoints[0].page_scale, label="Scale (the checkpoint's; any above 1 "
                                      'for ESC+LTE)', elem_id='esc-scale')
                    precision = gr.Radio(precisions_for(page.device), value='fp32', label='Precision',
                                         elem_id='esc-precision')
                with gr.Row():
                    tile = gr.Number(value=DEFAULT_TILE, precision=0, label='Tile (LR pixels, 0: never)',
                                     elem_id='esc-tile')
                    tile_overlap = gr.Number(value=DEFAULT_OVERLAP, precision=0, label='Tile overlap',
                                             elem_id='esc-tile-overlap')
                button = gr.Button('Upscale', variant='primary', elem_id='esc-run')
                if not_offered:
                    gr.Textbox('\n'.join(not_offered), label='Not offered (the command refuses these files)',
                               interactive=False, lines=min(len(not_offered), 8), elem_id='esc-not-offered')
            with gr.Column():
                slider = gr.ImageSlider(label='Before (bicubic) / after (ESC)', type='numpy', format='png',
                                        image_mode=None, interactive=False, elem_id='esc-slider')
                download = gr.File(label='Download', interactive=False, elem_id='esc-download')
                summary = gr.Textbox(label='The command and what it printed', interactive=False, lines=4,
                                     elem_id='esc-summary')
        checkpoint.change(scale_of, checkpoint, scale)
        # preprocess=False: the upload reaches the page as Gradio stored it; its preprocessing would open the file
        # with Pillow first and answer a file that is no image, or a decompression bomb, with a bare "Error"
        button.click(click, [upload, checkpoint, scale, tile, tile_overlap, precision], [slider, download, summary],
                     preprocess=False)
    return blocks


def _size(text: str) -> int:
    """--max-upload: bytes, or with a K, M or G suffix (powers of 1024), e.g. 200M."""
    unit = SIZE_UNITS.get(text[-1:].upper(), 1)
    try:
        value = float(text[:-1] if unit > 1 else text) * unit
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a size: {text!r} (bytes, or e.g. 200M)') from None
    if not value >= 1:
        raise argparse.ArgumentTypeError(f'must be at least 1 byte: {text!r}')
    return int(value)


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a whole number: {text!r}') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1: {text!r}')
    return value


def mebibytes(size: int) -> str:
    return f'{size} bytes' if size < 1 << 20 else f'{size / (1 << 20):.1f} MiB'


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', type=Path, action='append', default=None,
                   help=f'a checkpoint, or a folder searched for them; repeatable (default: {DEFAULT_SEARCH}/)')
    p.add_argument('--device', default='auto', help='auto (CUDA where available), cpu or cuda')
    p.add_argument('--output', type=Path, default=DEFAULT_OUTPUT,
                   help=f'folder for uploads and results (default {DEFAULT_OUTPUT})')
    p.add_argument('--max-upload', type=_size, default=None,
                   help='largest upload, in bytes or e.g. 200M (default: the uncompressed size of the largest image '
                   'the available memory takes with the offered checkpoints)')
    p.add_argument('--keep-results', type=_at_least_one, default=DEFAULT_KEEP_RESULTS,
                   help=f'result folders kept under --output; older ones are deleted (default {DEFAULT_KEEP_RESULTS})')
    p.add_argument('--cache-minutes', type=_at_least_one, default=DEFAULT_CACHE_MINUTES,
                   help="Gradio's copies of uploads and results are deleted once this old, and all when the page "
                   f'stops (default {DEFAULT_CACHE_MINUTES})')
    p.add_argument('--host', default='127.0.0.1', help='address to listen on (default 127.0.0.1: this machine only)')
    p.add_argument('--port', type=int, default=7860, help='port to listen on (default 7860)')
    return p


def run(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    device = resolve_device(args.device)
    checkpoints, notes = find_checkpoints(args.model or [DEFAULT_SEARCH])
    for note in notes:
        print(note, flush=True)
    max_upload = args.max_upload or default_upload_limit(checkpoints)
    os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')  # no calls home, at import or later
    try:
        import gradio as gr
    except ImportError:
        raise ESCError('esc-demo needs Gradio: pip install -e ".[demo]"') from None
    output = args.output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    os.environ['GRADIO_TEMP_DIR'] = str(output / 'uploads')  # read when the page's components are made
    page = Page(checkpoints, device, output, args.keep_results, log=lambda line: print(line, flush=True))
    blocks = build_page(page, notes, args.cache_minutes)
    print(f'{len(checkpoints)} checkpoint(s) on {device}; uploads up to {mebibytes(max_upload)}; results go to '
          f'{output} (the last {args.keep_results} kept; uploads and copies deleted after {args.cache_minutes} min)',
          flush=True)
    theme = gr.themes.Default(font=['ui-sans-serif', 'system-ui', 'sans-serif'],
                              font_mono=['ui-monospace', 'monospace'])  # no web fonts: the page works offline
    blocks.queue().launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False,
                          ssr_mode=False, theme=theme, allowed_paths=[str(output)], footer_links=[],
                          max_file_size=max_upload)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    """The ``esc-demo`` command."""
    run_command(run, argv)


if __name__ == '__main__':
    main()
