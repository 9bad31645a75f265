"""Turn esc/test.py results into the paper's Table 2/4 layout (markdown and CSV).

    python esc/test.py -opt options/test/ESC/test_ESC_X2_DIV2K.yml     # writes results/ESC_X2_DIV2K/
    python scripts/make_tables.py --paper                               # every results/<Variant>_X<r>_<DATA>
    python scripts/make_tables.py --csv tables.csv --speed speed.json

--paper adds the paper's row and the difference (ours − paper) under each of ours. #Params and #FLOPs
(fvcore, HD output) are counted for every row. --speed reads latency/memory records (JSON list of
{variant, scale, latency_ms, memory_mb}, as scripts/benchmark.py --json writes them).
"""
import argparse
from pathlib import Path

import _checkout  # noqa: F401  (this checkout's esc on sys.path; before any esc import)
from esc.archs import build_variant
from esc.errors import ESCError
from esc.utils.cli import one_line_errors
from esc.utils.complexity import count_flops, count_parameters
from esc.utils.results import collect_results, load_speed, table_rows, to_csv, to_markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--results', type=Path, default=Path('results'), help='folder of esc/test.py results')
    parser.add_argument('--paper', action='store_true', help="print the paper's rows and the differences")
    parser.add_argument('--speed', type=Path, help='latency/memory records (JSON)')
    parser.add_argument('--csv', type=Path, help='also write the table as CSV to this file')
    args = parser.parse_args()
    with one_line_errors():
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
    print(to_markdown(rows))
    if args.csv:
        args.csv.write_text(to_csv(rows))


if __name__ == '__main__':
    main()
