"""Line-aware parsing of the small text/CSV files of dataset folders.

Every error is a :class:`~slam.errors.DataError` naming the file and the
1-based line, never a bare numpy exception.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slam.errors import DataError
from slam.trajectory import check_increasing


def read_rows(path: str | Path, min_cols: int, max_cols: int | None = None) -> tuple[list[list[str]], list[int]]:
    """Fields of every non-blank, non-``#`` line (split on commas and/or whitespace) and their line numbers.

    A line with fewer than ``min_cols`` or more than ``max_cols`` (default:
    ``min_cols``) fields raises :class:`DataError` at that line.
    """
    path = Path(path)
    max_cols = min_cols if max_cols is None else max_cols
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(path, "file is missing") from None
    except OSError as e:
        raise DataError(path, f"cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise DataError(path, "not a text file") from None
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


def column_ns(path: str | Path, rows: list[list[str]], lines: list[int], col: int = 0) -> np.ndarray:
    """Column ``col`` as integer nanoseconds (int64)."""
    out = np.empty(len(rows), dtype=np.int64)
    for k, (r, n) in enumerate(zip(rows, lines)):
        try:
            out[k] = int(r[col])
        except (ValueError, OverflowError):
            raise DataError(path, f"not an integer nanosecond timestamp: {r[col][:40]!r}", line=n) from None
    return out


def ns_to_s(ns: np.ndarray) -> np.ndarray:
    """Integer nanoseconds -> float64 seconds.

    Whole seconds are split off first, so the result is the float nearest to
    the exact time, the same float a decimal ``%.6f`` time string parses to
    (``300000000`` ns -> ``0.3``, not ``0.30000000000000004``): IMU samples in
    ns and frame times in seconds then compare exactly.
    """
    ns = np.asarray(ns, dtype=np.int64)
    return (ns // 1_000_000_000).astype(np.float64) + (ns % 1_000_000_000).astype(np.float64) / 1e9


def read_image_list(path: str | Path) -> tuple[np.ndarray, list[str], list[int]]:
    """A TUM-style list (``timestamp filename`` per line, ``#`` comments).

    Returns float64 seconds (checked strictly increasing), the file names as
    written (relative to the list's folder) and their line numbers.
    """
    rows, lines = read_rows(path, 2)
    t = column_floats(path, rows, lines, 0)
    check_increasing(path, t, lines)
    return t, [r[1] for r in rows], lines


def check_files_exist(list_path: str | Path, folder: Path, names: list[str], lines: list[int]) -> list[Path]:
    """Resolve ``names`` against ``folder``; a listed file that does not exist raises at its line."""
    paths = [folder / s for s in names]
    for p, n in zip(paths, lines):
        if not p.is_file():
            raise DataError(list_path, f"listed image {p} does not exist", line=n)
    return paths
