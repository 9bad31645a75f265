"""Prepare training data the basicsr way: cut HR/LR folders into overlapping sub-images, pack folders into LMDB.

    # DIV2K: 480x480 HR sub-images every 240 pixels, and the matching LR crops of X2, X3, X4
    python scripts/prepare_training_data.py extract datasets/DIV2K/DIV2K_train_HR \\
        --lr-root datasets/DIV2K/DIV2K_train_LR_bicubic --scales 2 3 4
    # → datasets/DIV2K/DIV2K_train_HR_sub, datasets/DIV2K/DIV2K_train_LR_bicubic/X{2,3,4}_sub
    python scripts/prepare_training_data.py lmdb datasets/DIV2K/DIV2K_train_HR_sub \\
        datasets/DIV2K/DIV2K_train_HR_sub.lmdb
    python scripts/prepare_training_data.py lmdb datasets/DIV2K/DIV2K_train_LR_bicubic/X2_sub \\
        datasets/DIV2K/DIV2K_train_LR_bicubic_X2_sub.lmdb

``extract``: crop positions come from the HR image (every ``--step`` pixels plus one flush with the
far edge; basicsr's crop 480, step 240, threshold 0), the edge being that of the HR image mod-cropped
to ``--mod`` (default: the least common multiple of ``--scales``, 12), so one HR_sub folder serves all
scales (with or without ``--lr-root``); the LR crops are the same regions at 1/r
(``<lr-root>/X{r}/0001x{r}.png`` or ``0001.png`` pairs with ``0001.png``). Sub-image k of
``0001.png`` is ``0001_s{k:03d}.png`` in every output folder.

``lmdb``: basicsr's ``make_lmdb_from_imgs`` (keys = file names without extension, ``meta_info.txt``),
written to a temporary folder and renamed; an existing LMDB with the same keys is left alone.

Both are idempotent and never overwrite good outputs; bad input ends the run with one line
``error: <file or folder>: <why>`` (exit status 2), or is skipped with ``--skip-bad`` (extract).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import List, Optional

import esc.compat  # noqa: F401  (must precede basicsr imports)
from esc.data.benchmark_prep import check_scales, quiet_opencv
from esc.data.training_prep import LRFolder, extract_subimages, pack_lmdb
from esc.utils.cli import one_line_errors


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line options of the ``extract`` and ``lmdb`` commands."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest='command', required=True)

    extract = commands.add_parser('extract', help='cut an HR folder (and its LR folders) into sub-images')
    extract.add_argument('hr', help='HR folder, e.g. datasets/DIV2K/DIV2K_train_HR')
    extract.add_argument('--out', help='output folder for HR sub-images (default: <hr>_sub)')
    extract.add_argument('--lr-root', help='folder holding X2/, X3/, ... LR folders; outputs go to <lr-root>/X{r}_sub')
    extract.add_argument('--scales', nargs='+', type=int, default=[2, 3, 4], help='LR scales to cut (default 2 3 4)')
    extract.add_argument('--crop-size', type=int, default=480, help='HR sub-image size (default 480)')
    extract.add_argument('--step', type=int, default=240, help='HR step between sub-images (default 240)')
    extract.add_argument('--thresh-size', type=int, default=0,
                         help='add an edge-flush crop when more than this many pixels are left over (default 0)')
    extract.add_argument('--mod', type=int,
                         help='compute positions on the HR image mod-cropped to this (default: lcm of --scales)')
    extract.add_argument('--skip-bad', action='store_true', help='skip bad images with a warning instead of stopping')

    lmdb = commands.add_parser('lmdb', help='pack a folder of images into an LMDB (basicsr layout)')
    lmdb.add_argument('folder', help='folder of images, e.g. datasets/DIV2K/DIV2K_train_HR_sub')
    lmdb.add_argument('lmdb_path', help='output folder ending in .lmdb, e.g. datasets/DIV2K/DIV2K_train_HR_sub.lmdb')
    lmdb.add_argument('--compress-level', type=int, default=1, help='PNG compression level in the LMDB (default 1)')
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    """Run the chosen command."""
    if args.command == 'extract':
        hr, scales = Path(args.hr), check_scales(args.scales)
        lr_folders = []
        if args.lr_root:
            lr_root = Path(args.lr_root)
            lr_folders = [LRFolder(lr_root / f'X{r}', lr_root / f'X{r}_sub', r) for r in scales]
        out = Path(args.out) if args.out else hr.resolve().with_name(f'{hr.resolve().name}_sub')
        mod = math.lcm(*scales) if args.mod is None else args.mod
        report = extract_subimages(hr, out, lr_folders, crop=args.crop_size, step=args.step,
                                   thresh=args.thresh_size, mod=mod, skip_bad=args.skip_bad)
        print(report.summary(), flush=True)
    else:
        status = pack_lmdb(args.folder, args.lmdb_path, compress_level=args.compress_level)
        print(f'{args.lmdb_path}: {"written" if status == "written" else "up to date, left alone"}', flush=True)


def main(argv: Optional[List[str]] = None) -> None:
    """Parse, run; bad input ends the run with ``error: <message>`` and exit status 2."""
    args = parse_args(argv)
    quiet_opencv()
    with one_line_errors():
        run(args)


if __name__ == '__main__':
    main()
