"""A lock on a run directory, so two runs never share one (the second is refused, naming the first's pid)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgeopt.errors import ConfigError

LOCK = ".edgeopt.lock"
WRITING_GRACE_S = 10.0  # an empty lock younger than this is still being written by its creator


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _age(path: Path) -> float | None:
    """Seconds since the lock was made, None when it is gone (released meanwhile)."""
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return None


def _create(path: Path) -> bool:
    """Make the lock holding our pid; False if a lock exists. The pid is written under a per-process name and
    hard-linked into place, so no process ever reads the lock empty (and takes it for stale)."""
    pid = str(os.getpid())
    tmp = path.with_name(f".{path.name}.tmp-{pid}")
    tmp.write_text(pid)
    try:
        os.link(tmp, path)  # fails if the lock exists: creation and content in one step
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links on this filesystem (FAT, some network or FUSE mounts)
        return _create_exclusive(path, pid)
    finally:
        tmp.unlink(missing_ok=True)


def _create_exclusive(path: Path, pid: str) -> bool:
    """Create then write: the lock is empty for a moment, which readers allow for (``_age``)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(pid)
    return True


@contextmanager
def run_lock(directory: Path) -> Iterator[None]:
    """Hold ``directory``'s lock for the block; a lock left by a dead process is taken over."""
    path = Path(directory) / LOCK
    for _ in range(5):
        if _create(path):
            break
        holder = _holder(path)
        if holder is not None and holder != os.getpid() and pid_alive(holder):
            raise ConfigError(f"the run directory {directory} is in use by process {holder}",
                              hint="wait for that run to finish, or choose another --out")
        if holder is None:
            age = _age(path)
            if age is None:  # released meanwhile: try again (deleting now could delete a new holder's lock)
                continue
            if age < WRITING_GRACE_S:  # empty and new: its creator has not written its pid yet (no hard links)
                raise ConfigError(f"the run directory {directory} is being locked by another process",
                                  hint="wait for that run to finish, or choose another --out")
        path.unlink(missing_ok=True)  # stale: its process is gone, or empty for longer than the grace
    else:
        raise ConfigError(f"cannot lock the run directory {directory}")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
