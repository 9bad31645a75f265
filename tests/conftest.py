"""The fixtures and hooks every test module may use: pytest-xdist's workers (how many ``-n auto`` starts, torch's
threads in each, whole modules to a worker), the official reference tensors in ../shared (skipped where absent),
peak memory, the shrunk IQA networks and their weight files, scalar C++ kernels for the CPU compile checks, a seed
and torch's compiler configuration kept per test. Plain helper functions and constants are in tests/helpers/ (no
test module imports another, conftest.py included: tests/test_suite_layout.py checks)."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
from typing import Iterator

import pytest
import torch

import esc.compat  # noqa: F401  (adapts basicsr and registers the networks before any test builds one)
from esc.io.images import available_memory
from tests.helpers.paths import shared_path

WORKER_MEMORY_GB = 4
"""The memory one pytest-xdist worker may hold at its peak, with the training processes some of its tests start."""


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hooks: the suite also runs without it (the GPU machine has none)
def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto`` (the README's test command): a worker per core, as many as the available memory holds (the cores
    alone where the system cannot tell its memory)."""
    memory = available_memory()
    workers = _cores() if memory is None else min(_cores(), memory // (WORKER_MEMORY_GB * 2**30))
    return max(1, workers)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's default ``--dist load`` made file by file (as ``--dist loadfile``): a module's tests run on one
    worker, so a module-scoped fixture runs once — tests/test_demo.py's 300 demo iterations among them, which test by
    test scheduling ran on both workers of the slow set. Any other ``--dist`` is left as asked."""
    if config.getoption('dist') == 'load':
        from xdist.scheduler import LoadFileScheduling

        return LoadFileScheduling(config, log)
    return None


def pytest_configure(config):
    """In a pytest-xdist worker, torch runs on the worker's share of the cores, and so do the processes its tests
    start (OMP_NUM_THREADS). Two workers at two threads each contended for two cores; at one thread each the default
    suite took 3 min 48 s on the 2-core CI machine, against 7 min in one process at one thread or two."""
    workers = os.environ.get('PYTEST_XDIST_WORKER_COUNT')
    if workers:
        threads = max(1, _cores() // int(workers))
        torch.set_num_threads(threads)
        os.environ['OMP_NUM_THREADS'] = str(threads)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip cleanly where no CUDA device is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA device (torch.cuda.is_available() is False here)')
    for item in items:
        if item.get_closest_marker('cuda'):
            item.add_marker(skip)


class PeakMemory:
    """What :func:`measure_peak_memory` measured: the process's peak resident memory above its size at the start."""
    bytes: int = 0


def _status_bytes(field: str) -> int:
    with open('/proc/self/status') as status:
        return int(re.search(rf'{field}:\s+(\d+) kB', status.read()).group(1)) * 1024


@contextlib.contextmanager
def measure_peak_memory() -> Iterator[PeakMemory]:
    """Measure the peak resident memory of this process inside the block, in place (no subprocess): Linux resets the
    high-water mark (VmHWM) when 5 is written to /proc/self/clear_refs, so the peak read at the end is this block's.
    A refusal that happens before the allocation it guards shows as a small figure; one that allocates first does
    not. Skips where the kernel offers no such reset (not Linux)."""
    try:
        with open('/proc/self/clear_refs', 'w') as clear:
            clear.write('5')
    except OSError as exc:
        pytest.skip(f'cannot reset the peak-memory mark here ({exc}); peak memory is measured on Linux only')
    start = _status_bytes('VmRSS')
    result = PeakMemory()
    try:
        yield result
    finally:
        result.bytes = max(0, _status_bytes('VmHWM') - start)


@pytest.fixture
def peak_memory():
    """:func:`measure_peak_memory` as a fixture: ``with peak_memory() as peak: ...; assert peak.bytes < limit``."""
    return measure_peak_memory


@pytest.fixture
def scalar_cpu_kernels():
    """Inductor writes scalar C++ kernels for this test's CPU compiles: ``cpp.simdlen`` 1 matches no vector
    instruction set (put back after the test).

    The tests that take it check what this project asks of ``torch.compile``: how many graphs, no graph breaks,
    outputs equal to the eager network's, parameter names unchanged. How inductor vectorises a C++ loop is not
    among them, and vector kernels take about half again as long to generate and build on two cores with an empty
    compile cache (a fresh environment's): 34 s against 23 s for the many-sizes evaluation network on a 2-core
    EPYC. Vector kernels are still compiled elsewhere in the suite: FlexAttention's CPU template needs them.

    Not ``cpp.vec_isa_ok`` off: inductor caches the instruction sets it finds under the setting of the moment, so
    every later compile in the process stayed scalar (FlexAttention's failed)."""
    import torch._inductor.config

    with torch._inductor.config.patch({'cpp.simdlen': 1}):
        yield


@pytest.fixture(scope='session')
def reference():
    """Load one official reference file by name (cached for the session)."""
    cache = {}

    def load(name: str) -> dict:
        if name not in cache:
            cache[name] = torch.load(shared_path('reference', name), map_location='cpu', weights_only=False)
        return cache[name]

    return load


@pytest.fixture
def small_networks(monkeypatch):
    """pyiqa's no-reference metric networks shrunk (:data:`tests.helpers.iqa.SMALL_METRIC_NETWORKS`) for the test,
    esc.metrics' cache of built networks emptied before and after."""
    from esc.metrics import no_reference
    from tests.helpers.iqa import SMALL_METRIC_NETWORKS

    for metric, shrink in SMALL_METRIC_NETWORKS.items():
        monkeypatch.setitem(no_reference.METRICS, metric, dataclasses.replace(no_reference.METRICS[metric], **shrink))
    no_reference._cached_network.cache_clear()
    yield
    no_reference._cached_network.cache_clear()


@pytest.fixture(scope='session')
def full_reference_files(tmp_path_factory):
    """Weight files in the published layouts with random weights, written once: torchvision's ImageNet AlexNet and
    VGG16 (their convolutional features: the classifiers pyiqa drops are left out, as the loader allows), pyiqa's
    LPIPS linear layers and DISTS alpha/beta, and the FID Inception. Returns {name: path}."""
    import torchvision
    from esc.metrics.offline import LocalWeights, pyiqa_offline
    from pyiqa.archs import inception
    from pyiqa.archs.lpips_arch import LPIPS

    root = tmp_path_factory.mktemp('iqa_full_reference')
    torch.manual_seed(0)
    files = {name: root / f'{name}.pth' for name in ('alexnet', 'vgg16', 'lpips', 'dists', 'dists_other', 'fid')}
    for name, constructor in (('alexnet', torchvision.models.alexnet), ('vgg16', torchvision.models.vgg16)):
        features = {k: v for k, v in constructor(weights=None).state_dict().items() if k.startswith('features.')}
        torch.save(features, files[name])
    with pyiqa_offline(local_weights={'alexnet': LocalWeights(str(files['alexnet']), 'alexnet', 'AlexNet',
                                                              ('classifier.',))}):
        lpips = LPIPS(pretrained=False, net='alex', version='0.1')
    with torch.no_grad():
        for parameter in lpips.parameters():  # lin<i> and lins.<i> are one module under two names
            parameter.uniform_()
    torch.save({k: v for k, v in lpips.state_dict().items() if k.startswith('lin')}, files['lpips'])
    for name in ('dists', 'dists_other'):
        torch.save({'alpha': torch.rand(1, 1475, 1, 1) * 0.1, 'beta': torch.rand(1, 1475, 1, 1) * 0.1}, files[name])
    original = inception.load_pretrained_network
    inception.load_pretrained_network = lambda *args, **kwargs: None  # an untrained FID Inception to randomise
    try:
        network = inception.fid_inception_v3()
        with torch.no_grad():  # He-initialised convolutions: features that tell images apart
            for module in network.modules():
                if isinstance(module, torch.nn.Conv2d):
                    torch.nn.init.kaiming_normal_(module.weight)
        torch.save(network.state_dict(), files['fid'])
    finally:
        inception.load_pretrained_network = original
    return files


@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _torch_threads_unchanged():
    """Every test leaves torch's intra-op thread count as it found it: a command run in the test's process with
    ``--threads 1`` once left it at one, and every later test in the session ran on a single core (the tiled Set14
    check took 79 s instead of 47). A test that leaves it changed errors here, and the count is put back."""
    threads = torch.get_num_threads()
    yield
    left = torch.get_num_threads()
    if left != threads:
        torch.set_num_threads(threads)
        pytest.fail(f'the test left torch with {left} intra-op threads (it found {threads}); put the count back',
                    pytrace=False)


@pytest.fixture(autouse=True)
def _torch_compiler_configuration_unchanged():
    """Every test leaves torch's compiler configuration (dynamo's and, once loaded, inductor's) as it found it.

    A test that changes it must use torch's own means (``torch._dynamo.config.patch``): pytest's monkeypatch cannot
    undo a change to these modules (from pytest 9.2 it deletes the key, and every later compile in the process
    fails), and a value left changed alters what later tests compile. A test that leaves it changed errors here,
    naming the keys, and the configuration is put back for the tests after it."""
    import torch._dynamo  # noqa: F401  (loads dynamo's configuration module)

    configurations = {'torch._dynamo.config': torch._dynamo.config}
    if 'torch._inductor.config' in sys.modules:
        configurations['torch._inductor.config'] = sys.modules['torch._inductor.config']
    before = {name: module.get_config_copy() for name, module in configurations.items()}
    yield
    changed = []
    for name, module in configurations.items():
        after = module.get_config_copy()
        keys = sorted(key for key in before[name].keys() | after.keys()
                      if key not in after or key not in before[name] or after[key] != before[name][key]
                      or not hasattr(module, key))  # a deleted key keeps its default in the copy but cannot be read
        if keys:
            changed.append(f"{name}: {', '.join(keys)}")
            for key in keys:
                if key in before[name]:
                    setattr(module, key, before[name][key])  # torch's setter also unhides a deleted key
    assert not changed, f'the test left torch\'s compiler configuration changed ({"; ".join(changed)})'
