"""Draw a before/after crop for the README: a photograph made low-resolution, enlarged bicubically and by a checkpoint.

    python esc/train.py -opt options/demo/train_ESC_light_X2_demo.yml      # the README demo (CPU, minutes)
    python scripts/make_crop.py --model experiments/demo_ESC_light_X2/models/net_g_latest.pth -o docs/demo_crop.png

The photograph (``--image``: a scikit-image sample name, by default ``coffee``, the demo's held-out validation image,
or an image file) is the ground truth. It is made low-resolution as the demo's validation makes it (mod-cropped to
the scale, MATLAB-bicubic downsampling in floating point, esc.data.sample_image_dataset), then enlarged by the
``Bicubic`` baseline network and by the checkpoint (``esc.load_model(...).upscale``). The picture shows one square of
each side by side, pixels enlarged ``--zoom`` times without smoothing: where it lies in the photograph, the
low-resolution input, bicubic, the checkpoint, the original; with each PSNR over the whole image as the demo's
validation and esc/test.py compute it (Y channel, border = scale, 8-bit images). The square is ``--box`` or else
the one where bicubic loses the most (largest squared error against the original): chosen from bicubic's result
alone, never from the network's.
"""
import argparse
import io
import sys
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple

import _checkout  # noqa: F401  (this checkout's esc on sys.path; before any esc import)
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

import esc  # before basicsr, which imports on current torchvision through esc's alias
from esc.archs.bicubic_arch import Bicubic
from esc.data.sample_image_dataset import load_sample_image, mod_crop
from esc.errors import ESCError
from esc.io.checkpoint import write_atomic
from esc.io.images import colour_of, read_image
from esc.utils.cli import run_command
from basicsr.metrics.psnr_ssim import calculate_psnr  # noqa: E402,I001  (after esc: see above)
from basicsr.utils.matlab_functions import imresize  # noqa: E402

PICTURE_FORMATS = ('.png', '.jpg', '.jpeg', '.webp')
GAP, CAPTION, FONT_SIZE = 8, 40, 14


class Versions(NamedTuple):
    """One photograph at every stage, RGB float32 in [0, 1]: the LR input, the two enlargements and the original."""

    lr: np.ndarray
    bicubic: np.ndarray
    network: np.ndarray
    hr: np.ndarray


class Box(NamedTuple):
    """A square of the original, in its pixels: top-left corner and side (all multiples of the scale)."""

    x: int
    y: int
    size: int


def load_photograph(name: str) -> np.ndarray:
    """``name`` as an RGB float32 image in [0, 1]: an image file (grey as three channels, alpha dropped, 16 bits
    kept as precision), else a scikit-image sample photograph."""
    path = Path(name)
    if path.is_file():
        rgb = colour_of(read_image(path))
        return (rgb.astype(np.float32) / float(np.iinfo(rgb.dtype).max)).astype(np.float32)
    import skimage.data

    if name.startswith('_') or not callable(getattr(skimage.data, name, None)):
        raise ESCError(f'--image: {name} is neither an image file nor a scikit-image sample photograph (skimage.data)')
    return load_sample_image(name)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """As basicsr's ``tensor2img`` turns a network output into an 8-bit image: clamped to [0, 1], scaled, rounded."""
    return np.round(np.clip(image, 0, 1) * 255.0).astype(np.uint8)


def whole_scale(model: esc.Upscaler) -> int:
    """The checkpoint's scale, which must be whole: the LR image is the original shrunk by it."""
    if not float(model.scale).is_integer():
        raise ESCError(f'--model: the picture needs a whole scale; this checkpoint upscales x{model.scale:g}')
    return int(model.scale)


def make_versions(model: esc.Upscaler, hr: np.ndarray) -> Versions:
    """The LR input the demo validates on, its bicubic and network enlargements, and the mod-cropped original."""
    scale = whole_scale(model)
    hr = mod_crop(hr, scale)
    if min(hr.shape[:2]) < 2 * scale:
        raise ESCError(f'--image: {hr.shape[1]}x{hr.shape[0]} is too small to make low-resolution at x{scale}')
    lr = np.clip(imresize(hr, 1 / scale), 0, 1).astype(np.float32)
    with torch.inference_mode():
        bicubic = Bicubic(scale)(to_tensor(lr))[0].numpy().transpose(1, 2, 0)
    network = model.upscale(lr)
    return Versions(lr, bicubic, network, hr)


def psnr(image: np.ndarray, original: np.ndarray, scale: int) -> float:
    """PSNR on Y, border = scale, of 8-bit images, as esc/test.py and the demo's validation measure it."""
    return float(calculate_psnr(to_uint8(image)[..., ::-1], to_uint8(original)[..., ::-1], crop_border=scale,
                                input_order='HWC', test_y_channel=True))


def worst_bicubic_box(versions: Versions, size: int, scale: int) -> Box:
    """The size×size square (on a grid of size/4, aligned to the scale) where bicubic's squared error is largest."""
    error = ((versions.bicubic - versions.hr) ** 2).sum(axis=2)
    height, width = error.shape
    step = max(scale, (size // 4) // scale * scale)
    integral = np.pad(error.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    best: Optional[Tuple[float, Box]] = None
    for y in range(0, height - size + 1, step):
        for x in range(0, width - size + 1, step):
            total = integral[y + size, x + size] - integral[y, x + size] - integral[y + size, x] + integral[y, x]
            if best is None or total > best[0]:
                best = (total, Box(x, y, size))
    assert best is not None  # the caller checked that the square fits
    return best[1]


def check_box(box: Box, hr: np.ndarray, scale: int) -> Box:
    height, width = hr.shape[:2]
    if box.size < 4 * scale or box.size % scale or box.x % scale or box.y % scale:
        raise ESCError(f'--box: {box.x},{box.y},{box.size}: corner and side must be multiples of the scale ({scale}) '
                       f'and the side at least {4 * scale}')
    if box.x < 0 or box.y < 0 or box.x + box.size > width or box.y + box.size > height:
        raise ESCError(f'--box: {box.x},{box.y},{box.size} does not fit in the {width}x{height} image')
    return box


def enlarge(image: np.ndarray, zoom: int) -> np.ndarray:
    """Pixels repeated ``zoom`` times each way: nothing smoothed, so what the panel shows is what was computed."""
    return np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1)


def panels(versions: Versions, box: Box, scale: int, zoom: int) -> List[np.ndarray]:
    """The crops, 8-bit and zoomed: LR (each pixel shown scale×zoom wide), bicubic, network, original."""
    lr_box = versions.lr[box.y // scale:(box.y + box.size) // scale, box.x // scale:(box.x + box.size) // scale]
    high = [image[box.y:box.y + box.size, box.x:box.x + box.size] for image in versions[1:]]
    return [enlarge(to_uint8(lr_box), scale * zoom)] + [enlarge(to_uint8(crop), zoom) for crop in high]


def overview(hr: np.ndarray, box: Box, height: int) -> np.ndarray:
    """The whole original scaled to ``height`` rows, the square outlined in red."""
    picture = Image.fromarray(to_uint8(hr))
    factor = height / hr.shape[0]
    picture = picture.resize((max(1, round(hr.shape[1] * factor)), height), Image.Resampling.LANCZOS)
    corners = [round(box.x * factor), round(box.y * factor), round((box.x + box.size) * factor) - 1,
               round((box.y + box.size) * factor) - 1]
    ImageDraw.Draw(picture).rectangle(corners, outline=(230, 20, 20), width=2)
    return np.asarray(picture)


def compose(images: Sequence[np.ndarray], captions: Sequence[Sequence[str]], footer: str) -> Image.Image:
    """The images in a row on white, ``GAP`` pixels apart and from the edges, each captioned below, a footer line
    under all."""
    height = max(image.shape[0] for image in images)
    width = sum(image.shape[1] for image in images) + GAP * (len(images) + 1)
    canvas = Image.new('RGB', (width, GAP + height + CAPTION + FONT_SIZE + 2 * GAP), 'white')
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=FONT_SIZE)
    left = GAP
    for image, lines in zip(images, captions):
        canvas.paste(Image.fromarray(image), (left, GAP))
        for row, line in enumerate(lines):
            draw.text((left, GAP + height + 4 + row * (FONT_SIZE + 2)), line, fill='black', font=font)
        left += image.shape[1] + GAP
    draw.text((GAP, GAP + height + CAPTION + GAP // 2), footer, fill=(90, 90, 90), font=font)
    return canvas


def encode(picture: Image.Image, path: Path) -> bytes:
    buffer = io.BytesIO()
    if path.suffix.lower() == '.png':
        picture.save(buffer, format='PNG', optimize=True)
    else:
        picture.save(buffer, format='WEBP' if path.suffix.lower() == '.webp' else 'JPEG', quality=92)
    return buffer.getvalue()


def parse_box(text: str) -> Box:
    try:
        x, y, size = (int(part) for part in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected X,Y,SIZE in pixels of the original, got {text!r}') from None
    return Box(x, y, size)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', required=True, help='checkpoint (.pth or .safetensors) of a fixed-scale network')
    p.add_argument('-o', '--output', required=True, type=Path,
                   help=f"the picture to write ({', '.join(PICTURE_FORMATS)})")
    p.add_argument('--image', default='coffee',
                   help='the original: an image file or a scikit-image sample name (default coffee, the demo\'s '
                   'validation image)')
    p.add_argument('--box', type=parse_box, default=None,
                   help='X,Y,SIZE: the square shown, in pixels of the original (default: where bicubic loses most)')
    p.add_argument('--size', type=int, default=96, help='side of the default square in pixels of the original')
    p.add_argument('--zoom', type=int, default=2, help='each shown pixel is zoom×zoom screen pixels (default 2)')
    p.add_argument('--device', default='auto', help='auto (CUDA where available), cpu or cuda')
    return p


def run(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if args.output.suffix.lower() not in PICTURE_FORMATS:
        raise ESCError(f"-o: {args.output} is not one of {', '.join(PICTURE_FORMATS)} (by its extension)")
    if not 1 <= args.zoom <= 8:
        raise ESCError(f'--zoom: {args.zoom} is not from 1 to 8')
    hr = load_photograph(args.image)
    model = esc.load_model(args.model, device=args.device)
    scale = whole_scale(model)
    hr = mod_crop(hr, scale)
    size = args.size - args.size % scale
    box = check_box(args.box if args.box is not None else Box(0, 0, size), hr, scale)  # before the work
    versions = make_versions(model, hr)
    if args.box is None:
        box = worst_bicubic_box(versions, size, scale)
    scores = {name: psnr(getattr(versions, name), versions.hr, scale) for name in ('bicubic', 'network')}
    crops = panels(versions, box, scale, args.zoom)
    images = [overview(versions.hr, box, crops[0].shape[0]), *crops]
    captions = [['where (red square)'], [f'input (LR, 1/{scale})'], ['bicubic', f"PSNR {scores['bicubic']:.2f} dB"],
                [f'{model.name} x{scale}', f"PSNR {scores['network']:.2f} dB"], ['original']]
    image_name = Path(args.image).name
    footer = (f'{image_name}, x{scale}: the {box.size}x{box.size} square at ({box.x}, {box.y}), {args.zoom}x; '
              f'PSNR over the whole image (Y, border {scale}); made by scripts/make_crop.py')
    picture = compose(images, captions, footer)
    data = encode(picture, args.output)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.output, data)
    print(f"{image_name} x{scale}: bicubic {scores['bicubic']:.4f} dB, {model.name} {scores['network']:.4f} dB "
          f'(Y, border {scale}); square {box.x},{box.y},{box.size}; {args.output} ({len(data) / 1024:.0f} KB)')
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_command(run, list(sys.argv[1:]) if argv is None else argv)


if __name__ == '__main__':
    main()
