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

``real``: GT data for real-world SR (ESC-Real; RealESRGAN's recipe on DF2K+OST), no LR folders:

    python scripts/prepare_training_data.py real datasets/DF2K/DF2K_HR datasets/OST \\
        --multiscale datasets/DF2K/DF2K_HR --out datasets/DF2KOST
    # → datasets/DF2KOST/{DF2K_HR_multiscale, DF2K_HR_sub, OST_sub, DF2K_HR_multiscale_sub}, meta_info.txt

``--multiscale`` folders also get Lanczos copies at ×0.75, ×0.5, ×1/3 and with the shorter side at
400 pixels (``0001T0.png`` … ``0001T3.png``); every folder and copy is cut into 400×400 sub-images
every 200 pixels; ``meta_info.txt`` lists the sub-images relative to ``--out``, the option files'
``dataroot_gt``.

``lmdb``: basicsr's ``make_lmdb_from_imgs`` (keys = file names without extension, ``meta_info.txt``),
written to a temporary folder and renamed; an existing LMDB with the same keys is left alone.

All are idempotent and never overwrite good outputs; bad input ends the run with one line
``error: <file or folder>: <why>`` (exit status 2), or is skipped with ``--skip-bad`` (extract, real).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import List, Optional

import _checkout  # noqa: F401  (this checkout's esc on sys.path; before any esc import)
from esc.data.benchmark_prep import check_scales, quiet_opencv
from esc.data.training_prep import (MULTISCALE_FACTORS, SHORTEST_EDGE, LRFolder, extract_subimages, pack_lmdb,
                                    prepare_real_training_data)
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

    real = commands.add_parser('real', help='GT sub-images and a meta-info file for real-world SR (DF2K+OST)')
    real.add_argument('folders', nargs='+', help='HR folders, e.g. datasets/DF2K/DF2K_HR datasets/OST')
    real.add_argument('--out', required=True, help='data root to write, e.g. datasets/DF2KOST')
    real.add_argument('--multiscale', nargs='+', default=[], metavar='FOLDER',
                      help='input folders that also get downscaled copies (RealESRGAN: DF2K)')
    real.add_argument('--factors', nargs='+', type=float, default=list(MULTISCALE_FACTORS),
                      help='downscaling factors of the copies (default 0.75 0.5 0.333)')
    real.add_argument('--shortest-edge', type=int, default=SHORTEST_EDGE,
                      help='one more copy with its shorter side this long, 0 for none (default 400)')
    real.add_argument('--crop-size', type=int, default=400, help='sub-image size (default 400)')
    real.add_argument('--step', type=int, default=200, help='step between sub-images (default 200)')
    real.add_argument('--thresh-size', type=int, default=0,
                      help='add an edge-flush crop when more than this many pixels are left over (default 0)')
    real.add_argument('--skip-bad', action='store_true', help='skip bad images with a warning instead of stopping')

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
    elif args.command == 'real':
        report = prepare_real_training_data(args.folders, args.out, args.multiscale, crop=args.crop_size,
                                            step=args.step, thresh=args.thresh_size, factors=args.factors,
                                            shortest_edge=args.shortest_edge or None, skip_bad=args.skip_bad)
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
