"""From the command line and an option file to the options dict that the training and test loops run on.

The option-file format is basicsr's (its keys, sections and registries), read here rather than by basicsr's
``parse_options``:

- the file is read with YAML's safe loader, and aliases that expand the options far beyond the file (a "billion
  laughs" file) or values nested too deeply to read (Python's recursion limit) are refused in one line
  (:func:`read_option_file`);
- ``--force_yml section:key=value`` values are YAML values (``1e-4``, ``[1, 2]``, ``true``, ``~``), never evaluated
  as Python (:func:`apply_overrides`);
- every key is checked (:func:`esc.config.validation.validate_options`) before and after the overrides, the run's
  ``name`` is one folder name, and every dataset, weight and metric file is checked to exist before anything
  is built (:func:`check_paths`, given the dataset and metric checks by the loop);
- what basicsr's option format derives from the file alone is derived the same way: ``dist``, each dataset's
  ``phase`` and ``scale``, and the run's folders under ``experiments/<name>/`` (training) or ``results/<name>/``
  (testing).

Reading is pure: it starts no process group, seeds no generator and asks no device anything. What depends on the
process (``rank``, ``world_size``, ``num_gpu``, the seed) is set by the loop that needs it, through
:mod:`esc.utils.dist`, after :func:`read_options`.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import yaml

from esc.config.validation import validate_options
from esc.errors import ESCError

LAUNCHERS = ('none', 'pytorch', 'slurm')
EXPANSION_FLOOR = 10_000
"""Nodes an option file may always expand to; beyond it, at most :data:`EXPANSION_PER_BYTE` per byte of the file."""
EXPANSION_PER_BYTE = 4
EXPONENT_NUMBER = re.compile(r'[-+]?\d+(\.\d*)?[eE][-+]?\d+')
NULL_WORDS = ('none', 'None')
"""``--force_yml`` words read as null besides YAML's own (``~``, ``null``): basicsr's option format took them so."""


def command_line(argv: Sequence[str], is_train: bool) -> argparse.Namespace:
    """The arguments of ``esc/train.py`` and ``esc/test.py`` (basicsr's, so existing command lines keep working)."""
    command = 'esc/train.py' if is_train else 'esc/test.py'
    parser = argparse.ArgumentParser(prog=command, description=f'{"Train" if is_train else "Test"} an ESC network '
                                     'from an option file (basicsr format).')
    parser.add_argument('-opt', required=True, help='path to the option YAML file')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none',
                        help='none (one process), pytorch (torchrun) or slurm (srun)')
    parser.add_argument('--auto_resume', action='store_true',
                        help='continue from the newest complete training state of this experiment name')
    parser.add_argument('--debug', action='store_true', help="name the run debug_<name>: frequent logs and saves")
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument('--force_yml', nargs='+', default=[], metavar='KEY=VALUE',
                        help='override options: section:key=value, the value read as YAML (e.g. train:ema_decay=0)')
    return parser.parse_args(list(argv))


def _expanded_size(node: Any, sizes: Dict[int, int]) -> int:
    """How many nodes ``node`` stands for once every alias is written out (shared nodes counted each time)."""
    if not isinstance(node, (dict, list)):
        return 1
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = 1  # a recursive alias counts once rather than forever
    children = list(node.values()) if isinstance(node, dict) else node
    size = 1 + sum(_expanded_size(child, sizes) for child in children)
    sizes[id(node)] = size
    return size


def read_option_file(path: str) -> Dict[str, Any]:
    """The mapping an option file holds, read with YAML's safe loader; one line naming the file where it is
    missing, unreadable, not YAML, not a mapping, or where its aliases expand it far beyond its size."""
    if not osp.isfile(path):
        raise ESCError(f'-opt: no such option file {path}')
    try:
        with open(path, 'rb') as f:
            text = f.read()
        opt = yaml.safe_load(text)
    except OSError as exc:
        raise ESCError(f'-opt: cannot read {path}: {exc.strerror or exc}') from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, 'problem_mark', None)
        where = f' (line {mark.line + 1})' if mark is not None else ''
        raise ESCError(f'-opt: {path} is not valid YAML{where}: {getattr(exc, "problem", None) or exc}') from None
    except RecursionError:
        raise ESCError(f'-opt: {path} nests its values too deeply to be options') from None
    if not isinstance(opt, dict):
        raise ESCError(f'-opt: {path} does not hold a mapping of options')
    limit = max(EXPANSION_FLOOR, EXPANSION_PER_BYTE * len(text))
    try:
        size = _expanded_size(opt, {})
    except RecursionError:
        raise ESCError(f'-opt: {path} nests its values too deeply to be options') from None
    if size > limit:
        raise ESCError(f'-opt: {path} ({len(text)} bytes) expands through its YAML aliases to {size} values, more '
                       f'than the {limit} allowed; write the repeated sections out')
    return opt


def override_value(text: str) -> Any:
    """A ``--force_yml`` value as YAML reads it, never evaluated as code; ``none``/``None`` are null too, and a
    number in exponent form without a dot (``1e-4``, which YAML 1.1 leaves a string) is a float."""
    if text.strip() in NULL_WORDS:
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # not YAML on its own (e.g. 'a: b: c'): the text itself
    except RecursionError:
        raise ESCError(f'--force_yml: {text[:40]!r}... nests its values too deeply to be an option') from None
    if isinstance(value, str) and EXPONENT_NUMBER.fullmatch(value.strip()):
        return float(value)
    return value


def apply_overrides(opt: Dict[str, Any], entries: Sequence[str]) -> None:
    """Set ``section:key=value`` entries (``--force_yml``) in ``opt``, creating sections that are missing."""
    for entry in entries:
        keys, separator, text = entry.partition('=')
        path = [key.strip() for key in keys.split(':')]
        if not separator or not all(path):
            raise ESCError(f'--force_yml: {entry!r} is not section:key=value')
        section = opt
        for depth, key in enumerate(path[:-1]):
            child = section.setdefault(key, {})
            if child is None:
                child = section[key] = {}
            if not isinstance(child, dict):
                raise ESCError(f"--force_yml: {':'.join(path[:depth + 1])} is a {type(child).__name__}, not a section")
            section = child
        section[path[-1]] = override_value(text.strip())


def check_run_name(name: Any, option: str = 'name') -> str:
    """``name`` as one folder name: runs live in ``experiments/<name>`` and ``results/<name>``, and a name that
    leaves them (``../x``, ``/x``, ``a/b``) would put the run, and its archiving, elsewhere."""
    if not isinstance(name, str) or not name.strip():
        raise ESCError(f'{option}: must be a non-empty folder name, got {name!r}')
    if name in ('.', '..') or any(sep in name for sep in ('/', '\\', '\0')) or osp.isabs(name):
        raise ESCError(f'{option}: {name!r} must be one folder name (no path separators, not . or ..): runs are '
                       'written to experiments/<name>/ and results/<name>/')
    return name


def _expand(value: Any) -> Any:
    if isinstance(value, str):
        return osp.expanduser(value)
    if isinstance(value, list):
        return [osp.expanduser(v) if isinstance(v, str) else v for v in value]
    return value


DATASET_PATH_KEYS = ('dataroot_gt', 'dataroot_lq', 'meta_info_file')
WEIGHT_PATH_KEYS = ('pretrain_network_g', 'pretrain_network_d')
PairCheck = Callable[[str, str, int, str], Any]
"""Checks that an HR and an LR folder pair up at a scale (``gt_folder, lq_folder, scale, filename_tmpl``), one
line naming the first file that does not: :func:`esc.data.benchmark_prep.check_benchmark_pairs`."""
MetricCheck = Callable[[Mapping[str, Any], str], None]
"""Checks what one ``val.metrics.<name>`` entry needs (``metric_options, option``), one line naming the option:
:func:`esc.metrics.check_metric_options`."""


def check_paths(opt: Dict[str, Any], check_pairs: PairCheck, check_metric: MetricCheck) -> None:
    """One line naming the option and the path, for every dataset folder, meta-info file, pretrained
    weight file or metric weight file the (parsed) options name but the disk lacks, and for evaluation
    HR/LR folders that do not pair up at the option's scale; run before anything is built. The pairing and the
    metrics' files are the data's and the metrics' own checks, which the loop passes in (configuration sits below
    them)."""
    for phase, dataset in (opt.get('datasets') or {}).items():
        dataset = dataset or {}
        for key in DATASET_PATH_KEYS:
            for path in _as_list(dataset.get(key)):
                if not osp.exists(path):
                    raise ESCError(f'datasets.{phase}.{key}: no such file or folder {path} '
                                   f'(paths are relative to {os.getcwd()})')
        if (not phase.startswith('train') and dataset.get('type') == 'PairedImageDataset'
                and (dataset.get('io_backend') or {}).get('type') == 'disk' and 'meta_info_file' not in dataset
                and isinstance(dataset.get('dataroot_gt'), str) and isinstance(dataset.get('dataroot_lq'), str)):
            check_pairs(dataset['dataroot_gt'], dataset['dataroot_lq'], int(opt.get('scale', 1)),
                        dataset.get('filename_tmpl', '{}'))
    for key in WEIGHT_PATH_KEYS:
        path = (opt.get('path') or {}).get(key)
        if isinstance(path, str) and not osp.isfile(path):
            raise ESCError(f'path.{key}: no such file {path} (paths are relative to {os.getcwd()})')
    for name, metric in ((opt.get('val') or {}).get('metrics') or {}).items():
        if isinstance(metric, dict):
            check_metric(metric, f'val.metrics.{name}')


def _as_list(value: Any) -> List[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str)]
    return []


def derive_paths(opt: Dict[str, Any], root: str, is_train: bool) -> None:
    """The run's folders, as basicsr's option format lays them out: ``<root>/experiments/<name>/`` with
    ``models``, ``training_states`` and ``visualization`` for training, ``<root>/results/<name>/`` for testing
    (``path.experiments_root``/``path.results_root`` name another parent folder)."""
    paths = opt.setdefault('path', {}) or {}
    opt['path'] = paths
    for key, value in list(paths.items()):
        if value is not None and ('resume_state' in key or 'pretrain_network' in key):
            paths[key] = osp.expanduser(value)
    name = opt['name']
    if is_train:
        run = osp.join(paths.get('experiments_root') or osp.join(root, 'experiments'), name)
        paths.update(experiments_root=run, models=osp.join(run, 'models'),
                     training_states=osp.join(run, 'training_states'), log=run,
                     visualization=osp.join(run, 'visualization'))
    else:
        run = osp.join(paths.get('results_root') or osp.join(root, 'results'), name)
        paths.update(results_root=run, log=run, visualization=osp.join(run, 'visualization'))


def read_options(args: argparse.Namespace, is_train: bool, root: Optional[str] = None) -> Dict[str, Any]:
    """The options of a run from its command line (:func:`command_line`): the option file read, validated before
    and after ``--force_yml`` and the derivations, with nothing done to the process (see the module's docstring).
    ``root`` (default: the working directory) holds ``experiments/``, ``results/`` and ``tb_logger/``."""
    root = os.getcwd() if root is None else root
    opt = read_option_file(args.opt)
    validate_options(opt, is_train)
    apply_overrides(opt, args.force_yml)
    opt['is_train'], opt['auto_resume'], opt['root_path'] = is_train, args.auto_resume, root
    if args.debug and not str(opt.get('name', '')).startswith('debug'):
        opt['name'] = f"debug_{opt.get('name')}"
    check_run_name(opt.get('name'))

    opt['dist'] = args.launcher != 'none'
    for phase, dataset in (opt.get('datasets') or {}).items():
        dataset['phase'] = phase.split('_')[0]
        if 'scale' in opt:
            dataset['scale'] = opt['scale']
        for key in ('dataroot_gt', 'dataroot_lq'):
            if dataset.get(key) is not None:
                dataset[key] = _expand(dataset[key])
    derive_paths(opt, root, is_train)
    if is_train and opt['name'].startswith('debug'):
        if opt.get('val'):
            opt['val']['val_freq'] = 8
        opt['logger'].update(print_freq=1, save_checkpoint_freq=8)
    validate_options(opt, is_train)
    return opt


def describe_options(opt: Mapping[str, Any], indent: int = 1) -> str:
    """The options as the log prints them: nested sections indented, one ``key: value`` a line."""
    lines: List[str] = []
    for key, value in opt.items():
        pad = ' ' * (indent * 2)
        if isinstance(value, Mapping):
            lines += [f'{pad}{key}:[', describe_options(value, indent + 1), f'{pad}]']
        else:
            lines.append(f'{pad}{key}: {value}')
    return '\n'.join(lines)
