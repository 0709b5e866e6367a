"""Capture the chatter of converters (C++ logs included) so edgeopt's own output stays readable, and keep the
temporary files converters make inside the folder they export into."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path


@contextmanager
def temporaries_in(directory: Path) -> Iterator[Path]:
    """Make a fresh folder in ``directory`` the temp dir of this process (``tempfile``) and of the processes it
    starts (``TMPDIR``) for the block, then remove it.

    Converters and quantizers make temporaries of their own (intermediate models, augmented graphs) in the
    system temp dir, out of edgeopt's reach; a run killed mid-export would leave them there for good. Inside an
    export's folder, itself a cache temporary, they go with it when the next run cleans up after the killed one.
    """
    scratch = Path(tempfile.mkdtemp(prefix=".converter-tmp-", dir=directory))
    saved_dir, saved_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = os.environ["TMPDIR"] = str(scratch)
    try:
        yield scratch
    finally:
        tempfile.tempdir = saved_dir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(scratch, ignore_errors=True)


@contextmanager
def captured_output(directory: Path | None = None) -> Iterator[Path]:
    """Send the process's stdout/stderr (file descriptors 1 and 2, so C++ logs too) to a temporary file (in
    ``directory`` if given, so whoever cleans that directory cleans the log too, and with the converters'
    temporaries kept there as well: :func:`temporaries_in`).

    Converters print progress and advice that would bury edgeopt's own output; the file's path is yielded so
    a failure can quote its tail.
    """
    with ExitStack() as stack:
        if directory is not None:
            stack.enter_context(temporaries_in(directory))
        yield stack.enter_context(_captured(directory))


@contextmanager
def _captured(directory: Path | None) -> Iterator[Path]:
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
