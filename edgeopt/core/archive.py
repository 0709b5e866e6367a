"""Bundle archives to hand over (``.tar.gz``): written atomically, and extracted safely (regular files and
folders only, every path inside the destination: no absolute paths, no ``..``, no links)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from edgeopt.errors import ConfigError


def pack(folder: Path, out: Path, extra: dict[str, bytes] | None = None) -> Path:
    """``folder`` (and ``extra`` files: name -> content) as ``out``, every member under ``folder``'s name."""
    top = folder.name
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    tar.add(path, arcname=f"{top}/{path.relative_to(folder)}", recursive=False)
            for name, content in (extra or {}).items():
                info = tarfile.TarInfo(f"{top}/{name}")
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract ``archive`` into ``dest``; refuses (ConfigError) any member that is not a plain file or folder
    inside ``dest``. Returns the single top folder."""
    dest = dest.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                target = (dest / m.name).resolve()
                if not (m.isfile() or m.isdir()) or Path(m.name).is_absolute() or ".." in Path(m.name).parts \
                        or not target.is_relative_to(dest):
                    raise ConfigError(f"{archive}: refusing the member '{m.name}' (only plain files inside the "
                                      "bundle's folder may be extracted)")
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ConfigError(f"{archive} is not a readable bundle archive: {exc}") from None
    tops = {Path(m.name).parts[0] for m in members if Path(m.name).parts}
    if len(tops) != 1:
        raise ConfigError(f"{archive} should hold one bundle folder, found {len(tops)} top-level entries")
    return dest / tops.pop()
