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

The comparison with the paper's baselines (``benchmark.py compare``, issue 31) measures each network of
:data:`COMPARE_NETWORKS` as the ``network_g`` of its DFLIP test option file builds it, case by case as above,
and sets ESC's advantage (the baseline's figure over ESC's) beside Table 4's and the paper's claimed ratios
(:mod:`esc.evaluation.paper`).
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import inspect
import json
import math
import os
import platform
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
from torch import Tensor, nn

from esc.acceleration import Acceleration, FastPath, autocast, check_dtype
from esc.archs import NETWORKS
from esc.archs.attention import (FactorisedWindowAttention, WindowAttention, normalize_attn_type, resolve_attn_type,
                                 window_attention)
from esc.archs.esc_arch import STREAMING, VARIANTS, build_variant
from esc.archs.streaming import tune_glibc_malloc
from esc.config.reader import read_option_file
from esc.errors import ESCError
from esc.evaluation.complexity import HD_OUTPUT, count_parameters
from esc.evaluation.flashbias_conversion import compare_on_image, factorise_network
from esc.evaluation.paper import CLAIMED_RATIOS, TABLE4
from esc.upscaler import resolve_device

DEFAULT_SCHEDULE: Dict[str, Tuple[int, int]] = {'cpu': (3, 10), 'cuda': (10, 100)}
"""(warm-up passes, timed passes) per device when none are given."""

TABLE1_SIZES: Tuple[Tuple[int, int], ...] = ((64, 64), (288, 288))
TABLE1_WINDOW_SIZES: Tuple[int, ...] = (16, 24, 32)
TABLE1_DIM = 64
TABLE1_HEADS = 4

MIB = 2 ** 20


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
    compile: Optional[str] = None
    channels_last: bool = False
    tf32: bool = False
    """The fast path (:class:`esc.acceleration.FastPath`): torch.compile mode, channels-last, TF32 matmuls."""

    @property
    def fast(self) -> FastPath:
        return FastPath(self.compile, self.channels_last, self.tf32)


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
                  runs: Optional[int] = None, threads: Optional[int] = None, malloc: str = 'tuned',
                  fast: FastPath = FastPath()) -> RunSettings:
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
    return RunSettings(device=resolved, dtype=dtype, warmup=warmup, runs=runs, threads=threads, malloc=malloc,
                       compile=fast.compile, channels_last=fast.channels_last, tf32=fast.tf32)


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


def time_forward(module: nn.Module, x: Tensor, settings: RunSettings, keep_output: bool = False) -> Dict[str, Any]:
    """Warm up, then time ``settings.runs`` forward passes of ``module`` on ``x`` in this process.

    Returns ``latencies_ms``, ``output_shape``, ``memory_mb``, ``peak_mb``, ``baseline_mb`` and
    ``memory_method`` (CUDA: peak allocated memory; CPU: peak RSS growth, see the module docstring), and with
    ``keep_output`` the last pass's output as ``output`` (float32, on the CPU, clamped to [0, 1]).
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
            kept = out.float().clamp(0, 1).cpu() if keep_output else None  # after the timing
            del out
        if device == 'cuda':
            peak = torch.cuda.max_memory_allocated()
            reported = peak
            process_peak = _maxrss_bytes()
        else:
            peak = _peak_rss_bytes()
            reported = max(peak - baseline, 0)
            process_peak = max(process_peak, peak)
    result = dict(latencies_ms=latencies, output_shape=output_shape, memory_mb=reported / MIB, peak_mb=peak / MIB,
                  baseline_mb=baseline / MIB, memory_method=method, extra=dict(process_peak_mb=process_peak / MIB))
    if keep_output:
        result['output'] = kept
    return result


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
    torch.manual_seed(0)  # the same weights in every case: outputs of two settings can be compared
    if spec['kind'] == 'network' and 'network_g' in spec:  # a network of an option file (compare_spec)
        options = dict(spec['network_g'])
        module = NETWORKS[options.pop('type')](**options)
        x = torch.rand(1, 3, height, width, generator=generator)
    elif spec['kind'] == 'network':
        module = build_variant(spec['name'], spec['scale'], attn_type=spec['attn_type'],
                               streaming=spec.get('streaming', 'auto'), bias_rank=spec.get('bias_rank'))
        x = torch.rand(1, 3, height, width, generator=generator)
    else:
        module = window_attention(spec['dim'], spec['window_size'], spec['num_heads'], attn_type=spec['attn_type'],
                                  bias_rank=spec.get('bias_rank'))
        x = torch.rand(1, spec['dim'], height, width, generator=generator)
    module = settings.fast.apply(module.to(settings.device).eval(), dynamic=False)
    return module, settings.fast.input(x.to(settings.device))


@contextlib.contextmanager
def cpu_threads(threads: Optional[int]) -> Iterator[int]:
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
    return run_forward_spec(spec)[0]


def run_forward_spec(spec: Dict[str, Any], keep_output: bool = False) -> Tuple[BenchmarkRecord, Optional[Tensor]]:
    """Build and measure one network or attention case in this process; the output too with ``keep_output``
    (see :func:`time_forward`)."""
    settings = RunSettings(**spec['settings'])
    module, x = _build(spec)
    backend = OWN_ATTENTION if spec['attn_type'] == OWN_ATTENTION else resolve_attn_type(
        normalize_attn_type(spec['attn_type']), torch.device(settings.device), bias_form=spec_bias_form(spec))
    with cpu_threads(settings.threads) as threads:
        result = time_forward(module, x, settings, keep_output)
    output = result.pop('output', None)
    record = BenchmarkRecord(kind=spec['kind'], name=spec['name'], scale=spec['scale'], device=settings.device,
                             attn_type=spec['attn_type'], backend=backend, dtype=settings.dtype,
                             input_shape=tuple(x.shape), warmup=settings.warmup, runs=settings.runs,
                             threads=threads, window_size=spec.get('window_size'), **result)
    record.extra['fast_path'] = str(settings.fast)
    if spec['kind'] == 'network':
        record.extra['params'] = count_parameters(module)
    return record, output


def train_spec(variant: str, scale: int, settings: RunSettings, attn_type: str = 'auto', batch: int = 8,
               lr_size: Tuple[int, int] = (64, 64)) -> Dict[str, Any]:
    """A training-step case: L1 loss, backward and an AdamW step on a random (``batch``, 3, ``lr_size``) batch,
    under ``settings.dtype`` autocast (fp16 with a gradient scaler) and ``settings.fast``."""
    check_variant(variant, scale)
    if batch < 1 or min(lr_size) < 1:
        raise ESCError(f'a training step needs batch >= 1 and a non-empty patch, got {batch} x {lr_size}')
    return dict(kind='train', name=variant, scale=scale, attn_type=normalize_attn_type(attn_type),
                size=list(lr_size), batch=batch, settings=asdict(settings))


def training_model(spec: Dict[str, Any], settings: RunSettings) -> Any:
    """The model a training-step case steps: :class:`esc.models.ESCModel` with L1 and AdamW on the variant, under
    ``settings``' precision (``use_amp``/``amp_bf16``) and fast path, so the benchmark times the very training step
    esc/train.py runs (:meth:`ESCModel.optimize_parameters`), EMA off. On the fast path the CUDA optimizer is AdamW's
    fused kernel (the plain path keeps torch's default, as the official code does)."""
    import esc.compat  # noqa: F401  (ESC's models in basicsr's registry)
    from basicsr.models import build_model

    device = settings.device
    fused = device == 'cuda' and not settings.fast.plain
    network = {**VARIANTS[spec['name']], 'upscaling_factor': spec['scale'], 'attn_type': spec['attn_type']}
    if spec.get('bias_rank') is not None:
        network['bias_rank'] = spec['bias_rank']
    opt = {'name': 'benchmark', 'model_type': 'ESCModel', 'scale': spec['scale'], 'num_gpu': int(device == 'cuda'),
           'is_train': True, 'dist': False, 'rank': 0, 'world_size': 1, 'network_g': network,
           'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
           'train': {'ema_decay': 0, 'optim_g': {'type': 'AdamW', 'lr': 1e-4, **({'fused': True} if fused else {})},
                     'scheduler': {'type': 'MultiStepLR', 'milestones': [10 ** 9], 'gamma': 0.5},
                     'total_iter': settings.warmup + settings.runs,
                     'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
                     'use_amp': settings.dtype != 'fp32', 'amp_bf16': settings.dtype == 'bf16'}}
    model = build_model(opt)
    model.acceleration['train'] = Acceleration(model.acceleration['train'].precision, settings.fast, device)
    settings.fast.prepare(model.net_g)  # the training step compiles net_g itself (ESCModel.runner)
    return model


def run_train_spec(spec: Dict[str, Any], settings: RunSettings) -> BenchmarkRecord:
    """Time ``settings.runs`` training steps after ``settings.warmup`` ones; memory is the process's peak RSS
    (CPU) or peak allocated memory (CUDA) over the timed steps."""
    device = settings.device
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = training_model(spec, settings)
    r, (height, width) = spec['scale'], spec['size']
    batch = {'lq': torch.rand(spec['batch'], 3, height, width, generator=generator).to(device),
             'gt': torch.rand(spec['batch'], 3, height * r, width * r, generator=generator).to(device)}
    model.feed_data(batch)
    lr, hr = model.lq, model.gt

    with cpu_threads(settings.threads) as threads:
        for step in range(settings.warmup):
            model.optimize_parameters(step + 1)
        _synchronize(device)
        if device == 'cuda':
            torch.cuda.reset_peak_memory_stats()
        latencies: List[float] = []
        for step in range(settings.runs):
            start = time.perf_counter()
            model.optimize_parameters(settings.warmup + step + 1)
            _synchronize(device)
            latencies.append((time.perf_counter() - start) * 1e3)
    process_peak = _peak_rss_bytes()  # VmHWM only grows: the whole run's peak
    peak = torch.cuda.max_memory_allocated() if device == 'cuda' else process_peak
    backend = resolve_attn_type(spec['attn_type'], torch.device(device), bias_form=spec_bias_form(spec))
    method = 'torch.cuda.max_memory_allocated' if device == 'cuda' else 'peak RSS of the process (VmHWM)'
    return BenchmarkRecord(kind='train', name=spec['name'], scale=r, device=device, attn_type=spec['attn_type'],
                           backend=backend, dtype=settings.dtype, input_shape=tuple(lr.shape),
                           output_shape=tuple(hr.shape), warmup=settings.warmup, runs=settings.runs, threads=threads,
                           latencies_ms=latencies, memory_mb=peak / MIB, peak_mb=peak / MIB, baseline_mb=0.0,
                           memory_method=method,
                           extra=dict(process_peak_mb=process_peak / MIB, fast_path=str(settings.fast)))


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
    package_root = str(Path(__file__).resolve().parents[2])  # the child imports the same esc as this process
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [package_root, os.environ.get('PYTHONPATH')]))}
    with tempfile.TemporaryDirectory(prefix='esc-benchmark-') as tmp:
        result_path = Path(tmp) / 'record.json'
        try:
            proc = subprocess.run([sys.executable, '-m', 'esc.evaluation.benchmark', '--child', json.dumps(spec),
                                   str(result_path)], capture_output=True, text=True, timeout=timeout, env=env)
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


def memory_note(device: str, isolated: bool = True) -> str:
    """One sentence on what the memory column means on ``device`` (CPU: each case in a fresh subprocess unless
    not ``isolated``)."""
    if device == 'cuda':
        return ('Memory: torch.cuda.max_memory_allocated over the timed runs (weights and input included), '
                'MB = bytes / 2**20.')
    where = 'each case in a fresh subprocess' if isolated else 'all cases in one process (--in-process)'
    return (f'Memory: growth of the peak resident set size over the timed runs, {where} '
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


# --- the fast path against the plain one (issue 13's GPU goals) ---------------------------------------------------

SPEEDUP_NETWORKS: Tuple[Tuple[str, int], ...] = (('ESC', 2), ('ESC', 4), ('ESC-light', 2), ('ESC-light', 4),
                                                 ('ESC-FP', 4))
SPEEDUP_TRAINING: Tuple[Tuple[str, int], ...] = (('ESC', 2), ('ESC-light', 2))
SPEEDUP_TARGETS: Dict[Tuple[str, str], float] = {('network', 'fp32'): 2.0, ('network', 'bf16'): 4.0,
                                                 ('train', 'fp32'): 1.5, ('train', 'bf16'): 3.0}
"""Speed-up over the plain fp32 path each case must reach, by (kind, precision of the fast path)."""
MAX_BF16_ERROR = 1 / 255
"""Mean absolute difference a bf16 output may have from the plain fp32 one (images in [0, 1])."""


@dataclass
class SpeedupRow:
    """One case measured plainly (fp32, eager, as built) and on the fast path at one or more precisions."""

    kind: str
    name: str
    scale: int
    plain: BenchmarkRecord
    fast: Dict[str, BenchmarkRecord]
    error: Dict[str, float] = field(default_factory=dict)
    """Per fast precision: mean |fast − plain| of the clamped outputs (network cases)."""

    def ratio(self, dtype: str) -> float:
        return self.plain.median_ms / self.fast[dtype].median_ms

    def failures(self, dtype: str) -> List[str]:
        """What the fast path at ``dtype`` misses of its targets (empty: all met)."""
        fast, missed = self.fast[dtype], []
        target = SPEEDUP_TARGETS.get((self.kind, dtype))
        if target is not None and self.ratio(dtype) < target:
            missed.append(f'speed {self.ratio(dtype):.2f}x < {target:g}x')
        if fast.memory_mb > self.plain.memory_mb:
            missed.append(f'memory {fast.memory_mb:.0f} > {self.plain.memory_mb:.0f} MB')
        if dtype != 'fp32' and self.error.get(dtype, 0.0) > MAX_BF16_ERROR:
            missed.append(f'error {self.error[dtype] * 255:.2f}/255 > 1/255')
        return missed


def speedup_row(kind: str, variant: str, scale: int, plain: RunSettings, fast: Sequence[RunSettings],
                attn_type: str = 'auto', batch: int = 16, lr_size: Optional[Tuple[int, int]] = None) -> SpeedupRow:
    """Measure one case in this process: ``plain`` once, then each of ``fast`` (same weights, same input).

    ``kind`` 'network' (``lr_size`` default: the HD output's) or 'train' (``batch`` of ``lr_size``, default 64×64).
    Compiled code and CUDA graphs are dropped between cases (``torch._dynamo.reset``)."""
    def measure_one(settings: RunSettings) -> Tuple[BenchmarkRecord, Optional[Tensor]]:
        torch._dynamo.reset()
        gc.collect()
        if settings.device == 'cuda':
            torch.cuda.empty_cache()
        if kind == 'train':
            spec = train_spec(variant, scale, settings, attn_type, batch, lr_size or (64, 64))
            return run_train_spec(spec, settings), None
        return run_forward_spec(network_spec(variant, scale, settings, attn_type, lr_size, streaming='off'),
                                keep_output=True)

    plain_record, plain_output = measure_one(plain)
    row = SpeedupRow(kind=kind, name=variant, scale=scale, plain=plain_record, fast={})
    for settings in fast:
        record, output = measure_one(settings)
        row.fast[settings.dtype] = record
        if output is not None and plain_output is not None:
            row.error[settings.dtype] = (output - plain_output).abs().mean().item()
    torch._dynamo.reset()
    return row


SPEEDUP_HEADER = ('Case', 'Plain fp32 (ms / MB)', 'Fast fp32 (ms / MB)', 'Speed-up', 'Fast bf16 (ms / MB)',
                  'Speed-up', 'bf16 error (/255)', 'Targets')


def speedup_cells(row: SpeedupRow) -> List[str]:
    """The cells of one case: plain and fast figures, ratios, the bf16 output error and which targets are missed."""
    def figures(record: Optional[BenchmarkRecord]) -> str:
        return '-' if record is None else f'{_fmt(record.median_ms)} / {_fmt(record.memory_mb, 0)}'

    def ratio(dtype: str) -> str:
        return _fmt(row.ratio(dtype), 2, 'x') if dtype in row.fast else '-'

    if row.kind == 'train':
        batch, _, height, width = row.plain.input_shape
        case = f'train step, {row.name} x{row.scale}, batch {batch} of {height}x{width}'
    else:
        case = f'{row.name} x{row.scale}, {row.plain.output_shape[-1]}x{row.plain.output_shape[-2]} output'
    missed = [f'{dtype}: {m}' for dtype in row.fast for m in row.failures(dtype)]
    error = row.error.get('bf16')
    return [case, figures(row.plain), figures(row.fast.get('fp32')), ratio('fp32'), figures(row.fast.get('bf16')),
            ratio('bf16'), '-' if error is None else f'{error * 255:.3f}', '; '.join(missed) or 'met']


TEST_SET_LR_SIZES: Tuple[Tuple[int, int], ...] = (
    (240, 250), (288, 360), (256, 256), (144, 176), (180, 125), (138, 138), (181, 250), (256, 384), (328, 264),
    (195, 293), (160, 240), (240, 160), (170, 256), (321, 481))
"""Fourteen distinct LR sizes as a ×2 test set has them: the ten of Set14 (its four 512×512 images share one),
B100's landscape and portrait (240×160), and two more."""


@dataclass
class SizeRecord:
    """One image of a test-set pass: its first pass (compilation included), its steady latency and peak memory."""

    size: Tuple[int, int]
    first_ms: float
    median_ms: float
    memory_mb: float
    compiled_graphs: int
    """dynamo's count of compiled graphs after this image (all of them since the pass began)."""


def evaluate_sizes(variant: str, scale: int, sizes: Sequence[Tuple[int, int]], settings: RunSettings,
                   attn_type: str = 'auto', runs: int = 3) -> Iterator[SizeRecord]:
    """Run one network over images of many sizes in one process, as esc/test.py runs a test set: each LR image
    reflect-padded to whole windows, the output cropped back; ``settings.fast`` compiled with dynamic shapes.

    Memory: CUDA peak allocated memory over the image's passes; CPU peak RSS of the process (VmHWM)."""
    from torch._dynamo.utils import counters

    from esc.archs.layers import pad_to_multiple
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    net = build_variant(variant, scale, attn_type=attn_type, streaming='off').to(settings.device).eval()
    run = settings.fast.apply(net, dynamic=True)
    generator = torch.Generator().manual_seed(0)
    with cpu_threads(settings.threads), torch.no_grad(), autocast(settings.device, settings.dtype):
        for height, width in sizes:
            lq = settings.fast.input(torch.rand(1, 3, height, width, generator=generator).to(settings.device))
            if settings.device == 'cuda':
                torch.cuda.reset_peak_memory_stats()
            latencies = []
            for _ in range(1 + runs):
                _synchronize(settings.device)
                start = time.perf_counter()
                run(pad_to_multiple(lq, net.window_size))[..., :height * scale, :width * scale]
                _synchronize(settings.device)
                latencies.append((time.perf_counter() - start) * 1e3)
            peak = torch.cuda.max_memory_allocated() if settings.device == 'cuda' else _peak_rss_bytes()
            yield SizeRecord(size=(height, width), first_ms=latencies[0], median_ms=statistics.median(latencies[1:]),
                             memory_mb=peak / MIB, compiled_graphs=int(counters['stats']['unique_graphs']))


SIZES_HEADER = ('LR input (HxW)', 'First pass (ms)', 'Median of the next passes (ms)', 'Peak memory (MB)',
                'Graphs compiled so far')


def size_cells(record: SizeRecord) -> List[str]:
    return [f'{record.size[0]}x{record.size[1]}', _fmt(record.first_ms), _fmt(record.median_ms),
            _fmt(record.memory_mb, 0), str(record.compiled_graphs)]


# --- FlashBias: exact attention against low-rank factorised position biases (issue 14) -----------------------------

FLASHBIAS_RANKS: Tuple[int, ...] = (8, 16, 32)
"""Ranks measured by default: practical ones for flash kernels (d + R ≤ 48 for d = 16)."""


def spec_bias_form(spec: Dict[str, Any]) -> str:
    """How the attention layers of a case hold their position bias ('factors' with a ``bias_rank``, else 'table')."""
    return FactorisedWindowAttention.bias_form if spec.get('bias_rank') else WindowAttention.bias_form


def with_bias_rank(spec: Dict[str, Any], bias_rank: int, attn_type: str = 'flashbias') -> Dict[str, Any]:
    """A copy of a network, attention or training case whose attention layers hold rank-``bias_rank`` factors
    (:mod:`esc.archs.attention.flashbias`) and run on ``attn_type``."""
    return {**spec, 'attn_type': normalize_attn_type(attn_type), 'bias_rank': bias_rank}


@dataclass
class FlashBiasRow:
    """One case measured exactly (bias tables, ``attn_type`` auto) and factorised, by column label."""

    case: str
    exact: BenchmarkRecord
    factorised: Dict[str, BenchmarkRecord]


def flashbias_columns(ranks: Sequence[int], attn_types: Sequence[str] = ('flashbias',)) -> List[Tuple[str, int, str]]:
    """(label, rank, attn_type) of the factorised columns."""
    return [(f'{attn_type} R={rank}', rank, attn_type) for attn_type in attn_types for rank in ranks]


def iter_flashbias(cases: Iterable[Tuple[str, Dict[str, Any]]], ranks: Sequence[int],
                   attn_types: Sequence[str] = ('flashbias',), isolate: Optional[bool] = None,
                   timeout: Optional[float] = None) -> Iterator[FlashBiasRow]:
    """Measure each (name, exact case) and its factorised versions at ``ranks`` on ``attn_types``."""
    columns = flashbias_columns(ranks, attn_types)
    for case, spec in cases:
        exact = measure(spec, isolate=isolate, timeout=timeout)
        factorised = {label: measure(with_bias_rank(spec, rank, attn_type), isolate=isolate, timeout=timeout)
                      for label, rank, attn_type in columns}
        yield FlashBiasRow(case, exact, factorised)


def flashbias_header(ranks: Sequence[int], attn_types: Sequence[str] = ('flashbias',), unit: str = 'ms') -> Tuple[str, ...]:
    return ('Case', f'Exact: median (min) {unit} / MB', *(f'{label}: median (min) {unit} / MB, speed-up'
                                                          for label, _, _ in flashbias_columns(ranks, attn_types)))


def flashbias_cells(row: FlashBiasRow) -> List[str]:
    """Exact median latency (fastest run) / memory, then each factorised column's with its speed-up over the exact
    case: median over median (fastest over fastest, which a CPU shared with other jobs disturbs least)."""
    def figures(record: BenchmarkRecord) -> str:
        return f'{_fmt(record.median_ms)} ({_fmt(record.min_ms)}) / {_fmt(record.memory_mb, 0)}'

    def speedup(record: BenchmarkRecord) -> str:
        return f'{_fmt(exact.median_ms / record.median_ms, 2, "x")} ({_fmt(exact.min_ms / record.min_ms, 2, "x")})'

    exact = row.exact
    label = exact.backend if exact.attn_type == exact.backend else f'{exact.attn_type}: {exact.backend}'
    return [row.case, f'{figures(exact)} ({label})', *(f'{figures(r)}, {speedup(r)}' for r in row.factorised.values())]


def flashbias_accuracy(net: nn.Module, images: Sequence[Tensor], ranks: Sequence[int]) -> Iterator[List[str]]:
    """For each rank: ``net`` converted by :func:`esc.evaluation.flashbias_conversion.factorise_network` (on a
    copy), the least energy kept by a layer, and the PSNR (mean and worst) and largest absolute difference of its
    output against ``net``'s on ``images`` ((1, 3, H, W) in [0, 1])."""
    import copy

    svds: Dict[str, Any] = {}
    for rank in ranks:
        factorised = copy.deepcopy(net)
        reports = factorise_network(factorised, rank=rank, svds=svds)
        results = [compare_on_image(net, factorised, image) for image in images]
        psnrs = [r['psnr'] for r in results]
        yield [str(rank), f"{min(r.energy for r in reports):.4f}", _fmt(statistics.mean(psnrs), 2),
               _fmt(min(psnrs), 2), f"{max(r['max_difference'] for r in results):.3g}"]


FLASHBIAS_ACCURACY_HEADER = ('Rank', 'Least energy kept (a layer)', 'PSNR vs exact, mean (dB)', 'worst (dB)',
                             'Max abs difference')


# --- ESC against the paper's baselines (issue 31): the comparison of its abstract and Table 4 ------------------------

CHECKOUT = Path(__file__).resolve().parents[2]  # the checkout's options/ (scripts/benchmark.py runs from one)

COMPARE_NETWORKS: Dict[str, str] = {
    'ESC': 'options/test/ESC/*_X{scale}_DFLIP.yml',
    'SRFormer-lt': 'options/test/SRFormerLight/*_X{scale}.yml',
    'ATD-lt': 'options/test/ATDLight/*_X{scale}.yml',
    'HiT-SRF': 'options/test/HiTSRF/*_X{scale}.yml',
}
"""The networks of the comparison, by the names of the paper's Table 4 (:data:`esc.evaluation.paper.TABLE4`), each with
the pattern (under the checkout; ``{scale}`` filled in) of the DFLIP test option file whose ``network_g`` builds it,
so the benchmark measures the configurations those files evaluate and keeps no copy of them."""
REFERENCE = 'ESC'
"""The network every other one is compared with."""
OWN_ATTENTION = '-'
"""The attention type of a network without ESC's ``attn_type`` option (its own attention, as written)."""


class MissingNetwork(ESCError):
    """A network of the comparison cannot be built here yet: no option file, or its type is not registered."""


def compare_option_file(name: str, scale: int) -> Path:
    """The one option file of :data:`COMPARE_NETWORKS` for ``name`` at ``scale``; :class:`MissingNetwork` if none."""
    pattern = COMPARE_NETWORKS[name].format(scale=scale)
    matches = sorted(CHECKOUT.glob(pattern))
    if not matches:
        raise MissingNetwork(f'{name} x{scale}: no option file matches {pattern}')
    if len(matches) > 1:
        raise ESCError(f"{name} x{scale}: {len(matches)} option files match {pattern}: "
                       f"{', '.join(m.name for m in matches)}; keep one")
    return matches[0]


def _shown(path: Path) -> str:
    """``path`` relative to the checkout where it lies inside it."""
    try:
        return str(path.relative_to(CHECKOUT))
    except ValueError:
        return str(path)


def compare_spec(name: str, scale: int, settings: RunSettings, lr_size: Optional[Tuple[int, int]] = None,
                 attn_type: str = 'auto', streaming: str = 'off') -> Dict[str, Any]:
    """The network case of ``name`` (a key of :data:`COMPARE_NETWORKS`) at ``scale``: its option file's
    ``network_g``, with ``attn_type`` and ``streaming`` where the network has those options (ESC), on the LR input
    of the HD output unless ``lr_size``. :class:`MissingNetwork` where the file or the network type is not here."""
    if name not in COMPARE_NETWORKS:
        raise ESCError(f"network {name!r} is not one of the comparison's: {', '.join(COMPARE_NETWORKS)}")
    if scale < 1:
        raise ESCError(f'scale must be a positive integer, got {scale}')
    if streaming not in STREAMING:
        raise ESCError(f"streaming must be one of {', '.join(STREAMING)}, got {streaming!r}")
    path = compare_option_file(name, scale)
    opt = read_option_file(str(path))
    network = opt.get('network_g')
    kind = network.get('type') if isinstance(network, dict) else None
    if kind not in NETWORKS:
        raise MissingNetwork(f'{name} x{scale}: {_shown(path)}: network_g.type {kind!r} is not a network of '
                             'esc.archs (NETWORKS)')
    if opt.get('scale') != scale:
        raise ESCError(f"{name} x{scale}: {_shown(path)} is for scale {opt.get('scale')!r}")
    network = dict(network)
    accepted = inspect.signature(NETWORKS[kind]).parameters
    if 'attn_type' in accepted:
        attn_type = network['attn_type'] = normalize_attn_type(attn_type)
    else:
        attn_type = OWN_ATTENTION
    if 'streaming' in accepted:
        network['streaming'] = streaming
    size = tuple(lr_size) if lr_size is not None else hd_lr_size(scale)
    return dict(kind='network', name=name, scale=scale, attn_type=attn_type, size=list(size),
                streaming=network.get('streaming'), option_file=_shown(path), network_g=network,
                settings=asdict(settings))


def cpu_name() -> str:
    """The CPU's model name as the kernel reports it (platform's answer elsewhere)."""
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    """The GPU's or CPU's name, for the line that says where a table was measured."""
    return torch.cuda.get_device_name() if device == 'cuda' else f'CPU {cpu_name()}'


def load_average() -> Optional[Tuple[float, float, float]]:
    """The 1, 5 and 15-minute load averages (None where the system has none): how busy a shared CPU was."""
    try:
        return os.getloadavg()
    except OSError:
        return None


def paper_ratio(name: str, scale: int, quantity: str) -> Optional[float]:
    """Table 4's ratio of ``name``'s latency or memory to ESC's at ``scale`` (None where Table 4 lacks a row)."""
    field_name = {'latency': 'latency_ms', 'memory': 'memory_mb'}[quantity]
    rows = [TABLE4.get((n, scale)) for n in (name, REFERENCE)]
    if None in rows:
        return None
    return getattr(rows[0], field_name) / getattr(rows[1], field_name)


def claimed_ratios(name: str, scale: int, quantity: str) -> List[Dict[str, Any]]:
    """What the paper's text claims for ESC against ``name`` at ``scale``
    (:data:`esc.evaluation.paper.CLAIMED_RATIOS`)."""
    return [dict(ratio=c.ratio, where=c.where) for c in CLAIMED_RATIOS
            if (c.baseline, c.scale, c.quantity) == (name, scale, quantity)]


def measured_ratio(record: Optional[BenchmarkRecord], reference: Optional[BenchmarkRecord],
                   quantity: str) -> Optional[float]:
    """``record``'s median latency or memory over ``reference``'s (None where either is missing or zero)."""
    if record is None or reference is None:
        return None
    if quantity == 'latency':
        return record.median_ms / reference.median_ms
    return record.memory_mb / reference.memory_mb if reference.memory_mb > 0 else None


def compare_entry(name: str, scale: int, spec: Dict[str, Any], record: Optional[BenchmarkRecord],
                  reference: Optional[BenchmarkRecord], note: str = '') -> Dict[str, Any]:
    """One row of the comparison as JSON: the measurement (None with a ``note`` where there is none), Table 4's row
    and, for a baseline, ESC's advantage measured, by Table 4 and as the paper's text claims it."""
    paper = TABLE4.get((name, scale))
    entry: Dict[str, Any] = dict(network=name, scale=scale, option_file=spec['option_file'],
                                 lr_size=list(spec['size']), note=note, measured=None,
                                 table4=paper._asdict() if paper is not None else None)
    if paper is not None:
        entry['table4'].pop('psnr_ssim')
    if record is not None:
        entry['measured'] = dict(params=record.extra.get('params'), latency_ms=record.median_ms,
                                 latencies_ms=record.latencies_ms, memory_mb=record.memory_mb,
                                 memory_method=record.memory_method, output_shape=list(record.output_shape),
                                 attn_type=record.attn_type, backend=record.backend, threads=record.threads,
                                 warmup=record.warmup, runs=record.runs, dtype=record.dtype, device=record.device)
    if name != REFERENCE:
        entry['esc_advantage'] = {quantity: dict(measured=measured_ratio(record, reference, quantity),
                                                 table4=paper_ratio(name, scale, quantity),
                                                 claimed=claimed_ratios(name, scale, quantity))
                                  for quantity in ('latency', 'memory')}
    return entry


COMPARE_HEADER = ('Network', 'Scale', 'LR input (HxW)', 'Params (K)', 'Latency median (ms)', 'Memory (MB)',
                  'ESC faster: measured', 'ESC faster: Table 4', 'ESC faster: claimed', 'ESC less memory: measured',
                  'ESC less memory: Table 4', 'ESC less memory: claimed', 'Table 4 latency (ms)', 'Table 4 memory (MB)')
"""Ratios are the baseline's figure over ESC's: how many times faster ESC is, and how many times less memory it
takes (Table 4's from its RTX 4090 columns; claimed: the paper's text, where it says where)."""


def compare_cells(entry: Dict[str, Any]) -> List[str]:
    """The table cells of one :func:`compare_entry`."""
    measured, paper = entry['measured'], entry['table4']
    height, width = entry['lr_size']
    if measured is None:
        figures = ['-', entry['note'] or '-', '-']
    else:
        params = measured['params']
        figures = [_fmt(params / 1e3, 0) if params is not None else '-', _fmt(measured['latency_ms']),
                   _fmt(measured['memory_mb'])]
    ratios = ['-'] * 6
    if 'esc_advantage' in entry:
        ratios = []
        for quantity in ('latency', 'memory'):
            advantage = entry['esc_advantage'][quantity]
            claims = '; '.join(f"{c['ratio']:g}x ({c['where']})" for c in advantage['claimed'])
            ratios += [_fmt(advantage['measured'], 2, 'x'), _fmt(advantage['table4'], 2, 'x'), claims or '-']
    table4 = [_fmt(paper['latency_ms']), _fmt(paper['memory_mb'], 0)] if paper is not None else ['-', '-']
    return [entry['network'], f"x{entry['scale']}", f'{height}x{width}', *figures, *ratios, *table4]


if __name__ == '__main__':  # the measuring subprocess of run_spec_isolated: --child SPEC_JSON RESULT_PATH
    if sys.argv[1:2] != ['--child']:
        sys.exit('esc/evaluation/benchmark.py is the engine of scripts/benchmark.py, not a command; run that')
    child_main(sys.argv[2:])
