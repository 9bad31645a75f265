"""Try a checkpoint in the browser: upload an image, compare before and after on a slider, download the result.

    pip install -e ".[demo]"
    esc-demo --model experiments/pretrained_models/ESC_DIV2K_X4.pth      # or: python -m esc.demo --model ...
    esc-demo --model experiments/ --port 7860                             # every ESC checkpoint under a folder

The page (Gradio) runs the command line itself on the upload: ``esc.inference.run`` with the checkpoint, scale,
tile and precision chosen on the page (so ``esc.load_model(...).upscale`` and the command's reading, naming and
writing), so the download is byte for byte what ``python esc/inference.py -i <image> -o <folder> --model <ckpt>``
writes with the same settings, and its errors are the command's one-line messages. Uploads and results are kept
under ``--output`` (``results/demo`` by default).
The server listens on 127.0.0.1 unless ``--host`` says otherwise, and makes no outside connection.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

try:
    import esc  # noqa: F401
except ModuleNotFoundError as missing:  # `python esc/demo.py` in a checkout that was never installed
    sys.exit('error: the esc package is not installed: run `pip install -e .` in the checkout first'
             if missing.name == 'esc' else f'error: {missing}')

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from esc.errors import ESCError  # noqa: E402
from esc.inference import parser as inference_parser, read_image, run as run_inference
from esc.upscaler import DTYPES, checkpoint_network, resolve_device, variant_name
from esc.utils.checkpoint import read_checkpoint
from esc.utils.cli import run_command
from esc.utils.tiling import DEFAULT_OVERLAP

if TYPE_CHECKING:
    import gradio

CHECKPOINT_SUFFIXES = ('.pth', '.safetensors')
DEFAULT_SEARCH = Path('experiments')
DEFAULT_OUTPUT = Path('results/demo')
DEFAULT_TILE: int = inference_parser().get_default('tile')
"""The command's ``--tile``, the page's default."""


@dataclass(frozen=True)
class Checkpoint:
    """An ESC checkpoint offered on the page: its file and what it holds (read once, at start-up)."""

    path: Path
    variant: str
    scale: Optional[float]  # None: ESC+LTE, which serves any scale

    @property
    def label(self) -> str:
        scale = 'any scale' if self.scale is None else f'x{self.scale:g}'
        return f'{self.path} ({self.variant}, {scale})'


def describe_checkpoint(path: Path) -> Checkpoint:
    """The variant and scale of the checkpoint at ``path``; a one-line ESCError where it is no ESC checkpoint."""
    state_dict, metadata = read_checkpoint(str(path), 'params_ema', option='--model')
    source = f'--model: {path}'
    try:
        options = checkpoint_network(state_dict, metadata, source=source)
    except ESCError as exc:  # detection's messages name the tensors at fault, not the file
        raise ESCError(str(exc) if str(exc).startswith(source) else f'{source}: {exc}') from None
    return Checkpoint(path, variant_name(options), options.get('upscaling_factor'))


def _is_weights_file(path: Path) -> bool:
    """Network weights a folder search offers: not training states, not the trained (non-EMA) twin of a
    safetensors pair, which ``read_checkpoint`` reaches through the EMA file anyway."""
    return path.is_file() and path.suffix in CHECKPOINT_SUFFIXES and not path.name.endswith('.params.safetensors')


def find_checkpoints(sources: Sequence[Path]) -> Tuple[List[Checkpoint], List[str]]:
    """The ESC checkpoints named by ``sources`` (files, or folders searched recursively), in name order, and one
    note per file a folder held that is not an ESC checkpoint (VGG weights beside the release files, say).
    A file named on its own that is not an ESC checkpoint, or nothing found at all, is an ESCError."""
    found: Dict[Path, Checkpoint] = {}
    notes: List[str] = []
    for source in sources:
        if source.is_file():
            found.setdefault(source, describe_checkpoint(source))
        elif source.is_dir():
            for path in sorted(p for p in source.rglob('*') if _is_weights_file(p)):
                try:
                    found.setdefault(path, describe_checkpoint(path))
                except ESCError as exc:
                    notes.append(f'not offered: {exc}')
        else:
            raise ESCError(f'--model: no such file or folder {source}')
    if not found:
        names = ', '.join(str(s) for s in sources)
        raise ESCError(f'--model: no ESC checkpoint (.pth, .safetensors) in {names}; name one with --model')
    return list(found.values()), notes


def precisions_for(device: str) -> List[str]:
    """The precisions the page offers on ``device``: fp16 autocast runs on CUDA only."""
    return [name for name in DTYPES if name != 'fp16' or device == 'cuda']


def display_image(image: np.ndarray) -> np.ndarray:
    """An image as the browser shows it: 8 bits per channel, grayscale as RGB (16-bit values rounded)."""
    if image.dtype == np.uint16:
        image = np.round(image / 257.0).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return image


def before_image(source: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """The input enlarged bicubically to ``size`` (width, height), the slider's "before"."""
    return cv2.resize(display_image(source), size, interpolation=cv2.INTER_CUBIC)


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
        """These settings as ``esc/inference.py`` options."""
        options = ['--tile', str(self.tile), '--tile-overlap', str(self.tile_overlap), '--precision', self.precision]
        return (['--scale', f'{self.scale:g}'] if self.scale is not None else []) + options


def upscale_file(checkpoint: Path, source: Path, settings: Settings, device: str, output: Path,
                 progress: Any = None) -> Tuple[Path, np.ndarray, np.ndarray, str]:
    """Upscale ``source`` by running the command itself (``esc.inference.run``, in this process) into a fresh
    folder under ``output``: the result is the command's by construction, not by imitation.

    Returns the written result, the before/after pair for the slider and what the command printed, after the
    equivalent command line. ``progress`` (a ``gradio.Progress``) is told the stages; its tqdm tracking follows
    the command's bar over the tiles of a tiled image. The command's one-line errors come through as ESCError."""
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
    except ESCError:
        folder.rmdir()  # the command wrote nothing: leave no empty folder behind
        raise
    (target,) = (path for path in folder.iterdir() if not path.name.startswith('.'))
    tell(0.9, 'showing the result')
    result = display_image(read_image(target))
    before = before_image(read_image(source), (result.shape[1], result.shape[0]))
    command = ' '.join(['python esc/inference.py -i', source.name, '-o <folder>', *options])
    return target, before, result, '\n'.join([command, *printed.getvalue().strip().splitlines()])


def build_page(checkpoints: Sequence[Checkpoint], device: str, output: Path) -> 'gradio.Blocks':
    """The Gradio page: upload, checkpoint and settings, a before/after slider, progress, a download."""
    import gradio as gr

    by_label = {checkpoint.label: checkpoint.path for checkpoint in checkpoints}

    def run(upload: Optional[str], label: str, scale: Optional[float], tile: Optional[float],
            tile_overlap: Optional[float], precision: str, progress: gr.Progress = gr.Progress(track_tqdm=True)):
        if not upload:
            raise gr.Error('image: upload an image first')
        try:
            settings = Settings.from_page(scale, tile, tile_overlap, precision)
            target, before, after, summary = upscale_file(by_label[label], Path(upload), settings, device, output,
                                                          progress)
        except ESCError as exc:
            raise gr.Error(str(exc)) from None
        return (before, after), str(target), summary

    with gr.Blocks(title='ESC super-resolution', analytics_enabled=False) as page:
        gr.Markdown('## ESC super-resolution\nUpload an image, choose a checkpoint and press *Upscale*. '
                    'The result is what `esc/inference.py` writes with the same settings.')
        with gr.Row():
            with gr.Column():
                upload = gr.Image(label='Image', type='filepath', image_mode=None, sources=['upload'],
                                  elem_id='esc-upload')
                checkpoint = gr.Dropdown(list(by_label), value=next(iter(by_label)), label='Checkpoint',
                                         elem_id='esc-checkpoint')
                with gr.Row():
                    scale = gr.Number(value=None, label="Scale (empty: the checkpoint's; any for ESC+LTE)",
                                      elem_id='esc-scale')
                    precision = gr.Radio(precisions_for(device), value='fp32', label='Precision',
                                         elem_id='esc-precision')
                with gr.Row():
                    tile = gr.Number(value=DEFAULT_TILE, precision=0, label='Tile (LR pixels, 0: never)',
                                     elem_id='esc-tile')
                    tile_overlap = gr.Number(value=DEFAULT_OVERLAP, precision=0, label='Tile overlap',
                                             elem_id='esc-tile-overlap')
                button = gr.Button('Upscale', variant='primary', elem_id='esc-run')
            with gr.Column():
                slider = gr.ImageSlider(label='Before (bicubic) / after (ESC)', type='numpy', format='png',
                                        image_mode=None, interactive=False, elem_id='esc-slider')
                download = gr.File(label='Download', interactive=False, elem_id='esc-download')
                summary = gr.Textbox(label='The command and what it printed', interactive=False, lines=4,
                                     elem_id='esc-summary')
        button.click(run, [upload, checkpoint, scale, tile, tile_overlap, precision], [slider, download, summary])
    return page


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', type=Path, action='append', default=None,
                   help=f'a checkpoint, or a folder searched for them; repeatable (default: {DEFAULT_SEARCH}/)')
    p.add_argument('--device', default='auto', help='auto (CUDA where available), cpu or cuda')
    p.add_argument('--output', type=Path, default=DEFAULT_OUTPUT,
                   help=f'folder for uploads and results (default {DEFAULT_OUTPUT})')
    p.add_argument('--host', default='127.0.0.1', help='address to listen on (default 127.0.0.1: this machine only)')
    p.add_argument('--port', type=int, default=7860, help='port to listen on (default 7860)')
    return p


def run(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    device = resolve_device(args.device)
    checkpoints, notes = find_checkpoints(args.model or [DEFAULT_SEARCH])
    for note in notes:
        print(note, flush=True)
    os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')  # no calls home, at import or later
    try:
        import gradio as gr
    except ImportError:
        raise ESCError('esc-demo needs Gradio: pip install -e ".[demo]"') from None
    output = args.output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    os.environ['GRADIO_TEMP_DIR'] = str(output / 'uploads')  # read when the page's components are made
    page = build_page(checkpoints, device, output)
    print(f'{len(checkpoints)} checkpoint(s) on {device}; results go to {output}', flush=True)
    theme = gr.themes.Default(font=['ui-sans-serif', 'system-ui', 'sans-serif'],
                              font_mono=['ui-monospace', 'monospace'])  # no web fonts: the page works offline
    page.queue().launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False, ssr_mode=False,
                        theme=theme, allowed_paths=[str(output)], footer_links=[])
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    """The ``esc-demo`` command."""
    run_command(run, argv)


if __name__ == '__main__':
    main()
