"""What ``esc/train.py`` and ``esc/test.py`` share: run a basicsr pipeline with ESC registered,
reporting bad input as one line instead of a traceback."""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import os.path as osp
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch.distributed as dist
import yaml

from esc.errors import ESCError
from esc.utils.options import validate_options


def check_option_file(argv: list[str], is_train: bool) -> None:
    """Fail early, in one line, when ``-opt`` is missing, unreadable, not a YAML mapping or holds a bad option
    (:func:`esc.utils.options.validate_options`), before basicsr parses it."""
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
    validate_options(opt, is_train)


DATASET_PATH_KEYS = ('dataroot_gt', 'dataroot_lq', 'meta_info_file')
WEIGHT_PATH_KEYS = ('pretrain_network_g', 'pretrain_network_d')


def check_paths(opt: Dict[str, Any]) -> None:
    """One line naming the option and the path, for every dataset folder, meta-info file, pretrained
    weight file or metric weight file the (parsed) options name but the disk lacks, and for evaluation
    HR/LR folders that do not pair up at the option's scale; run before anything is built."""
    from esc.data.benchmark_prep import check_benchmark_pairs  # basicsr-land, imported only when options are checked

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
            check_benchmark_pairs(dataset['dataroot_gt'], dataset['dataroot_lq'], int(opt.get('scale', 1)),
                                  dataset.get('filename_tmpl', '{}'))
    for key in WEIGHT_PATH_KEYS:
        path = (opt.get('path') or {}).get(key)
        if isinstance(path, str) and not osp.isfile(path):
            raise ESCError(f'path.{key}: no such file {path} (paths are relative to {os.getcwd()})')
    from esc.metrics import check_metric_options  # the weight files of pyiqa's metrics

    for name, metric in ((opt.get('val') or {}).get('metrics') or {}).items():
        if isinstance(metric, dict):
            check_metric_options(metric, f'val.metrics.{name}')


def _as_list(value: Any) -> List[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str)]
    return []


def checked_parse_options(parse_options: Callable[..., Tuple[Dict[str, Any], Any]]) -> Callable[..., Any]:
    """basicsr's ``parse_options`` followed by :func:`validate_options` (``--force_yml`` may have added keys)
    and :func:`check_paths` on what it returns."""

    @functools.wraps(parse_options)
    def parse(*args: Any, **kwargs: Any) -> Tuple[Dict[str, Any], Any]:
        opt, cli_args = parse_options(*args, **kwargs)
        validate_options(opt, opt['is_train'])
        check_paths(opt)
        return opt, cli_args

    return parse


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


def run_pipeline(pipeline: Callable[[str], None], root_path: str, is_train: bool) -> None:
    """Run ``pipeline(root_path)`` (basicsr's train or test pipeline) with :func:`one_line_errors`."""
    try:
        with one_line_errors():
            check_option_file(sys.argv[1:], is_train)
            pipeline(root_path)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
