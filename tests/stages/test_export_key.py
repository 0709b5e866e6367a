"""The export cache key sees every file whose code reaches a bundle or its parity verdict (architecture rule 3)."""

import shutil
from pathlib import Path

import pytest

from edgeopt.core.fingerprint import code_fingerprint
from edgeopt.core.registry import TARGETS
from edgeopt.stages.export import export_code
from edgeopt.targets import get_target

PACKAGE = Path(__file__).resolve().parents[2] / "edgeopt"

# files that shape a bundle or its verdict without belonging to any one target
SHARED = ["targets/graph.py", "targets/onnx_export.py", "eval/parity.py", "bundle/decode.py", "bundle/letterbox.py",
          "bundle/main.py", "bundle/run.py", "bundle/integrity.py", "stages/export.py", "core/manifest.py", "models/detector.py"]


@pytest.fixture
def tree(tmp_path):
    shutil.copytree(PACKAGE, tmp_path / "edgeopt", ignore=shutil.ignore_patterns("__pycache__", "*.pt"))
    return tmp_path


def _touch(root: Path, relative: str) -> None:
    path = root / "edgeopt" / relative
    path.write_text(path.read_text() + "\n# edited\n")


@pytest.mark.parametrize("name", TARGETS.names)
@pytest.mark.parametrize("relative", SHARED)
def test_editing_shared_bundle_code_changes_every_targets_key(tree, name, relative):
    if name in ("tflite", "ncnn", "executorch") and relative == "targets/onnx_export.py":
        pytest.skip("these targets convert from torch, not through the ONNX export")
    roots = export_code(get_target(name))
    before = code_fingerprint(roots, root=tree)
    _touch(tree, relative)
    assert code_fingerprint(roots, root=tree) != before


@pytest.mark.parametrize("name", TARGETS.names)
def test_editing_a_targets_own_files_changes_its_key_only(tree, name):
    keys = {n: code_fingerprint(export_code(get_target(n)), root=tree) for n in TARGETS.names}
    for module in (tree / "edgeopt" / "targets" / name).glob("*.py"):
        if module.name not in ("__init__.py", "options.py"):
            _touch(tree, f"targets/{name}/{module.name}")
    after = {n: code_fingerprint(export_code(get_target(n)), root=tree) for n in TARGETS.names}
    assert after[name] != keys[name]
    assert all(after[n] == keys[n] for n in TARGETS.names if n != name)


def test_code_outside_the_bundles_reach_leaves_the_key(tree):
    roots = export_code(get_target("onnxruntime"))
    before = code_fingerprint(roots, root=tree)
    _touch(tree, "cli.py")
    _touch(tree, "report/results.py")
    assert code_fingerprint(roots, root=tree) == before
