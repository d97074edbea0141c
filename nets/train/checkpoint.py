"""Checkpoint files the harness writes: weights, their JSON sidecar, and the ``.state`` file for resuming.

``NAME.pt`` holds ``net.state_dict()`` only (``torch.save``), so it loads with
``torch.load(weights_only=True)``; ``NAME.json`` says what made it;
``NAME.pt.state`` holds what resuming needs (weights, optimiser state, the
epochs done, the seed and the architecture). Every file is written to a
temporary name and renamed, so an interrupted run never leaves half a file.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from nets.base import ModelError, sidecar_path


def state_path(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".state")


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(path: Path, net_state: dict, sidecar: dict[str, Any]) -> None:
    """``path`` (weights) and ``path.json`` (sidecar)."""
    import torch

    _atomic(path, lambda p: torch.save(net_state, p))
    _atomic(sidecar_path(path), lambda p: p.write_text(json.dumps(sidecar, indent=2, default=_json) + "\n"))


def save_state(path: Path, net_state: dict, optimizer_state: dict, epoch: int, seed: int,
               architecture: dict) -> None:
    """``path.state``: resume point after ``epoch`` epochs."""
    import torch

    state = {"net": net_state, "optimizer": optimizer_state, "epoch": int(epoch), "seed": int(seed),
             "architecture": json.dumps(architecture, sort_keys=True)}
    _atomic(state_path(path), lambda p: torch.save(state, p))


def load_state(path: Path, architecture: dict, seed: int) -> dict | None:
    """The resume point next to checkpoint ``path``; None when there is none. A state of another
    architecture or seed is a :class:`ModelError` (resuming it would not give the run the command asks for)."""
    import torch

    sp = state_path(path)
    if not sp.is_file():
        return None
    try:
        state = torch.load(sp, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for corrupt files
        raise ModelError(f"{sp}: cannot load the resume state ({e})") from None
    if state.get("architecture") != json.dumps(architecture, sort_keys=True):
        raise ModelError(f"{sp}: saved for architecture {state.get('architecture')}, this run trains {architecture}")
    if state.get("seed") != seed:
        raise ModelError(f"{sp}: saved by a run with --seed {state.get('seed')}, this one has --seed {seed}")
    return state


def git_commit(cwd: Path | None = None) -> str:
    """The commit of the source tree (``+dirty`` with uncommitted changes to tracked files), or "unknown"."""
    cwd = cwd or Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha[:12] + ("+dirty" if dirty else "")


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, (np.ndarray, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
