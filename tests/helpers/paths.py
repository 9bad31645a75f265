"""Where the tests find things: the checkout, the official reference data beside it, and the scripts."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
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
