"""The artifact bundle: model file(s), ``edgeopt.json`` manifest, and a numpy-only ``run.py``.

``run.py`` is assembled from the very modules edgeopt itself uses (letterbox preprocessing, the output decoder
and the target's runner), so a Pi with just numpy, Pillow and the runtime decodes exactly like edgeopt does.
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path
from typing import Any

from edgeopt.core.cache import file_sha256

FORMAT = "edgeopt.bundle/1"
MANIFEST = "edgeopt.json"


def _body(module_name: str) -> str:
    """A module's source without its ``from __future__`` line (the runner puts one at the very top)."""
    source = inspect.getsource(importlib.import_module(module_name))
    return "\n".join(line for line in source.splitlines() if not line.startswith("from __future__"))


def build_runner(runner_module: str) -> str:
    """The text of ``run.py`` for a target whose runner lives in ``runner_module``."""
    template = (Path(__file__).parent / "run_main.py.in").read_text()  # uses names defined by the parts above
    parts = [
        '"""edgeopt bundle runner. Usage: python run.py IMAGE [--threads N] | python run.py --bench"""',
        "from __future__ import annotations",
        _body("edgeopt.data.letterbox"),
        _body("edgeopt.models.decode"),
        _body(runner_module),
        template,
    ]
    return "\n\n".join(parts)


def write_manifest(bundle: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Add the sha256 of every file in the bundle and write ``edgeopt.json``."""
    files = sorted(p for p in bundle.rglob("*") if p.is_file() and p.name not in (MANIFEST, "_done"))
    manifest = {**manifest, "files": {str(p.relative_to(bundle)): file_sha256(p) for p in files}}
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return manifest


def read_manifest(bundle: Path) -> dict[str, Any]:
    return json.loads((Path(bundle) / MANIFEST).read_text())


def verify_bundle(bundle: Path) -> list[str]:
    """Files whose sha256 does not match the manifest (empty when the bundle is intact)."""
    manifest = read_manifest(bundle)
    return [name for name, digest in manifest["files"].items()
            if not (bundle / name).is_file() or file_sha256(bundle / name) != digest]
