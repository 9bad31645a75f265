"""A run's folders, the lock that keeps two live runs out of one folder, and its log and tensorboard files.

A training run writes to ``experiments/<name>/`` (and ``tb_logger/<name>/``), a test run to ``results/<name>/``;
``name`` is one folder name (:func:`esc.config.reader.check_run_name`). ``path.experiments_root`` and
``path.results_root`` may name another parent folder, so what a run may do to a folder is settled here, whatever
the option file says:

- a run folder is this project's when it holds the marker file :data:`RUN_MARKER`, which a run writes into every
  folder it creates. Only such a folder is archived by a new run of its name (renamed
  ``<name>_archived_<time>`` beside it, as basicsr's runs do) or resumed into; any other existing folder is left
  as it is and the run stops in one line;
- every run folder is locked while its run lives: ``<parent>/.<name>.lock``, created without following a
  symbolic link, records who holds it. It is a POSIX record lock (``fcntl.lockf``), which belongs to the process:
  data-loader workers forked from the run do not hold it, so it goes the moment the run's own process dies, even
  while its workers wind down (a lock shared with forked children, as ``flock``'s is, would outlive a killed run
  by as long as they do). The tensorboard folder has its own lock, so no run archives the folder of a live one;
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
import stat
from typing import Any, Dict, List, Mapping, Optional, Sequence, TextIO

import torch

from esc.errors import ESCError
from esc.io.checkpoint import write_atomic

LOG_FORMAT = '%(asctime)s %(levelname)s: %(message)s'
LOGGER_NAME = 'basicsr'
"""The logger every module writes to: basicsr's datasets and models write to it too."""


RUN_MARKER = '.esc-run'
"""The file that marks a folder as a run folder this project created (the only kind it archives or resumes into)."""
RUN_SUBFOLDERS = ('models', 'training_states', 'visualization')


def _refuse(option: str, path: str, exc: OSError) -> ESCError:
    return ESCError(f'{option}: cannot use {path}: {exc.strerror or exc}')


class RunLock:
    """An exclusive lock on the run ``name`` inside ``parent`` (``experiments/``, ``results/``, ``tb_logger/``),
    held while the process lives (or until :meth:`release`)."""

    def __init__(self, parent: str, name: str) -> None:
        self.path = osp.join(parent, f'.{name}.lock')
        self.folder = osp.join(parent, name)
        self._file: Optional[TextIO] = None

    @classmethod
    def of(cls, folder: str) -> 'RunLock':
        """The lock of the run folder ``folder``."""
        return cls(osp.dirname(folder), osp.basename(folder))

    def _open(self) -> TextIO:
        """The lock file, opened for reading and writing without following a symbolic link: a link planted at the
        lock's path (to a file the run must never truncate) or a folder there is one line, not a write elsewhere."""
        parent = osp.dirname(self.path) or '.'
        if osp.lexists(parent) and not osp.isdir(parent):
            raise ESCError(f'name: the run {self.folder} cannot be made: {parent} is not a folder')
        try:
            os.makedirs(parent, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if osp.islink(self.path):
                raise ESCError(f'name: the run lock {self.path} is a symbolic link; remove it (a run never writes '
                               'through one)') from None
            raise _refuse('name', f'the run lock {self.path}', exc) from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            os.close(fd)
            raise ESCError(f'name: the run lock {self.path} is not a plain file of its own (a link to another file?); '
                           'remove it')
        return os.fdopen(fd, 'r+')

    def acquire(self) -> 'RunLock':
        handle = self._open()
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


def lock_run_folders(folders: Sequence[str]) -> List[RunLock]:
    """The locks of every folder a run will write (all taken, or none: a folder in use releases those taken)."""
    locks: List[RunLock] = []
    try:
        for folder in folders:
            locks.append(RunLock.of(folder).acquire())
    except BaseException:
        release_all(locks)
        raise
    return locks


def release_all(locks: Sequence[RunLock]) -> None:
    for lock in locks:
        lock.release()


def is_run_folder(folder: str) -> bool:
    """Whether ``folder`` is a real folder (not a link) marked as a run folder of this project."""
    return (osp.isdir(folder) and not osp.islink(folder) and osp.isfile(osp.join(folder, RUN_MARKER))
            and not osp.islink(osp.join(folder, RUN_MARKER)))


def _not_ours(option: str, folder: str) -> ESCError:
    return ESCError(f'{option}: {folder} exists and is not a run folder of this project (it has no {RUN_MARKER} '
                    'marker): it is left as it is; choose another name, or another path.experiments_root / '
                    f'path.results_root (a run folder written before the marker existed: touch {folder}/{RUN_MARKER})')


def archive(folder: str) -> Optional[str]:
    """Rename the earlier run folder ``folder`` (marked by this project; its lock held by the caller) to
    ``<folder>_archived_<time>`` beside it, so the new run starts empty; the new name, or None where there was
    nothing to archive."""
    if not osp.lexists(folder):
        return None
    archived = f"{folder}_archived_{time.strftime('%Y%m%d_%H%M%S')}"
    while osp.lexists(archived):
        archived += '_'
    os.rename(folder, archived)
    return archived


def claim_run_folder(folder: str, resuming: bool, option: str, subfolders: Sequence[str] = ()) -> Optional[str]:
    """Make ``folder`` (whose lock the caller holds) this run's: an earlier run folder of this project is archived,
    unless ``resuming`` (then the run writes on into it); a new one is created with the :data:`RUN_MARKER`, and
    ``subfolders`` inside it. Any other file or folder at that path stops the run in one line, untouched.
    Returns the archived name, if any."""
    archived = None
    if osp.lexists(folder):
        if not is_run_folder(folder):
            raise _not_ours(option, folder)
        if not resuming:
            try:
                archived = archive(folder)
            except OSError as exc:
                raise _refuse(option, folder, exc) from None
    try:
        os.makedirs(folder, exist_ok=True)
        if not osp.lexists(osp.join(folder, RUN_MARKER)):
            fd = os.open(osp.join(folder, RUN_MARKER), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, 'w') as marker:
                created = time.strftime('%Y-%m-%d %H:%M:%S')
                marker.write(f"a run folder of ESC, created {created}: {' '.join(sys.argv)}\n")
        for name in subfolders:
            path = osp.join(folder, name)
            if osp.islink(path) or (osp.lexists(path) and not osp.isdir(path)):
                raise ESCError(f'{option}: {path} is not a folder of this run (a link or a file); it is left as it is')
            os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise _refuse(option, folder, exc) from None
    return archived


def training_folders(opt: Mapping[str, Any]) -> List[str]:
    """The folders a training run writes: ``experiments/<name>/`` and, with tensorboard, ``tb_logger/<name>/``."""
    folders = [opt['path']['experiments_root']]
    if tensorboard_enabled(opt):
        folders.append(tensorboard_folder(opt))
    return folders


def prepare_training_folders(opt: Dict[str, Any], resuming: bool) -> list:
    """Claim the run's folders (:func:`claim_run_folder`; their locks held by the caller): ``experiments/<name>/``
    with ``models``, ``training_states`` and ``visualization``, and ``tb_logger/<name>/`` with
    ``logger.use_tb_logger``, archiving those of an earlier run of that name unless resuming; the messages to log."""
    messages = []
    for folder, option, subfolders in zip(training_folders(opt), ('path.experiments_root', 'logger.use_tb_logger'),
                                          (RUN_SUBFOLDERS, ())):
        archived = claim_run_folder(folder, resuming, option, subfolders)
        if archived:
            messages.append(f'An earlier run of this name was moved to {archived}')
    return messages


def prepare_results_folder(opt: Dict[str, Any]) -> list:
    """Claim ``results/<name>/`` (its lock held by the caller), archiving an earlier one; the messages to log."""
    archived = claim_run_folder(opt['path']['results_root'], False, 'path.results_root')
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


def environment(esc_version: str) -> str:
    """One line on what the run runs with (``esc_version``: ``esc.__version__``, which the loop passes down)."""
    import basicsr

    cuda = f'CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)' if torch.cuda.is_available() else 'no GPU'
    return (f'ESC {esc_version} on basicsr {basicsr.__version__}, torch {torch.__version__} ({cuda}), '
            f'Python {platform.python_version()}, {os.cpu_count()} CPU cores')


def free_space_note(folder: str) -> str:
    """How much room is left where the run writes (logged at the start: checkpoints need it)."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ''
    return f'{free / 2**30:.1f} GB free in {folder}'
