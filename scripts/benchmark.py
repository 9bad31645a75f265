"""Measure latency and memory of the ESC networks (Sec. 4.2) or of window attention alone (Table 1).

    python scripts/benchmark.py --variants ESC --scales 4 --markdown          # HD output, LR 180x320
    python scripts/benchmark.py --json speed.json     # then: scripts/make_tables.py --speed speed.json
    python scripts/benchmark.py --variants ESC-light --scales 4 --lr-size 64x64 --attn-type naive
    python scripts/benchmark.py table1 --markdown                              # Table 1 layout
    python scripts/benchmark.py table1 --sizes 64 --window-sizes 16 24 32 --case-timeout 120
    python scripts/benchmark.py --variants ESC --scales 4 --compare-naive     # ratio to explicit attention
    python scripts/benchmark.py scaling --variant ESC --scale 4               # cost per megapixel, 4 sizes
    python scripts/benchmark.py train --compare-naive       # ESC-light x2 training step, batch 8 of 64x64

Defaults: warm-up 3 / 10 timed runs on CPU, 10 / 100 on CUDA (Table 1 on CPU: 1 / 3). Latency is the
median of the timed runs (min/max and IQR beside it). Memory in MB (bytes / 2**20): on CUDA
torch.cuda.max_memory_allocated, on CPU the peak-RSS growth over the timed runs, each case in a fresh
subprocess; see esc/utils/benchmark.py. Bad input is reported as one `error: ...` line, exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import _checkout  # noqa: F401  (this checkout's esc on sys.path; before any esc import)
from esc.utils.checkpoint import write_atomic  # noqa: E402
from esc.utils.cli import one_line_errors  # noqa: E402
from esc.upscaler import DTYPES  # noqa: E402
from esc.utils.benchmark import (NAIVE_RATIO_HEADER, NETWORK_HEADER, SCALING_HEADER,  # noqa: E402
                                 TABLE1_DIM, TABLE1_HEADER, TABLE1_HEADS, TABLE1_WINDOW_SIZES, TRAIN_HEADER, RunSettings,
                                 attention_spec, backend_label, benchmark_network, fused_attention_type,
                                 iter_table1, make_settings, memory_note, network_row, network_spec, parse_size,
                                 measure, scaling_row, speed_entry, stream_table, table1_cells, train_row, train_spec,
                                 with_naive_ratio)

TABLE1_CPU_SCHEDULE = (1, 3)


def _emit(line: str) -> None:
    print(line, flush=True)


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--device', default='auto', help='cpu, cuda or auto (cuda where available)')
    parser.add_argument('--dtype', default='fp32', help=f"autocast precision: {', '.join(DTYPES)} (fp16 on CUDA only)")
    parser.add_argument('--warmup', type=int, default=None, help='untimed passes before timing')
    parser.add_argument('--runs', type=int, default=None, help='timed passes')
    parser.add_argument('--threads', type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument('--markdown', action='store_true', help='print a markdown table')
    parser.add_argument('--in-process', action='store_true',
                        help='measure in this process (default on CPU: a fresh subprocess per case)')
    parser.add_argument('--case-timeout', type=float, default=None, help='seconds allowed per subprocess case')
    parser.add_argument('--malloc', default='tuned', help='tuned (glibc keeps freed large blocks, see '
                        'esc.archs.streaming.tune_glibc_malloc) or default (glibc as it comes)')


def network_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog='subcommands: table1, scaling, train (see their -h)',
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--variants', nargs='+', default=['ESC', 'ESC-light', 'ESC-FP'],
                        help='ESC, ESC-light, ESC-FP, ESC-Real')
    parser.add_argument('--scales', nargs='+', type=int, default=[2, 3, 4])
    parser.add_argument('--attn-type', default='auto', help='auto, flex, sdpa or naive')
    parser.add_argument('--lr-size', default=None, help='LR input HxW (default: 720//r x 1280//r, an HD output)')
    parser.add_argument('--json', type=Path, default=None,
                        help='also write the records here, as scripts/make_tables.py --speed reads them')
    parser.add_argument('--streaming', default='auto', help='row-strip inference: auto (on CPU), on, off')
    parser.add_argument('--compare-naive', action='store_true',
                        help='also measure the explicit-attention path (naive attention, whole image) in the same run '
                             'and print the ratios')
    _common_options(parser)
    return parser


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='benchmark.py train',
                                     description='time of one training step (L1 loss, backward, AdamW), fp32')
    parser.add_argument('--variant', default='ESC-light', help='ESC, ESC-light, ESC-FP, ESC-Real')
    parser.add_argument('--scale', type=int, default=2)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--lr-size', default='64x64', help='LR patch HxW')
    parser.add_argument('--attn-type', default='auto', help='auto, flex, sdpa or naive')
    parser.add_argument('--compare-naive', action='store_true',
                        help='also time explicit attention in the same run and print the ratio')
    _common_options(parser)
    return parser


def table1_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='benchmark.py table1',
                                     description='Table 1: window self-attention alone, w/o and w/ a fused kernel')
    parser.add_argument('--sizes', nargs='+', default=['64', '288'], help='H or HxW of the input (C = --dim)')
    parser.add_argument('--window-sizes', nargs='+', type=int, default=list(TABLE1_WINDOW_SIZES))
    parser.add_argument('--dim', type=int, default=TABLE1_DIM)
    parser.add_argument('--heads', type=int, default=TABLE1_HEADS)
    parser.add_argument('--fused', default='auto', help="'w/ FA' backend: auto (flex on CUDA, sdpa on CPU), flex, sdpa")
    _common_options(parser)
    return parser


SCALING_SIZES = ('180x320', '360x640', '540x960', '720x1280')


def scaling_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='benchmark.py scaling',
                                     description='latency and memory of one network at several LR sizes, per megapixel')
    parser.add_argument('--variant', default='ESC', help='ESC, ESC-light, ESC-FP, ESC-Real')
    parser.add_argument('--scale', type=int, default=4)
    parser.add_argument('--attn-type', default='auto', help='auto, flex, sdpa or naive')
    parser.add_argument('--sizes', nargs='+', default=list(SCALING_SIZES), help='LR sizes HxW (default: 4 up to 720x1280)')
    _common_options(parser)
    return parser


def _settings(args: argparse.Namespace, cpu_schedule: Optional[Tuple[int, int]] = None) -> RunSettings:
    settings = make_settings(args.device, args.dtype, args.warmup, args.runs, args.threads, args.malloc)
    if settings.device == 'cpu' and cpu_schedule is not None:
        warmup = cpu_schedule[0] if args.warmup is None else args.warmup
        runs = cpu_schedule[1] if args.runs is None else args.runs
        settings = make_settings(args.device, args.dtype, warmup, runs, args.threads, args.malloc)
    return settings


def _threads_note(device: str, threads: Sequence[int]) -> str:
    if device != 'cpu' or not threads:
        return ''
    return f" CPU threads: {', '.join(str(n) for n in sorted(set(threads)))}."


def _print_table(header: Sequence[str], rows: Iterator[List[str]], markdown: bool, device: str,
                 threads: List[int]) -> None:
    """Stream the table row by row, then how memory was measured and the threads the rows filled in."""
    stream_table(header, rows, markdown, _emit)
    _emit('')
    _emit(memory_note(device) + _threads_note(device, threads))


def run_network(argv: Sequence[str]) -> None:
    args = network_parser().parse_args(argv)
    settings = _settings(args)
    lr_size = parse_size(args.lr_size) if args.lr_size is not None else None
    for variant in args.variants:
        for scale in args.scales:
            network_spec(variant, scale, settings, args.attn_type, lr_size, args.streaming)
    isolate = False if args.in_process else None
    threads: List[int] = []
    entries: List[dict] = []

    def rows() -> Iterator[List[str]]:
        for variant in args.variants:
            for scale in args.scales:
                record = measure(network_spec(variant, scale, settings, args.attn_type, lr_size, args.streaming),
                                 isolate=isolate, timeout=args.case_timeout)
                threads.append(record.threads)
                entries.append(speed_entry(record))
                if args.json is not None:  # rewritten after every case, so a long run loses nothing to a kill
                    write_atomic(args.json, json.dumps(entries, indent=1).encode())
                if not args.compare_naive:
                    yield network_row(record)
                    continue
                naive = measure(network_spec(variant, scale, settings, 'naive', lr_size, streaming='off'),
                                isolate=isolate, timeout=args.case_timeout)
                yield with_naive_ratio(network_row(record), record, naive)

    header = NETWORK_HEADER + (NAIVE_RATIO_HEADER if args.compare_naive else ())
    _print_table(header, rows(), args.markdown, settings.device, threads)


def run_table1(argv: Sequence[str]) -> None:
    args = table1_parser().parse_args(argv)
    settings = _settings(args, TABLE1_CPU_SCHEDULE)
    sizes = [parse_size(s) for s in args.sizes]
    fused = fused_attention_type(settings.device, args.fused)
    for size in sizes:
        for ws in args.window_sizes:
            attention_spec(size, ws, settings, fused, args.dim, args.heads)
    isolate = False if args.in_process else None
    _emit(f'w/o FA: {backend_label("naive", settings.device)}; w/ FA: {backend_label(fused, settings.device)}; '
          f'{settings.device}, {settings.dtype}, warm-up {settings.warmup}, {settings.runs} timed runs '
          '(median latency).')
    _emit('')
    threads: List[int] = []

    def rows() -> Iterator[List[str]]:
        for row in iter_table1(settings, sizes, args.window_sizes, fused, args.dim, args.heads, isolate=isolate,
                               timeout=args.case_timeout):
            threads.extend(record.threads for record in (row.naive, row.fused) if record is not None)
            yield table1_cells(row, args.dim)

    _print_table(TABLE1_HEADER, rows(), args.markdown, settings.device, threads)


def run_scaling(argv: Sequence[str]) -> None:
    args = scaling_parser().parse_args(argv)
    settings = _settings(args, cpu_schedule=(1, 2))
    sizes = [parse_size(size) for size in args.sizes]
    for size in sizes:
        network_spec(args.variant, args.scale, settings, args.attn_type, size)
    isolate = False if args.in_process else None
    _emit(f'{args.variant} x{args.scale}, attention {args.attn_type}, {settings.device}, {settings.dtype}, '
          f'warm-up {settings.warmup}, {settings.runs} timed runs (median latency).')
    _emit('')
    threads: List[int] = []

    def rows() -> Iterator[List[str]]:
        for size in sizes:
            record = benchmark_network(args.variant, args.scale, settings, args.attn_type, size, isolate=isolate,
                                       timeout=args.case_timeout)
            threads.append(record.threads)
            yield scaling_row(record)

    _print_table(SCALING_HEADER, rows(), args.markdown, settings.device, threads)


def run_train(argv: Sequence[str]) -> None:
    args = train_parser().parse_args(argv)
    settings = _settings(args, cpu_schedule=(1, 5))
    specs = [train_spec(args.variant, args.scale, settings, args.attn_type, args.batch, parse_size(args.lr_size))]
    if args.compare_naive:
        specs.append(train_spec(args.variant, args.scale, settings, 'naive', args.batch, parse_size(args.lr_size)))
    isolate = False if args.in_process else None
    records: List = []

    def rows() -> Iterator[List[str]]:
        for spec in specs:
            records.append(measure(spec, isolate=isolate, timeout=args.case_timeout))
            yield train_row(records[-1])

    stream_table(TRAIN_HEADER, rows(), args.markdown, _emit)
    _emit('')
    if len(records) == 2:
        _emit(f'Speed-up vs explicit attention: {records[1].median_ms / records[0].median_ms:.2f}x '
              f'(median step {records[0].median_ms:.0f} vs {records[1].median_ms:.0f} ms).')
    _emit('Memory: ' + records[0].memory_method + '.' + _threads_note(settings.device, [r.threads for r in records]))


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    with one_line_errors():
        if argv and argv[0] == 'train':
            run_train(argv[1:])
        elif argv and argv[0] == 'table1':
            run_table1(argv[1:])
        elif argv and argv[0] == 'scaling':
            run_scaling(argv[1:])
        else:
            run_network(argv)


if __name__ == '__main__':
    main()
