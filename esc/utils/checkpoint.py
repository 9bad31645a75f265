"""Reading and writing checkpoints: atomic saves, release files, and resuming training states."""
from __future__ import annotations

import collections
import contextlib
import logging
import os
import os.path as osp
import re
from typing import Any, Dict, Iterator, Optional, Tuple, Union

import torch

from esc.errors import ESCError

# basicsr's MultiStepRestartLR keeps its milestones in a Counter; allow it in weights-only loading
torch.serialization.add_safe_globals([collections.Counter])


@contextlib.contextmanager
def atomic_path(path: Union[str, 'os.PathLike[str]']) -> Iterator[str]:
    """A hidden temporary path beside ``path`` to write to; when the block ends normally the file is
    flushed to disk and renamed to ``path`` in one step, otherwise it is removed and ``path`` is untouched."""
    path = os.fspath(path)
    tmp = osp.join(osp.dirname(path), f'.{osp.basename(path)}.{os.getpid()}.tmp')
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def write_atomic(path: Union[str, 'os.PathLike[str]'], data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        f.write(data)


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def read_state_dict(path: str, param_key: Optional[str], option: str = 'path.pretrain_network_g') -> Dict[str, Any]:
    """The state dict in a checkpoint file: ``param_key`` of a basicsr dict (``params``/``params_ema``,
    falling back to ``params``), or the file itself when it is a bare state dict."""
    if not osp.isfile(path):
        raise ESCError(f'{option}: no such file {path}')
    if osp.getsize(path) == 0:
        raise ESCError(f'{option}: cannot read checkpoint {path}: the file is empty')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: name it, with the loader's reason
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ESCError(f'{option}: cannot read checkpoint {path}: {reason}') from None
    if not isinstance(ckpt, dict):
        raise ESCError(f'{option}: {path} holds a {type(ckpt).__name__}, not a state dict')
    nested = [k for k, v in ckpt.items() if isinstance(v, dict)]
    if nested:
        if param_key in ckpt:
            ckpt = ckpt[param_key]
        elif 'params' in ckpt:
            logging.getLogger('basicsr').info(f'{path} has no {param_key!r}; using its "params".')
            ckpt = ckpt['params']
        else:
            raise ESCError(f'{option}: {path} has no {param_key!r} (param_key_g); it holds {", ".join(nested)}')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in ckpt.items()}


STATE_FILE = re.compile(r'^(\d+)\.state$')
MODEL_FILE = re.compile(r'^net_\w+?_(\d+)\.pth$')


def _state_iterations(folder: str) -> list:
    return [int(m.group(1)) for m in map(STATE_FILE.match, os.listdir(folder)) if m] if osp.isdir(folder) else []


def newest_training_state(folder: str) -> Optional[str]:
    """The ``<iter>.state`` file with the highest iteration in ``folder`` (temporary files ignored)."""
    iters = _state_iterations(folder)
    return osp.join(folder, f'{max(iters)}.state') if iters else None


_POSITIONS: Dict[str, Tuple[int, int]] = {}
"""(epoch, iteration) of the training states this process has read, by absolute path."""


def training_state_position(path: str) -> Tuple[int, int]:
    """(epoch, iteration) of a training state, reading the file only if this process has not yet."""
    key = osp.abspath(path)
    if key not in _POSITIONS:
        read_training_state(path)
    return _POSITIONS[key]


def read_training_state(path: str, map_location: Any = 'cpu') -> Dict[str, Any]:
    """A ``<iter>.state`` file's contents; an unreadable file is a one-line error naming it."""
    if not osp.isfile(path):
        raise ESCError(f'path.resume_state: no such file {path}')
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ESCError(f'path.resume_state: cannot read training state {path}: {reason}') from None
    if not isinstance(state, dict) or 'iter' not in state:
        raise ESCError(f'path.resume_state: {path} is not a training state')
    _POSITIONS[osp.abspath(path)] = (state['epoch'], state['iter'])
    return state


def prune_checkpoints(models: str, training_states: str, keep_last: int) -> None:
    """Delete the training states older than the newest ``keep_last`` and the model files (``net_*_<iter>.pth``)
    older than the oldest state kept; states first, so a kill while pruning never leaves a state without weights."""
    iters = sorted(_state_iterations(training_states))
    if keep_last < 1 or len(iters) <= keep_last:
        return
    oldest_kept = iters[-keep_last]
    for it in iters[:-keep_last]:
        os.remove(osp.join(training_states, f'{it}.state'))
    for name in os.listdir(models):
        match = MODEL_FILE.match(name)
        if match and int(match.group(1)) < oldest_kept:
            os.remove(osp.join(models, name))


def load_resume_state(opt: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """basicsr's ``load_resume_state`` for CPU and GPU: ``--auto_resume`` takes the newest state of this
    experiment, ``path.resume_state`` a given one; tensors go to this process's device."""
    from basicsr.utils import check_resume

    if opt['auto_resume']:
        path = newest_training_state(opt['path']['training_states'])
        if path is not None:
            opt['path']['resume_state'] = path
    else:
        path = opt['path'].get('resume_state')
    if path is None:
        return None
    device = torch.device('cuda', torch.cuda.current_device()) if torch.cuda.is_available() else torch.device('cpu')
    state = read_training_state(path, device)
    check_resume(opt, state['iter'])
    return state
