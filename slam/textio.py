"""Line-aware reading of small numeric text files (trajectories, timestamp lists, CSV).

Every error is a :class:`~slam.errors.DataError` naming the file and the
1-based line, never a bare numpy exception. Used by :mod:`slam.trajectory`
and the dataset readers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slam.errors import DataError


def read_text(path: str | Path) -> str:
    """The whole text of ``path``; a missing, unreadable or binary file is a :class:`DataError` naming it."""
    path = Path(path)
    try:
        return path.read_text()
    except FileNotFoundError:
        raise DataError(path, "file is missing") from None
    except OSError as e:
        raise DataError(path, f"cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise DataError(path, "not a text file") from None


def read_rows(path: str | Path, min_cols: int, max_cols: int | None = None) -> tuple[list[list[str]], list[int]]:
    """Fields of every non-blank, non-``#`` line (split on commas and/or whitespace) and their line numbers.

    A line with fewer than ``min_cols`` or more than ``max_cols`` (default:
    ``min_cols``) fields raises :class:`DataError` at that line.
    """
    path = Path(path)
    max_cols = min_cols if max_cols is None else max_cols
    text = read_text(path)
    rows: list[list[str]] = []
    lines: list[int] = []
    for n, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.replace(",", " ").split()
        if not min_cols <= len(parts) <= max_cols:
            want = str(min_cols) if min_cols == max_cols else f"{min_cols} to {max_cols}"
            raise DataError(path, f"expected {want} columns, found {len(parts)}: {s[:80]!r}", line=n)
        rows.append(parts)
        lines.append(n)
    return rows, lines


def column_floats(path: str | Path, rows: list[list[str]], lines: list[int], cols: slice | int) -> np.ndarray:
    """Columns ``cols`` of ``rows`` as finite float64 (``(N,)`` for an int, ``(N, k)`` for a slice)."""
    strings = [r[cols] for r in rows]
    try:
        out = np.array(strings, dtype=np.float64)
        if np.all(np.isfinite(out)):
            return out.reshape(len(rows), -1) if isinstance(cols, slice) else out.reshape(-1)
    except ValueError:
        pass
    for s, n in zip(strings, lines):  # slow path: find the offending line
        vals = s if isinstance(s, list) else [s]
        try:
            ok = all(np.isfinite(float(v)) for v in vals)
        except ValueError:
            raise DataError(path, f"not a number in {' '.join(vals)[:80]!r}", line=n) from None
        if not ok:
            raise DataError(path, f"non-finite value (NaN/inf) in {' '.join(vals)[:80]!r}", line=n)
    raise DataError(path, "malformed numbers")


def check_increasing(path: str | Path, timestamps: np.ndarray, lines: list[int], what: str = "timestamp") -> None:
    """Raise :class:`DataError` at the first timestamp that is not strictly greater than the previous one."""
    if len(timestamps) < 2:
        return
    bad = np.nonzero(np.diff(timestamps) <= 0)[0]
    if bad.size:
        i = int(bad[0]) + 1
        kind = "duplicated" if timestamps[i] == timestamps[i - 1] else "out of order"
        raise DataError(
            path, f"{what} {float(timestamps[i])!r} is {kind} (previous {float(timestamps[i - 1])!r} on line {lines[i - 1]})",
            line=lines[i],
        )
