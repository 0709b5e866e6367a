"""The bundle manifest ``edgeopt.json``: what a bundle holds and how to feed it, with the sha256 of every file.

Generic fields describe every bundle the same way (input spec, output decoder, class names, quantization,
parity, lineage); anything only one runtime needs lives under ``runtime``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.bundle.integrity import changed_files, file_sha256
from edgeopt.core.cache import DONE, atomic_write

FORMAT = "edgeopt.bundle/1"
MANIFEST = "edgeopt.json"


@dataclass
class Manifest:
    """The content of ``edgeopt.json``."""

    target: str
    precision: str
    model_files: list[str]
    input: dict[str, Any]
    output: dict[str, Any]
    class_names: list[str]
    quantization: dict[str, Any] | None
    runtime: dict[str, Any]
    lineage: dict[str, Any]
    head: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] | None = None
    files: dict[str, str] = field(default_factory=dict)
    format: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        return cls(**data)


def write_manifest(bundle: Path, manifest: Manifest) -> Manifest:
    """Record the sha256 of every file in the bundle and write ``edgeopt.json`` atomically."""
    files = sorted(p for p in bundle.rglob("*") if p.is_file() and p.name not in (MANIFEST, DONE)
                   and "__pycache__" not in p.parts)
    manifest.files = {str(p.relative_to(bundle)): file_sha256(p) for p in files}
    text = json.dumps(manifest.to_dict(), indent=2, default=str)
    atomic_write(bundle / MANIFEST, lambda tmp: tmp.write_text(text))
    return manifest


def read_manifest(bundle: Path) -> Manifest:
    return Manifest.from_dict(json.loads((Path(bundle) / MANIFEST).read_text()))


def verify_bundle(bundle: Path) -> list[str]:
    """Files whose sha256 does not match the manifest (empty when the bundle is intact)."""
    return changed_files(Path(bundle), read_manifest(bundle).files)
