"""Reading and writing checkpoints: atomic saves, release files, safetensors, and resuming training states.

Network weights are read from PyTorch files (``.pth``: basicsr's dict of ``params``/``params_ema``, or a bare state
dict) and from safetensors files (``.safetensors``, read with the safetensors library, never unpickled). A
safetensors file holds one bare state dict; the files this project writes add string metadata, each value JSON:

- ``esc.network``: the network options (``type`` and constructor options) the weights were built with;
- ``esc.scale``: the scale they upscale by (absent for ESC+LTE, which serves any);
- ``esc.param_key``: which weights they are, ``params`` or ``params_ema``.

Training with ``logger.weights_format: safetensors`` writes the evaluation weights (the EMA ones where there are)
to ``net_g_<iter>.safetensors`` and each other set beside it as ``net_g_<iter>.<param_key>.safetensors``;
:func:`read_checkpoint` asked for a param key the file is not takes that sibling, which is how resuming finds
the raw weights. Files without metadata (traiNNer-redux, chaiNNer) are bare state dicts like any other.
Training states (``<iter>.state``) stay PyTorch files: they hold optimizer states, not only tensors.
"""
from __future__ import annotations

import collections
import contextlib
import io
import json
import logging
import os
import os.path as osp
import re
import zipfile
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from esc.archs.lte_arch import is_official_container, read_official_container
from esc.errors import ESCError
from esc.io.state_dict_checks import check_tensors, check_weights

# basicsr's MultiStepRestartLR keeps its milestones in a Counter; allow it in weights-only loading
torch.serialization.add_safe_globals([collections.Counter])


def _write_error(path: str, exc: OSError) -> ESCError:
    """A failed write as one line: the OS's reason (``No space left on device``, ``Permission denied``) and the path."""
    reason = exc.strerror or _reason(exc)
    return ESCError(f'cannot write {path}: {reason}; nothing was written there (an earlier file of that name is '
                    'untouched)')


@contextlib.contextmanager
def atomic_path(path: Union[str, 'os.PathLike[str]']) -> Iterator[str]:
    """A hidden temporary path beside ``path`` to write to; when the block ends normally the file is
    flushed to disk and renamed to ``path`` in one step, otherwise it is removed and ``path`` is untouched.
    A write the OS refuses (a full disk, a file-size limit, permissions) is one line naming ``path``."""
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
    except OSError as exc:
        raise _write_error(path, exc) from None
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def write_atomic(path: Union[str, 'os.PathLike[str]'], data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        f.write(data)


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to ``path`` through :func:`atomic_path`. The object is serialised in memory first and written
    with Python's file calls, so a failed write reports the OS's reason (torch's writer reports only 'file write
    failed')."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getbuffer())


WEIGHTS_FORMATS = ('pth', 'safetensors')
"""``logger.weights_format``: how training writes network weights (training states are always PyTorch files)."""
SAFETENSORS_SUFFIX = '.safetensors'
EVALUATION_KEY = 'params_ema'
"""The param key inference and evaluation read by default, and the one a safetensors file of several is named for."""
METADATA_PREFIX = 'esc.'
METADATA_KEYS = ('network', 'scale', 'param_key')


def _reason(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def is_safetensors(path: str) -> bool:
    """Whether ``path`` is (or claims to be) a safetensors file: its suffix, or its first bytes (an 8-byte header
    length that fits the file, then the header's opening brace) where the suffix says nothing."""
    if path.endswith(SAFETENSORS_SUFFIX):
        return True
    with open(path, 'rb') as f:
        head = f.read(9)
    return (len(head) == 9 and head[8:9] == b'{'
            and int.from_bytes(head[:8], 'little') <= osp.getsize(path) - 8)


def read_checkpoint(path: str, param_key: Optional[str], option: str = 'path.pretrain_network_g',
                    fallback: bool = True) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The state dict in a checkpoint file and what the file says about it: the metadata of a safetensors file this
    project wrote, decoded (``network``, ``scale``, ``param_key``); for a basicsr ``.pth`` dict, the ``param_key``
    taken; nothing for a bare state dict or a foreign safetensors file.

    PyTorch files: ``param_key`` of a basicsr dict (``params``/``params_ema``, falling back to ``params``), or the
    file itself when it is a bare state dict; an official esc_arb checkpoint (``{'model': {'name', 'args', 'sd'}}``),
    its ESC+LTE weights in this project's layout with the network options as ``network``. Safetensors files: the
    file's state dict, or the sibling holding ``param_key`` where the file holds other weights (see the module doc).
    ``option`` names the source in errors. ``fallback`` False: weights other than ``param_key`` are refused rather
    than taken (resuming training).

    This is the one opener of network weights: before a value is read, the file's cost is bounded by its size
    (:func:`_load_pytorch_file`, :func:`esc.io.state_dict_checks.check_storage`), and what is not a state dict
    of named, non-empty tensors is one line naming the file and the key."""
    if not osp.isfile(path):
        raise ESCError(f'{option}: no such file {path}')
    if osp.getsize(path) == 0:
        raise ESCError(f'{option}: cannot read checkpoint {path}: the file is empty')
    if is_safetensors(path):
        return _read_safetensors_weights(path, param_key, option, fallback)
    ckpt = _load_pytorch_file(path, option)
    if not isinstance(ckpt, dict):
        raise ESCError(f'{option}: {path} holds a {type(ckpt).__name__}, not a state dict')
    if is_official_container(ckpt):  # esc_arb's {'model': {'name', 'args', 'sd'}}: ESC+LTE in its own layout
        return _read_official_container(ckpt, path, option)
    nested = [k for k, v in ckpt.items() if isinstance(v, dict)]
    if not nested:
        check_tensors(ckpt, f'{option}: {path}')
        return _without_module_prefix(ckpt), {}
    taken = param_key if param_key in ckpt or not fallback else 'params'
    if taken not in ckpt:
        raise ESCError(f'{option}: {path} has no {param_key!r} (param_key_g); it holds {", ".join(nested)}')
    if taken != param_key:
        logging.getLogger('basicsr').info(f'{path} has no {param_key!r}; using its "params".')
    if not isinstance(ckpt[taken], dict):
        raise ESCError(f'{option}: {path}: {taken} is not a state dict but {type(ckpt[taken]).__name__}')
    check_tensors(ckpt[taken], f'{option}: {path}')
    return _without_module_prefix(ckpt[taken]), {'param_key': taken}


def _read_official_container(ckpt: Dict[str, Any], path: str, option: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """An esc_arb checkpoint's weights mapped to this project's layout, with the network options its spec names as
    ``network`` metadata (:func:`esc.archs.lte_arch.read_official_container`) and ``container`` 'esc_arb';
    ``param_key`` does not apply."""
    source = f'{option}: {path}'
    state_dict, network = read_official_container(ckpt, source)
    check_tensors(state_dict, source)
    return state_dict, {'network': network, 'container': 'esc_arb'}


def _check_zip_records(path: str, option: str) -> None:
    """A PyTorch zip file whose records hold no more bytes than the file: ``torch.save`` stores every record as it
    is, and a compressed one (which ``torch.load`` inflates) could expand a small file to any size."""
    size = osp.getsize(path)
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ESCError(f'{option}: cannot read checkpoint {path}: {_reason(exc)}') from None
    for record in records:
        if record.compress_type != zipfile.ZIP_STORED:
            raise ESCError(f'{option}: {path}: record {record.filename} is compressed; torch.save never compresses, '
                           'and a compressed record can expand far beyond the file')
    if sum(record.file_size for record in records) > size:
        raise ESCError(f'{option}: {path}: its records declare more bytes than the file holds ({size:,})')


def _load_pytorch_file(path: str, option: str) -> Any:
    """A PyTorch file's object, unpickled with ``weights_only`` (no code runs) after its records were bounded by its
    size (:func:`_check_zip_records`); the storages read must fit in the file too. One line naming the file
    otherwise, whatever the loader raises (a deeply nested pickle's RecursionError included)."""
    if zipfile.is_zipfile(path):
        _check_zip_records(path, option)
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: name it, with the loader's reason
        raise ESCError(f'{option}: cannot read checkpoint {path}: {_reason(exc)}') from None
    held = _storage_bytes(ckpt, {}, 0)
    if held > osp.getsize(path):
        raise ESCError(f'{option}: {path}: its tensors hold {held:,} bytes, more than the file ({osp.getsize(path):,})')
    return ckpt


def _storage_bytes(value: Any, seen: Dict[int, int], depth: int) -> int:
    """Bytes of the distinct storages behind the tensors in ``value`` (dicts and lists, a few levels deep)."""
    if isinstance(value, Tensor):
        storage = value.untyped_storage()
        seen.setdefault(storage.data_ptr() or id(storage), storage.nbytes())
    elif isinstance(value, (dict, list, tuple)) and depth < 8:
        for item in (value.values() if isinstance(value, dict) else value):
            _storage_bytes(item, seen, depth + 1)
    return sum(seen.values())


def read_state_dict(path: str, param_key: Optional[str], option: str = 'path.pretrain_network_g') -> Dict[str, Any]:
    """The state dict in a checkpoint file (:func:`read_checkpoint` without the metadata)."""
    return read_checkpoint(path, param_key, option)[0]


def _without_module_prefix(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state_dict.items()}


def _open_safetensors(path: str, option: str) -> Tuple[Dict[str, Tensor], Dict[str, Any]]:
    """A safetensors file's tensors and decoded ESC metadata; one line naming the file if either is unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework='pt', device='cpu') as f:
            raw_metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # SafetensorError and the OS errors of a damaged or truncated file
        raise ESCError(f'{option}: cannot read safetensors file {path}: {_reason(exc)}') from None
    check_tensors(tensors, f'{option}: {path}')
    metadata: Dict[str, Any] = {}
    for key in METADATA_KEYS:
        text = raw_metadata.get(METADATA_PREFIX + key)
        if text is None:
            continue
        try:
            metadata[key] = json.loads(text)
        except ValueError as exc:
            raise ESCError(f'{option}: {path}: metadata {METADATA_PREFIX + key} is not JSON ({exc})') from None
        except RecursionError:
            raise ESCError(f'{option}: {path}: metadata {METADATA_PREFIX + key} is nested too deeply to be network '
                           'options') from None
    return tensors, metadata


def _read_safetensors_weights(path: str, param_key: Optional[str], option: str,
                              fallback: bool = True) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    tensors, metadata = _open_safetensors(path, option)
    held = metadata.get('param_key')
    if param_key is not None and held is not None and held != param_key:
        sibling = _sibling_holding(path, held, param_key, option)
        if sibling is not None:
            return sibling
        if not fallback:
            raise ESCError(f'{option}: {path} holds {held!r} and no file beside it holds {param_key!r} '
                           f'({osp.basename(_sibling_name(path, held, param_key))} is missing)')
        logging.getLogger('basicsr').info(f'{path} holds {held!r} and no file beside it {param_key!r}; using it.')
    return _without_module_prefix(tensors), metadata


def safetensors_weight_paths(base: str, param_keys: Iterable[str]) -> Dict[str, str]:
    """Where training writes each param key's weights for the model file ``base`` (its path without suffix):
    the evaluation weights (``params_ema`` if among them, else the first) at ``base.safetensors``, every other
    set at ``base.<param_key>.safetensors``."""
    keys = list(param_keys)
    main = EVALUATION_KEY if EVALUATION_KEY in keys else keys[0]
    return {key: base + (SAFETENSORS_SUFFIX if key == main else f'.{key}{SAFETENSORS_SUFFIX}') for key in keys}


def _weights_base(path: str, held: str) -> str:
    """The model file's path without suffix and param key (``net_g_8`` for ``net_g_8.params.safetensors``)."""
    base = path[:-len(SAFETENSORS_SUFFIX)] if path.endswith(SAFETENSORS_SUFFIX) else path
    return base[:-len(held) - 1] if base.endswith(f'.{held}') else base


def _sibling_name(path: str, held: str, wanted: str) -> str:
    """Where :func:`save_weights` writes the weights ``wanted`` beside ``path`` (which holds ``held``)."""
    base = _weights_base(path, held)
    return base + SAFETENSORS_SUFFIX if wanted == EVALUATION_KEY else f'{base}.{wanted}{SAFETENSORS_SUFFIX}'


def _sibling_holding(path: str, held: str, wanted: str, option: str) -> Optional[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """The weights ``wanted`` written beside ``path`` (which holds ``held``) by :func:`save_weights`, if there."""
    base = _weights_base(path, held)
    for candidate in (f'{base}.{wanted}{SAFETENSORS_SUFFIX}', base + SAFETENSORS_SUFFIX):
        if osp.abspath(candidate) != osp.abspath(path) and osp.isfile(candidate):
            tensors, metadata = _open_safetensors(candidate, option)
            if metadata.get('param_key') == wanted:
                logging.getLogger('basicsr').info(f'{path} holds {held!r}; reading {wanted!r} from {candidate}.')
                return _without_module_prefix(tensors), metadata
    return None


def weights_metadata(network: Optional[Mapping[str, Any]] = None, scale: Optional[int] = None,
                     param_key: Optional[str] = None) -> Dict[str, str]:
    """The safetensors metadata this project writes (string to string, each value JSON; see the module doc)."""
    values = dict(network=None if network is None else dict(network), scale=scale, param_key=param_key)
    return {METADATA_PREFIX + key: json.dumps(value) for key, value in values.items() if value is not None}


def write_safetensors(state_dict: Mapping[str, Tensor], path: str, metadata: Mapping[str, str]) -> None:
    """Write ``state_dict`` to the safetensors file ``path`` with ``metadata``, atomically (:func:`atomic_path`).
    Tensors go to the CPU, contiguous; tensors sharing memory (which the format refuses) are copied apart."""
    from safetensors.torch import save

    tensors: Dict[str, Tensor] = {}
    seen = set()
    for key, value in state_dict.items():
        if not isinstance(value, Tensor):
            raise ESCError(f'{path}: {key!r} is a {type(value).__name__}, not a tensor; safetensors holds tensors only')
        tensor = value.detach().cpu().contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if storage in seen:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
    write_atomic(path, save(tensors, metadata=dict(metadata)))


def save_weights(base: str, state_dicts: Mapping[str, Mapping[str, Tensor]], weights_format: str = 'pth',
                 network: Optional[Mapping[str, Any]] = None, scale: Optional[int] = None) -> None:
    """Write one network's weights (``state_dicts`` by param key, as basicsr saves them) for the model file ``base``
    (its path without suffix): ``base.pth`` holding them all, or safetensors files with ``network`` and ``scale``
    in their metadata (:func:`safetensors_weight_paths`)."""
    if weights_format not in WEIGHTS_FORMATS:
        raise ESCError(f"logger.weights_format: {weights_format!r} is not one of {', '.join(WEIGHTS_FORMATS)}")
    if weights_format == 'pth':
        atomic_torch_save(dict(state_dicts), base + '.pth')
        return
    for key, path in safetensors_weight_paths(base, state_dicts).items():
        write_safetensors(state_dicts[key], path, weights_metadata(network, scale, key))


STATE_FILE = re.compile(r'^(\d+)\.state$')
MODEL_FILE = re.compile(r'^net_\w+?_(\d+)(?:\.\w+)?\.(?:pth|safetensors)$')


def _state_iterations(folder: str) -> list:
    return [int(m.group(1)) for m in map(STATE_FILE.match, os.listdir(folder)) if m] if osp.isdir(folder) else []


def newest_training_state(folder: str) -> Optional[str]:
    """The ``<iter>.state`` file with the highest iteration in ``folder`` (temporary files ignored)."""
    iters = _state_iterations(folder)
    return osp.join(folder, f'{max(iters)}.state') if iters else None


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
    return state


def prune_checkpoints(models: str, training_states: str, keep_last: int) -> None:
    """Delete the training states older than the newest ``keep_last`` and the model files (``net_*_<iter>.pth``,
    ``net_*_<iter>[.<param_key>].safetensors``) older than the oldest state kept; states first, so a kill while
    pruning never leaves a state without weights."""
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


def weights_of_state(opt: Dict[str, Any], iteration: int) -> Dict[str, str]:
    """The weight files a training state of ``iteration`` resumes from, by option (``pretrain_network_g``, ...):
    ``net_<x>_<iteration>.pth``, or ``.safetensors`` where the run wrote those (``logger.weights_format``).
    Networks listed in ``path.ignore_resume_networks`` keep their own ``pretrain_network_*``."""
    ignored = opt['path'].get('ignore_resume_networks') or ()
    files = {}
    for network in (key for key in opt if key.startswith('network_') and key not in ignored):
        base = osp.join(opt['path']['models'], f"net_{network[len('network_'):]}_{iteration}")
        written = base + SAFETENSORS_SUFFIX
        files[f'pretrain_{network}'] = written if not osp.isfile(base + '.pth') and osp.isfile(written) else base + '.pth'
    return files


def _state_problem(opt: Dict[str, Any], path: str, device: Any) -> Tuple[Optional[Dict[str, Any]], str]:
    """(the state, '') where ``path`` and the weights it needs all read; (None, the reason) otherwise."""
    try:
        state = read_training_state(path, device)
        for option, weights in weights_of_state(opt, state['iter']).items():
            state_dict = read_checkpoint(weights, 'params', option=f'path.{option}', fallback=False)[0]
            check_weights(state_dict, f'path.{option}: {weights}')
    except ESCError as exc:
        return None, str(exc)
    return state, ''


def load_resume_state(opt: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The training state a run continues from, its tensors on this process's device, or None for a new run:
    ``path.resume_state`` where set (one line where it does not read); with ``--auto_resume``, the newest complete
    state of this experiment — a damaged newest one (truncated, empty, unreadable, or its weights so: unreadable,
    holding NaN or infinity, or without the raw ``params`` it continues from) is passed over with a warning naming
    it. ``path.pretrain_network_*`` are set to the weights of that iteration (the raw
    ``params``, which training continues from)."""
    logger = logging.getLogger('basicsr')
    device = torch.device('cuda', torch.cuda.current_device()) if torch.cuda.is_available() else torch.device('cpu')
    state = None
    if opt.get('auto_resume'):
        folder = opt['path']['training_states']
        for iteration in sorted(_state_iterations(folder), reverse=True):
            path = osp.join(folder, f'{iteration}.state')
            state, problem = _state_problem(opt, path, device)
            if state is not None:
                opt['path']['resume_state'] = path
                break
            logger.warning(f'--auto_resume: passing over {path}: {problem}')
    elif opt['path'].get('resume_state'):
        state = read_training_state(opt['path']['resume_state'], device)
    if state is None:
        return None
    opt['path'].update(weights_of_state(opt, state['iter']))
    for key in [k for k in opt['path'] if k.startswith('param_key_')]:
        opt['path'][key] = 'params'
    return state
