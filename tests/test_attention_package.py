"""The attention package (esc/archs/attention/, issue 30 point 2): its modules import one way, base ← the backends
← layer ← the package, so that following ``attn_type`` reads downward; importing the package registers every
backend, and each backend states the equation it computes."""
from typing import Dict

import pytest

from esc.archs.attention import (BACKENDS, AttentionBackend, FactorisedWindowAttention, WindowAttention,
                                 window_attention)
from tests.helpers.imports import ImportLine, import_lines
from tests.helpers.paths import REPO

PACKAGE = 'esc.archs.attention'
RANK = {'base': 0, 'naive': 1, 'sdpa': 1, 'flex': 1, 'flashbias': 1, 'layer': 2, '': 3}
"""Each module's place in the package's import order ('' is the package's ``__init__``): a module imports only
modules of a lower rank."""


def rank_of(module: str) -> int:
    return RANK[module[len(PACKAGE) + 1:]] if module != PACKAGE else RANK['']


@pytest.fixture(scope='module')
def package_imports() -> Dict[str, Dict[str, ImportLine]]:
    return {module: {target: where for target, where in targets.items() if target.startswith(PACKAGE)}
            for module, targets in import_lines(REPO / 'esc').items() if module.startswith(PACKAGE)}


def test_the_package_holds_exactly_the_modules_ranked_here(package_imports):
    assert {rank_of(module) for module in package_imports} == set(RANK.values())
    assert len(package_imports) == len(RANK)


def test_modules_of_the_package_import_one_way(package_imports):
    backward = [f'{where} ({module} imports {target})' for module, targets in sorted(package_imports.items())
                for target, where in sorted(targets.items()) if rank_of(target) >= rank_of(module)]
    assert backward == [], 'imports against base ← backends ← layer ← package:\n' + '\n'.join(backward)


def test_importing_the_package_registers_every_backend_and_each_states_its_equation():
    assert set(BACKENDS) == {'naive', 'sdpa', 'flex', 'flashbias'}
    assert 'softmax(q·kᵀ/√d + B)·v' in AttentionBackend.__doc__
    for name, backend in BACKENDS.items():
        doc = type(backend).__doc__
        assert doc.startswith(f'``{name}``: ') and 'softmax(' in doc, (name, doc)


def test_the_factory_builds_the_exact_layer_or_the_factorised_one():
    exact = window_attention(16, 4, 2, 'naive')
    factorised = window_attention(16, 4, 2, 'naive', bias_rank=3)
    assert type(exact) is WindowAttention and exact.bias_form == 'table'
    assert type(factorised) is FactorisedWindowAttention and factorised.rank == 3
    assert factorised.bias().shape == exact.bias().shape == (2, 16, 16)
