"""Where a command may write its one output file: the check every command that takes ``-o FILE`` runs first.

A command never writes over a file it reads: ``esc-export --model X.pth -o X.pth`` would replace the checkpoint with
an ONNX graph, and a path that reaches an input through a symbolic or hard link is the same file. The check runs
before any work, so a refused output costs nothing.
"""
from __future__ import annotations

import os.path as osp
from typing import Mapping, Optional

from esc.errors import ESCError


def _same_file(a: str, b: str) -> bool:
    """Whether the paths ``a`` and ``b`` name one file (through links too); a path that does not exist names none."""
    try:
        return osp.samefile(a, b)
    except OSError:
        return osp.realpath(a) == osp.realpath(b)


def check_output_file(output: str, reads: Mapping[str, Optional[str]], option: str = '-o',
                      suffix: Optional[str] = None) -> None:
    """One line, before any work, unless ``output`` is a file the command may write: its folder exists, it is not a
    folder, ends in ``suffix`` where one is required, and is none of the files the command reads (``reads``: option
    name to path, e.g. ``{'--model': 'net.pth'}``; None where that option was not given)."""
    if suffix is not None and not output.endswith(suffix):
        raise ESCError(f'{option}: {output} does not end in {suffix}')
    folder = osp.dirname(osp.abspath(output))
    if not osp.isdir(folder):
        raise ESCError(f'{option}: no such folder {folder}')
    if osp.isdir(output):
        raise ESCError(f'{option}: {output} is a folder; give the file to write')
    for name, path in reads.items():
        if path and _same_file(output, path):
            raise ESCError(f'{option}: {output} is the file {name} reads ({path}); a command never writes over its '
                           'input: choose another file')
