"""Processes of a launch file die with their supervisor, and a dead run's socket folder does not linger.

A supervisor killed with SIGKILL (or the OOM killer) runs no cleanup: its children would go on
serving (a second run's ``slam-infer`` then finds the first still bound) and its ipc folder stays
in the temp folder. Two guards, both Linux: the kernel sends each child SIGTERM when the
supervisor dies (``PR_SET_PDEATHSIG``, set between fork and exec: :func:`die_with_parent`),
and each node watches its parent (:func:`watch_parent`) and stops itself when it changes, for
the cases the kernel signal misses (another platform, a wrapper process in between). SIGTERM,
not SIGKILL: a node stops as when asked (the SLAM process saves what it has).
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

PARENT_ENV = "SLAM_PARENT_PID"  # set by the supervisor for its children: the pid they must outlive not
RUN_DIR_PREFIX = "slam-run-"
OWNER_FILE = "supervisor.pid"  # in a run folder: the pid of the supervisor that made it
_PR_SET_PDEATHSIG = 1
# loaded here, not in the forked child (where only async-signal-safe work belongs): the C library's prctl
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    """In a child between fork and exec (``Popen(preexec_fn=...)``): get ``sig`` when the parent dies.

    Linux only (elsewhere the node's :func:`watch_parent` does it); if the parent is already gone
    (it died between fork and here), the signal is sent at once. The kernel watches the parent
    *thread* that started the child: the supervisor starts its children from its main loop.
    """
    if _LIBC is None or _LIBC.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)


def watch_parent(period_s: float = 0.5) -> threading.Thread | None:
    """When started by a supervisor (``$SLAM_PARENT_PID``), send this process SIGTERM once that parent is gone.

    The node's own SIGTERM handler then stops it as when the supervisor asks. Returns the daemon
    thread, or None when there is no supervisor to watch (a node started by hand).
    """
    try:
        parent = int(os.environ.pop(PARENT_ENV, ""))  # popped: a process this node starts has another parent
    except ValueError:
        return None

    def watch() -> None:
        ev = threading.Event()
        while os.getppid() == parent:
            ev.wait(period_s)
        log.warning("the supervisor (pid %d) is gone: stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    t = threading.Thread(target=watch, name="parent-watch", daemon=True)
    t.start()
    return t


def claim_run_dir(run_dir: Path) -> None:
    """Mark ``run_dir`` as this process's (see :func:`clean_stale_run_dirs`)."""
    (run_dir / OWNER_FILE).write_text(str(os.getpid()))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process with that pid: alive, not ours to judge
        return True
    return True


def clean_stale_run_dirs(root: Path | None = None) -> list[Path]:
    """Remove this user's run folders (``slam-run-*`` in ``root``, the temp folder by default) whose
    supervisor is dead: what a killed run left behind. Returns the folders removed."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    for d in root.glob(RUN_DIR_PREFIX + "*"):
        try:
            if d.is_symlink() or not d.is_dir() or d.stat().st_uid != os.getuid():
                continue
            pid = int((d / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue  # not a claimed run folder (an older version's, being created): left alone
        if pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
        log.info("removed %s, left by a run whose supervisor (pid %d) is gone", d, pid)
    return removed
