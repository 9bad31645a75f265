"""What every command shares: bad input reported as one line (``error: ...``, exit status 2), and a stop signal
(Ctrl-C, SIGTERM, SIGHUP) as one line too, never a traceback."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType
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


STOP_SIGNALS = ('SIGINT', 'SIGTERM', 'SIGHUP')


class Stopped(BaseException):
    """A stop signal (Ctrl-C's SIGINT, SIGTERM, SIGHUP), raised where the work is so that its ``finally`` blocks run
    (temporary files removed, locks released, logs closed) before the process ends."""

    def __init__(self, signum: int) -> None:
        self.name = signal.Signals(signum).name
        self.status = 128 + signum
        """the exit status a shell reports for a process this signal ended"""
        super().__init__(self.name)


_pending_stops: List[int] = []
"""The stop signals received inside :func:`stop_signals_as_exception`'s block, in order."""


def _inside_finaliser(frame: Optional[FrameType]) -> bool:
    """Whether ``frame`` runs inside a ``__del__``: an exception raised there is printed and lost (a data loader's
    iterator shuts its workers down in one at every epoch's end)."""
    while frame is not None:
        if frame.f_code.co_name == '__del__':
            return True
        frame = frame.f_back
    return False


def raise_pending_stop() -> None:
    """Raise :class:`Stopped` for a stop signal that arrived inside a finaliser, where it could not be raised; the
    training loop calls this at every step, so no signal is lost."""
    if _pending_stops:
        raise Stopped(_pending_stops[0])


@contextlib.contextmanager
def stop_signals_as_exception() -> Iterator[None]:
    """The stop signals raise :class:`Stopped` while the block runs (SIGTERM's default would end the process at once,
    leaving hidden temporary files; Ctrl-C's would print a KeyboardInterrupt traceback), where the work is, or at the
    next :func:`raise_pending_stop` for one that arrives inside a ``__del__``. Outside the main thread, where signals
    cannot be caught, nothing changes. A process forked inside the block (a data-loader worker) keeps the signals'
    usual meaning: its parent does the stopping."""
    owner = os.getpid()

    def handler(signum: int, frame: Optional[FrameType]) -> None:
        if os.getpid() == owner:
            _pending_stops.append(signum)
            if not _inside_finaliser(frame):
                raise Stopped(signum)
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt  # what a worker expects of Ctrl-C (PyTorch's end quietly on it)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    previous = {}
    for name in STOP_SIGNALS:
        number = getattr(signal, name, None)
        if number is not None:
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                previous[number] = signal.signal(number, handler)
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
        _pending_stops.clear()


def run_command(run: Callable[[List[str]], int], argv: Optional[Sequence[str]] = None) -> None:
    """A command's ``main``: ``run(argv)`` (default: the command line) with :func:`one_line_errors`; its
    return value is the exit status."""
    with one_line_errors():
        status = run(list(sys.argv[1:] if argv is None else argv))
    sys.exit(status)


def run_loop(run: Callable[[List[str]], int], argv: Optional[Sequence[str]] = None, stopped: str = '') -> None:
    """:func:`run_command` for the training and test loops: a stop signal ends the run in one line,
    ``stopped by SIGINT: <stopped>``, with the shell's exit status for that signal, and the process group a
    ``--launcher`` started is left however the run ends, so that no rank waits on a dead one."""
    import torch.distributed as dist

    try:
        with stop_signals_as_exception():
            run_command(run, argv)
    except Stopped as exc:
        print(f'stopped by {exc.name}: {stopped}', file=sys.stderr, flush=True)
        sys.exit(exc.status)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
