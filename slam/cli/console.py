"""What the command-line tools print: one logging set-up, progress, and the configuration at DEBUG.

Every CLI calls :func:`setup` once with the flags :func:`add_arguments` gives it
(``--log-level``, ``--verbose``, ``--no-progress``), shows long work with
:func:`progress`, and logs its configuration with :func:`log_config` (seen
with ``--verbose``; ``summary.json`` records it anyway). One line per event:

* a progress bar only on a terminal; log lines are printed above it
  (tqdm's logging redirection), never glued onto it;
* on a pipe or a log file, no carriage returns: a plain progress line every
  ``interval_s`` seconds (and one at the end) through the ``slam.progress`` logger.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from contextlib import ExitStack
from typing import IO, Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
_plain = logging.getLogger("slam.progress")


def add_arguments(p: argparse.ArgumentParser, log_level: str = "INFO", progress: bool = True) -> None:
    """``--log-level``, ``--verbose`` (debug messages and the configuration) and, if ``progress``, ``--no-progress``."""
    p.add_argument("--log-level", default=log_level, help=f"DEBUG, INFO, WARNING or ERROR (default {log_level})")
    p.add_argument("-v", "--verbose", action="store_true", help="also debug messages, the configuration among them")
    if progress:
        p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")


def setup(level: str = "INFO", verbose: bool = False) -> None:
    """One handler on stderr for the root logger: ``LEVEL logger: message`` (``verbose``: DEBUG).

    Like :func:`logging.basicConfig`, it leaves a root logger that someone else (an
    application embedding us, pytest) already gave handlers alone; it replaces its own.
    """
    lvl = logging.DEBUG if verbose else getattr(logging, str(level).upper(), None)
    if not isinstance(lvl, int):
        raise SystemExit(f"unknown log level {level!r}: DEBUG, INFO, WARNING or ERROR")
    root = logging.getLogger()
    if any(not getattr(h, "_slam_console", False) for h in root.handlers):
        return
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler._slam_console = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(lvl)
    if verbose:  # our debug lines, not those of every library
        for name in ("matplotlib", "PIL", "numba", "asyncio", "urllib3"):
            logging.getLogger(name).setLevel(logging.INFO)


def log_config(log: logging.Logger, what: str, cfg: dict[str, Any]) -> None:
    """The configuration on one line at DEBUG (``--verbose``)."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s: %s", what, json.dumps(cfg, default=str))


def description(doc: str | None) -> str:
    """The first line of a module docstring as plain text for ``--help`` (reST ````code```` marks removed)."""
    first = (doc or "").strip().splitlines()[0] if doc and doc.strip() else ""
    return re.sub(r"``(.+?)``", r"\1", first)


class Progress:
    """tqdm's interface (``update``, ``set_postfix``, ``close``) for a terminal or a plain log.

    On a terminal: a tqdm bar, with log lines redirected above it while it is open.
    Elsewhere (pipe, file): ``desc: N/TOTAL unit (rate/s) key=value ...`` every ``interval_s``
    seconds and once at the end, at INFO on the ``slam.progress`` logger.
    """

    def __init__(self, total: int | None, desc: str, unit: str = "frame", enabled: bool = True,
                 interval_s: float = 10.0, stream: IO[str] | None = None):
        stream = sys.stderr if stream is None else stream
        self.desc, self.unit, self.total, self.enabled = desc, unit, total, enabled
        self.interval_s = interval_s
        self.n = 0
        self._postfix: dict[str, Any] = {}
        self._t0 = self._last = time.monotonic()
        self._stack = ExitStack()
        self._bar: tqdm | None = None
        isatty = getattr(stream, "isatty", None)
        if enabled and callable(isatty) and isatty():
            self._stack.enter_context(logging_redirect_tqdm())
            self._bar = tqdm(total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True)
        self._closed = False

    @property
    def is_bar(self) -> bool:
        return self._bar is not None

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and time.monotonic() - self._last >= self.interval_s:
            self._line()

    def set_postfix(self, refresh: bool = True, **kw: Any) -> None:
        self._postfix = kw
        if self._bar is not None:
            self._bar.set_postfix(refresh=refresh, **kw)

    def _line(self) -> None:
        self._last = now = time.monotonic()
        total = f"/{self.total}" if self.total else ""
        rate = self.n / max(now - self._t0, 1e-9)
        extra = "".join(f" {k}={v}" for k, v in self._postfix.items())
        _plain.info("%s: %d%s %ss (%.1f/s)%s", self.desc, self.n, total, self.unit, rate, extra)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.enabled and self.n:
            self._line()
        self._stack.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total: int | None, desc: str, unit: str = "frame", disable: bool = False) -> Progress:
    """A :class:`Progress` on stderr (``disable``: nothing at all, as ``--no-progress``)."""
    return Progress(total, desc, unit, enabled=not disable)
