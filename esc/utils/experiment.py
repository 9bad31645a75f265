"""A run's folders, the lock that keeps two live runs out of one folder, and its log and tensorboard files.

A training run writes to ``experiments/<name>/`` (and ``tb_logger/<name>/``), a test run to ``results/<name>/``;
``name`` is one folder name (:func:`esc.utils.option_file.check_run_name`), so nothing outside those folders is
ever written, renamed or moved. A new run whose folder already exists archives it first as
``<name>_archived_<time>`` beside it, as basicsr's runs do, unless a live run holds it:

- every run holds a lock on ``<parent>/.<name>.lock`` for as long as its process lives; the file records who
  holds it. It is a POSIX record lock (``fcntl.lockf``), which belongs to the process: data-loader workers forked
  from the run do not hold it, so it goes the moment the run's own process dies, even while its workers wind down
  (a lock shared with forked children, as ``flock``'s is, would outlive a killed run by as long as they do);
- a second run of the same name finds the lock taken and stops in one line naming the live run (its process id,
  start time and command line). The lock of a killed run goes with its process, so ``--auto_resume`` after a kill
  goes ahead.
"""
from __future__ import annotations

import fcntl
import logging
import os
import os.path as osp
import platform
import shutil
import sys
import time
from typing import Any, Dict, Mapping, Optional, TextIO

import torch

from esc.errors import ESCError
from esc.utils.checkpoint import write_atomic

LOG_FORMAT = '%(asctime)s %(levelname)s: %(message)s'
LOGGER_NAME = 'basicsr'
"""The logger every module writes to: basicsr's datasets and models write to it too."""


class RunLock:
    """An exclusive lock on the run ``name`` inside ``parent`` (``experiments/`` or ``results/``), held while
    the process lives (or until :meth:`release`)."""

    def __init__(self, parent: str, name: str) -> None:
        self.path = osp.join(parent, f'.{name}.lock')
        self.folder = osp.join(parent, name)
        self._file: Optional[TextIO] = None

    def acquire(self) -> 'RunLock':
        os.makedirs(osp.dirname(self.path) or '.', exist_ok=True)
        handle = open(self.path, 'a+')
        try:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or 'another process'
            handle.close()
            raise ESCError(f'name: {self.folder} is in use by a live run ({holder}); give this run another name, '
                           'or wait for that one to end') from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)}\n")
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.lockf(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def archive(folder: str) -> Optional[str]:
    """Rename an existing ``folder`` to ``<folder>_archived_<time>`` beside it (the new run starts empty); the
    new name, or None where there was nothing to archive."""
    if not osp.exists(folder):
        return None
    archived = f"{folder}_archived_{time.strftime('%Y%m%d_%H%M%S')}"
    while osp.exists(archived):
        archived += '_'
    os.rename(folder, archived)
    return archived


def prepare_training_folders(opt: Dict[str, Any], resuming: bool) -> list:
    """Create the run's folders under ``experiments/<name>/`` (and ``tb_logger/<name>/`` with
    ``logger.use_tb_logger``), archiving those of an earlier run of that name unless resuming; the messages to log."""
    paths, messages = opt['path'], []
    folders = [paths['experiments_root']]
    if tensorboard_enabled(opt):
        folders.append(tensorboard_folder(opt))
    for folder in folders:
        if not resuming:
            archived = archive(folder)
            if archived:
                messages.append(f'An earlier run of this name was moved to {archived}')
    for key in ('experiments_root', 'models', 'training_states', 'visualization'):
        os.makedirs(paths[key], exist_ok=True)
    return messages


def prepare_results_folder(opt: Dict[str, Any]) -> list:
    """Create ``results/<name>/``, archiving an earlier one; the messages to log."""
    archived = archive(opt['path']['results_root'])
    os.makedirs(opt['path']['results_root'])
    return [f'Earlier results of this name were moved to {archived}'] if archived else []


def copy_option_file(source: str, folder: str, argv: Any) -> str:
    """The option file, copied into the run's folder with the command that ran it on top (evaluate_run reads it)."""
    target = osp.join(folder, osp.basename(source))
    with open(source, encoding='utf-8') as f:
        text = f.read()
    header = f"# GENERATE TIME: {time.asctime()}\n# CMD:\n# {' '.join(argv)}\n\n"
    write_atomic(target, (header + text).encode('utf-8'))
    return target


def tensorboard_enabled(opt: Mapping[str, Any]) -> bool:
    return bool((opt.get('logger') or {}).get('use_tb_logger')) and 'debug' not in opt['name']


def tensorboard_folder(opt: Mapping[str, Any]) -> str:
    return osp.join(opt['root_path'], 'tb_logger', opt['name'])


class RunLog:
    """The run's logger (``basicsr``, which basicsr's own modules write to as well): INFO to the console on rank 0,
    errors only on the other ranks; :meth:`to_file` adds the log file once the run's folder exists."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.logger = logging.getLogger(LOGGER_NAME)
        self._added: list = []
        self._set_aside: list = []
        self._level = self.logger.level

    def _add(self, handler: logging.Handler) -> None:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self.logger.addHandler(handler)
        self._added.append(handler)

    def start(self) -> 'RunLog':
        from basicsr.utils import logger as basicsr_logger

        basicsr_logger.initialized_logger[LOGGER_NAME] = True  # basicsr's get_root_logger adds no handler of its own
        # the console is this run's: a console handler set up earlier in this process (basicsr's, or an earlier
        # run's) may write to another stream, and is set aside until the run ends
        self._set_aside = [h for h in self.logger.handlers if type(h) is logging.StreamHandler]
        for handler in self._set_aside:
            self.logger.removeHandler(handler)
        self._add(logging.StreamHandler())
        self.logger.setLevel(logging.INFO if self.rank == 0 else logging.ERROR)
        self.logger.propagate = False
        return self

    def to_file(self, path: str) -> str:
        """Log to ``path`` too (rank 0 only)."""
        if self.rank == 0:
            self._add(logging.FileHandler(path, 'w', encoding='utf-8'))
        return path

    def close(self) -> None:
        """Remove the handlers this run added, so that runs started one after another in one process each write
        their own log file."""
        for handler in self._added:
            self.logger.removeHandler(handler)
            handler.close()
        self._added.clear()
        for handler in self._set_aside:
            self.logger.addHandler(handler)
        self._set_aside = []
        self.logger.setLevel(self._level)


def environment() -> str:
    """One line on what the run runs with."""
    import basicsr

    from esc import __version__

    cuda = f'CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)' if torch.cuda.is_available() else 'no GPU'
    return (f'ESC {__version__} on basicsr {basicsr.__version__}, torch {torch.__version__} ({cuda}), '
            f'Python {platform.python_version()}, {os.cpu_count()} CPU cores')


def free_space_note(folder: str) -> str:
    """How much room is left where the run writes (logged at the start: checkpoints need it)."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ''
    return f'{free / 2**30:.1f} GB free in {folder}'
