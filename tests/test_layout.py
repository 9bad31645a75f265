"""Imports run one way (issue 30, point 4): every module of esc/ sits in a layer, and no module imports one of a
layer above its own, at module level or inside a function; no two modules import each other, even through others.

The layers are named by package prefix, so that a module moved within its package (a network, an attention
backend) keeps its place; a new package or top-level module has none until it is given one here."""
from __future__ import annotations

from typing import Dict, List, Optional, Set

import pytest

from tests.helpers.imports import ImportLine, cycles, import_lines
from tests.helpers.paths import REPO

LAYERS = (
    ('esc.errors',),
    ('esc.torchvision_alias', 'esc.patching'),  # the alias basicsr needs; the patch mechanism (metrics use it too)
    # checks on a state dict's tensors, which every network's load_state_dict runs: in esc/io/ by its folder, below
    # the networks by what it is (it imports esc.errors only), while the rest of esc/io/ reads the networks' layouts
    ('esc.io.state_dict_checks',),
    ('esc.archs',),  # the networks in plain torch and their attention backends
    ('esc.io',),  # checkpoints (official containers in the networks' layouts), images, videos, memory estimates
    ('esc.config',),  # option files: read, validated, derived (no process set-up)
    ('esc.utils',),  # the run's process, folders and logs; commands' error handling; tiling
    ('esc.losses', 'esc.metrics', 'esc.data'),  # basicsr's registries: what option files name
    ('esc.acceleration',),  # precision, compile, channels-last
    ('esc.models',),  # basicsr models: the training step
    ('esc.upscaler',),  # esc.load_model: a checkpoint to a running network
    ('esc', 'esc.spandrel', 'esc.compat'),  # the package's front (esc/__init__.py), spandrel's hook, basicsr's
    ('esc.evaluation',),  # the paper's tables, complexity, the benchmark engine
    ('esc.commands', 'esc.train', 'esc.test'),  # entry points
)
"""From the bottom up. A module belongs to the longest prefix that names it (``esc`` is the package's own
``__init__`` only); it may import modules of its own layer or below."""


def layer_of(module: str) -> Optional[int]:
    """The index in :data:`LAYERS` of ``module``'s longest prefix; None where no prefix names it."""
    best: Optional[tuple] = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (prefix != 'esc' and module.startswith(prefix + '.'))
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def upward_imports(lines: Dict[str, Dict[str, ImportLine]]) -> List[str]:
    """Each import of a module of a higher layer, as 'file:line: statement (layer → layer)'."""
    found = []
    for module, targets in sorted(lines.items()):
        for target, where in sorted(targets.items()):
            if layer_of(target) > layer_of(module):
                found.append(f'{where} ({module} in layer {layer_of(module)} imports {target} in layer '
                             f'{layer_of(target)})')
    return found


@pytest.fixture(scope='module')
def esc_imports() -> Dict[str, Dict[str, ImportLine]]:
    return import_lines(REPO / 'esc')


def test_every_module_has_a_layer(esc_imports):
    assert len(esc_imports) > 50 and 'esc.train' in esc_imports
    assert [module for module in esc_imports if layer_of(module) is None] == []


def test_no_module_imports_upward(esc_imports):
    upward = upward_imports(esc_imports)
    assert upward == [], 'imports of a higher layer:\n' + '\n'.join(upward)


def test_no_two_modules_import_each_other(esc_imports):
    graph: Dict[str, Set[str]] = {module: set(targets) for module, targets in esc_imports.items()}
    assert cycles(graph) == []


def test_configuration_imports_nothing_above_it(esc_imports):
    """Reading options is pure: esc.config reaches neither the data, the metrics, the networks' models nor the
    process set-up (esc.utils.dist), whose checks the loops pass in."""
    reached = {target for module, targets in esc_imports.items() if module.startswith('esc.config')
               for target in targets}
    assert reached and not [t for t in reached if t.split('.')[1] in ('data', 'metrics', 'models', 'utils', 'archs')]


def test_a_module_takes_the_layer_of_its_longest_prefix():
    assert layer_of('esc.io.state_dict_checks') < layer_of('esc.archs.attention.flex') < layer_of('esc.io.checkpoint')
    assert layer_of('esc.archs.attention.flex') == layer_of('esc.archs')
    assert layer_of('esc') == layer_of('esc.compat') > layer_of('esc.upscaler')  # 'esc' is esc/__init__.py alone
    assert layer_of('esc.test') == len(LAYERS) - 1 and layer_of('esc.errors') == 0
    assert layer_of('esc.testing') is None and layer_of('escape') is None


def test_an_upward_import_is_reported_with_its_line():
    lines = {'esc.archs.x': {'esc.models.y': ImportLine(REPO / 'esc/archs/x.py', 3, 'from esc.models.y import z')},
             'esc.models.y': {'esc.archs.x': ImportLine(REPO / 'esc/models/y.py', 1, 'import esc.archs.x')}}
    assert upward_imports(lines) == [f"{REPO / 'esc/archs/x.py'}:3: from esc.models.y import z (esc.archs.x in "
                                     f"layer {layer_of('esc.archs')} imports esc.models.y in layer "
                                     f"{layer_of('esc.models')})"]
