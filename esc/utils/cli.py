"""What ``esc/train.py`` and ``esc/test.py`` share: run a basicsr pipeline with ESC registered,
reporting bad input as one line instead of a traceback."""
from __future__ import annotations

import argparse
import os.path as osp
import sys
from typing import Callable

import torch.distributed as dist
import yaml

from esc.errors import ESCError


def check_option_file(argv: list[str]) -> None:
    """Fail early, in one line, when ``-opt`` is missing, unreadable or not a YAML mapping."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt')
    known, _ = parser.parse_known_args(argv)
    if known.opt is None:
        return  # basicsr's own parser prints the usage
    if not osp.isfile(known.opt):
        raise ESCError(f'-opt: no such option file {known.opt}')
    try:
        with open(known.opt) as f:
            opt = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        mark = getattr(exc, 'problem_mark', None)
        where = f' (line {mark.line + 1})' if mark is not None else ''
        raise ESCError(f'-opt: {known.opt} is not valid YAML{where}: {getattr(exc, "problem", exc)}') from None
    if not isinstance(opt, dict):
        raise ESCError(f'-opt: {known.opt} does not hold a mapping of options')


def run_pipeline(pipeline: Callable[[str], None], root_path: str) -> None:
    """Run ``pipeline(root_path)`` (basicsr's train or test pipeline); ESCError → ``error: ...``, exit 2."""
    try:
        check_option_file(sys.argv[1:])
        pipeline(root_path)
    except ESCError as exc:
        print(f'error: {exc}', file=sys.stderr, flush=True)
        sys.exit(2)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
