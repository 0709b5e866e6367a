"""``edgeopt device setup``'s install on the device (the agent's ``install``): wheels from the wheelhouse only, and
a package whose wheel declares a dependency with no build for the board installed without its declared ones."""

import subprocess
import zipfile
from pathlib import Path

import pytest

from edgeopt.devices import agent


def _wheel(folder: Path, name: str, requires: list[str]) -> None:
    """A minimal pure-Python wheel of ``name`` 1.0 declaring ``requires``."""
    info = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(folder / f"{name}-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"{name}.py", "VALUE = 1\n")
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"
                       + "".join(f"Requires-Dist: {r}\n" for r in requires))
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")


def test_a_package_installed_without_its_declared_dependencies_imports(tmp_path):
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    _wheel(wheelhouse, "runtime_core", [])
    _wheel(wheelhouse, "runtime_binding", ["runtime_core", "apple_only_converter"])  # the latter has no wheel
    venv = str(tmp_path / "venv")
    with pytest.raises(RuntimeError, match="pip install failed"):
        agent.install(venv, str(wheelhouse), ["runtime_binding"])
    record = agent.install(venv, str(wheelhouse), ["runtime_core"], ["runtime_binding"])
    assert {"runtime_binding==1.0", "runtime_core==1.0"} <= {r.replace("-", "_") for r in record["installed"]}
    imported = subprocess.run([record["python"], "-c", "import runtime_binding, runtime_core"], capture_output=True)
    assert imported.returncode == 0, imported.stderr
