"""The code that ships inside every bundle: letterbox preprocessing, the output decoder, latency statistics and
the ``run.py`` entry point. edgeopt evaluates with this very code, so a device runs what was measured.

Needs only numpy and Pillow. Copied as files into ``<bundle>/edgeopt_bundle/`` (beside the target's runner,
as ``runner.py``), with ``run.py`` at the bundle's top; its modules therefore import each other relatively.

May import: nothing from edgeopt outside this package.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE_NAME = "edgeopt_bundle"  # the package's name inside a bundle
MODULES = ("letterbox", "decode", "bench", "integrity", "main")  # what is copied, besides run.py and the runner


def source_files() -> dict[str, Path]:
    """Bundle-relative path -> source file, for every file of the bundle's code except the target's runner."""
    files = {f"{PACKAGE_NAME}/{name}.py": HERE / f"{name}.py" for name in MODULES}
    files[f"{PACKAGE_NAME}/__init__.py"] = HERE / "package_init.py"
    files["run.py"] = HERE / "run.py"
    return files
