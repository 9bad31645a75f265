"""Collect ``esc/test.py`` results into the paper's table layout (Tables 2 and 4)."""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from esc.errors import ESCError
from esc.utils.paper import BENCHMARKS, TABLE2, TABLE4, PaperRow

RUN_NAME = re.compile(r'^(?P<variant>ESC_light|ESC_FP|ESC|Bicubic)_X(?P<scale>\d)(?:_(?P<data>DIV2K|DFLIP))?$')
VARIANT_LABELS = {'ESC': 'ESC', 'ESC_light': 'ESC-light', 'ESC_FP': 'ESC-FP', 'Bicubic': 'Bicubic'}
Scores = Dict[str, Tuple[float, float]]


def parse_test_log(path: Path) -> Scores:
    """(PSNR, SSIM) per dataset from a basicsr test log (its 'Validation <name>' blocks)."""
    scores: Dict[str, Dict[str, float]] = {}
    dataset = None
    for line in path.read_text(errors='replace').splitlines():
        head = re.search(r'Validation (\S+)', line)
        if head:
            dataset = head.group(1)
            continue
        metric = re.match(r'\s*# (psnr|ssim): ([-\d.]+)', line)
        if metric and dataset:
            scores.setdefault(dataset, {})[metric.group(1)] = float(metric.group(2))
    return {name: (m['psnr'], m['ssim']) for name, m in scores.items() if {'psnr', 'ssim'} <= m.keys()}


def collect_results(results_root: Path) -> Dict[Tuple[str, int, str], Scores]:
    """Scores of every ``results/<name>/`` whose name follows the option files' ``<Variant>_X<r>_<DATA>``,
    from its newest test log, keyed by (variant label, scale, training data)."""
    if not results_root.is_dir():
        raise ESCError(f'--results: no such folder {results_root}')
    table: Dict[Tuple[str, int, str], Scores] = {}
    for folder in sorted(p for p in results_root.iterdir() if p.is_dir()):
        match = RUN_NAME.match(folder.name)
        logs = sorted(folder.glob(f'test_{folder.name}_*.log'))
        if match and logs:
            key = (VARIANT_LABELS[match['variant']], int(match['scale']), match['data'] or '-')
            table[key] = parse_test_log(logs[-1])
    return table


def load_speed(path: Optional[Path]) -> Dict[Tuple[str, int], Tuple[float, float]]:
    """(latency ms, memory MB) per (variant, scale) from a JSON list of records with those four fields."""
    if path is None:
        return {}
    try:
        records = json.loads(path.read_text())
        return {(r['variant'], int(r['scale'])): (float(r['latency_ms']), float(r['memory_mb'])) for r in records}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ESCError(f'--speed: cannot read {path}: {exc}') from None


def _fmt(value: Optional[float], digits: int) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def table_rows(results: Dict[Tuple[str, int, str], Scores], complexity: Dict[Tuple[str, int], Tuple[int, float]],
               speed: Dict[Tuple[str, int], Tuple[float, float]], with_paper: bool) -> List[List[str]]:
    """Rows of [method, scale, latency, memory, FLOPs, params, one 'PSNR/SSIM' per benchmark]; with the
    paper's row and our difference (ours − paper) after each of ours where the paper has one."""
    rows = []
    for (variant, scale, data), scores in sorted(results.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        latency, memory = speed.get((variant, scale), (None, None))
        params_k, flops_g = complexity.get((variant, scale), (None, None))
        ours = [f'{variant} ({data})', f'x{scale}', _fmt(latency, 1), _fmt(memory, 0), _fmt(flops_g, 1),
                _fmt(params_k, 0)]
        ours += [f'{scores[b][0]:.2f}/{scores[b][1]:.4f}' if b in scores else '-' for b in BENCHMARKS]
        rows.append(ours)
        paper: Optional[PaperRow] = (TABLE4 if data == 'DFLIP' else TABLE2).get((variant, scale))
        if with_paper and paper is not None:
            rows.append([f'{variant} (paper)', f'x{scale}', _fmt(paper.latency_ms, 1), _fmt(paper.memory_mb, 0),
                         _fmt(paper.flops_g, 1), str(paper.params_k)]
                        + [f'{p:.2f}/{s:.4f}' for p, s in paper.psnr_ssim])
            rows.append([f'{variant} (ours − paper)', f'x{scale}', '', '', '', '']
                        + [f'{scores[b][0] - p:+.2f}/{scores[b][1] - s:+.4f}' if b in scores else '-'
                           for b, (p, s) in zip(BENCHMARKS, paper.psnr_ssim)])
    return rows


HEADER = ['Method', 'Scale', 'Latency (ms)', 'Mem (MB)', '#FLOPs (G)', '#Params (K)', *BENCHMARKS]


def to_markdown(rows: Iterable[List[str]]) -> str:
    lines = ['| ' + ' | '.join(HEADER) + ' |', '|' + '---|' * len(HEADER)]
    return '\n'.join(lines + ['| ' + ' | '.join(row) + ' |' for row in rows])


def to_csv(rows: Iterable[List[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(HEADER)
    writer.writerows(rows)
    return buffer.getvalue()
