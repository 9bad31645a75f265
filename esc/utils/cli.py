"""What every command shares: bad input reported as one line (``error: ...``, exit status 2), never a traceback."""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator, List, Optional, Sequence

from esc.errors import ESCError


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """What every command does with bad input: an ESCError becomes ``error: <message>`` and exit status 2."""
    try:
        yield
    except ESCError as exc:
        # raised in a DataLoader worker, it comes back with the worker's traceback before our line
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else ''
        prefix = f'{ESCError.__module__}.{ESCError.__name__}: '
        print(f'error: {message[len(prefix):] if message.startswith(prefix) else message}', file=sys.stderr, flush=True)
        sys.exit(2)


def run_command(run: Callable[[List[str]], int], argv: Optional[Sequence[str]] = None) -> None:
    """A command's ``main``: ``run(argv)`` (default: the command line) with :func:`one_line_errors`; its
    return value is the exit status."""
    with one_line_errors():
        status = run(list(sys.argv[1:] if argv is None else argv))
    sys.exit(status)


def run_loop(run: Callable[[List[str]], int], argv: Optional[Sequence[str]] = None) -> None:
    """:func:`run_command` for the training and test loops: the process group a ``--launcher`` started is left
    however the run ends, so that no rank waits on a dead one."""
    import torch.distributed as dist

    try:
        run_command(run, argv)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
