"""Shared fixtures: the official reference tensors in ../shared (skipped where absent) and paths."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator

import pytest
import torch

import esc.compat  # noqa: F401  (adapts basicsr and registers the networks before any test builds one)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('ESC_SHARED', REPO.parent / 'shared'))
SCRIPTS = REPO / 'scripts'
REFERENCE_FILES = ('esc_x2.pt', 'esc_fp_x4.pt', 'esc_real_x4.pt')


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or a skip naming what is missing (a user's clone has no shared/)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f'{path} is absent: the official reference data lives beside the project checkout only')
    return path


def load_script(name: str) -> ModuleType:
    """scripts/<name>.py imported in this process, finding its sibling helpers as ``python scripts/<name>.py`` does."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(f'scripts_{name}', SCRIPTS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module


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


@pytest.fixture(scope='session')
def reference():
    """Load one official reference file by name (cached for the session)."""
    cache = {}

    def load(name: str) -> dict:
        if name not in cache:
            cache[name] = torch.load(shared_path('reference', name), map_location='cpu', weights_only=False)
        return cache[name]

    return load


@pytest.fixture(scope='session')
def demo_weights(tmp_path_factory) -> Path:
    """ESC-light x2 trained by the README's demo, as the README runs it (300 iterations; about two minutes on a quiet
    2-core CPU) but without its validations and tensorboard logs, once for the session: the demo test checks that it
    beats bicubic, and the tiling-seam test judges tiles on weights that have learnt something (random ones are far
    less local)."""
    from tests.test_entrypoints import run  # esc/train.py, in this process

    root = tmp_path_factory.mktemp('demo')
    result = run([str(REPO / 'esc/train.py'), '-opt', str(REPO / 'options/demo/train_ESC_light_X2_demo.yml'),
                  '--force_yml', 'val:val_freq=1000', 'logger:save_checkpoint_freq=300', 'logger:use_tb_logger=false'],
                 root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / 'experiments/demo_ESC_light_X2/models/net_g_300.pth'


@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(0)


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
