"""Measure latency and memory of the ESC networks (Sec. 4.2) or of window attention alone (Table 1).

    python scripts/benchmark.py --variants ESC --scales 4 --markdown          # HD output, LR 180x320
    python scripts/benchmark.py --json speed.json     # then: scripts/make_tables.py --speed speed.json
    python scripts/benchmark.py --variants ESC-light --scales 4 --lr-size 64x64 --attn-type naive
    python scripts/benchmark.py table1 --markdown                              # Table 1 layout
    python scripts/benchmark.py table1 --sizes 64 --window-sizes 16 24 32 --case-timeout 120
    python scripts/benchmark.py --variants ESC --scales 4 --compare-naive     # ratio to explicit attention
    python scripts/benchmark.py scaling --variant ESC --scale 4               # cost per megapixel, 4 sizes
    python scripts/benchmark.py train --compare-naive       # ESC-light x2 training step, batch 8 of 64x64
    python scripts/benchmark.py --variants ESC --scales 4 --compile reduce-overhead --channels-last --tf32
    python scripts/benchmark.py speedup      # GPU: the fast path against the plain one, fp32 and bf16 (issue 13)
    python scripts/benchmark.py sizes        # one network over 14 test-set image sizes in one process
    python scripts/benchmark.py flashbias --checkpoint net_g_latest.pth   # exact vs FlashBias ranks (issue 14)
    python scripts/benchmark.py compare --markdown   # ESC against SRFormer-light, ATD-light, HiT-SRF at x4 (issue 31)
    python scripts/benchmark.py compare --lr-size 90x160 --baselines SRFormer-lt HiT-SRF --case-timeout 900

Defaults: warm-up 3 / 10 timed runs on CPU, 10 / 100 on CUDA (Table 1 on CPU: 1 / 3). Latency is the
median of the timed runs (min/max and IQR beside it). Memory in MB (bytes / 2**20): on CUDA
torch.cuda.max_memory_allocated, on CPU the peak-RSS growth over the timed runs, each case in a fresh
subprocess; see esc/evaluation/benchmark.py. Bad input is reported as one `error: ...` line, exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import _checkout  # noqa: F401  (this checkout's esc on sys.path; before any esc import)
from esc.acceleration import COMPILE_MODES, DTYPES, FAST, FastPath  # noqa: E402
from esc.errors import ESCError  # noqa: E402
from esc.evaluation.benchmark import (NAIVE_RATIO_HEADER, NETWORK_HEADER, SCALING_HEADER, SIZES_HEADER,  # noqa: E402
                               SPEEDUP_HEADER, SPEEDUP_NETWORKS, SPEEDUP_TRAINING, TABLE1_DIM, TABLE1_HEADER,
                               TABLE1_HEADS, TABLE1_WINDOW_SIZES, TEST_SET_LR_SIZES, TRAIN_HEADER, RunSettings,
                               attention_spec, backend_label, benchmark_network, check_variant, evaluate_sizes,
                               fused_attention_type, iter_table1, make_settings, memory_note, network_row,
                               network_spec, parse_size, measure, scaling_row, size_cells, speed_entry,
                               speedup_cells, speedup_row, stream_table, table1_cells, train_row, train_spec,
                               with_naive_ratio)
from esc.io.checkpoint import write_atomic  # noqa: E402
from esc.upscaler import load_model, resolve_device  # noqa: E402
from esc.utils.cli import one_line_errors  # noqa: E402

from esc.evaluation.benchmark import (FLASHBIAS_ACCURACY_HEADER, FLASHBIAS_RANKS, flashbias_accuracy,  # noqa: E402
                               flashbias_cells, flashbias_header, iter_flashbias)
from esc.evaluation.benchmark import (COMPARE_HEADER, COMPARE_NETWORKS, REFERENCE, BenchmarkTimeout,  # noqa: E402
                               MissingNetwork, compare_cells, compare_entry, compare_spec, device_name,
                               hd_lr_size, load_average)

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
    parser.add_argument('--compile', default=None, metavar='MODE',
                        help=f"torch.compile the whole network: {', '.join(COMPILE_MODES)} or none (default: eager)")
    parser.add_argument('--channels-last', action='store_true', help='channels-last (NHWC) weights and inputs')
    parser.add_argument('--tf32', action='store_true', help='float32 matmuls on TF32 tensor cores (CUDA)')


def network_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog='subcommands: table1, scaling, train, speedup, sizes, flashbias, compare '
                                            '(see their -h)',
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


def _settings(args: argparse.Namespace, cpu_schedule: Optional[Tuple[int, int]] = None,
              dtype: Optional[str] = None, fast: Optional[FastPath] = None) -> RunSettings:
    """The run settings the options ask for (``dtype`` and ``fast`` override theirs)."""
    dtype = args.dtype if dtype is None else dtype
    if fast is None:
        fast = FastPath(None if args.compile in (None, 'none') else args.compile, args.channels_last, args.tf32)
    warmup, runs = args.warmup, args.runs
    if resolve_device(args.device) == 'cpu' and cpu_schedule is not None:
        warmup = cpu_schedule[0] if warmup is None else warmup
        runs = cpu_schedule[1] if runs is None else runs
    return make_settings(args.device, dtype, warmup, runs, args.threads, args.malloc, fast)


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


def _case(text: str) -> Tuple[str, int]:
    """'ESC-light:4' → ('ESC-light', 4), checked."""
    variant, _, scale = text.rpartition(':')
    if not variant or not scale.isdigit():
        raise ESCError(f'case {text!r} is not VARIANT:SCALE (e.g. ESC-light:4)')
    check_variant(variant, int(scale))
    return variant, int(scale)


def speedup_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='benchmark.py speedup',
        description='the fast path (compile, channels-last, TF32; fp32 and bf16) against the plain fp32 path, same '
                    'weights and input, in one process: HD inference and training steps, with the targets of issue 13 '
                    '(inference >= 2x fp32 / >= 4x bf16 within 1/255, training >= 1.5x / >= 3x, memory <= plain)')
    parser.add_argument('--networks', nargs='*', default=[f'{v}:{s}' for v, s in SPEEDUP_NETWORKS],
                        help='inference cases VARIANT:SCALE at HD output')
    parser.add_argument('--training', nargs='*', default=[f'{v}:{s}' for v, s in SPEEDUP_TRAINING],
                        help='training-step cases VARIANT:SCALE')
    parser.add_argument('--batch', type=int, default=16, help='training batch')
    parser.add_argument('--lr-size', default=None, help='LR input HxW of every case (default: HD output; 64x64 '
                        'patches for training)')
    parser.add_argument('--attn-type', default='auto', help='attention of every case (auto: flex where it compiles)')
    parser.add_argument('--precisions', nargs='+', default=['fp32', 'bf16'], help='precisions of the fast path')
    _common_options(parser)
    return parser


def run_speedup(argv: Sequence[str]) -> None:
    args = speedup_parser().parse_args(argv)
    fast = FAST if args.compile is None and not args.channels_last and not args.tf32 else None
    plain = _settings(args, cpu_schedule=(1, 3), dtype='fp32', fast=FastPath())
    fast_settings = [_settings(args, cpu_schedule=(1, 3), dtype=dtype, fast=fast) for dtype in args.precisions]
    lr_size = parse_size(args.lr_size) if args.lr_size else None
    cases = [('network', *_case(c)) for c in args.networks] + [('train', *_case(c)) for c in args.training]
    _emit(f'plain: fp32, eager, NCHW; fast: {fast_settings[0].fast}; {plain.device}, attention {args.attn_type}, '
          f'warm-up {plain.warmup}, {plain.runs} timed runs (median), one process.')
    _emit('')

    def rows() -> Iterator[List[str]]:
        for kind, variant, scale in cases:
            yield speedup_cells(speedup_row(kind, variant, scale, plain, fast_settings, args.attn_type, args.batch,
                                            lr_size))

    stream_table(SPEEDUP_HEADER, rows(), args.markdown, _emit)
    _emit('')
    _emit(memory_note(plain.device) if plain.device == 'cuda' else
          'Memory: peak RSS of the whole process (VmHWM), which only grows; on the CPU compare latencies only.')


def sizes_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='benchmark.py sizes',
                                     description='one network over many LR sizes in one process, as esc/test.py runs '
                                                 'a test set: first-pass and steady latency, peak memory, compiles')
    parser.add_argument('--variant', default='ESC')
    parser.add_argument('--scale', type=int, default=2)
    parser.add_argument('--attn-type', default='auto')
    parser.add_argument('--sizes', nargs='+', default=[f'{h}x{w}' for h, w in TEST_SET_LR_SIZES],
                        help='LR sizes HxW (default: 14 of a x2 test set)')
    _common_options(parser)
    return parser


def run_sizes(argv: Sequence[str]) -> None:
    args = sizes_parser().parse_args(argv)
    settings = _settings(args, cpu_schedule=(0, 1))
    check_variant(args.variant, args.scale)
    sizes = [parse_size(size) for size in args.sizes]
    _emit(f'{args.variant} x{args.scale}, attention {args.attn_type}, {settings.device}, {settings.dtype}, '
          f'{settings.fast} (dynamic shapes), {settings.runs} passes per image after the first.')
    _emit('')
    start = time.perf_counter()
    stream_table(SIZES_HEADER, (size_cells(r) for r in evaluate_sizes(args.variant, args.scale, sizes, settings,
                                                                      args.attn_type, settings.runs)),
                 args.markdown, _emit)
    _emit('')
    _emit(f'Whole pass: {time.perf_counter() - start:.1f} s. ' + ('Memory: torch.cuda.max_memory_allocated per image.'
          if settings.device == 'cuda' else 'Memory: peak RSS of the process so far (VmHWM).'))


FLASHBIAS_PARTS = ('attention', 'network', 'train', 'accuracy')
FLASHBIAS_PHOTOS = ('coffee', 'astronaut', 'chelsea', 'rocket')


def flashbias_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='benchmark.py flashbias',
        description='FlashBias (esc/archs/attention/flashbias.py): exact attention against low-rank factorised biases')
    parser.add_argument('--parts', nargs='+', default=list(FLASHBIAS_PARTS),
                        help=f"what to measure: {', '.join(FLASHBIAS_PARTS)} (default: all)")
    parser.add_argument('--ranks', nargs='+', type=int, default=list(FLASHBIAS_RANKS), help='ranks of the factors')
    parser.add_argument('--sizes', nargs='+', default=['64', '288'], help='attention: input H or HxW (C = 64)')
    parser.add_argument('--window-sizes', nargs='+', type=int, default=[32], help='attention: window sizes')
    parser.add_argument('--variants', nargs='+', default=['ESC', 'ESC-light'], help='network: variants')
    parser.add_argument('--scales', nargs='+', type=int, default=[4], help='network: scales (HD output)')
    parser.add_argument('--lr-size', default=None, help='network: LR input HxW (default: an HD output)')
    parser.add_argument('--batch', type=int, default=8, help='train: batch of 64x64 LR patches (ESC-light x2)')
    parser.add_argument('--checkpoint', default=None,
                        help='accuracy: weights to convert (e.g. the demo\'s experiments/demo_ESC_light_X2/models/'
                             'net_g_latest.pth); the part is skipped without it')
    parser.add_argument('--photos', nargs='+', default=list(FLASHBIAS_PHOTOS),
                        help='accuracy: scikit-image photographs used as LR inputs')
    parser.add_argument('--crop', type=int, default=256, help='accuracy: centre-crop each photograph to this size')
    _common_options(parser)
    return parser


def run_flashbias(argv: Sequence[str]) -> None:
    args = flashbias_parser().parse_args(argv)
    unknown = sorted(set(args.parts) - set(FLASHBIAS_PARTS))
    if unknown:
        raise ESCError(f"--parts: {', '.join(unknown)} unknown; choose from {', '.join(FLASHBIAS_PARTS)}")
    settings = _settings(args, TABLE1_CPU_SCHEDULE)
    isolate = False if args.in_process else None
    sizes = [parse_size(s) for s in args.sizes]
    lr_size = parse_size(args.lr_size) if args.lr_size is not None else None
    _emit(f'{settings.device}, {settings.dtype}, warm-up {settings.warmup}, {settings.runs} timed runs (median), '
          f'ranks {args.ranks}; exact: bias tables, attn_type auto.')
    threads: List[int] = []

    def rows(cases, attn_types=('flashbias',)) -> Iterator[List[str]]:
        for row in iter_flashbias(cases, args.ranks, attn_types, isolate=isolate, timeout=args.case_timeout):
            threads.extend(r.threads for r in (row.exact, *row.factorised.values()))
            yield flashbias_cells(row)

    if 'attention' in args.parts:
        _emit('\nWindow attention alone (Table 1 layout, C = 64, 4 heads, 1x1 projections included):\n')
        cases = [(f'{h}x{w}x{TABLE1_DIM}, window {ws}', attention_spec((h, w), ws, settings, 'auto'))
                 for h, w in sizes for ws in args.window_sizes]
        stream_table(flashbias_header(args.ranks), rows(cases), args.markdown, _emit)
    if 'network' in args.parts:
        _emit('\nWhole networks (no gradient; row strips on the CPU):\n')
        cases = [(f'{v} x{r}', network_spec(v, r, settings, 'auto', lr_size)) for v in args.variants for r in args.scales]
        stream_table(flashbias_header(args.ranks), rows(cases), args.markdown, _emit)
    if 'train' in args.parts:
        _emit(f'\nOne training step (ESC-light x2, batch {args.batch} of 64x64, L1 + AdamW), factorised layers on '
              'the stock flash backward (flashbias) and on the fused bias backward (sdpa, dense Φq·Φkᵀ):\n')
        train_settings = _settings(args, (1, 3))
        cases = [('ESC-light x2 step', train_spec('ESC-light', 2, train_settings, 'auto', args.batch))]
        stream_table(flashbias_header(args.ranks, ('flashbias', 'sdpa')), rows(cases, ('flashbias', 'sdpa')),
                     args.markdown, _emit)
    if 'accuracy' in args.parts:
        if args.checkpoint is None:
            _emit('\naccuracy: skipped (give --checkpoint)')
        else:
            import torch

            from esc.commands.convert_flashbias import photograph

            model = load_model(args.checkpoint, device=settings.device)
            images = [photograph(None, args.crop, name).to(settings.device) for name in args.photos]
            _emit(f'\nOutput against the exact network: {model} from {args.checkpoint}, converted by SVD at each '
                  f"rank; LR inputs: {', '.join(args.photos)} (centre {args.crop}x{args.crop}):\n")
            with torch.no_grad():
                stream_table(FLASHBIAS_ACCURACY_HEADER, flashbias_accuracy(model.net, images, args.ranks),
                             args.markdown, _emit)
    _emit('')
    _emit(memory_note(settings.device) + _threads_note(settings.device, threads))


COMPARE_CPU_SCHEDULE = (1, 3)
BASELINES = tuple(name for name in COMPARE_NETWORKS if name != REFERENCE)


def compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='benchmark.py compare',
        description="ESC against the paper's baselines in one run (Table 4, the abstract's 3.7x/6.2x against HiT-SRF "
                    'and 8.9x against ATD-light at x4): latency and memory of each network as its DFLIP test option '
                    "file builds it, at the HD output, with ESC's advantage measured beside Table 4's and the "
                    "paper's claims")
    parser.add_argument('--scales', nargs='+', type=int, default=[4])
    parser.add_argument('--baselines', nargs='+', default=list(BASELINES), help=f"of {', '.join(BASELINES)}")
    parser.add_argument('--lr-size', default=None,
                        help='LR input HxW of every case (default: the HD output\'s, 720//r x 1280//r; smaller sizes '
                             'are measured and said so, but are not the paper\'s setting)')
    parser.add_argument('--attn-type', default='auto', help="ESC's attention: auto, flex, sdpa or naive")
    parser.add_argument('--streaming', default='off',
                        help="ESC's row-strip inference: off (default: the whole image, as the paper and the "
                             'baselines run), auto, on')
    parser.add_argument('--json', type=Path, default=None, help='also write the setup and rows here (JSON)')
    _common_options(parser)
    return parser


def run_compare(argv: Sequence[str]) -> None:
    import torch

    args = compare_parser().parse_args(argv)
    settings = _settings(args, cpu_schedule=COMPARE_CPU_SCHEDULE)
    lr_size = parse_size(args.lr_size) if args.lr_size is not None else None
    unknown = [name for name in args.baselines if name not in BASELINES]
    if unknown:
        raise ESCError(f"--baselines: {', '.join(unknown)} unknown; choose from {', '.join(BASELINES)}")
    cases: List[Tuple[str, int, dict]] = []
    missing: List[str] = []
    for scale in args.scales:
        cases.append((REFERENCE, scale, compare_spec(REFERENCE, scale, settings, lr_size, args.attn_type,
                                                     args.streaming)))
        for name in dict.fromkeys(args.baselines):
            try:
                cases.append((name, scale, compare_spec(name, scale, settings, lr_size, args.attn_type,
                                                        args.streaming)))
            except MissingNetwork as exc:
                missing.append(str(exc))
    threads = settings.threads or torch.get_num_threads()
    load = load_average()
    isolate = False if args.in_process else None
    setup = dict(device=device_name(settings.device), torch=torch.__version__, threads=threads,
                 dtype=settings.dtype, warmup=settings.warmup, runs=settings.runs,
                 esc_attention=args.attn_type, esc_streaming=args.streaming,
                 load_average=list(load) if load is not None else None,
                 isolated=not args.in_process and settings.device == 'cpu',
                 paper='RTX 4090, FP32, 1280x720 output (Sec. 4.2), Table 4', missing=missing)
    threads_text = f', {threads} CPU threads' if settings.device == 'cpu' else ''
    load_text = f", load average {' / '.join(f'{v:.1f}' for v in load)} (1/5/15 min) at start" \
        if settings.device == 'cpu' and load is not None else ''
    _emit(f'ESC against the paper\'s baselines, each built from its DFLIP test option file: {setup["device"]}, '
          f'torch {torch.__version__}{threads_text}, {settings.dtype}, warm-up {settings.warmup}, {settings.runs} '
          f'timed runs (median){load_text}; ESC attention {args.attn_type}, streaming {args.streaming}.')
    for scale in args.scales:
        height, width = lr_size or hd_lr_size(scale)
        paper_height, paper_width = hd_lr_size(scale)
        setting = ('the paper\'s HD setting' if (height, width) == (paper_height, paper_width) else
                   f'NOT the paper\'s setting (LR {paper_height}x{paper_width}, a 1280x720 output): ratios at '
                   'another size need not be the HD ones')
        _emit(f'x{scale}: measured at LR {height}x{width} -> {height * scale}x{width * scale} output, {setting}.')
    for reason in missing:
        _emit(f'Not measured (not in this checkout yet): {reason}.')
    _emit('')
    entries: List[dict] = []
    records: dict = {}

    def rows() -> Iterator[List[str]]:
        for name, scale, spec in cases:
            record, note = None, ''
            try:
                record = measure(spec, isolate=isolate, timeout=args.case_timeout)
            except BenchmarkTimeout:
                note = f'> {args.case_timeout:g} s'
            records[name, scale] = record
            entries.append(compare_entry(name, scale, spec, record, records.get((REFERENCE, scale)), note))
            if args.json is not None:  # rewritten after every case, so a long run loses nothing to a kill
                write_atomic(args.json, json.dumps(dict(setup=setup, rows=entries), indent=1).encode())
            yield compare_cells(entries[-1])

    stream_table(COMPARE_HEADER, rows(), args.markdown, _emit)
    _emit('')
    _emit("Ratios: the baseline's figure over ESC's (how many times faster ESC is, how many times less memory it "
          "takes); Table 4's from the paper's RTX 4090 columns (FP32, 1280x720 output, torch.cuda."
          'max_memory_allocated); claimed: the paper\'s text.')
    measured_threads = [r.threads for r in records.values() if r is not None]
    _emit(memory_note(settings.device, setup['isolated']) + _threads_note(settings.device, measured_threads))


SUBCOMMANDS = {'train': run_train, 'table1': run_table1, 'scaling': run_scaling, 'speedup': run_speedup,
               'sizes': run_sizes, 'flashbias': run_flashbias, 'compare': run_compare}


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    with one_line_errors():
        if argv and argv[0] in SUBCOMMANDS:
            SUBCOMMANDS[argv[0]](argv[1:])
        else:
            run_network(argv)


if __name__ == '__main__':
    main()
