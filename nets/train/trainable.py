"""What a model supplies to the training harness: network, data batches, loss, evaluation against baselines.

The harness (:mod:`nets.train.loop`) owns everything else: seeding, devices,
the optimiser, the epoch loop and its progress bar, checkpoints and their
sidecars, resuming, and DistributedDataParallel under ``torchrun``.

A trainable model declares ``sizes`` (``tiny``/``small``/``full`` conf
overrides: ``tiny`` for tests, ``small`` trains on a CPU in minutes, ``full``
for a GPU) and ``architecture_keys`` (the conf entries that shape the weights
or the input; a checkpoint must match them to load).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from nets.base import BaseModel
from nets.train.data import Clip

if TYPE_CHECKING:
    import torch

SIZES = ("tiny", "small", "full")


class TrainableModel(BaseModel):
    sizes: ClassVar[dict[str, dict[str, Any]]] = {}
    architecture_keys: ClassVar[tuple[str, ...]] = ()
    needs_depth: ClassVar[bool] = False  # clips must carry depth
    lr: ClassVar[float] = 1e-3  # Adam's learning rate unless the conf has "lr"

    def __init__(self, conf: dict[str, Any] | None = None, device: str = "cpu"):
        super().__init__(conf, device)
        self.net = self.build_net().to(device)

    @classmethod
    def conf_for_size(cls, size: str) -> dict[str, Any]:
        if size not in cls.sizes:
            from nets.base import ModelError

            raise ModelError(f"model {cls.name!r} has sizes {sorted(cls.sizes)}, not {size!r}")
        return dict(cls.sizes[size])

    def architecture(self) -> dict[str, Any]:
        return {"model": self.name, "version": self.version,
                **{k: _plain(self.conf[k]) for k in self.architecture_keys}}

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the images the network takes."""
        return int(self.conf["image_width"]), int(self.conf["image_height"])

    # ------------------------------------------------------------ supplied by each model
    @abstractmethod
    def build_net(self) -> torch.nn.Module:
        """The network for ``self.conf`` (weights initialised from torch's global generator)."""

    def prepare(self, clips: list[Clip], seed: int) -> None:
        """Initialise from the training data before the first epoch (e.g. cluster centres); not on resume."""

    @abstractmethod
    def batches(self, clips: list[Clip], rng: np.random.Generator) -> Iterator[dict[str, Any]]:
        """One epoch of training batches (dicts of tensors on the CPU), drawn with ``rng`` only."""

    @abstractmethod
    def loss(self, net: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one batch through ``net`` (``self.net`` or its DDP wrapper) and figures to log."""

    @staticmethod
    def batch_samples(batch: dict[str, Any]) -> int:
        """Samples in a batch, for the samples/s figure (default: the length of its first tensor)."""
        first = next(iter(batch.values()))
        return int(first.shape[0])

    @abstractmethod
    def evaluate(self, clips: list[Clip], fit_clips: list[Clip] | None = None, seed: int = 0) -> dict[str, Any]:
        """Metrics of the model and of its baselines on ``clips`` (baselines fitted on ``fit_clips`` when given)."""


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v
