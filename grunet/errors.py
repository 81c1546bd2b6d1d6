"""User-facing errors: one clear line that names the file (or key) and the problem."""

from __future__ import annotations

from pathlib import Path


class GrunetError(Exception):
    """An error a user can act on; the CLI prints it as one line and exits non-zero."""


class InputError(GrunetError, ValueError):
    """Bad input data or a bad path: message starts with the offending path."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class ConfigError(GrunetError, ValueError):
    """A bad configuration key or value: message names the key."""


class CheckpointError(GrunetError, ValueError):
    """A checkpoint that is missing, corrupt or does not fit the data."""


class MetadataWarning(UserWarning):
    """Metadata of an input that grunet could not use (e.g. a negative pixel size): the value
    is stored as unknown and the message names the file."""
