"""PoseNet (Kendall, Grimes & Cipolla, "PoseNet: A convolutional network for real-time 6-DOF camera
relocalization", ICCV 2015) with the loss of Kendall & Cipolla, CVPR 2017 (:mod:`nets.pose_regression`).

A small CNN regresses, from one image, the camera's position (metres, world
frame) and the unit quaternion of ``R_w_c``. It is trained per scene: on the
frames of one traversal (or of a saved map's keyframes, ``slam-train posenet
--map MAP.npz``) and evaluated on frames of the same scene it never saw,
beside the mean-pose, image-retrieval and oracle baselines.

Served as task ``pose``: a request ``{"image": HxWx3 uint8 RGB}`` gets
``{"T_w_c": (4, 4) float64}``. Without a checkpoint the network is untrained
and answers the identity-ish pose it starts at, which the log says once and
``describe()["trained"]`` says always.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from nets.base import ModelError
from nets.pose_regression import (LOSSES, ImageEncoder, PoseHead, augment, evaluate_poses, pose_loss, posed_frames,
                                  poses_to_xq, single_world, xq_to_poses)
from nets.registry import register
from nets.train.data import Clip, resize_image
from nets.train.trainable import TrainableModel

log = logging.getLogger(__name__)


class PoseNetNet(nn.Module):
    """Image encoder + pose head: (B, H, W, 3) uint8 -> normalised positions (B, 3), quaternions (B, 4)."""

    def __init__(self, channels: list[int], feature_dim: int, dropout: float, s_x: float, s_q: float):
        super().__init__()
        self.encoder = ImageEncoder(channels, feature_dim, dropout=dropout)
        self.head = PoseHead(feature_dim, s_x, s_q)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.encoder(images))


def check_loss_conf(conf: dict[str, Any], model: str) -> None:
    if conf["loss"] not in LOSSES:
        raise ModelError(f"{model}: loss must be one of {LOSSES}, got {conf['loss']!r}")


class PoseRegressor(TrainableModel):
    """What the pose regressors (PoseNet, VidLoc) share as models: channel lists as ints (a sidecar's JSON
    gives them back as such anyway), their loss settings checked at construction."""

    def __init__(self, conf: dict[str, Any] | None = None, device: str = "cpu"):
        if conf is not None and "channels" in conf:
            conf = {**conf, "channels": [int(c) for c in conf["channels"]]}
        super().__init__(conf, device)
        check_loss_conf(self.conf, self.name)
        self._warned_untrained = False

    def loss(self, net: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """The pose loss (module docstring) of a batch: ``images`` (frames or clips), ``x`` positions in
        metres (normalised here by the training set's), ``q`` unit quaternions; figures in metres."""
        head = self.net.head
        x_n, q_hat = net(batch["images"])
        loss, figs = pose_loss(x_n, q_hat, head.normalise(batch["x"]), batch["q"], self.conf["loss"],
                               float(self.conf["beta"]), head.s_x, head.s_q, head.q_ref)
        figs["pos_m"] = figs.pop("pos") * float(head.pos_scale)
        return loss, figs


@register
class PoseNet(PoseRegressor):
    name = "posenet"
    task = "pose"
    version = "1"
    required_inputs = ("image",)
    architecture_keys = ("image_width", "image_height", "channels", "feature_dim")
    sizes = {
        "tiny": {"image_width": 64, "image_height": 48, "channels": [16, 32, 32, 64], "feature_dim": 128,
                 "lr": 2e-3, "augment_shift_px": 4},
        "small": {"image_width": 160, "image_height": 120, "channels": [16, 32, 64, 64, 128], "feature_dim": 256,
                  "lr": 1e-3, "augment_shift_px": 8},
        "full": {"image_width": 320, "image_height": 240, "channels": [32, 64, 128, 256, 256, 512],
                 "feature_dim": 1024, "lr": 1e-4, "augment_shift_px": 16},
    }
    default_conf = {
        **sizes["small"],
        "loss": "learned",  # "learned" (homoscedastic weighting, s_x and s_q trained) or "beta"
        "beta": 10.0,  # weight of the quaternion term in the "beta" loss (positions in training-set scale units)
        "init_s_x": 0.0, "init_s_q": -3.0,  # the learned weighting's start (Kendall & Cipolla's values)
        "dropout": 0.5,  # before the encoder's fully connected layer: the scenes are small
        "batch_size": 16,
        "batches_per_epoch": 0,  # 0: one pass over the training frames; more repeats them (tiny scenes)
        "augment_gain": 0.15,  # random shifts and brightness/contrast
        "infer_batch": 32,
    }

    def build_net(self) -> PoseNetNet:
        c = self.conf
        return PoseNetNet(list(c["channels"]), int(c["feature_dim"]), float(c["dropout"]), float(c["init_s_x"]),
                          float(c["init_s_q"]))

    # ------------------------------------------------------------ prediction
    @torch.no_grad()
    def predict(self, images: np.ndarray) -> np.ndarray:
        """(N, 4, 4) float64 ``T_w_c`` of (N, H, W, 3) uint8 RGB images (resized to the input size)."""
        net = self.net
        was_training = net.training
        net.eval()
        out_x, out_q = [], []
        bs = int(self.conf["infer_batch"])
        for i in range(0, len(images), bs):
            chunk = np.stack([resize_image(np.ascontiguousarray(im), self.input_size) for im in images[i:i + bs]])
            x_n, q = net(torch.from_numpy(chunk).to(self.device))
            out_x.append(net.head.to_metres(x_n).cpu().numpy())
            out_q.append(q.cpu().numpy())
        net.train(was_training)
        if not out_x:
            return np.zeros((0, 4, 4))
        return xq_to_poses(np.concatenate(out_x), np.concatenate(out_q))

    def infer(self, batch: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        if self.checkpoint_info is None and not self._warned_untrained:
            log.warning("posenet: no checkpoint loaded: answering with untrained weights; the poses mean nothing")
            self._warned_untrained = True
        for r in batch:
            im = r["image"]
            if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
                raise ValueError(f"posenet: image must be HxWx3 uint8 RGB, got {im.shape} {im.dtype}")
        T = self.predict(np.stack([resize_image(r["image"], self.input_size) for r in batch]))
        return [{"T_w_c": t} for t in T]

    # ------------------------------------------------------------ training
    def prepare(self, clips: list[Clip], seed: int) -> None:
        """Position mean/scale and reference quaternion of the training poses (one scene)."""
        single_world(clips, self.name)
        x, q = poses_to_xq(posed_frames(clips)[1])
        self.net.head.set_statistics(x, q)
        log.info("posenet: %d training poses, position mean %s m, scale %.3f m", len(x),
                 np.round(x.mean(0), 3).tolist(), float(self.net.head.pos_scale))

    def batches(self, clips: list[Clip], rng: np.random.Generator) -> Iterator[dict[str, Any]]:
        single_world(clips, self.name)
        images, T = posed_frames(clips)
        x, q = poses_to_xq(T)
        bs = min(int(self.conf["batch_size"]), len(images))
        n_batches = int(self.conf["batches_per_epoch"]) or max(1, len(images) // bs)
        order = np.concatenate([rng.permutation(len(images)) for _ in range(-(-n_batches * bs // len(images)))])
        for b in range(n_batches):
            idx = order[b * bs:(b + 1) * bs]
            ims = augment(images[idx], rng, int(self.conf["augment_shift_px"]), float(self.conf["augment_gain"]))
            yield {"images": torch.from_numpy(ims), "x": torch.from_numpy(x[idx]).float(),
                   "q": torch.from_numpy(q[idx]).float()}

    @staticmethod
    def batch_samples(batch: dict[str, Any]) -> int:
        return int(batch["images"].shape[0])

    # ------------------------------------------------------------ evaluation
    def evaluate(self, clips: list[Clip], fit_clips: list[Clip] | None = None, seed: int = 0) -> dict[str, Any]:
        """Median translation/rotation errors on the posed frames of ``clips`` beside the mean-pose, retrieval
        and oracle baselines fitted on ``fit_clips`` (the training frames of the same scene)."""
        return evaluate_poses(self.name, lambda c: self.predict(c.images), clips, fit_clips)
