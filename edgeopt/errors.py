"""The exceptions edgeopt raises for problems a user can fix.

Every error says what was expected, what was found and, where possible, how to fix it. The CLI prints
``EdgeoptError`` subclasses in a line or two, without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EdgeoptError(Exception):
    """Base class of every user-facing edgeopt error."""

    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(EdgeoptError):
    """The configuration (YAML, CLI option or override) is invalid."""

    exit_code = 2


class DataError(EdgeoptError):
    """A dataset, label file or image is missing or malformed."""


class DependencyError(EdgeoptError):
    """An optional runtime or tool is not installed."""


class ModelError(EdgeoptError):
    """A model file is missing, corrupt or of an unsupported kind."""


class ExportError(EdgeoptError):
    """Converting a model for a target runtime failed."""


class ParityError(EdgeoptError):
    """An exported artifact disagrees with the PyTorch reference beyond tolerance."""


class DeviceError(EdgeoptError):
    """A device cannot be reached or cannot run an artifact."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message for a one-line error (its class name when it has none)."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else exc.__class__.__name__


def did_you_mean(name: str, choices: Iterable[str]) -> str | None:
    """Return a "did you mean ...?" hint for ``name`` among ``choices``, or None if nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def missing_extra(module: str, extra: str) -> DependencyError:
    """The error for an optional dependency ``module`` that ships with ``edgeopt[extra]``."""
    return DependencyError(
        f"the Python package '{module}' is not installed",
        hint=f"pip install 'edgeopt[{extra}]'",
    )
