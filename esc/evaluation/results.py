"""Collect ``esc/test.py`` results into the paper's table layout (Tables 2 and 4) and its PSNR-versus-#FLOPs and
versus-#Params figure, the paper's own points beside the measured ones."""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, List, NamedTuple, Optional, Tuple

from esc.errors import ESCError
from esc.evaluation.paper import BENCHMARKS, TABLE2, TABLE4, PaperRow
from esc.io.checkpoint import write_atomic

if TYPE_CHECKING:
    import matplotlib.figure

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


class FigurePoint(NamedTuple):
    """One point of the PSNR-versus-complexity figure: a measured row or the paper's row for the same network."""

    variant: str
    scale: int
    data: str  # the training data ('DIV2K', 'DFLIP'), or 'paper'
    flops_g: float
    params_k: float
    psnr: float

    @property
    def measured(self) -> bool:
        return self.data != 'paper'


def benchmark_index(benchmark: str) -> int:
    """The place of ``benchmark`` in the paper's rows; an ESCError naming the option where it has none."""
    if benchmark not in BENCHMARKS:
        raise ESCError(f"--figure-benchmark: {benchmark!r} is not one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS.index(benchmark)


def figure_points(results: Dict[Tuple[str, int, str], Scores], complexity: Dict[Tuple[str, int], Tuple[int, float]],
                  benchmark: str) -> List[FigurePoint]:
    """The points the figure draws on ``benchmark``: every result that has a score there and a complexity count, each
    followed by the paper's point for that network and training data where the paper has one (its own #FLOPs and
    #Params, as printed). Bicubic has no count and is left out."""
    index = benchmark_index(benchmark)
    points = []
    for (variant, scale, data), scores in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2])):
        if benchmark not in scores or (variant, scale) not in complexity:
            continue
        params_k, flops_g = complexity[variant, scale]
        points.append(FigurePoint(variant, scale, data, flops_g, params_k, scores[benchmark][0]))
        paper: Optional[PaperRow] = (TABLE4 if data == 'DFLIP' else TABLE2).get((variant, scale))
        if paper is not None and paper.psnr_ssim is not None:
            paper_psnr = paper.psnr_ssim[index][0]
            points.append(FigurePoint(variant, scale, 'paper', paper.flops_g, paper.params_k, paper_psnr))
    return points


FIGURE_FORMATS = ('.png', '.svg', '.pdf')


def check_figure(path: Path, benchmark: str) -> None:
    """Refuse a figure file of a format not written here, or a benchmark the paper has no column for, before any
    work."""
    benchmark_index(benchmark)
    if path.suffix.lower() not in FIGURE_FORMATS:
        raise ESCError(f"--figure: {path} is not one of {', '.join(FIGURE_FORMATS)} (by its extension)")


FIGURE_AXES = (('flops_g', '#FLOPs (G, 1280×720 output)'), ('params_k', '#Params (K)'))


def draw_figure(points: List[FigurePoint], benchmark: str, path: Path) -> 'matplotlib.figure.Figure':
    """PSNR on ``benchmark`` against #FLOPs (left) and #Params (right), one row of panels per scale, written to
    ``path`` (any format matplotlib writes, by extension). Measured points are filled circles named by network and
    training data; the paper's are hollow diamonds, joined to the measured point of the same network by a dotted
    line. Returns the figure (closed: nothing stays open in pyplot)."""
    check_figure(path, benchmark)
    try:
        import matplotlib
        matplotlib.use('Agg')
        from matplotlib import pyplot as plt
    except ImportError:
        raise ESCError('--figure needs matplotlib: pip install -e ".[plots]"') from None
    if not points:
        raise ESCError(f'--figure: no result with a {benchmark} score and a complexity count to draw')
    scales = sorted({p.scale for p in points})
    figure, axes = plt.subplots(len(scales), 2, figsize=(10, 3.8 * len(scales)), squeeze=False)
    for row, scale in enumerate(scales):
        measured = [p for p in points if p.scale == scale and p.measured]
        paper = [p for p in points if p.scale == scale and not p.measured]
        for column, (field, title) in enumerate(FIGURE_AXES):
            ax = axes[row][column]
            for point in measured:
                twin = next((q for q in paper if q.variant == point.variant), None)
                if twin is not None:
                    ax.plot([getattr(point, field), getattr(twin, field)], [point.psnr, twin.psnr], ':', color='grey',
                            linewidth=1)
                ax.annotate(f'{point.variant} ({point.data})', (getattr(point, field), point.psnr),
                            textcoords='offset points', xytext=(6, 4), fontsize=8)
            ax.scatter([getattr(p, field) for p in measured], [p.psnr for p in measured], s=40, color='tab:blue',
                       label='measured here', zorder=3)
            if paper:
                ax.scatter([getattr(p, field) for p in paper], [p.psnr for p in paper], s=50, marker='D',
                           facecolors='none', edgecolors='tab:red', label='paper (Table 2/4)', zorder=3)
            ax.set_xlabel(title)
            ax.set_ylabel(f'PSNR on {benchmark} ×{scale} (dB, Y)')
            ax.grid(True, alpha=0.3)
            ax.margins(x=0.25, y=0.25)
            ax.legend(fontsize=8, loc='lower right')
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format=path.suffix.lstrip('.').lower(), dpi=110)
    plt.close(figure)
    write_atomic(path, buffer.getvalue())
    return figure
