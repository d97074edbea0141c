"""VidLoc (Clark, Wang, Markham, Trigoni & Wen, "VidLoc: A deep spatio-temporal model for 6-DoF video-clip
relocalization", CVPR 2017).

The per-frame CNN encoder of PoseNet (:class:`~nets.pose_regression.ImageEncoder`)
feeds a bidirectional LSTM over a short clip of consecutive frames; a linear
head on each time step regresses that frame's global pose (position in
metres, world frame, and the unit quaternion of ``R_w_c``), so every frame's
pose draws on the frames before and after it. The loss is PoseNet's
(:func:`~nets.pose_regression.pose_loss`) over all frames of the clip.

Training draws random windows of ``clip_len`` consecutive frames of the
training clips (one scene). Evaluation slides a window of ``clip_len`` frames
(stride 1) over each held-out clip and, for each frame, averages the
predictions of the windows that contain it (positions averaged; quaternions
by their chordal mean).

Served as task ``pose_clip``: a request ``{"images": TxHxWx3 uint8 RGB}``
gets ``{"T_w_c": (T, 4, 4) float64}`` (the whole request is one sequence; any
``T`` >= 1 works, the network was trained on ``clip_len``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from nets.models.posenet import PoseRegressor
from nets.pose_regression import (ImageEncoder, PoseHead, augment, evaluate_poses, mean_quaternion,
                                  poses_to_xq, single_world, to_hemisphere, xq_to_poses)
from nets.registry import register
from nets.train.data import Clip, resize_image

log = logging.getLogger(__name__)


class VidLocNet(nn.Module):
    """(B, T, H, W, 3) uint8 -> normalised positions (B, T, 3) and quaternions (B, T, 4)."""

    def __init__(self, channels: list[int], feature_dim: int, hidden: int, dropout: float, s_x: float, s_q: float):
        super().__init__()
        self.encoder = ImageEncoder(channels, feature_dim, dropout=dropout)
        self.lstm = nn.LSTM(feature_dim, hidden, batch_first=True, bidirectional=True)
        self.head = PoseHead(feature_dim + 2 * hidden, s_x, s_q)

    def forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t = clips.shape[:2]
        f = self.encoder(clips.reshape(b * t, *clips.shape[2:])).reshape(b, t, -1)
        h, _ = self.lstm(f)
        return self.head(torch.cat([f, h], dim=2))  # the frame's own features beside its temporal context


@register
class VidLoc(PoseRegressor):
    name = "vidloc"
    task = "pose_clip"
    version = "1"
    required_inputs = ("images",)
    architecture_keys = ("image_width", "image_height", "channels", "feature_dim", "hidden")
    sizes = {
        "tiny": {"image_width": 64, "image_height": 48, "channels": [16, 32, 32, 64], "feature_dim": 128,
                 "hidden": 64, "lr": 2e-3, "augment_shift_px": 4},
        "small": {"image_width": 160, "image_height": 120, "channels": [16, 32, 64, 64, 128], "feature_dim": 256,
                  "hidden": 128, "lr": 1e-3, "augment_shift_px": 8},
        "full": {"image_width": 320, "image_height": 240, "channels": [32, 64, 128, 256, 256, 512],
                 "feature_dim": 1024, "hidden": 256, "lr": 1e-4, "augment_shift_px": 16},
    }
    default_conf = {
        **sizes["small"],
        "clip_len": 8,  # frames per window, in training and in the sliding evaluation
        "loss": "learned", "beta": 10.0, "init_s_x": 0.0, "init_s_q": -3.0,  # as PoseNet's
        "dropout": 0.5,  # before the encoder's fully connected layer: the scenes are small
        "batch_clips": 4,  # windows per batch
        "batches_per_epoch": 0,  # 0: as many windows as training frames, once
        "augment_gain": 0.15,
    }

    def build_net(self) -> VidLocNet:
        c = self.conf
        return VidLocNet(list(c["channels"]), int(c["feature_dim"]), int(c["hidden"]), float(c["dropout"]),
                         float(c["init_s_x"]), float(c["init_s_q"]))

    # ------------------------------------------------------------ prediction
    @torch.no_grad()
    def predict_window(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (T, 3) metres and unit quaternions (T, 4) xyzw of one window (T, H, W, 3) uint8."""
        net = self.net
        was_training = net.training
        net.eval()
        ims = np.stack([resize_image(np.ascontiguousarray(im), self.input_size) for im in images])
        x_n, q = net(torch.from_numpy(ims)[None].to(self.device))
        net.train(was_training)
        q = q[0].cpu().numpy().astype(np.float64)
        return net.head.to_metres(x_n[0]).cpu().numpy().astype(np.float64), q / np.linalg.norm(q, axis=1,
                                                                                                keepdims=True)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """(N, 4, 4) ``T_w_c`` of a sequence of N frames: windows of ``clip_len`` slid by one frame, each frame's
        pose averaged over the windows that contain it (one window when N <= clip_len)."""
        n, t = len(images), min(int(self.conf["clip_len"]), len(images))
        if n == 0:
            return np.zeros((0, 4, 4))
        xs: list[list[np.ndarray]] = [[] for _ in range(n)]
        qs: list[list[np.ndarray]] = [[] for _ in range(n)]
        for s in range(n - t + 1):
            x, q = self.predict_window(images[s:s + t])
            for j in range(t):
                xs[s + j].append(x[j])
                qs[s + j].append(q[j])
        x = np.stack([np.mean(v, 0) for v in xs])
        q = np.stack([mean_quaternion(np.stack(v)) if len(v) > 1 else v[0] for v in qs])
        return xq_to_poses(x, q)

    def infer(self, batch: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        if self.checkpoint_info is None and not self._warned_untrained:
            log.warning("vidloc: no checkpoint loaded: answering with untrained weights; the poses mean nothing")
            self._warned_untrained = True
        out = []
        for r in batch:
            ims = r["images"]
            if ims.dtype != np.uint8 or ims.ndim != 4 or ims.shape[3] != 3 or len(ims) == 0:
                raise ValueError(f"vidloc: images must be TxHxWx3 uint8 RGB with T >= 1, got {ims.shape} {ims.dtype}")
            out.append({"T_w_c": self.predict(ims)})
        return out

    # ------------------------------------------------------------ training
    def prepare(self, clips: list[Clip], seed: int) -> None:
        single_world(clips, self.name)
        x, q = poses_to_xq(np.concatenate([c.T_w_c[c.has_poses] for c in clips]))
        self.net.head.set_statistics(x, q)
        log.info("vidloc: %d training poses, position scale %.3f m", len(x), float(self.net.head.pos_scale))

    def _windows(self, clips: list[Clip]) -> list[tuple[int, int]]:
        """(clip, first frame) of every window of ``clip_len`` consecutive frames, all with poses."""
        t = int(self.conf["clip_len"])
        out = []
        for ci, c in enumerate(clips):
            ok = c.has_poses
            for s in range(0, len(c) - t + 1):
                if ok[s:s + t].all():
                    out.append((ci, s))
        return out

    def batches(self, clips: list[Clip], rng: np.random.Generator) -> Iterator[dict[str, Any]]:
        single_world(clips, self.name)
        t, bc = int(self.conf["clip_len"]), int(self.conf["batch_clips"])
        wins = self._windows(clips)
        if not wins:
            return
        n_frames = sum(int(c.has_poses.sum()) for c in clips)
        n_batches = int(self.conf["batches_per_epoch"]) or max(1, n_frames // (bc * t))
        q_ref = self.net.head.q_ref.cpu().numpy().astype(np.float64)
        for _ in range(n_batches):
            pick = rng.integers(0, len(wins), bc)
            ims, xs, qs = [], [], []
            for w in pick:
                ci, s = wins[w]
                c = clips[ci]
                ims.append(augment(c.images[s:s + t], rng, int(self.conf["augment_shift_px"]),
                                   float(self.conf["augment_gain"])))
                x, q = poses_to_xq(c.T_w_c[s:s + t])
                xs.append(x)
                qs.append(to_hemisphere(q, q_ref))
            yield {"images": torch.from_numpy(np.stack(ims)), "x": torch.from_numpy(np.stack(xs)).float(),
                   "q": torch.from_numpy(np.stack(qs)).float()}

    @staticmethod
    def batch_samples(batch: dict[str, Any]) -> int:
        return int(batch["images"].shape[0] * batch["images"].shape[1])

    # ------------------------------------------------------------ evaluation
    def evaluate(self, clips: list[Clip], fit_clips: list[Clip] | None = None, seed: int = 0) -> dict[str, Any]:
        """Median translation/rotation errors of the sliding-window predictions on the posed frames of ``clips``
        beside the mean-pose, retrieval and oracle baselines fitted on ``fit_clips`` (same scene)."""
        m = evaluate_poses(self.name, lambda c: self.predict(c.images), clips, fit_clips)
        m["clip_len"] = int(self.conf["clip_len"])
        return m
