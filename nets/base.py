"""The interface every learned model of the inference server implements (hloc's ``BaseModel`` pattern).

A model declares its registry ``name``, the request ``task`` it answers
(``"depth"``, ``"descriptor"``, ``"pose"``, ``"pose_clip"``, ``"odometry"``), a ``version``, its
``default_conf`` and the arrays a request must carry (``required_inputs``).
The server batches requests of one task and calls :meth:`BaseModel.infer` on
the batch. Checkpoints are local files only, loaded with
``torch.load(weights_only=True)`` next to a JSON sidecar that says what made
them (architecture, input size, training data, command, metrics).
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

log = logging.getLogger(__name__)

TASKS = ("depth", "descriptor", "pose", "pose_clip", "odometry")


class ModelError(RuntimeError):
    """A model cannot be built or loaded (bad configuration, missing or corrupt checkpoint)."""


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; ``"cuda"`` without one is an error."""
    if device not in ("auto", "cpu", "cuda"):
        raise ModelError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise ModelError("--device cuda, but torch sees no CUDA device")
    return "cpu"


class BaseModel(ABC):
    name: ClassVar[str]
    task: ClassVar[str]
    version: ClassVar[str] = "1"
    default_conf: ClassVar[dict[str, Any]] = {}
    required_inputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, conf: dict[str, Any] | None = None, device: str = "cpu"):
        conf = dict(conf or {})
        unknown = set(conf) - set(self.default_conf) - {"checkpoint"}
        if unknown:
            raise ModelError(f"model {self.name!r}: unknown settings {sorted(unknown)} "
                             f"(have: {sorted(self.default_conf)}, checkpoint)")
        self.conf = {**self.default_conf, **conf}
        self.device = device
        self.checkpoint_info: dict[str, Any] | None = None

    def check_inputs(self, arrays: dict[str, np.ndarray]) -> None:
        missing = [k for k in self.required_inputs if k not in arrays]
        if missing:
            raise ModelError(f"model {self.name!r} needs inputs {list(self.required_inputs)}, missing {missing}")

    def architecture(self) -> dict[str, Any] | None:
        """What a checkpoint must have been trained for (network shape, input size); None: anything loads."""
        return None

    def load_weights(self, path: str | Path) -> None:
        """Load the checkpoint at ``path`` (+ sidecar); one made for another architecture is a :class:`ModelError`."""
        state, sidecar = load_checkpoint(path, map_location=self.device)
        check_architecture(self, sidecar)
        self.load_state(state)
        self.checkpoint_info = sidecar
        log.info("model %s: weights from %s (%s)", self.name, path, sidecar.get("data_summary", "data not recorded"))

    def load_state(self, state: dict[str, Any]) -> None:
        """Take the weights of a checkpoint (torch models: ``self.net.load_state_dict``)."""
        net = getattr(self, "net", None)
        if net is None:
            raise ModelError(f"model {self.name!r} has no weights to load")
        try:
            net.load_state_dict(state)
        except (RuntimeError, KeyError) as e:
            raise ModelError(f"model {self.name!r}: checkpoint does not fit the network: {e}") from None

    @abstractmethod
    def infer(self, batch: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Answer a batch of requests (each a dict of named arrays) with one dict of arrays per request."""

    def describe(self) -> dict[str, Any]:
        """Name, task, version and where the weights came from, for heartbeats and replies."""
        return {"name": self.name, "task": self.task, "version": self.version,
                "checkpoint": None if self.checkpoint_info is None else self.checkpoint_info.get("path"),
                "trained": self.checkpoint_info is not None}


def check_architecture(model: BaseModel, sidecar: dict[str, Any]) -> None:
    """Refuse a checkpoint whose sidecar names another model or architecture than ``model`` has."""
    path = sidecar.get("path", "checkpoint")
    if sidecar.get("model") not in (None, model.name):
        raise ModelError(f"{path}: a checkpoint of model {sidecar['model']!r}, not {model.name!r}")
    want = model.architecture()
    have = sidecar.get("architecture")
    if want is None:
        return
    if have is None:
        raise ModelError(f"{path}: the sidecar does not record the architecture; "
                         f"{model.name} needs {want}")
    diff = {k: (have.get(k), want.get(k)) for k in sorted(set(want) | set(have)) if have.get(k) != want.get(k)}
    if diff:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs model {b!r}" for k, (a, b) in diff.items())
        raise ModelError(f"{path}: made for another architecture or input size ({detail}); "
                         f"build the model with the checkpoint's conf {sidecar.get('conf', {})}")


def sidecar_path(checkpoint: str | Path) -> Path:
    """The JSON sidecar of a checkpoint: ``NAME.pt`` -> ``NAME.json`` (DESIGN.md: architecture, input size,
    data, command, seed, metrics against the baseline, commit)."""
    return Path(checkpoint).with_suffix(".json")


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state_dict, sidecar)`` of a local checkpoint ``path`` and its sidecar (:func:`sidecar_path`).

    Only tensors and plain containers are unpickled (``weights_only=True``).
    """
    import torch

    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such checkpoint")
    try:
        sidecar = json.loads(side.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: missing sidecar {side.name} (what data, command and metrics made it)") from None
    except json.JSONDecodeError as e:
        raise ModelError(f"{side}: not valid JSON ({e})") from None
    if not isinstance(sidecar, dict):
        raise ModelError(f"{side}: expected a JSON object (architecture, data, command, metrics)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for corrupt files
        raise ModelError(f"{path}: cannot load checkpoint ({e})") from None
    sidecar = {**sidecar, "path": str(path)}
    return state, sidecar
