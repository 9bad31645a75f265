"""Evaluate a training run on the five benchmarks and print its Table 2 row beside the paper's.

    python esc/commands/evaluate_run.py experiments/ESC_X2_DIV2K                  # the latest weights, EMA
    python esc/commands/evaluate_run.py ESC_X2_DIV2K --iter 250000 --param-key params

The run's folder (``experiments/<name>/``, or just the name) holds the option file it was trained with
(basicsr copies it there) and its weights in ``models/``. The command picks ``net_g_latest`` (written when
training ends; without it, the newest ``net_g_<iteration>``, and says so) or ``--iter N``, the EMA weights
(``params_ema``) unless ``--param-key params``, and evaluates the network the run trained on the datasets
and metrics of the Table 2 test options at the run's scale (``options/test/ESC/test_ESC_X<r>_DIV2K.yml``:
Set5, Set14, B100, Urban100, Manga109; Y channel, border = scale; or ``--options``), through
``esc/test.py``. Everything lands beside ``results/<evaluation>/`` (``<evaluation>`` =
``<run>_<latest|iteration>_<ema|params>``): ``.yml`` the exact options (rerun by hand with
``python esc/test.py -opt``), ``.json`` the scores so far, ``.md``/``.csv`` the table.

Runs named like the option files (``<Variant>_X<r>_<DIV2K|DFLIP>``) get the paper's row and the difference
under theirs (``--variant`` names it for other names). A benchmark folder that is missing stops the command
before anything runs, in one line. An interrupted evaluation resumes: benchmarks already scored for the
same weights file are not evaluated again.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

try:
    import esc  # noqa: F401
except ModuleNotFoundError as missing:  # `python esc/commands/evaluate_run.py` in a checkout that was never installed
    sys.exit('error: the esc package is not installed: run `pip install -e .` in the checkout first'
             if missing.name == 'esc' else f'error: {missing}')

import yaml  # noqa: E402

from esc.errors import ESCError  # noqa: E402
from esc.evaluation.results import (RUN_NAME, VARIANT_LABELS, Scores, parse_test_log, table_rows, to_csv,  # noqa: E402
                                    to_markdown)
from esc.io.checkpoint import read_checkpoint  # noqa: E402
from esc.utils.cli import run_command  # noqa: E402

CHECKOUT = Path(__file__).resolve().parents[2]
WEIGHT_SUFFIXES = ('.pth', '.safetensors')
EMA_KEY = 'params_ema'


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    label: str
    """'latest' or the iteration."""
    reason: str
    """Why this file was picked, for the log."""

    def identity(self) -> Dict[str, Any]:
        """What tells this file from a later one of the same name (a run trained further)."""
        stat = self.path.stat()
        return {'path': str(self.path), 'size': stat.st_size, 'mtime_ns': stat.st_mtime_ns}


def find_run(run: str) -> Path:
    """The run's folder: ``run`` itself, or ``experiments/<run>``; it must hold ``models/``."""
    for folder in (Path(run), Path('experiments') / run):
        if (folder / 'models').is_dir():
            return folder
    raise ESCError(f'RUN: {run} is not a training run folder (no {Path(run) / "models"} nor '
                   f'{Path("experiments") / run / "models"}); runs are written to experiments/<name>/')


def run_options(folder: Path) -> Dict[str, Any]:
    """The option file the run was trained with (the newest YAML basicsr copied into its folder)."""
    files = sorted(folder.glob('*.yml'), key=lambda p: p.stat().st_mtime_ns)
    if not files:
        raise ESCError(f'RUN: {folder} holds no option file (*.yml); was it written by esc/train.py?')
    opt = yaml.safe_load(files[-1].read_text())
    if not isinstance(opt, dict) or 'network_g' not in opt or 'scale' not in opt:
        raise ESCError(f'RUN: {files[-1]} does not hold training options with network_g and scale')
    return opt


def pick_checkpoint(models: Path, iteration: str) -> Checkpoint:
    """``net_g_latest`` or ``net_g_<iteration>`` (.pth or .safetensors) in ``models``; for 'latest' without
    ``net_g_latest``, the newest ``net_g_<iteration>``."""
    saved: Dict[str, Path] = {}
    for path in sorted(models.iterdir()):
        match = re.fullmatch(r'net_g_(latest|\d+)', path.stem)
        if match and path.suffix in WEIGHT_SUFFIXES:
            saved.setdefault(match.group(1), path)
    numbered = sorted((int(label) for label in saved if label != 'latest'))
    if iteration == 'latest':
        if 'latest' in saved:
            return Checkpoint(saved['latest'], 'latest', 'net_g_latest: written when training ended')
        if numbered:
            return Checkpoint(saved[str(numbered[-1])], str(numbered[-1]),
                              f'no net_g_latest (training has not ended): the newest, iteration {numbered[-1]}')
        raise ESCError(f'--iter: {models} holds no net_g_*.pth or net_g_*.safetensors weights yet')
    if iteration not in saved:
        available = ', '.join([str(n) for n in numbered] + ['latest'] * ('latest' in saved)) or 'none'
        raise ESCError(f'--iter: {models} holds no net_g_{iteration} weights (saved: {available})')
    return Checkpoint(saved[iteration], iteration, f'iteration {iteration}, as asked')


def table_key(run_name: str, scale: int, variant: Optional[str], detected: Optional[str] = None,
              training_data: Optional[str] = None) -> Tuple[str, int, str]:
    """(variant label, scale, training data) of the paper's row: from ``--variant``, else the variant read off the
    checkpoint (``detected``, e.g. 'ESC-light'), else the run's name; the data from the run's name or the name of
    its training set (``training_data``), DIV2K where neither says DFLIP."""
    match = RUN_NAME.match(run_name)
    data = (match['data'] if match else None) or ('DFLIP' if 'DFLIP' in (training_data or '') else 'DIV2K')
    paper_variants = set(VARIANT_LABELS.values()) - {'Bicubic'}
    if variant is not None:
        return variant, scale, data
    if detected in paper_variants:
        return detected, scale, data
    if match and int(match['scale']) == scale:
        return VARIANT_LABELS[match['variant']], scale, data
    return run_name, scale, '-'


def read_weights(path: Path, param_key: str) -> Tuple[str, Optional[str], str]:
    """(what the file holds under the name the logs use, the ``param_key_g`` that reads it, why if not as asked) for the weights
    ``param_key`` asks for: a checkpoint without ``params_ema`` is evaluated on its ``params``, and said to be."""
    state_dict, metadata = read_checkpoint(str(path), param_key, option='--param-key')
    taken = metadata.get('param_key')
    if taken is None:
        return 'weights', None, 'a bare state dict (no params/params_ema keys)'
    if taken != param_key:
        return taken, taken, f'it holds no {param_key}: its {taken} are evaluated'
    return taken, taken, ''


def detected_variant(path: Path, param_key: Optional[str], network: Dict[str, Any]) -> Optional[str]:
    """The named configuration ('ESC', 'ESC-light', 'ESC-FP', ...) the checkpoint is, read off its tensors (and the
    safetensors metadata where there is some); None where it is no named one."""
    from esc.upscaler import checkpoint_network, variant_name

    state_dict, metadata = read_checkpoint(str(path), param_key, option='--param-key')
    try:
        options = checkpoint_network(state_dict, metadata, source=str(path))
    except ESCError:
        options = network  # not recognised from its tensors alone: the run's own network options
    name = variant_name(options)
    return None if name.endswith('(custom)') else name


def check_benchmarks(datasets: Dict[str, Any], options: Path) -> List[Tuple[str, str]]:
    """(phase, benchmark name) of every dataset of the test options, each folder checked to exist first."""
    benchmarks = []
    for phase, dataset in datasets.items():
        for key in ('dataroot_gt', 'dataroot_lq'):
            folder = dataset.get(key)
            if isinstance(folder, str) and not osp.isdir(folder):
                raise ESCError(f'{folder}: no such folder ({dataset.get("name")}, datasets.{phase}.{key} of {options}; '
                               f'paths are relative to {os.getcwd()}); datasets/README.md says where to get it and '
                               f'how to make its LR_bicubic folders')
        benchmarks.append((phase, dataset.get('name', phase)))
    return benchmarks


def load_scores(state_file: Path, identity: Dict[str, Any]) -> Optional[Scores]:
    """Scores saved for this very weights file and parameter key; None where no evaluation of it was started."""
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return None
    if state.get('weights') != identity:
        return None
    return {name: tuple(value) for name, value in state.get('scores', {}).items()}


def save_scores(state_file: Path, identity: Dict[str, Any], scores: Scores) -> None:
    temporary = state_file.with_name(f'.{state_file.name}.tmp')
    temporary.write_text(json.dumps({'weights': identity, 'scores': scores}, indent=1))
    os.replace(temporary, state_file)


def scores_in(results_folder: Path) -> Scores:
    """The benchmarks a test run in ``results_folder`` finished (its logs' complete PSNR/SSIM blocks)."""
    scores: Scores = {}
    for log in sorted(results_folder.glob(f'test_{results_folder.name}_*.log')):
        scores.update(parse_test_log(log))
    return scores


def complexity_of(network: Dict[str, Any], scale: int) -> Tuple[int, float]:
    """(#Params in K, #FLOPs in G at HD output) of the run's network, counted as scripts/make_tables.py does."""
    import esc.compat  # noqa: F401  (registers ESC's networks with basicsr)
    from basicsr.archs import build_network

    from esc.evaluation.complexity import count_flops, count_parameters

    net = build_network({**network, 'attn_type': 'naive'})
    return round(count_parameters(net) / 1e3), count_flops(net, scale) / 1e9


def run_test(argv: List[str]) -> int:
    """esc/test.py with ``argv``, in this process; its exit status (2 with its one line for bad input)."""
    from esc.test import test  # the test loop (registers ESC with basicsr): imported only when there is work

    try:
        return test(argv)
    except ESCError as exc:
        print(f'error: {exc}', file=sys.stderr, flush=True)
        return 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('run', metavar='RUN', help='the run folder (experiments/<name>) or its name')
    p.add_argument('--iter', default='latest', help="'latest' (default) or the iteration of a saved net_g_<N>")
    p.add_argument('--param-key', default=EMA_KEY, help='params_ema (EMA weights, default) or params')
    p.add_argument('--options', type=Path, help='test options whose datasets and metrics to use (default: '
                   'options/test/ESC/test_ESC_X<scale>_DIV2K.yml of this checkout)')
    p.add_argument('--variant', choices=sorted(set(VARIANT_LABELS.values()) - {'Bicubic'}),
                   help="the paper's row to compare with (default: from the run's name)")
    return p


def run(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    folder = find_run(args.run)
    trained = run_options(folder)
    run_name, scale = str(trained.get('name', folder.name)), int(trained['scale'])
    checkpoint = pick_checkpoint(folder / 'models', args.iter)
    held, param_key, why = read_weights(checkpoint.path, args.param_key)  # one line where neither key is there
    options_file = args.options or CHECKOUT / 'options' / 'test' / 'ESC' / f'test_ESC_X{scale}_DIV2K.yml'
    if not options_file.is_file():
        raise ESCError(f'--options: no such option file {options_file}')
    template = yaml.safe_load(options_file.read_text())
    if int(template.get('scale', 0)) != scale:
        raise ESCError(f"--options: {options_file} evaluates x{template.get('scale')}, the run trained x{scale}")
    key_label = 'ema' if held == EMA_KEY else held
    evaluation, results = f'{run_name}_{checkpoint.label}_{key_label}', Path('results')
    print(f'Evaluating {checkpoint.path} [{held}] ({"; ".join(filter(None, (checkpoint.reason, why)))}) with the datasets and metrics of '
          f'{options_file}; results in {results / evaluation}/', flush=True)
    benchmarks = check_benchmarks(template['datasets'], options_file)

    results.mkdir(exist_ok=True)
    state_file, identity = results / f'{evaluation}.json', {**checkpoint.identity(), 'param_key': held}
    started = load_scores(state_file, identity)
    scores = {} if started is None else {**started, **scores_in(results / evaluation)}  # what an interrupted run finished
    scores = {name: value for name, value in scores.items() if name in dict(benchmarks).values()}
    save_scores(state_file, identity, scores)
    remaining = {phase: template['datasets'][phase] for phase, name in benchmarks if name not in scores}
    if scores:
        print(f'Already evaluated with these weights ({state_file}): {", ".join(scores)}', flush=True)
    status = 0
    if remaining:
        test_opt = {**template, 'name': evaluation, 'datasets': remaining, 'network_g': trained['network_g'],
                    'path': {**(template.get('path') or {}), 'pretrain_network_g': str(checkpoint.path),
                             'param_key_g': param_key, 'strict_load_g': True}}
        options_written = results / f'{evaluation}.yml'
        options_written.write_text(yaml.safe_dump(test_opt, sort_keys=False))
        print(f'Running: python esc/test.py -opt {options_written}  ({", ".join(d["name"] for d in remaining.values())})',
              flush=True)
        status = run_test(['-opt', str(options_written)])
        scores.update(scores_in(results / evaluation))
        save_scores(state_file, identity, scores)
    if status != 0:
        print(f'esc/test.py ended with status {status}; the benchmarks it finished are kept in {state_file} and '
              f'the next run of this command evaluates the rest', file=sys.stderr)
        return status
    unscored = [name for _, name in benchmarks if name not in scores]
    if unscored:
        raise ESCError(f'--options: esc/test.py wrote no PSNR and SSIM for {", ".join(unscored)} (see '
                       f'{results / evaluation}/); the test options need both metrics')

    training_data = str(((trained.get('datasets') or {}).get('train') or {}).get('name', ''))
    key = table_key(run_name, scale, args.variant, detected_variant(checkpoint.path, param_key, trained['network_g']),
                    training_data)
    rows = table_rows({key: scores}, {key[:2]: complexity_of(trained['network_g'], scale)}, {}, with_paper=True)
    table = to_markdown(rows)
    (results / f'{evaluation}.md').write_text(f'{checkpoint.path} [{held}]\n\n{table}\n')
    (results / f'{evaluation}.csv').write_text(to_csv(rows))
    print(table)
    print(f'Written: {results / evaluation}.md and .csv', flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    run_command(run, argv)


if __name__ == '__main__':
    main()
