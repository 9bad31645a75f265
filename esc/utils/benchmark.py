"""Latency and memory the way the paper measures them (Sec. 4.2), and the Table 1 attention study.

Network benchmark: the LR input is the one whose ×r output is an HD image, (720//r)×(1280//r), unless
another size is asked for. After ``warmup`` untimed forward passes, ``runs`` forward passes are timed one
by one (``torch.no_grad``, ``eval()``); a record keeps every latency and reports the median with min/max
and the interquartile range.

Memory (MB always means bytes / 2**20, i.e. MiB):

- CUDA: ``torch.cuda.reset_peak_memory_stats`` after the warm-up, then ``torch.cuda.max_memory_allocated``
  after the timed runs, as in the paper. The figure therefore includes the weights and the input that are
  already allocated; ``baseline_mb`` holds those (``torch.cuda.memory_allocated`` before timing).
- CPU: the growth of the process's peak resident set size over the timed runs. Every case runs in a fresh
  subprocess (no heap, allocator caches or compiled kernels left from earlier cases). There, after the
  warm-up, the C heap's free pages are handed back to the kernel (glibc ``malloc_trim(0)``; otherwise the
  pages the warm-up freed would stay resident and hide the timed runs' growth), the kernel's peak-RSS
  counter is reset (``5`` written to ``/proc/self/clear_refs``) and ``VmRSS`` is read as the baseline
  (weights, input, warm-up caches); after the timed runs ``VmHWM`` is the peak and the figure is
  ``VmHWM − baseline``. Where the counter cannot be reset, the peak is the process's whole-life
  ``VmHWM`` (off Linux ``getrusage(RUSAGE_SELF).ru_maxrss``) and the baseline is ``VmRSS`` right after
  building the network and input; the record's ``memory_method`` says which method was used. Handing the
  pages back costs the first timed run some page faults, which the median does not see.

Table 1 times :class:`esc.archs.attention.WindowAttention` alone (its 1×1 projections included) on a
batch-1 H×W×C feature map, without ("naive": the score matrix is materialised) and with a fused kernel
(FlexAttention on CUDA, the paper's path; on CPU ``scaled_dot_product_attention``'s fused kernel, which
is *not* flash attention and is labelled "fused SDPA").
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esc.archs.attention import WindowAttention, normalize_attn_type, resolve_attn_type
from esc.archs.esc_arch import STREAMING, VARIANTS, build_variant
from esc.archs.streaming import tune_glibc_malloc
from esc.errors import ESCError
from esc.upscaler import autocast, check_dtype, resolve_device
from esc.utils.complexity import HD_OUTPUT

DEFAULT_SCHEDULE: Dict[str, Tuple[int, int]] = {'cpu': (3, 10), 'cuda': (10, 100)}
"""(warm-up passes, timed passes) per device when none are given."""

TABLE1_SIZES: Tuple[Tuple[int, int], ...] = ((64, 64), (288, 288))
TABLE1_WINDOW_SIZES: Tuple[int, ...] = (16, 24, 32)
TABLE1_DIM = 64
TABLE1_HEADS = 4

MIB = 2 ** 20
_CHILD_ENTRY = ('import sys; sys.path.insert(0, sys.argv[1]); import esc; '
                'from esc.utils.benchmark import child_main; child_main(sys.argv[2:])')


class BenchmarkTimeout(ESCError):
    """A case run in its own subprocess did not finish within the time it was given."""


@dataclass(frozen=True)
class RunSettings:
    """Where and how a case runs: device ('cpu' or 'cuda'), autocast dtype name, the pass counts and the
    number of CPU threads (None: torch's default)."""

    device: str
    dtype: str = 'fp32'
    warmup: int = 3
    runs: int = 10
    threads: Optional[int] = None
    malloc: str = 'tuned'
    """'tuned': :func:`esc.archs.streaming.tune_glibc_malloc` in the measuring process (CPU); 'default': not."""


@dataclass
class BenchmarkRecord:
    """What one measured case gives: its description, every latency, and the memory figure.

    ``memory_mb`` is the figure to report; ``memory_method`` says how it was obtained (see the module
    docstring). ``backend`` is the attention backend ``attn_type`` resolved to on the device.
    """

    kind: str
    name: str
    scale: int
    device: str
    attn_type: str
    backend: str
    dtype: str
    input_shape: Tuple[int, ...]
    output_shape: Tuple[int, ...]
    warmup: int
    runs: int
    threads: int
    latencies_ms: List[float]
    memory_mb: float
    peak_mb: float
    baseline_mb: float
    memory_method: str
    window_size: Optional[int] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def min_ms(self) -> float:
        return min(self.latencies_ms)

    @property
    def max_ms(self) -> float:
        return max(self.latencies_ms)

    @property
    def quartiles_ms(self) -> Tuple[float, float]:
        """(Q1, Q3) of the latencies (both the single value when there is one run)."""
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0], self.latencies_ms[0]
        q1, _, q3 = statistics.quantiles(self.latencies_ms, n=4, method='inclusive')
        return q1, q3

    @property
    def iqr_ms(self) -> float:
        q1, q3 = self.quartiles_ms
        return q3 - q1

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> 'BenchmarkRecord':
        values = dict(data)
        values['input_shape'] = tuple(values['input_shape'])
        values['output_shape'] = tuple(values['output_shape'])
        return cls(**values)


def parse_size(text: str) -> Tuple[int, int]:
    """'HxW' (or a single 'N' for N×N) → (H, W) of positive integers; anything else is an ESCError."""
    parts = str(text).strip().lower().replace('×', 'x').split('x')
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ESCError(f'size {text!r} is not HxW (e.g. 180x320) with positive integers')
    height, width = (int(p) for p in parts)
    if height < 1 or width < 1:
        raise ESCError(f'size {text!r} must be positive in both dimensions')
    return height, width


def hd_lr_size(scale: int) -> Tuple[int, int]:
    """The (H, W) of the LR input whose ×``scale`` output is the paper's HD image (1280×720)."""
    return HD_OUTPUT[0] // scale, HD_OUTPUT[1] // scale


MALLOC_MODES = ('tuned', 'default')


def make_settings(device: str = 'auto', dtype: str = 'fp32', warmup: Optional[int] = None,
                  runs: Optional[int] = None, threads: Optional[int] = None, malloc: str = 'tuned') -> RunSettings:
    """Validated :class:`RunSettings`; missing pass counts take the device's :data:`DEFAULT_SCHEDULE`."""
    resolved = resolve_device(device)
    check_dtype(dtype, resolved)
    default_warmup, default_runs = DEFAULT_SCHEDULE[resolved]
    warmup = default_warmup if warmup is None else warmup
    runs = default_runs if runs is None else runs
    if warmup < 0:
        raise ESCError(f'warmup must be 0 or more, got {warmup}')
    if runs < 1:
        raise ESCError(f'runs must be at least 1, got {runs}')
    if threads is not None and threads < 1:
        raise ESCError(f'threads must be at least 1, got {threads}')
    if malloc not in MALLOC_MODES:
        raise ESCError(f"malloc must be one of {', '.join(MALLOC_MODES)}, got {malloc!r}")
    return RunSettings(device=resolved, dtype=dtype, warmup=warmup, runs=runs, threads=threads, malloc=malloc)


def check_variant(variant: str, scale: int) -> None:
    """Refuse an unknown variant or scale before anything runs (ESC-Real exists at ×4 only)."""
    if variant not in VARIANTS:
        raise ESCError(f'variant {variant!r} is unknown; choose one of {", ".join(VARIANTS)}')
    if scale < 1:
        raise ESCError(f'scale must be a positive integer, got {scale}')
    if variant == 'ESC-Real' and scale != 4:
        raise ESCError(f'variant ESC-Real exists at scale 4 only, got {scale}')


def _proc_status_kib(key: str) -> Optional[int]:
    try:
        with open('/proc/self/status') as status:
            for line in status:
                if line.startswith(key + ':'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == 'darwin' else peak * 1024  # bytes on macOS, KiB elsewhere


def _current_rss_bytes() -> int:
    rss = _proc_status_kib('VmRSS')
    return rss * 1024 if rss is not None else _maxrss_bytes()


def _peak_rss_bytes() -> int:
    hwm = _proc_status_kib('VmHWM')
    return hwm * 1024 if hwm is not None else _maxrss_bytes()


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process to its current RSS; False if not possible."""
    try:
        with open('/proc/self/clear_refs', 'w') as clear_refs:
            clear_refs.write('5')
    except OSError:
        return False
    return True


def _release_free_heap() -> bool:
    """Collect garbage and hand the C heap's free pages back to the kernel (glibc ``malloc_trim``).

    Returns False where the C library has no ``malloc_trim`` (freed pages then stay in the RSS).
    """
    gc.collect()
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim(0)
    return True


def _synchronize(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def time_forward(module: nn.Module, x: Tensor, settings: RunSettings) -> Dict[str, Any]:
    """Warm up, then time ``settings.runs`` forward passes of ``module`` on ``x`` in this process.

    Returns ``latencies_ms``, ``output_shape``, ``memory_mb``, ``peak_mb``, ``baseline_mb`` and
    ``memory_method`` (CUDA: peak allocated memory; CPU: peak RSS growth, see the module docstring).
    ``module`` and ``x`` must already be on ``settings.device``.
    """
    device = settings.device
    module.eval()
    output_shape: Tuple[int, ...] = ()
    baseline, method = 0, ''
    with torch.no_grad(), autocast(settings.device, settings.dtype):
        build_rss = 0
        if device == 'cpu':
            _release_free_heap()
            build_rss = _current_rss_bytes()
        for _ in range(settings.warmup):
            output_shape = tuple(module(x).shape)
        _synchronize(device)
        if device == 'cuda':
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            baseline = torch.cuda.memory_allocated()
            method = 'torch.cuda.max_memory_allocated over the timed runs (weights and input included)'
        else:
            process_peak = _peak_rss_bytes()  # import, build and warm-up
            trimmed = _release_free_heap()
            if _reset_peak_rss():
                baseline = _current_rss_bytes()
                method = ('peak RSS growth over the timed runs (after warm-up: free heap released with malloc_trim, '
                          'VmHWM reset; VmHWM minus VmRSS then)')
                if not trimmed:
                    method += '; malloc_trim unavailable, freed pages may hide growth'
            else:
                baseline = build_rss
                method = 'whole-life peak RSS minus VmRSS after building network and input (VmHWM not resettable)'
        latencies: List[float] = []
        for _ in range(settings.runs):
            _synchronize(device)
            start = time.perf_counter()
            out = module(x)
            _synchronize(device)
            latencies.append((time.perf_counter() - start) * 1e3)
            output_shape = tuple(out.shape)
            del out
        if device == 'cuda':
            peak = torch.cuda.max_memory_allocated()
            reported = peak
            process_peak = _maxrss_bytes()
        else:
            peak = _peak_rss_bytes()
            reported = max(peak - baseline, 0)
            process_peak = max(process_peak, peak)
    return dict(latencies_ms=latencies, output_shape=output_shape, memory_mb=reported / MIB, peak_mb=peak / MIB,
                baseline_mb=baseline / MIB, memory_method=method, extra=dict(process_peak_mb=process_peak / MIB))


def network_spec(variant: str, scale: int, settings: RunSettings, attn_type: str = 'auto',
                 lr_size: Optional[Tuple[int, int]] = None, streaming: str = 'auto') -> Dict[str, Any]:
    """The JSON-able description of a network case (validated); ``streaming`` as the networks' option."""
    check_variant(variant, scale)
    attn_type = normalize_attn_type(attn_type)
    if streaming not in STREAMING:
        raise ESCError(f"streaming must be one of {', '.join(STREAMING)}, got {streaming!r}")
    size = tuple(lr_size) if lr_size is not None else hd_lr_size(scale)
    if min(size) < 1:
        raise ESCError(f'LR input {size[0]}x{size[1]} of {variant} x{scale} is empty')
    return dict(kind='network', name=variant, scale=scale, attn_type=attn_type, size=list(size),
                streaming=streaming, settings=asdict(settings))


def attention_spec(size: Tuple[int, int], window_size: int, settings: RunSettings, attn_type: str,
                   dim: int = TABLE1_DIM, num_heads: int = TABLE1_HEADS) -> Dict[str, Any]:
    """The JSON-able description of a window-attention case (validated)."""
    attn_type = normalize_attn_type(attn_type)
    if window_size < 1:
        raise ESCError(f'window size must be a positive integer, got {window_size}')
    if dim < 1 or num_heads < 1 or dim % num_heads:
        raise ESCError(f'dim ({dim}) must be a positive multiple of num_heads ({num_heads})')
    return dict(kind='attention', name='WindowAttention', scale=1, attn_type=attn_type, size=list(size),
                window_size=window_size, dim=dim, num_heads=num_heads, settings=asdict(settings))


def _build(spec: Dict[str, Any]) -> Tuple[nn.Module, Tensor]:
    settings = RunSettings(**spec['settings'])
    height, width = spec['size']
    generator = torch.Generator().manual_seed(0)
    if spec['kind'] == 'network':
        module = build_variant(spec['name'], spec['scale'], attn_type=spec['attn_type'],
                               streaming=spec.get('streaming', 'auto'))
        x = torch.rand(1, 3, height, width, generator=generator)
    else:
        module = WindowAttention(spec['dim'], spec['window_size'], spec['num_heads'], attn_type=spec['attn_type'])
        x = torch.rand(1, spec['dim'], height, width, generator=generator)
    return module.to(settings.device).eval(), x.to(settings.device)


@contextlib.contextmanager
def _cpu_threads(threads: Optional[int]) -> Iterator[int]:
    """Run the block with ``threads`` intra-op threads (None: torch's default); yields the number in use."""
    default = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(default)


def run_spec(spec: Dict[str, Any]) -> BenchmarkRecord:
    """Build and measure one case in this process."""
    settings = RunSettings(**spec['settings'])
    if settings.device == 'cpu' and settings.malloc == 'tuned':
        tune_glibc_malloc()
    if spec['kind'] == 'train':
        return run_train_spec(spec, settings)
    module, x = _build(spec)
    backend = resolve_attn_type(normalize_attn_type(spec['attn_type']), torch.device(settings.device))
    with _cpu_threads(settings.threads) as threads:
        result = time_forward(module, x, settings)
    return BenchmarkRecord(kind=spec['kind'], name=spec['name'], scale=spec['scale'], device=settings.device,
                           attn_type=spec['attn_type'], backend=backend, dtype=settings.dtype,
                           input_shape=tuple(x.shape), warmup=settings.warmup, runs=settings.runs,
                           threads=threads, window_size=spec.get('window_size'), **result)


def train_spec(variant: str, scale: int, settings: RunSettings, attn_type: str = 'auto', batch: int = 8,
               lr_size: Tuple[int, int] = (64, 64)) -> Dict[str, Any]:
    """A training-step case: L1 loss, backward and an AdamW step on a random (``batch``, 3, ``lr_size``) batch."""
    check_variant(variant, scale)
    if batch < 1 or min(lr_size) < 1:
        raise ESCError(f'a training step needs batch >= 1 and a non-empty patch, got {batch} x {lr_size}')
    if settings.dtype != 'fp32':
        raise ESCError('the training-step benchmark runs in fp32 only')
    return dict(kind='train', name=variant, scale=scale, attn_type=normalize_attn_type(attn_type),
                size=list(lr_size), batch=batch, settings=asdict(settings))


def run_train_spec(spec: Dict[str, Any], settings: RunSettings) -> BenchmarkRecord:
    """Time ``settings.runs`` training steps after ``settings.warmup`` ones; memory is the process's peak RSS
    (CPU) or peak allocated memory (CUDA) over the timed steps."""
    device = settings.device
    generator = torch.Generator().manual_seed(0)
    net = build_variant(spec['name'], spec['scale'], attn_type=spec['attn_type']).to(device).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    r, (height, width) = spec['scale'], spec['size']
    lr = torch.rand(spec['batch'], 3, height, width, generator=generator).to(device)
    hr = torch.rand(spec['batch'], 3, height * r, width * r, generator=generator).to(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.l1_loss(net(lr), hr).backward()
        optimizer.step()

    with _cpu_threads(settings.threads) as threads:
        for _ in range(settings.warmup):
            step()
        _synchronize(device)
        if device == 'cuda':
            torch.cuda.reset_peak_memory_stats()
        latencies: List[float] = []
        for _ in range(settings.runs):
            start = time.perf_counter()
            step()
            _synchronize(device)
            latencies.append((time.perf_counter() - start) * 1e3)
    process_peak = _peak_rss_bytes()  # VmHWM only grows: the whole run's peak
    peak = torch.cuda.max_memory_allocated() if device == 'cuda' else process_peak
    backend = resolve_attn_type(spec['attn_type'], torch.device(device))
    method = 'torch.cuda.max_memory_allocated' if device == 'cuda' else 'peak RSS of the process (VmHWM)'
    return BenchmarkRecord(kind='train', name=spec['name'], scale=r, device=device, attn_type=spec['attn_type'],
                           backend=backend, dtype=settings.dtype, input_shape=tuple(lr.shape),
                           output_shape=tuple(hr.shape), warmup=settings.warmup, runs=settings.runs, threads=threads,
                           latencies_ms=latencies, memory_mb=peak / MIB, peak_mb=peak / MIB, baseline_mb=0.0,
                           memory_method=method,
                           extra=dict(process_peak_mb=process_peak / MIB))


def describe(spec: Dict[str, Any]) -> str:
    """A short human name of a case, for messages."""
    height, width = spec['size']
    if spec['kind'] == 'train':
        return f"{spec['name']} x{spec['scale']} training step, batch {spec['batch']} of {height}x{width}"
    if spec['kind'] == 'network':
        return f"{spec['name']} x{spec['scale']} on {height}x{width} ({spec['attn_type']})"
    return f"WindowAttention ws={spec['window_size']} on {height}x{width}x{spec['dim']} ({spec['attn_type']})"


def run_spec_isolated(spec: Dict[str, Any], timeout: Optional[float] = None) -> BenchmarkRecord:
    """Measure one case in a fresh Python subprocess (so its memory figure is its own).

    Raises :class:`BenchmarkTimeout` past ``timeout`` seconds and :class:`ESCError` if the child fails.
    """
    package_root = str(Path(__file__).resolve().parents[2])  # the child imports this very esc package
    with tempfile.TemporaryDirectory(prefix='esc-benchmark-') as tmp:
        result_path = Path(tmp) / 'record.json'
        try:
            proc = subprocess.run([sys.executable, '-c', _CHILD_ENTRY, package_root, json.dumps(spec),
                                   str(result_path)], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchmarkTimeout(f'{describe(spec)}: no result within {timeout:g} s') from None
        if not result_path.is_file():
            lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
            reason = lines[-1] if lines else f'exit status {proc.returncode}'
            if proc.returncode < 0:
                reason = f'killed by signal {-proc.returncode} (out of memory?)'
            raise ESCError(f'{describe(spec)}: the measuring subprocess failed: {reason}')
        data = json.loads(result_path.read_text())
    if 'error' in data:
        raise ESCError(data['error'])
    return BenchmarkRecord.from_dict(data)


def child_main(argv: Sequence[str]) -> None:
    """Entry point of the measuring subprocess: ``SPEC_JSON RESULT_PATH``; writes a record or an error."""
    spec, result_path = json.loads(argv[0]), Path(argv[1])
    try:
        payload = run_spec(spec).to_dict()
    except ESCError as exc:
        payload = {'error': str(exc)}
    result_path.write_text(json.dumps(payload))


def measure(spec: Dict[str, Any], isolate: Optional[bool] = None, timeout: Optional[float] = None) -> BenchmarkRecord:
    """Measure one case; ``isolate`` (default: on CPU) runs it in a fresh subprocess, see the module docstring.

    ``timeout`` (seconds) applies to isolated cases only.
    """
    if isolate is None:
        isolate = spec['settings']['device'] == 'cpu'
    if isolate:
        return run_spec_isolated(spec, timeout=timeout)
    return run_spec(spec)


def benchmark_network(variant: str, scale: int, settings: RunSettings, attn_type: str = 'auto',
                      lr_size: Optional[Tuple[int, int]] = None, isolate: Optional[bool] = None,
                      timeout: Optional[float] = None) -> BenchmarkRecord:
    """Latency and memory of ``build_variant(variant, scale)``; the LR input is HD/scale unless ``lr_size``."""
    return measure(network_spec(variant, scale, settings, attn_type, lr_size), isolate=isolate, timeout=timeout)


def benchmark_window_attention(size: Tuple[int, int], window_size: int, settings: RunSettings, attn_type: str,
                               dim: int = TABLE1_DIM, num_heads: int = TABLE1_HEADS,
                               isolate: Optional[bool] = None, timeout: Optional[float] = None) -> BenchmarkRecord:
    """Latency and memory of one :class:`WindowAttention` on a (1, ``dim``, H, W) input."""
    spec = attention_spec(size, window_size, settings, attn_type, dim, num_heads)
    return measure(spec, isolate=isolate, timeout=timeout)


def fused_attention_type(device: str, requested: str = 'auto') -> str:
    """The 'w/ FA' backend of Table 1: flex on CUDA (the paper's), fused SDPA on CPU, unless requested."""
    if requested == 'auto':
        return 'flex' if device == 'cuda' else 'sdpa'
    name = normalize_attn_type(requested)
    if name in ('auto', 'naive'):
        raise ESCError(f"the fused backend of Table 1 must be 'flex' or 'sdpa', got {requested!r}")
    return name


def backend_label(backend: str, device: str) -> str:
    """How a backend is named in tables: honest about what runs on which device."""
    if backend == 'flex':
        return 'FlexAttention' if device == 'cuda' else 'FlexAttention (compiled C++ on CPU, not flash)'
    if backend == 'sdpa':
        return 'fused SDPA' + (' (CPU, not flash attention)' if device == 'cpu' else '')
    return 'naive (explicit matmul + softmax)'


@dataclass
class Table1Row:
    """One (input size, window size) row of Table 1: the naive and the fused measurement (None if skipped)."""

    size: Tuple[int, int]
    window_size: int
    naive: Optional[BenchmarkRecord]
    fused: Optional[BenchmarkRecord]
    notes: Dict[str, str] = field(default_factory=dict)

    @property
    def speedup(self) -> Optional[float]:
        if self.naive is None or self.fused is None:
            return None
        return self.naive.median_ms / self.fused.median_ms

    @property
    def memory_reduction(self) -> Optional[float]:
        if self.naive is None or self.fused is None or self.fused.memory_mb <= 0:
            return None
        return self.naive.memory_mb / self.fused.memory_mb


def iter_table1(settings: RunSettings, sizes: Iterable[Tuple[int, int]] = TABLE1_SIZES,
                window_sizes: Iterable[int] = TABLE1_WINDOW_SIZES, fused: str = 'auto', dim: int = TABLE1_DIM,
                num_heads: int = TABLE1_HEADS, isolate: Optional[bool] = None,
                timeout: Optional[float] = None) -> Iterator[Table1Row]:
    """Measure Table 1 row by row; a case past ``timeout`` seconds is left empty with a note."""
    fused_type = fused_attention_type(settings.device, fused)
    window_sizes = list(window_sizes)
    for size in sizes:
        for ws in window_sizes:
            records: Dict[str, Optional[BenchmarkRecord]] = {}
            notes: Dict[str, str] = {}
            for key, attn_type in (('naive', 'naive'), ('fused', fused_type)):
                try:
                    records[key] = benchmark_window_attention(size, ws, settings, attn_type, dim, num_heads,
                                                              isolate=isolate, timeout=timeout)
                except BenchmarkTimeout:
                    records[key], notes[key] = None, f'> {timeout:g} s'
            yield Table1Row(size=tuple(size), window_size=ws, naive=records['naive'], fused=records['fused'],
                            notes=notes)


def _fmt(value: Optional[float], digits: int = 1, suffix: str = '') -> str:
    if value is None or not math.isfinite(value):
        return '-'
    return f'{value:.{digits}f}{suffix}'


def _render(header: Sequence[str], rows: Iterable[Sequence[str]], markdown: bool) -> Iterator[str]:
    if markdown:
        yield '| ' + ' | '.join(header) + ' |'
        yield '|' + '---|' * len(header)
        for row in rows:
            yield '| ' + ' | '.join(row) + ' |'
    else:
        rows = [list(r) for r in rows]
        widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
        yield '  '.join(h.ljust(w) for h, w in zip(header, widths))
        for row in rows:
            yield '  '.join(c.ljust(w) for c, w in zip(row, widths))


NETWORK_HEADER = ('Variant', 'Scale', 'LR input (HxW)', 'Output (HxW)', 'Device', 'Attention', 'dtype',
                  'Latency median (ms)', 'min / max (ms)', 'IQR (ms)', 'Memory (MB)', 'Process peak RSS (MB)', 'Runs')


def network_row(record: BenchmarkRecord) -> List[str]:
    """The table cells of one network record (memory in MB = bytes / 2**20)."""
    attention = record.attn_type if record.attn_type == record.backend else f'{record.attn_type} ({record.backend})'
    return [record.name, f'x{record.scale}', f'{record.input_shape[-2]}x{record.input_shape[-1]}',
            f'{record.output_shape[-2]}x{record.output_shape[-1]}', record.device, attention, record.dtype,
            _fmt(record.median_ms), f'{_fmt(record.min_ms)} / {_fmt(record.max_ms)}', _fmt(record.iqr_ms),
            _fmt(record.memory_mb), _fmt(record.extra.get('process_peak_mb')), f'{record.warmup}+{record.runs}']


def speed_entry(record: BenchmarkRecord) -> Dict[str, Any]:
    """A network record as ``scripts/make_tables.py --speed`` reads it (variant, scale, latency_ms,
    memory_mb), with how it was measured alongside."""
    return dict(variant=record.name, scale=record.scale, latency_ms=record.median_ms, memory_mb=record.memory_mb,
                device=record.device, dtype=record.dtype, backend=record.backend,
                input_shape=list(record.input_shape), runs=record.runs, memory_method=record.memory_method)


SCALING_HEADER = ('LR input (HxW)', 'Megapixels (LR)', 'Latency median (ms)', 'ms / MP', 'Memory (MB)', 'MB / MP')


def scaling_row(record: BenchmarkRecord) -> List[str]:
    """The cells of one input size in the pixel-scaling table: the figures and the figures per LR megapixel."""
    megapixels = record.input_shape[-2] * record.input_shape[-1] / 1e6
    return [f'{record.input_shape[-2]}x{record.input_shape[-1]}', f'{megapixels:.4f}', _fmt(record.median_ms),
            _fmt(record.median_ms / megapixels), _fmt(record.memory_mb), _fmt(record.memory_mb / megapixels)]


def with_naive_ratio(cells: List[str], record: BenchmarkRecord, naive: BenchmarkRecord) -> List[str]:
    """``cells`` of ``record`` followed by the explicit-attention latency and memory and the ratios to them."""
    return cells + [_fmt(naive.median_ms), _fmt(naive.median_ms / record.median_ms, 2, 'x'), _fmt(naive.memory_mb),
                    _fmt(naive.memory_mb / record.memory_mb, 2, 'x') if record.memory_mb > 0 else '-']


NAIVE_RATIO_HEADER = ('Explicit latency (ms)', 'Speed-up vs explicit', 'Explicit memory (MB)',
                      'Memory saving vs explicit')
"""The explicit-attention path: attn_type 'naive' on the whole image (no streaming), as the official code runs."""


TRAIN_HEADER = ('Variant', 'Scale', 'Batch x LR patch', 'Device', 'Attention', 'Step median (ms)', 'min / max (ms)',
                'IQR (ms)', 'Peak memory (MB)', 'Steps')


def train_row(record: BenchmarkRecord) -> List[str]:
    """The table cells of one training-step record."""
    attention = record.attn_type if record.attn_type == record.backend else f'{record.attn_type} ({record.backend})'
    batch, _, height, width = record.input_shape
    return [record.name, f'x{record.scale}', f'{batch} x {height}x{width}', record.device, attention,
            _fmt(record.median_ms), f'{_fmt(record.min_ms)} / {_fmt(record.max_ms)}', _fmt(record.iqr_ms),
            _fmt(record.memory_mb), f'{record.warmup}+{record.runs}']


def format_network_table(records: Sequence[BenchmarkRecord], markdown: bool = True) -> List[str]:
    """Lines of the network latency/memory table."""
    return list(_render(NETWORK_HEADER, (network_row(r) for r in records), markdown))


TABLE1_HEADER = ('Input (HxWxC)', 'Window', 'Latency w/o FA (ms)', 'Latency w/ FA (ms)', 'Speed-up',
                 'Memory w/o FA (MB)', 'Memory w/ FA (MB)', 'Memory ratio')


def table1_cells(row: Table1Row, dim: int = TABLE1_DIM) -> List[str]:
    """The table cells of one Table 1 row."""
    def latency(key: str) -> str:
        record = getattr(row, key)
        return _fmt(record.median_ms) if record is not None else row.notes.get(key, '-')

    def memory(key: str) -> str:
        record = getattr(row, key)
        return _fmt(record.memory_mb) if record is not None else '-'

    return [f'{row.size[0]}x{row.size[1]}x{dim}', f'{row.window_size}x{row.window_size}', latency('naive'),
            latency('fused'), _fmt(row.speedup, 1, 'x'), memory('naive'), memory('fused'),
            _fmt(row.memory_reduction, 1, 'x')]


def format_table1(rows: Sequence[Table1Row], markdown: bool = True, dim: int = TABLE1_DIM) -> List[str]:
    """Lines of the Table 1 layout: latency and memory without / with the fused kernel, and their ratios."""
    return list(_render(TABLE1_HEADER, (table1_cells(r, dim) for r in rows), markdown))


def memory_note(device: str) -> str:
    """One sentence on what the memory column means on ``device``."""
    if device == 'cuda':
        return ('Memory: torch.cuda.max_memory_allocated over the timed runs (weights and input included), '
                'MB = bytes / 2**20.')
    return ('Memory: growth of the peak resident set size over the timed runs, each case in a fresh subprocess '
            '(after warm-up: malloc_trim, VmHWM reset; VmHWM minus VmRSS then), MB = bytes / 2**20.')


def stream_table(header: Sequence[str], rows: Iterable[List[str]], markdown: bool,
                 emit: Callable[[str], None]) -> None:
    """Emit a table row by row as results arrive (markdown), or aligned once all are in (plain text)."""
    if markdown:
        for line in _render(header, [], True):
            emit(line)
        for row in rows:
            emit('| ' + ' | '.join(row) + ' |')
    else:
        for line in _render(header, list(rows), False):
            emit(line)
