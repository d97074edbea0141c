"""Dataset readers behind one registry; the folder layout picks the reader.

    seq = open_sequence("../shared/data/tum_rgbd_fr1_desk_9frames")   # auto-detected
    seq = open_sequence(path, kind="kitti", sequence="07")            # by name, with options
    for frame in seq: ...

Readers live in the modules of this package and register themselves with
:func:`register`; every module here is imported on first use, so a new reader
is a new module, nothing else (as kiss-icp's ``dataset_factory``).
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
from pathlib import Path
from typing import Any, Callable, TypeVar

from slam.datasets.base import Sequence
from slam.errors import DataError

log = logging.getLogger(__name__)

# Detection order: the most specific layouts first (a synthetic folder also looks like TUM).
DETECTION_ORDER = ("synthetic", "euroc", "kitti", "tum", "video")

_REGISTRY: dict[str, type] = {}
_discovered = False
T = TypeVar("T", bound=type)


def register(name: str) -> Callable[[T], T]:
    """Class decorator: make a :class:`~slam.datasets.base.Sequence` subclass available as ``name``."""

    def deco(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"two dataset readers named {name!r}: {_REGISTRY[name]} and {cls}")
        cls.kind = name  # type: ignore[attr-defined]
        _REGISTRY[name] = cls
        return cls

    return deco


def _discover() -> None:
    """Import every module of this package once, so each reader registers itself."""
    global _discovered
    if _discovered:
        return
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    _discovered = True


def available_readers() -> list[str]:
    """Registered reader names in detection order."""
    _discover()
    rest = [k for k in _REGISTRY if k not in DETECTION_ORDER]
    return [k for k in DETECTION_ORDER if k in _REGISTRY] + rest


def detect_reader(path: str | Path) -> str | None:
    """Name of the first reader (in detection order) that recognises ``path``, or None."""
    path = Path(path)
    for name in available_readers():
        if _REGISTRY[name].detect(path):
            return name
    return None


def open_sequence(path: str | Path, kind: str | None = None, **options: Any) -> Sequence:
    """Open the sequence at ``path`` with the reader ``kind`` (auto-detected when None).

    ``options`` go to the reader's constructor (e.g. ``max_dt`` for TUM,
    ``sequence`` for KITTI). Raises :class:`DataError` for a missing path, an
    unknown kind or a layout no reader recognises.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(path, "no such file or folder")
    names = available_readers()
    if kind is None:
        kind = detect_reader(path)
        if kind is None:
            looked_for = "; ".join(f"{n}: {_REGISTRY[n].layout}" for n in names)
            raise DataError(path, f"no dataset reader recognises this layout (looked for {looked_for})")
        log.info("%s: detected a %s sequence", path, kind)
    elif kind not in _REGISTRY:
        raise DataError(path, f"unknown reader {kind!r}; available: {', '.join(names)}")
    return _REGISTRY[kind](path, **options)


def data_root() -> Path:
    """Folder of the shared sample recordings: ``$SLAM_DATA``, else ``<repo>/../shared/data``."""
    env = os.environ.get("SLAM_DATA")
    if env:
        return Path(env).expanduser()
    return (Path(__file__).resolve().parents[2].parent / "shared" / "data").resolve()


__all__ = [
    "DETECTION_ORDER", "Sequence", "available_readers", "data_root", "detect_reader", "open_sequence", "register",
]
