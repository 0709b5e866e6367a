"""The run-directory lock: never held by two processes at once, even in the instant a lock is being made."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeopt.core.lock import LOCK, WRITING_GRACE_S, run_lock
from edgeopt.errors import ConfigError

# takes and releases the lock in a loop until a deadline; inside it, creates a marker that only one holder at a
# time can create; prints how often it held the lock and how often it found another holder inside
CONTEND = """
import os, sys, time
from pathlib import Path

import pytest

from edgeopt.core.lock import LOCK, WRITING_GRACE_S, run_lock
from edgeopt.errors import ConfigError
from edgeopt.core.lock import run_lock
from edgeopt.errors import ConfigError

directory, deadline = Path(sys.argv[1]), float(sys.argv[2])
if sys.argv[3] == "no-hard-links":  # a filesystem without them (FAT, some network mounts)
    def refuse(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")
    os.link = refuse
held = overlaps = 0
while time.time() < deadline:
    try:
        with run_lock(directory):
            try:
                os.close(os.open(directory / "inside", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                overlaps += 1
                continue
            held += 1
            os.unlink(directory / "inside")
    except ConfigError:
        pass
print(held, overlaps)
"""


@pytest.mark.parametrize("filesystem", ["hard-links", "no-hard-links"])
def test_two_processes_never_hold_the_lock_at_once(tmp_path: Path, filesystem: str) -> None:
    """A lock that exists but does not yet hold its creator's pid must never pass for stale: a second process
    used to read it empty in that instant, delete it and take the lock too (~1500 double holds in 4 s)."""
    deadline = time.time() + 2.0 + 3.0  # both start within the first 2 s (imports), then contend for ~3 s
    procs = [subprocess.Popen([sys.executable, "-c", CONTEND, str(tmp_path), str(deadline), filesystem],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
             for _ in range(2)]
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    counts = [tuple(map(int, out.split())) for out, _ in results]
    assert all(held > 0 for held, _ in counts), counts  # both really contended
    assert sum(overlaps for _, overlaps in counts) == 0, counts


def test_an_empty_lock_just_made_is_held_not_stale(tmp_path: Path) -> None:
    """Its creator is between making it and writing its pid (where the filesystem has no hard links)."""
    (tmp_path / LOCK).touch()
    with pytest.raises(ConfigError, match="being locked by another process"):
        with run_lock(tmp_path):
            pass
    assert (tmp_path / LOCK).exists()


def test_an_empty_lock_left_long_ago_is_taken_over(tmp_path: Path) -> None:
    lock = tmp_path / LOCK
    lock.touch()
    old = time.time() - WRITING_GRACE_S - 60
    os.utime(lock, (old, old))
    with run_lock(tmp_path):
        assert lock.read_text() == str(os.getpid())
    assert not lock.exists()
