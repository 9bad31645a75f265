"""Turn esc/test.py results into the paper's Table 2/4 layout (markdown and CSV).

    python esc/test.py -opt options/test/ESC/test_ESC_X2_DIV2K.yml     # writes results/ESC_X2_DIV2K/
    python scripts/make_tables.py --paper                               # every results/<Variant>_X<r>_<DATA>
    python scripts/make_tables.py --csv tables.csv --speed speed.json
    python scripts/make_tables.py --paper --figure psnr_flops.png --figure-benchmark Urban100

--paper adds the paper's row and the difference (ours − paper) under each of ours. #Params and #FLOPs
(fvcore, HD output) are counted for every row. --speed reads latency/memory records (JSON list of
{variant, scale, latency_ms, memory_mb}, as scripts/benchmark.py --json writes them).
--figure draws PSNR on one benchmark (Urban100 by default, the set of the paper's Figure 1) against #FLOPs and
against #Params for every row, the paper's point beside each (matplotlib: pip install -e ".[plots]").
"""
import argparse
from pathlib import Path

import _checkout  # noqa: F401  (this checkout's esc on sys.path; before any esc import)
from esc.archs import build_variant
from esc.errors import ESCError
from esc.evaluation.complexity import count_flops, count_parameters
from esc.evaluation.paper import BENCHMARKS
from esc.evaluation.results import (FIGURE_FORMATS, check_figure, collect_results, draw_figure, figure_points,
                                    load_speed, table_rows, to_csv, to_markdown)
from esc.utils.cli import one_line_errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--results', type=Path, default=Path('results'), help='folder of esc/test.py results')
    parser.add_argument('--paper', action='store_true', help="print the paper's rows and the differences")
    parser.add_argument('--speed', type=Path, help='latency/memory records (JSON)')
    parser.add_argument('--csv', type=Path, help='also write the table as CSV to this file')
    parser.add_argument('--figure', type=Path,
                        help=f"also draw PSNR against #FLOPs and #Params to this file ({', '.join(FIGURE_FORMATS)})")
    parser.add_argument('--figure-benchmark', default='Urban100',
                        help=f"the benchmark the figure's PSNR is on: {', '.join(BENCHMARKS)} (default Urban100)")
    args = parser.parse_args()
    with one_line_errors():
        if args.figure is not None:
            check_figure(args.figure, args.figure_benchmark)  # before the counting
        results = collect_results(args.results)
        if not results:
            raise ESCError(f'--results: no <Variant>_X<r>_<DATA> test results under {args.results}')
        complexity = {}
        for variant, scale, _ in results:
            if variant == 'Bicubic':
                continue
            net = build_variant(variant, scale, attn_type='naive')
            complexity[variant, scale] = (round(count_parameters(net) / 1e3), count_flops(net, scale) / 1e9)
        rows = table_rows(results, complexity, load_speed(args.speed), args.paper)
        if args.figure is not None:
            draw_figure(figure_points(results, complexity, args.figure_benchmark), args.figure_benchmark, args.figure)
    print(to_markdown(rows))
    if args.csv:
        args.csv.write_text(to_csv(rows))
    if args.figure is not None:
        print(f'figure: {args.figure}')


if __name__ == '__main__':
    main()
