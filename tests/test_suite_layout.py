"""The test suite's own layout: test modules share helpers through tests/helpers/ and fixtures through conftest.py,
never by importing one another (conftest.py included), so that each test module can be read, moved or deleted on its
own and what is shared has one home."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import List, Tuple

import pytest

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


def imports_of_test_modules(path: Path) -> List[str]:
    """Each import in ``path`` (a file under tests/) of a test module or a conftest.py, as 'file:line imports name'."""
    relative = path.relative_to(TESTS.parent)
    module = '.'.join(relative.with_suffix('').parts)
    return sorted({f'{relative}:{line} imports {name}'
                   for line, name in imported_modules(path.read_text(), module) if is_test_module(name)})


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
