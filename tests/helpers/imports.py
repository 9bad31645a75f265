"""The import graph of a package, read from its source with ``ast`` (nothing is imported): which of the package's
modules each module imports, at module level or inside a function, and on which line. tests/test_compat.py checks
that the graph has no cycle; tests/test_layout.py that no module imports one of a layer above its own."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, NamedTuple, Set


class ImportLine(NamedTuple):
    """Where a module imports another: the file, its line number and the statement's first line as written."""
    path: Path
    line: int
    text: str

    def __str__(self) -> str:
        return f'{self.path}:{self.line}: {self.text}'


def package_modules(package: Path) -> Dict[str, Path]:
    """Dotted module name → file, for every module of the package in the folder ``package`` (``esc/archs/__init__.py``
    is ``esc.archs``)."""
    modules = {}
    for path in sorted(package.rglob('*.py')):
        parts = path.relative_to(package.parent).with_suffix('').parts
        modules['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
    return modules


def import_lines(package: Path) -> Dict[str, Dict[str, ImportLine]]:
    """Module → {module of the same package it imports → the first line that imports it}. ``from a.b import c``
    imports the module ``a.b.c`` where that is one, else ``a.b``; a name below a module (``import a.b.c`` where
    ``a.b`` is a module) counts as that module; relative imports are resolved against the importing module."""
    modules = package_modules(package)

    def known(name: str) -> str:
        while name not in modules:
            name = name.rpartition('.')[0]
        return name

    found: Dict[str, Dict[str, ImportLine]] = {}
    for module, path in modules.items():
        package_name = module if path.name == '__init__.py' else module.rpartition('.')[0]
        source = path.read_text()
        lines = source.splitlines()
        targets: Dict[str, ImportLine] = {}
        for node in ast.walk(ast.parse(source)):
            names: List[str] = []
            if isinstance(node, ast.Import):
                names = [known(alias.name) for alias in node.names if alias.name.split('.')[0] == package.name]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ''
                if node.level:
                    anchor = package_name.split('.')[:len(package_name.split('.')) - node.level + 1]
                    base = '.'.join(anchor + ([base] if base else []))
                if base.split('.')[0] == package.name:
                    names = [f'{base}.{a.name}' if f'{base}.{a.name}' in modules else known(base) for a in node.names]
            for name in names:
                where = ImportLine(path.relative_to(package.parent), node.lineno, lines[node.lineno - 1].strip())
                if name != module and (name not in targets or where.line < targets[name].line):
                    targets[name] = where
        found[module] = targets
    return found


def package_imports(package: Path) -> Dict[str, Set[str]]:
    """Module → the package's modules it imports (module level or inside functions), from the source."""
    return {module: set(targets) for module, targets in import_lines(package).items()}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def first_import_line(path: Path, top_level: str) -> int:
    """The line of ``path``'s first module-level ``import``/``from`` of the top-level module ``top_level`` or one of its
    submodules; 0 if there is none (a script's import order: tests/test_entrypoints.py)."""
    for node in ast.parse(path.read_text()).body:
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                 [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
        if any(name == top_level or name.startswith(top_level + '.') for name in names):
            return node.lineno
    return 0
