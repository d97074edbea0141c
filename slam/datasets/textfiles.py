"""Line-aware parsing of the small text/CSV files of dataset folders.

Every error is a :class:`~slam.errors.DataError` naming the file and the
1-based line, never a bare numpy exception.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slam.errors import DataError
from slam.textio import check_increasing, column_floats, read_rows  # noqa: F401 (re-exported for the readers)


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
