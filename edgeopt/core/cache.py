"""Content-addressed cache of stage outputs, and the one atomic-write helper every writer uses.

A stage's output lives in ``<root>/<stage>/<key>/`` where ``key`` hashes (stage, its config, its input keys,
versions, its code). The directory is built under a temporary name and renamed into place only when complete,
with a ``_done`` marker: an interrupted run leaves at most a temporary directory, which the next run deletes,
and finished stages are reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edgeopt.bundle.integrity import file_sha256  # noqa: F401  (one implementation, re-exported)

DONE = "_done"


def stable_hash(*parts: Any, length: int = 16) -> str:
    """A short sha256 of JSON-serialisable parts (dict keys sorted, so order of keys does not matter)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _temporary(path: Path) -> Path:
    """A per-process temporary name beside ``path`` (two processes never share one)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write(path: Path, write: Callable[[Path], Any], keep_existing: bool = False) -> Path:
    """Call ``write(tmp)`` to produce a file or directory at a temporary path, then rename it to ``path``.

    Readers never see half a file: an interrupted write leaves only the temporary, which the next write
    replaces. An existing directory at ``path`` is replaced as a whole, unless ``keep_existing``: then a ``path``
    another process finished meanwhile is kept and ours discarded (for content fixed by its name, such as a
    generated dataset, where deleting the other copy could pull it from under the run reading it)."""
    path = Path(path)
    tmp = _temporary(path)
    _remove(tmp)
    try:
        write(tmp)
        if keep_existing:
            _place_unless_exists(tmp, path)
        else:
            if path.is_dir() and tmp.is_dir():
                shutil.rmtree(path)
            os.replace(tmp, path)
    finally:
        _remove(tmp)
    return path


def _place_unless_exists(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path`` in one step that fails when ``path`` exists: a directory cannot be renamed
    over a non-empty one, and a hard link never replaces a file."""
    try:
        if tmp.is_dir():
            os.rename(tmp, path)
        else:
            os.link(tmp, path)
    except OSError:
        if not path.exists():
            raise  # a real failure, not a lost race


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON atomically (see :func:`atomic_write`)."""
    atomic_write(Path(path), lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str)))


def copy_tree_atomic(source: Path, dest: Path, ignore: tuple[str, ...] = (DONE,)) -> Path:
    """Copy a directory to ``dest`` atomically, replacing what was there."""
    return atomic_write(dest, lambda tmp: shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(*ignore)))


def remove_dead_temporaries(paths: Iterable[Path]) -> int:
    """Delete the temporaries (see ``atomic_write``) among ``paths`` whose writing process is gone, files or
    directories; a live process's temporary is left alone. Returns how many were removed."""
    from edgeopt.core.lock import pid_alive

    removed = 0
    for tmp in paths:
        pid = tmp.name.rpartition(".tmp-")[2]
        if pid.isdigit() and pid_alive(int(pid)):
            continue
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed += 1
    return removed


class Cache:
    """Stage outputs under ``root``; ``enabled=False`` rebuilds every entry (``--no-cache``)."""

    def __init__(self, root: Path, enabled: bool = True) -> None:
        self.root = Path(root)
        self.enabled = enabled
        self.hits: list[str] = []
        self.misses: list[str] = []

    def clean_partial(self) -> int:
        """Delete temporary directories left by interrupted runs (only those whose process is gone: another
        process may be writing its own); returns how many."""
        return remove_dead_temporaries(self.root.glob("*/.*.tmp-*")) if self.root.is_dir() else 0

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def lookup(self, stage: str, key: str) -> Path | None:
        """The finished output directory, or None."""
        final = self.path(stage, key)
        return final if self.enabled and (final / DONE).is_file() else None

    def build(self, stage: str, key: str, builder: Callable[[Path], Any]) -> Path:
        """Return the cached output, or run ``builder(tmp_dir)`` and move its result into place atomically."""
        found = self.lookup(stage, key)
        if found is not None:
            self.hits.append(f"{stage}/{key}")
            return found
        self.misses.append(f"{stage}/{key}")
        final = self.path(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)

        def write(tmp: Path) -> None:
            tmp.mkdir()
            builder(tmp)
            (tmp / DONE).write_text("")

        return atomic_write(final, write)
