"""sha256 of files and the check of a bundle against its manifest: one implementation, used by edgeopt and by
every bundle's run.py (standard library only)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def changed_files(bundle: Path, files: dict[str, str]) -> list[str]:
    """The files (bundle-relative name -> sha256) that are missing from ``bundle`` or differ."""
    return [name for name, digest in files.items()
            if not (Path(bundle) / name).is_file() or file_sha256(Path(bundle) / name) != digest]
