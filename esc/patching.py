"""Replacing a function inside a third-party library, written down: :class:`Patch`.

A patch names its target (``module:attribute.path``), the signature the target had in the library version the
patch was written for, why it exists, and how the replacement is made from the original. Applying one whose
target has gone is a one-line :class:`esc.errors.ESCError`; :meth:`Patch.check` says in one line whether the
target still exists with that signature, which the test suite asserts for every patch, so a library release
that renames or reshapes a patched function fails a test before it fails a training run.

The patches themselves are listed where they are applied: basicsr's in :data:`esc.compat.BASICSR_PATCHES`,
pyiqa's (only while its networks are built) in :data:`esc.metrics.offline.PYIQA_PATCHES`.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

from esc.errors import ESCError

Replacement = Callable[[Callable[..., Any]], Callable[..., Any]]
"""Makes the replacement from the original."""

_originals: Dict[str, Callable[..., Any]] = {}
"""The original of every target patched in this process (a patched attribute no longer shows it)."""


def plain_signature(function: Callable[..., Any]) -> str:
    """``function``'s parameters, defaults and kinds without annotations (whose spelling varies between Python
    versions), e.g. ``(root_path, is_train=True)``."""
    signature = inspect.signature(function)
    parameters = [p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()]
    return str(signature.replace(parameters=parameters, return_annotation=inspect.Signature.empty))


@dataclass(frozen=True)
class Patch:
    """``target`` (``'package.module:Name.attribute'``) is replaced by ``replace(original)``."""

    target: str
    signature: str
    """The original's parameters in the version named by ``written_for``, as :func:`plain_signature` prints them;
    ending in ``, ...)``, the leading parameters the replacement relies on (for fast-moving libraries)."""
    why: str
    replace: Replacement
    written_for: str

    def _owner(self) -> Tuple[Any, str]:
        module_name, _, path = self.target.partition(':')
        *parents, name = path.split('.')
        owner: Any = importlib.import_module(module_name)
        for parent in parents:
            owner = getattr(owner, parent)
        return owner, name

    def original(self) -> Optional[Callable[..., Any]]:
        """The target as the library defines it (before this process patched it), or None where it is gone."""
        if self.target in _originals:
            return _originals[self.target]
        try:
            owner, name = self._owner()
        except (ImportError, AttributeError):
            return None
        return getattr(owner, name, None)

    def check(self) -> Optional[str]:
        """None where the target exists with :attr:`signature`; otherwise one line saying what changed."""
        original = self.original()
        if original is None:
            return f'{self.target} is gone; ESC patches it ({self.why}), as written for {self.written_for}'
        found = plain_signature(original)
        leading = self.signature[:-len(', ...)')] if self.signature.endswith(', ...)') else None
        if found != self.signature and (leading is None or not found.startswith(leading)):
            return (f'{self.target} now takes {found}, not {self.signature}; ESC patches it ({self.why}), '
                    f'as written for {self.written_for}')
        return None

    def apply(self) -> bool:
        """Put the replacement in place; False where it already is. A target that has gone is an ESCError, a
        changed signature a warning."""
        if self.target in _originals:
            return False
        problem = self.check()
        if problem is not None and self.original() is None:
            raise ESCError(f'cannot adapt {self.written_for.split()[0]}: {problem}')
        if problem is not None:
            logging.getLogger('esc').warning(problem)
        owner, name = self._owner()
        original = getattr(owner, name)
        setattr(owner, name, self.replace(original))
        _originals[self.target] = original
        return True

    def undo(self) -> None:
        """Put the original back."""
        original = _originals.pop(self.target, None)
        if original is not None:
            owner, name = self._owner()
            setattr(owner, name, original)


@contextlib.contextmanager
def patched(patches: Sequence[Patch]) -> Iterator[None]:
    """``patches`` applied while the block runs, undone after it (those an outer block applied stay)."""
    applied = []
    try:
        for patch in patches:
            if patch.apply():
                applied.append(patch)
        yield
    finally:
        for patch in reversed(applied):
            patch.undo()
