"""The test suite's own layout: test modules share helpers through tests/helpers/ and fixtures through conftest.py,
never by importing one another (conftest.py included), so that each test module can be read, moved or deleted on its
own and what is shared has one home."""
from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from typing import List, Tuple

import pytest
import torch

TESTS = Path(__file__).resolve().parent


def imported_modules(source: str, module: str) -> List[Tuple[int, str]]:
    """(line, absolute name) of each module the imports of ``source`` import (anywhere in it, inside functions too),
    ``source`` being the module ``module`` (``tests.test_x``, ``tests.helpers.runs``): a relative import is
    resolved against that module's package."""
    package = module.split('.')[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            parent = '.'.join([*base, *([node.module] if node.module else [])])
            found.append((node.lineno, parent))
            found.extend((node.lineno, f'{parent}.{alias.name}') for alias in node.names)  # `from tests import test_x`
    return found


def is_test_module(name: str) -> bool:
    """A test module or conftest.py of tests/ (``tests.test_x``, ``tests.conftest``, ``tests.helpers.conftest``)."""
    parts = name.split('.')
    return parts[0] == 'tests' and len(parts) > 1 and (parts[-1] == 'conftest' or parts[-1].startswith('test_'))


ATTRIBUTE_OF_A_TEST_MODULE = re.compile(r'tests(\.\w+)*\.(test_\w+|conftest)\.[\w.]+')
"""A dotted name of something in a test module, as ``monkeypatch.setattr('tests.test_x.name', ...)`` spells it."""


def named_attributes(source: str) -> List[Tuple[int, str]]:
    """(line, name) of each string in ``source`` that names something in a test module (a patch target there)."""
    strings = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Constant)]
    return [(node.lineno, node.value) for node in strings
            if isinstance(node.value, str) and ATTRIBUTE_OF_A_TEST_MODULE.fullmatch(node.value)]


def imports_of_test_modules(path: Path) -> List[str]:
    """Each import in ``path`` (a file under tests/) of a test module or a conftest.py, as 'file:line imports name',
    and each string naming something in one (a patch target), as 'file:line names name'."""
    relative = path.relative_to(TESTS.parent)
    module = '.'.join(relative.with_suffix('').parts)
    source = path.read_text()
    imports = {f'{relative}:{line} imports {name}'
               for line, name in imported_modules(source, module) if is_test_module(name)}
    return sorted(imports.union(f'{relative}:{line} names {name}' for line, name in named_attributes(source)))


def test_no_test_module_imports_another():
    """No file under tests/ (test modules, conftest.py, the helpers) imports a test module or conftest.py: a helper
    two test modules share belongs in tests/helpers/, a fixture in tests/conftest.py."""
    files = sorted(TESTS.rglob('*.py'))
    assert TESTS / 'conftest.py' in files and len(files) > 40
    offences = [offence for path in files for offence in imports_of_test_modules(path)]
    assert not offences, ('test modules share helpers through tests/helpers/ and fixtures through tests/conftest.py, '
                          'not by importing one another: ' + '; '.join(offences))


@pytest.mark.parametrize('statement, module, found', [
    ('from tests.test_entrypoints import run', 'tests.test_x', ['tests.test_entrypoints']),
    ('import tests.conftest', 'tests.test_x', ['tests.conftest']),
    ('from tests import test_video', 'tests.test_x', ['tests.test_video']),
    ('from .conftest import REPO', 'tests.test_x', ['tests.conftest']),
    ('from ..test_lte import tiny', 'tests.helpers.networks', ['tests.test_lte']),
    ('def helper():\n    from tests.test_model import model_options\n', 'tests.test_x', ['tests.test_model']),
    ('from tests.helpers.runs import run\nfrom tests.helpers import paths\nimport esc.compat', 'tests.test_x', []),
    ('from .runs import TINY_NET', 'tests.helpers.models', []),
], ids=['absolute', 'module', 'from-the-package', 'relative', 'relative-from-a-helper', 'in-a-function',
        'helpers-pass', 'relative-helper-passes'])
def test_the_check_finds_every_spelling_of_such_an_import(statement, module, found):
    """The check above sees absolute, relative and function-level imports of a test module, and lets helper
    imports pass."""
    assert sorted({name for _, name in imported_modules(statement, module) if is_test_module(name)}) == found


def test_the_check_finds_patch_targets_in_test_modules():
    """A patch target in a test module is a dependency on it too (patching it there leaves a helper that moved
    away unpatched); one in a helper or in the package is not."""
    source = """
monkeypatch.setattr('tests.test_model.build_model', build)
monkeypatch.setattr('tests.conftest.REPO', root)
monkeypatch.setattr('tests.helpers.models.build_model', build)
monkeypatch.setattr('esc.spandrel.MAIN_REGISTRY', registry)
text = 'tests.test_model'
"""
    found = named_attributes(source)
    assert [line for line, _ in found] == [2, 3]
    assert [name.rpartition('.')[2] for _, name in found] == ['build_model', 'REPO']  # the whole target is named
    assert all(name in source for _, name in found)


def test_a_pytest_xdist_worker_runs_on_its_share_of_the_cores():
    """``python -m pytest -n auto``: each worker's torch, and the processes its tests start (OMP_NUM_THREADS), run on
    the worker's share of the cores, not on all of them (two workers at two threads each on two cores were slower
    than one process)."""
    workers = os.environ.get('PYTEST_XDIST_WORKER_COUNT')
    if workers is None:
        pytest.skip('checks a pytest-xdist worker; this run has none (python -m pytest -n auto starts them)')
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    share = max(1, cores // int(workers))
    assert torch.get_num_threads() == int(os.environ['OMP_NUM_THREADS']) == share


def test_the_demos_checks_share_one_module_and_its_training():
    """The README demo's 300 training iterations are a module-scoped fixture of tests/test_demo.py, the one module that
    uses them: pytest-xdist gives a module's tests to one worker (tests/conftest.py), so the demo trains once."""
    takes_it = re.compile(r'def test_\w+\([^)]*\bdemo_weights\b')
    uses = sorted(path.name for path in TESTS.glob('test_*.py') if takes_it.search(path.read_text()))
    assert uses == ['test_demo.py']
    fixture = re.search(r"@pytest\.fixture\(scope='(\w+)'\)\ndef demo_weights", (TESTS / 'test_demo.py').read_text())
    assert fixture and fixture.group(1) == 'module'
