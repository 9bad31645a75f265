"""esc.compat and esc.patching: imports run one way, and every patch of basicsr (and pyiqa) still fits its target."""
import subprocess
import sys

import pytest

import esc.compat
from esc.compat import BASICSR_PATCHES
from esc.errors import ESCError
from esc.patching import Patch, patched, plain_signature
from tests.helpers.imports import cycles, package_imports
from tests.helpers.paths import REPO


def test_the_package_has_no_import_cycle():
    graph = package_imports(REPO / 'esc')
    assert 'esc.compat' in graph and 'esc.compat' in graph['esc.train']
    assert cycles(graph) == []
    assert not [m for m, targets in graph.items() if 'esc.compat' in targets and m.split('.')[1] in
                ('archs', 'data', 'losses', 'metrics', 'models', 'utils')], 'only entry points import esc.compat'


def test_the_cycle_check_finds_a_cycle():
    assert cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]


def test_basicsr_land_modules_import_first_without_compat():
    """A model module imported before anything else: basicsr's degradations (which need the torchvision alias)
    import, and nothing is registered or patched by that alone."""
    code = ('import sys; import esc.models.esc_model; import basicsr.data.degradations; import basicsr.train; '
            'assert "esc.compat" not in sys.modules; '
            'assert basicsr.train.load_resume_state.__module__ == "basicsr.train"; print("ok")')
    result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == 'ok', result.stderr[-2000:]


def test_import_esc_imports_neither_torchvision_nor_basicsr():
    code = 'import sys, esc; print(sorted(m for m in ("torchvision", "basicsr") if m in sys.modules))'
    result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == '[]', result.stderr[-2000:]


@pytest.mark.parametrize('patch', BASICSR_PATCHES, ids=lambda p: p.target)
def test_every_basicsr_patch_fits_its_target(patch):
    assert patch.check() is None, patch.check()
    owner, name = patch._owner()
    assert getattr(owner, name) is not patch.original(), f'{patch.target} is not patched'
    assert patch.target.split(':')[1].split('.')[-1] in esc.compat.__doc__, f'{patch.target} is missing in the table'


def test_every_pyiqa_patch_fits_its_target():
    pytest.importorskip('pyiqa', reason='pyiqa is the [iqa] extra')
    from esc.metrics.offline import PYIQA_PATCHES, pyiqa_offline

    with pyiqa_offline():  # pyiqa imports only with the clip stand-in
        pass
    for patch in PYIQA_PATCHES:
        assert patch.check() is None, patch.check()
        owner, name = patch._owner()
        assert getattr(owner, name) is patch.original(), f'{patch.target} is still patched after pyiqa_offline'


def test_a_gone_or_changed_target_fails_in_one_line():
    def keep(original):
        return original

    gone = Patch('basicsr.train:no_such_function', '(opt)', 'a test', keep, 'basicsr 1.4.2')
    assert gone.check() == 'basicsr.train:no_such_function is gone; ESC patches it (a test), as written for basicsr 1.4.2'
    with pytest.raises(ESCError, match=r'^cannot adapt basicsr: basicsr.train:no_such_function is gone'):
        gone.apply()
    changed = Patch('basicsr.train:mkdir_and_rename', '(path, mode)', 'a test', keep, 'basicsr 1.4.2')
    assert changed.check() == ('basicsr.train:mkdir_and_rename now takes (path), not (path, mode); ESC patches it '
                               '(a test), as written for basicsr 1.4.2')
    assert Patch('basicsr.train:dict2str', '(opt, ...)', 'a test', keep, 'basicsr 1.4.2').check() is None
    assert Patch('basicsr.train:dict2str', '(options, ...)', 'a test', keep, 'basicsr 1.4.2').check() is not None


def test_patched_applies_and_undoes_and_keeps_an_outer_patch():
    import basicsr.train

    original = basicsr.train.mkdir_and_rename
    patch = Patch('basicsr.train:mkdir_and_rename', plain_signature(original), 'a test', lambda f: print, 'basicsr')
    with patched([patch]):
        assert basicsr.train.mkdir_and_rename is print
        with patched([patch]):
            assert basicsr.train.mkdir_and_rename is print
        assert basicsr.train.mkdir_and_rename is print
    assert basicsr.train.mkdir_and_rename is original
