"""The training loop every model shares: seeding, device, optimiser, epochs, progress, checkpoints, resume, DDP.

    sidecar = train("netvlad", clips, Path("nets/checkpoints/netvlad.pt"), TrainSettings(epochs=8, seed=0))

Determinism: the weights are initialised after ``torch.manual_seed(seed)``;
epoch ``e`` draws its batches from ``numpy.random.default_rng([seed, e])``
alone, so a run resumed after epoch ``e`` trains exactly as the run that was
not interrupted, and on a CPU the same seed and data give the same weights.

Under ``torchrun`` (``WORLD_SIZE`` set) the network is wrapped in
DistributedDataParallel, each process takes every WORLD_SIZE-th batch of the
epoch, and rank 0 alone writes files and logs progress.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from nets.base import ModelError, resolve_device
from nets.registry import model_class
from nets.train.checkpoint import git_commit, load_state, save_checkpoint, save_state, utc_now
from nets.train.data import Clip
from nets.train.trainable import TrainableModel

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    epochs: int = 10  # total epochs (a resumed run stops here too)
    seed: int = 0  # weights init and batch order
    device: str = "auto"  # auto | cpu | cuda
    size: str = "small"  # the model's tiny | small | full conf
    conf: dict[str, Any] = field(default_factory=dict)  # settings over the size's conf
    resume: bool = False  # continue from CHECKPOINT.state when it exists
    progress: bool = True  # tqdm bar (rank 0 only)
    evaluate: bool = True  # metrics against the baselines after the last epoch
    command: str = ""  # recorded in the sidecar; default: this process's argv


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str) -> _Dist:
    """torch.distributed when launched by torchrun (WORLD_SIZE set); a single process otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size())


def describe_clips(clips: list[Clip]) -> list[dict[str, Any]]:
    return [{"name": c.name, "source": c.source, "world": c.world, "frames": len(c)} for c in clips]


def build_model(name: str, settings: TrainSettings, device: str) -> TrainableModel:
    """The model of ``name`` at ``settings.size`` with ``settings.conf`` on top, weights from ``settings.seed``."""
    import torch

    cls = model_class(name)
    if not issubclass(cls, TrainableModel):
        raise ModelError(f"model {name!r} is not trainable (not a nets.train.TrainableModel)")
    torch.manual_seed(settings.seed)
    return cls({**cls.conf_for_size(settings.size), **settings.conf}, device)


def train(name: str, clips: list[Clip], out: str | Path, settings: TrainSettings,
          val_clips: list[Clip] | None = None) -> dict[str, Any]:
    """Train model ``name`` on ``clips``; write ``out`` (+ ``.json`` sidecar, ``.state``) after every epoch.

    After the last epoch the model and its baselines are evaluated on ``val_clips`` (held out; the
    baselines' vocabularies are fitted on ``clips``) or, without them, on the training clips (recorded as
    such). Returns the sidecar.
    """
    import torch

    out = Path(out)
    device = resolve_device(settings.device)
    dist = _init_distributed(device)
    if dist.world > 1 and device == "cuda":  # one GPU per process, as torchrun numbers them
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    model = build_model(name, settings, device)
    arch = model.architecture()
    opt = torch.optim.Adam(model.net.parameters(), lr=float(model.conf.get("lr", model.lr)))
    start = 0
    state = load_state(out, arch, settings.seed) if settings.resume else None
    if state is not None:
        model.net.load_state_dict(state["net"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["epoch"])
        log.info("resuming %s from epoch %d of %d", out, start, settings.epochs)
    else:
        if settings.resume:
            log.warning("--resume: no %s.state yet, starting from scratch", out.name)
        model.prepare(clips, settings.seed)
    net = model.net
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(net, device_ids=[torch.device(device).index] if device != "cpu" else None)
    t_train = time.perf_counter()
    for epoch in range(start, settings.epochs):
        batches = list(model.batches(clips, np.random.default_rng([settings.seed, epoch])))
        # every process takes as many batches (DDP synchronises each step); the few left over sit this epoch out
        batches = batches[: len(batches) // dist.world * dist.world][dist.rank::dist.world]
        if not batches:
            raise ModelError(f"model {name}: the training data gives no batches (clips without poses?)")
        model.net.train()
        bar = tqdm(batches, desc=f"{name} epoch {epoch + 1}/{settings.epochs}", unit="batch",
                   disable=not (settings.progress and dist.main), file=sys.stderr)
        t0, n, total = time.perf_counter(), 0, 0.0
        for batch in bar:
            batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
            loss, figures = model.loss(net, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += model.batch_samples(batch)
            total += float(loss.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", samples_s=f"{n / (time.perf_counter() - t0):.1f}",
                            **{k: f"{v:.3g}" for k, v in figures.items()})
        log.info("epoch %d/%d: mean loss %.4f, %.1f samples/s", epoch + 1, settings.epochs,
                 total / len(batches), n / (time.perf_counter() - t0))
        if dist.main:
            sidecar = _sidecar(model, settings, clips, val_clips, epoch + 1, None, time.perf_counter() - t_train)
            save_checkpoint(out, model.net.state_dict(), sidecar)
            save_state(out, model.net.state_dict(), opt.state_dict(), epoch + 1, settings.seed, arch)
    model.net.eval()
    metrics = None
    if dist.main and settings.evaluate:
        held_out = bool(val_clips)
        metrics = model.evaluate(val_clips if held_out else clips, fit_clips=clips, seed=settings.seed)
        metrics["evaluated_on"] = "held-out clips" if held_out else "the training clips (no --val data given)"
        log.info("metrics: %s", metrics)
    sidecar = _sidecar(model, settings, clips, val_clips, max(start, settings.epochs), metrics,
                       time.perf_counter() - t_train)
    if dist.main:
        save_checkpoint(out, model.net.state_dict(), sidecar)
    return sidecar


def _sidecar(model: TrainableModel, s: TrainSettings, clips: list[Clip], val: list[Clip] | None, epochs: int,
             metrics: dict | None, seconds: float) -> dict[str, Any]:
    import torch

    names = sorted({c.world for c in clips})
    return {
        "model": model.name, "version": model.version, "task": model.task,
        "architecture": model.architecture(), "conf": model.conf, "size": s.size,
        "input_size": list(model.input_size),
        "data": {"train": describe_clips(clips), "val": describe_clips(val or [])},
        "data_summary": f"{len(clips)} clips ({sum(len(c) for c in clips)} frames) of {len(names)} worlds",
        "command": s.command or " ".join(["slam-train", *sys.argv[1:]]),
        "seed": s.seed, "epochs": epochs, "device": resolve_device(s.device), "torch": torch.__version__,
        "train_seconds": round(seconds, 1), "metrics": metrics, "commit": git_commit(), "date": utc_now(),
    }
