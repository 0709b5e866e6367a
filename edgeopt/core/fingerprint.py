"""Fingerprints of the code behind a cache entry: editing any module a stage's output depends on rebuilds it.

The fingerprint of a set of root modules hashes the source of every ``edgeopt`` module they import, directly or
through others (function-local imports included), found by reading the code, not by importing it.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGE = "edgeopt"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent  # the directory holding edgeopt/


def module_path(module: str, root: Path = PACKAGE_ROOT) -> Path | None:
    """The file of an ``edgeopt`` module (a package's ``__init__.py``), or None if there is none."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(module: str, source: str, is_package: bool = False) -> set[str]:
    """The ``edgeopt`` modules ``source`` (the text of ``module``) imports, relative imports resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # ``from pkg import module``
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def code_fingerprint(roots: list[str], root: Path = PACKAGE_ROOT, length: int = 16) -> str:
    """sha256 over the sources of ``roots`` and every ``edgeopt`` module they reach."""
    seen: dict[str, bytes] = {}
    stack = list(roots)
    while stack:
        module = stack.pop()
        path = module_path(module, root)
        if module in seen or path is None:
            continue
        data = path.read_bytes()
        seen[module] = data
        stack.extend(imported_modules(module, data.decode(), path.name == "__init__.py") - seen.keys())
    h = hashlib.sha256()
    for module in sorted(seen):
        h.update(module.encode() + b"\0" + seen[module] + b"\0")
    return h.hexdigest()[:length]
