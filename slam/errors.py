"""Errors raised on bad input: each names the file (and line) it comes from."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Malformed or missing input data.

    The message always starts with ``path`` (and ``:line`` when known) so a user
    can open the offending file at the right place.
    """

    def __init__(self, path: str | Path | None, message: str, line: int | None = None):
        self.path = None if path is None else Path(path)
        self.line = line
        self.reason = message
        where = "" if path is None else (f"{path}:{line}: " if line is not None else f"{path}: ")
        super().__init__(f"{where}{message}")


class CorruptFrameError(DataError):
    """One frame of a sequence cannot be read (unreadable or truncated image, bad depth)."""
