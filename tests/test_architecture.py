"""Architecture rules for ``edgeopt``: layered imports, names in their rooms, lean import, short functions.

Each rule test collects every violation over ``edgeopt/**/*.py`` and fails with one ``file:line: rule`` per line.
"""

import ast
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent

# Rule 1: a module's "room" is its longest prefix in this table; imports may only go to a lower layer.
LAYERS: dict[str, int] = {
    "edgeopt.errors": 0, "edgeopt.bundle": 0, "edgeopt.core": 1,
    "edgeopt.config": 2, "edgeopt.data": 2, "edgeopt.devices": 2, "edgeopt.report": 2,
    "edgeopt.models": 3, "edgeopt.eval": 4, "edgeopt.targets": 4, "edgeopt.training": 5, "edgeopt.stages": 6,
    "edgeopt.pipeline": 7, "edgeopt.sweep": 8, "edgeopt.cli": 9, "edgeopt.__main__": 9, "edgeopt": 9,
}
TOP = max(LAYERS.values())  # the entry points (cli, __main__, the package) may import one another
BUNDLE = "edgeopt.bundle"

# Rule 2: words that belong in one room only (and in the registry).
REGISTRY = "edgeopt/core/registry.py"
FAMILY_DIR = "edgeopt/models/sources/ultralytics/"
FAMILY_RE = re.compile(r"(?<![a-z0-9])(ultralytics|yolo26|yolov8|yolo11|yolov10|dfl|c2f|c3k2)(?=(\w*))", re.I)
RUNTIME_WORDS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("onnxruntime",), "openvino": ("openvino", "nncf"),
    "tflite": ("tflite", "litert", "ai_edge", "ai-edge"), "ncnn": ("ncnn", "pnnx"),
    "executorch": ("executorch",),
}
WORD_RUNTIME = {word: runtime for runtime, words in RUNTIME_WORDS.items() for word in words}
RUNTIME_RE = re.compile(r"(?<![a-z0-9])(" + "|".join(map(re.escape, WORD_RUNTIME)) + r")(?=(\w*))", re.I)

# Rule 3: top-level packages that `import edgeopt` and `edgeopt --help` must not load.
HEAVY = frozenset({"torch", "onnx", "onnxruntime", "openvino", "nncf", "tensorflow", "ncnn", "pnnx",
                   "ai_edge_litert", "ai_edge_quantizer", "litert_torch", "torch_pruning", "matplotlib",
                   "executorch", "torchao"})
MARKER = "@@EDGEOPT-MODULES@@"

# Rule 4: longest function allowed (def line to last line) in the orchestration code.
MAX_FUNC_LINES = 60
SHORT_FUNC_PLACES = ("edgeopt/core/", "edgeopt/stages/", "edgeopt/pipeline.py")


class Import(NamedTuple):
    """One imported name: absolute ``module``, the ``attr`` of a from-import, and where it happens."""

    line: int
    module: str
    attr: str | None
    relative: bool
    local: bool  # inside a function body, so not run at import time


def package_files() -> Iterator[tuple[str, Path]]:
    """Yield (module name, path) for every .py file under edgeopt/; ``__init__.py`` names its package."""
    for path in sorted((ROOT / "edgeopt").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def room_of(name: str) -> str | None:
    """Longest layer-table prefix of ``name``; the bare package ``edgeopt`` only matches itself."""
    rooms = [r for r in LAYERS if name == r or (r != "edgeopt" and name.startswith(r + "."))]
    return max(rooms, key=len, default=None)


def edgeopt_imports(module: str, source: str, is_package: bool = False) -> Iterator[Import]:
    """All imports of a module, relative ones made absolute, skipping ``if TYPE_CHECKING:`` bodies."""
    package = (module if is_package else module.rpartition(".")[0]).split(".")
    stack: list[tuple[ast.AST, bool]] = [(ast.parse(source), False)]
    while stack:
        node, local = stack.pop()
        if isinstance(node, ast.Import):
            yield from (Import(node.lineno, alias.name, None, False, local) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parent = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            base = ".".join(part for part in (parent, node.module) if part)
            for alias in node.names:
                yield Import(node.lineno, base, None if alias.name == "*" else alias.name, node.level > 0, local)
        else:
            guarded = isinstance(node, ast.If) and ast.unparse(node.test) in {"TYPE_CHECKING", "typing.TYPE_CHECKING"}
            inner = local or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            stack.extend((child, inner) for child in (node.orelse if guarded else ast.iter_child_nodes(node)))


def check_imports(module: str, source: str, is_package: bool = False) -> list[str]:
    """Rule 1 violations of one module: unknown rooms, upward imports, a bundle that leans on edgeopt."""
    where, room = module.replace(".", "/") + ("/__init__.py" if is_package else ".py"), room_of(module)
    if room is None:
        return [f"{where}:1: rule 1 (layers): module {module} has no room; add it to the layer table"]
    found: list[str] = []
    for imp in sorted(edgeopt_imports(module, source, is_package), key=lambda imp: imp.line):
        if imp.module != "edgeopt" and not imp.module.startswith("edgeopt."):
            continue
        name = f"{imp.module}.{imp.attr}" if imp.attr else imp.module
        target = room_of(name) or room_of(imp.module)
        head = f"{where}:{imp.line}: rule 1 (layers): {module} imports {name}"
        if room == BUNDLE and target != BUNDLE:
            found.append(f"{head}; bundle modules may import only edgeopt.bundle (they are copied into bundles)")
        elif room == BUNDLE and not imp.relative:
            found.append(f"{head}; bundle modules must import their siblings relatively")
        elif target is None:
            found.append(f"{head}; {name} has no room; add it to the layer table")
        elif not (target == room or LAYERS[target] < LAYERS[room] or LAYERS[target] == LAYERS[room] == TOP):
            found.append(f"{head}; {target} (layer {LAYERS[target]}) is not below {room} (layer {LAYERS[room]})")
    return found


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Each import cycle a depth-first search meets, once, as [a, b, ..., a]."""
    state: dict[str, str] = {}
    path: list[str] = []
    cycles: dict[frozenset[str], list[str]] = {}

    def visit(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == "open":
                cycles.setdefault(frozenset(path[path.index(nxt):]), path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return list(cycles.values())


def check_names(rel_path: str, text: str) -> list[str]:
    """Rule 2 violations of one file: model-family and runtime words outside their rooms."""
    found: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        for match in [*FAMILY_RE.finditer(line), *RUNTIME_RE.finditer(line)]:
            runtime = WORD_RUNTIME.get(match.group(1).lower())
            home = f"edgeopt/targets/{runtime}/" if runtime else FAMILY_DIR
            if rel_path != REGISTRY and not rel_path.startswith(home):
                kind = "runtime" if runtime else "model-family"
                found.append(f"{rel_path}:{number}: rule 2 (names): {kind} word {match.group(1) + match.group(2)!r}"
                             f" outside {home} and {REGISTRY}")
    return list(dict.fromkeys(found))


def test_import_checker_self_test() -> None:
    """Rule 1 self-test: the checker flags upward and bundle imports, ignores TYPE_CHECKING, finds cycles."""
    assert check_imports("edgeopt.core.x", "import edgeopt.stages.y\n")
    assert check_imports("edgeopt.core.x", "def f():\n    from ..stages import y\n")
    assert check_imports("edgeopt.data.x", "import edgeopt\n")
    assert check_imports("edgeopt.bundle.x", "from edgeopt.bundle import y\n")
    assert not check_imports("edgeopt.bundle.x", "from .y import z\n")
    assert not check_imports("edgeopt.stages.x", "if TYPE_CHECKING:\n    import edgeopt.pipeline\n")
    assert find_cycles({"a": {"b": 1}, "b": {"a": 1}}) == [["a", "b", "a"]]


def test_imports_run_down_without_cycles() -> None:
    """Rule 1: imports only run down the layer table, the bundle stands alone, and there are no cycles."""
    files = dict(package_files())
    violations: list[str] = []
    graph: dict[str, dict[str, int]] = {}
    for module, path in files.items():
        source, is_package = path.read_text(encoding="utf-8"), path.name == "__init__.py"
        violations += check_imports(module, source, is_package)
        for imp in edgeopt_imports(module, source, is_package):
            candidates = [f"{imp.module}.{imp.attr}", imp.module] if imp.attr else [imp.module]
            target = next((name for name in candidates if name in files), None)
            if not imp.local and target not in (None, module):
                graph.setdefault(module, {}).setdefault(target, imp.line)
    for cycle in find_cycles(graph):
        where = f"{files[cycle[0]].relative_to(ROOT)}:{graph[cycle[0]][cycle[1]]}"
        violations.append(f"{where}: rule 1 (no import cycles): " + " -> ".join(cycle))
    assert not violations, "\n".join(violations)


def test_name_matcher_self_test() -> None:
    """Rule 2 self-test: the matcher finds 'OpenVINO' and 'DFLSum' outside their rooms, not inside."""
    found = "\n".join(check_names("edgeopt/stages/x.py", "# OpenVINO here\nclass DFLSum: ...\n"))
    assert "'OpenVINO'" in found and "'DFLSum'" in found
    assert not check_names("edgeopt/targets/openvino/x.py", "import openvino, nncf\n")


def test_names_stay_in_their_rooms() -> None:
    """Rule 2: model-family and runtime names appear only in their own packages (and the registry)."""
    violations: list[str] = []
    for _, path in package_files():
        violations += check_names(path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8"))
    assert not violations, "\n".join(violations)


# Runs first in the subprocess: records, per heavy package, the innermost edgeopt frame that imported it.
PROBE = """
import json, sys, traceback
heavy, src, first = set(json.loads(sys.argv[1])), sys.argv[2], {}
class Probe:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in heavy and top not in first:
            frames = [f for f in traceback.extract_stack() if f.filename.startswith(src)]
            first[top] = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None
sys.meta_path.insert(0, Probe())
"""


def loaded_heavy(body: str) -> dict[str, str | None]:
    """Run ``body`` in a fresh interpreter; map each heavy package it loaded to the edgeopt file:line."""
    code = PROBE + body + f"\nprint({MARKER!r} + json.dumps({{'modules': sorted(sys.modules), 'first': first}}))\n"
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(sorted(HEAVY)), str(ROOT / "edgeopt")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    assert lines, f"import probe failed (exit {proc.returncode}):\n{proc.stderr}"
    report = json.loads(lines[-1][len(MARKER):])
    loaded = {name.partition(".")[0] for name in report["modules"]} & HEAVY
    return {pkg: report["first"].get(pkg) for pkg in sorted(loaded)}


def test_import_and_cli_help_stay_lean() -> None:
    """Rule 3: `import edgeopt` and `edgeopt --help` load no ML framework or runtime."""
    cli = ('sys.argv = ["edgeopt", "--help"]\nfrom edgeopt.cli import main\n'
           'try:\n    main()\nexcept SystemExit:\n    pass')
    cases = [("import edgeopt", "edgeopt/__init__.py:1", "import edgeopt"),
             ("edgeopt --help", "edgeopt/cli.py:1", cli)]
    violations = [f"{Path(where).relative_to(ROOT) if where else entry}: rule 3 (lean import): `{what}` loads {pkg}"
                  for what, entry, body in cases for pkg, where in loaded_heavy(body).items()]
    assert not violations, "\n".join(violations)


def test_functions_are_short() -> None:
    """Rule 4: no function in edgeopt/core/, edgeopt/stages/ or edgeopt/pipeline.py exceeds 60 lines."""
    violations: list[str] = []
    for _, path in package_files():
        rel = path.relative_to(ROOT).as_posix()
        if not rel.startswith(SHORT_FUNC_PLACES):
            continue
        functions = (n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
        for node in functions:
            length = (node.end_lineno or node.lineno) - node.lineno + 1  # from the def line; decorators excluded
            if length > MAX_FUNC_LINES:
                violations.append(f"{rel}:{node.lineno}: rule 4 (functions <= {MAX_FUNC_LINES} lines): "
                                  f"{node.name} ({length} lines)")
    assert not violations, "\n".join(violations)
