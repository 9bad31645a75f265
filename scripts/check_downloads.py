"""Check the datasets and weights put under datasets/ and experiments/pretrained_models/ (nothing is downloaded).

    python scripts/check_downloads.py                      # everything the option files name
    python scripts/check_downloads.py benchmarks checkpoints --present

One line per item: ``ok``, ``missing`` (with where it is published) or ``WRONG`` (with what was found): image
counts of the five benchmarks (HR and LR_bicubic/X2-X4), DIV2K's folders and training LMDBs, the DFLIP and
ESC-Real training data, the network inside each ESC checkpoint against the option files naming it, and the
SHA-256 of the files whose publisher gives one (VGG19, CLIP RN50). Exit status 0 when nothing checked is missing
or wrong, 1 otherwise; ``--present`` checks only what is there.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

import _checkout  # noqa: F401  (this checkout's esc on sys.path; before any esc import)
from esc.errors import ESCError
from esc.utils.cli import one_line_errors
from _download_checks import GROUPS, MISSING, WRONG, check_all, summary


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('groups', nargs='*', metavar='GROUP', help=f"what to check, any of {', '.join(GROUPS)} "
                                                                   '(default: all)')
    parser.add_argument('--root', default=os.getcwd(), help='the repository root (default: the working directory)')
    parser.add_argument('--present', action='store_true', help='check only what is there; skip what is missing')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Print one line per item and a summary; return the exit status."""
    with one_line_errors():
        args = parse_args(argv)
        unknown = [group for group in args.groups if group not in GROUPS]
        if unknown:
            raise ESCError(f"GROUP: unknown {unknown[0]!r}; choose from {', '.join(GROUPS)}")
        findings = check_all(args.root, args.groups or GROUPS, only_present=args.present)
        for finding in findings:
            print(finding.line())
        print(summary(findings))
        return 1 if any(f.status in (MISSING, WRONG) for f in findings) else 0


if __name__ == '__main__':
    sys.exit(main())
