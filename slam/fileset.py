"""A set of output files written so that a crash never passes for a finished save.

Each file is written to a temporary in its folder (created with mode 0666, so
the umask applies as for any other file), fsync'd, checksummed (SHA-256) and
only then renamed into place. A *commit record* (a JSON file written last,
atomically) names every file of the set with its size and checksum:

1. stage every file as a temporary (the slow part: a kill here leaves the
   previous set complete, plus temporaries that the next save removes);
2. remove the old commit record: from here on the folder says "no complete set";
3. rename the temporaries into place, remove files the old record named that
   the new set no longer has (never any other file: the folder may hold the
   user's own files);
4. write the new commit record.

So at any instant the folder holds either a complete set that its record
describes (old or new), or no record at all. :func:`verify` checks a folder
against its record. Renaming a temporary folder into place would make the swap
one step, but it cannot keep a user's other files in that folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
from pathlib import Path
from typing import BinaryIO, Callable

log = logging.getLogger(__name__)

_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")
_LEGACY_TMP = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")  # tempfile.mkstemp's, as map_io made them before


def tmp_path(path: Path) -> Path:
    """A fresh temporary name beside ``path``: ``.NAME.PID.RANDOM.tmp`` (what :func:`remove_stale_temporaries` finds)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_dir(folder: Path) -> None:
    """Make renames and removals in ``folder`` durable (not possible on every platform)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_tmp(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write a temporary beside ``path`` with ``write(file)``, fsync it and return its name (removed on failure).

    The file is created with mode 0666 less the umask, like ``open(path, "w")``
    (``tempfile.mkstemp`` would make it 0600).
    """
    tmp = tmp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Replace ``path`` by what ``write(file)`` writes, all or nothing (temporary, fsync, rename)."""
    path = Path(path)
    tmp = write_tmp(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_stale_temporaries(folder: Path, names: Callable[[str], bool]) -> list[str]:
    """Remove temporaries left by killed saves of files whose name ``names`` accepts; return their names.

    A temporary of a process that still runs (another save into the same folder) is left alone.
    """
    removed = []
    for p in folder.iterdir() if folder.is_dir() else ():
        m = _TMP.match(p.name) or _LEGACY_TMP.match(p.name)
        if m is None or not names(m["name"]) or not p.is_file():
            continue
        pid = int(m["pid"]) if "pid" in m.re.groupindex else None
        if pid is not None and pid != os.getpid() and _alive(pid):
            continue
        p.unlink(missing_ok=True)
        removed.append(p.name)
    if removed:
        log.info("%s: removed %d temporaries of an interrupted save: %s", folder, len(removed), ", ".join(removed))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FileSet:
    """Stage files of ``folder``, then :meth:`commit` them with a record naming each with size and SHA-256."""

    def __init__(self, folder: str | Path, record: str = "summary.json", owns: Callable[[str], bool] = lambda name: True):
        self.folder = Path(folder)
        self.record = record
        self.owns = owns  # names this set may remove when the previous record named them and this set does not
        self.staged: dict[str, Path] = {}  # final name -> temporary
        self.files: dict[str, dict] = {}  # final name -> {"bytes", "sha256"}

    def stage(self, name: str, write: Callable[[BinaryIO], None]) -> None:
        """Write ``name`` as a fsync'd temporary and checksum it; it appears under its name at :meth:`commit`."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = write_tmp(self.folder / name, write)
        if name in self.staged:
            self.staged[name].unlink(missing_ok=True)
        self.staged[name] = tmp
        self.files[name] = {"bytes": tmp.stat().st_size, "sha256": sha256_of(tmp)}

    def stage_text(self, name: str, text: str) -> None:
        self.stage(name, lambda f: f.write(text.encode()))

    def discard(self) -> None:
        for tmp in self.staged.values():
            tmp.unlink(missing_ok=True)
        self.staged.clear()

    def commit(self, record: dict) -> dict:
        """Move the staged files into place and write ``record`` (JSON) with ``files`` naming them; return it."""
        record_path = self.folder / self.record
        old = previous_files(self.folder, self.record)
        record = {**record, "files": dict(self.files)}
        text = json.dumps(record, indent=2, default=str) + "\n"
        record_tmp = write_tmp(record_path, lambda f: f.write(text.encode()))
        try:
            if record_path.exists():
                record_path.unlink()  # from here until the new record: no complete set in the folder
                fsync_dir(self.folder)
            for name, tmp in self.staged.items():
                os.replace(tmp, self.folder / name)
            self.staged.clear()
            for name in old - set(self.files) - {self.record}:
                if "/" not in name and self.owns(name) and (self.folder / name).is_file():
                    (self.folder / name).unlink()  # an output of the previous run this one does not have
            fsync_dir(self.folder)
            os.replace(record_tmp, record_path)
        except BaseException:
            record_tmp.unlink(missing_ok=True)
            self.discard()
            raise
        fsync_dir(self.folder)
        return record


def previous_files(folder: Path, record: str = "summary.json") -> set[str]:
    """Names the folder's current commit record gives for its files (empty without a readable record)."""
    try:
        files = json.loads((folder / record).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return set()
    return set(files) if isinstance(files, dict) else set()


def verify(folder: str | Path, record: str = "summary.json") -> list[str]:
    """What is wrong with ``folder`` as a committed set: empty when every file its record names is intact."""
    folder = Path(folder)
    try:
        rec = json.loads((folder / record).read_text())
    except FileNotFoundError:
        return [f"no {record}: no complete set here (an interrupted save?)"]
    except (OSError, ValueError) as e:
        return [f"{record} unreadable: {e}"]
    files = rec.get("files") if isinstance(rec, dict) else None
    if not isinstance(files, dict):
        return [f"{record} names no files (written by an older version?)"]
    problems = []
    for name, meta in files.items():
        p = folder / name
        if not p.is_file():
            problems.append(f"{name}: missing")
        elif p.stat().st_size != meta.get("bytes"):
            problems.append(f"{name}: {p.stat().st_size} bytes, {record} says {meta.get('bytes')}")
        elif sha256_of(p) != meta.get("sha256"):
            problems.append(f"{name}: checksum differs from {record}")
    return problems
