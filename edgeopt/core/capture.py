"""Capture the chatter of converters (C++ logs included) so edgeopt's own output stays readable."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def captured_output(directory: Path | None = None) -> Iterator[Path]:
    """Send the process's stdout/stderr (file descriptors 1 and 2, so C++ logs too) to a temporary file (in
    ``directory`` if given, so whoever cleans that directory cleans the log too).

    Converters print progress and advice that would bury edgeopt's own output; the file's path is yielded so
    a failure can quote its tail.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.NamedTemporaryFile("w+", prefix=".converter-", suffix=".log", delete=False, dir=directory) as log:
        saved = os.dup(1), os.dup(2)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield Path(log.name)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def log_tail(path: Path, lines: int = 3) -> str:
    """The last non-empty lines of a captured log, for error messages."""
    text = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(text[-lines:])
