"""A lock on a run directory, so two runs never share one (the second is refused, naming the first's pid)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgeopt.errors import ConfigError

LOCK = ".edgeopt.lock"


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


@contextmanager
def run_lock(directory: Path) -> Iterator[None]:
    """Hold ``directory``'s lock for the block; a lock left by a dead process is taken over."""
    path = Path(directory) / LOCK
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            holder = _holder(path)
            if holder is not None and holder != os.getpid() and pid_alive(holder):
                raise ConfigError(f"the run directory {directory} is in use by process {holder}",
                                  hint="wait for that run to finish, or choose another --out") from None
            path.unlink(missing_ok=True)  # stale: its process is gone
    else:
        raise ConfigError(f"cannot lock the run directory {directory}")
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
