"""Write the MATLAB-bicubic LR images of SR benchmarks: <root>/HR/*.png → <root>/LR_bicubic/X{2,3,4}/*.png.

    python scripts/prepare_benchmarks.py datasets/Set5 datasets/Set14 datasets/B100 datasets/Urban100 datasets/Manga109
    python scripts/prepare_benchmarks.py datasets/Set5 --scales 4 --skip-bad

- Each LR image is basicsr's MATLAB-compatible ``imresize`` (bicubic) of the HR image mod-cropped to
  the scale, rounded to 8 bits and saved as PNG under the HR file's name: ⌊H/r⌋×⌊W/r⌋ pixels.
- HR images are read with ``cv2.IMREAD_COLOR`` semantics, as basicsr's PairedImageDataset reads
  them: a grayscale image (Set14's ``bridge``) is used as a 3-channel image with equal channels,
  so its LR images are 3-channel too; alpha is dropped, 16-bit images become 8-bit.
- The HR folder is left as it is (no mod-cropped copies): outside training, PairedImageDataset crops
  the ground truth to r× the LR size from the top left, which is the same mod-crop.
- Idempotent: outputs that already hold the right pixels are not rewritten; unreadable ones are
  replaced; existing outputs are never deleted or overwritten otherwise. Files are written to a
  temporary name and renamed, so an interrupted run leaves no half-written PNG.
- A bad HR file (not an image, empty, truncated, unreadable) stops the run with one line
  ``error: <file>: <why>`` (exit status 2); ``--skip-bad`` skips it with a warning instead.
"""
from __future__ import annotations

import argparse
from typing import List, Optional

import _checkout  # noqa: F401  (this checkout's esc on sys.path; before any esc import)
from esc.data.benchmark_prep import prepare_benchmark, quiet_opencv
from esc.utils.cli import one_line_errors


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('roots', nargs='+', help='benchmark folders, each holding an HR/ folder')
    parser.add_argument('--scales', nargs='+', type=int, default=[2, 3, 4], help='downscaling factors (default 2 3 4)')
    parser.add_argument('--skip-bad', action='store_true', help='skip bad HR files with a warning instead of stopping')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Prepare every root; bad input ends the run with ``error: <message>`` and exit status 2."""
    args = parse_args(argv)
    quiet_opencv()
    with one_line_errors():
        for root in args.roots:
            print(prepare_benchmark(root, args.scales, skip_bad=args.skip_bad).summary(), flush=True)


if __name__ == '__main__':
    main()
