"""The CI rule of tests/conftest.py: under ``CI=true`` a skip not in ``EXPECTED_SKIPS`` fails the run (a test's
skip becomes its failure, a module skipped at import fails the session); expected skips and xfails stay as they
are, and outside CI nothing changes. Checked by running pytest on a generated tree that uses the real conftest."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
FILES = {
    "tests/stages/test_export_key.py": (  # an expected skip (listed)
        "import pytest\n"
        "def test_by_design():\n"
        "    pytest.skip('these targets convert from torch, not through the ONNX export')\n"),
    "tests/models/test_ultralytics.py": (  # an expected module skip (the core pass has no Ultralytics)
        "import pytest\n"
        "pytest.skip(\"could not import 'ultralytics': No module named 'ultralytics'\", allow_module_level=True)\n"),
    "tests/test_extra.py": (  # an unexpected test skip, an xfail and a pass
        "import pytest\n"
        "def test_needs_an_extra():\n"
        "    pytest.importorskip('no_such_extra_module')\n"
        "@pytest.mark.xfail(reason='known')\n"
        "def test_known_bug():\n"
        "    assert False\n"
        "def test_fine():\n"
        "    pass\n"),
    "tests/test_module_skip.py": (  # an unexpected module skip
        "import pytest\n"
        "pytest.importorskip('another_missing_extra')\n"
        "def test_never_runs():\n"
        "    pass\n"),
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "tests").mkdir()
    shutil.copy(TESTS / "conftest.py", tmp_path / "tests" / "conftest.py")  # the rule under test, as it is
    for relative, text in FILES.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    return tmp_path


def _pytest(tree: Path, ci: bool, workers: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "EDGEOPT_REQUIRE_ULTRALYTICS")}
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *workers, "tests"],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("workers", [["-p", "no:xdist"], ["-n", "2"]], ids=["serial", "xdist"])
def test_an_unexpected_skip_fails_under_ci(tree: Path, workers: list[str]) -> None:
    proc = _pytest(tree, ci=True, workers=workers)
    out = proc.stdout
    assert proc.returncode == 1, out
    assert "unexpected skip under CI: could not import 'no_such_extra_module'" in out
    assert "tests/test_module_skip.py: could not import 'another_missing_extra'" in out
    summary = out.strip().splitlines()[-1]
    # the failure is the unexpected test skip; skipped: the two expected ones and the module (it fails the session)
    assert re.match(r"1 failed, 1 passed, 3 skipped, 1 xfailed\b", summary), summary


def test_outside_ci_skips_are_only_reported(tree: Path) -> None:
    proc = _pytest(tree, ci=False, workers=["-p", "no:xdist"])
    summary = proc.stdout.strip().splitlines()[-1]
    assert proc.returncode == 0, proc.stdout
    assert re.match(r"1 passed, 4 skipped, 1 xfailed\b", summary), summary
