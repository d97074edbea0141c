"""What PoseNet and VidLoc share: the image encoder, the pose loss, quaternion hemispheres, errors and baselines.

Poses are ``T_w_c`` (camera to world, 4x4 float64); a regressed pose is a
position ``x`` (metres, world frame) and a unit quaternion ``q`` in TUM order
``(qx, qy, qz, qw)`` of the rotation ``R_w_c``.

The loss of Kendall & Cipolla, "Geometric loss functions for camera pose
regression with deep learning" (CVPR 2017), in two weightings:

    beta:     |x - x_hat| + beta |q - q_hat / |q_hat||
    learned:  |x - x_hat| exp(-s_x) + s_x + |q - q_hat / |q_hat|| exp(-s_q) + s_q

with ``|.|`` the Euclidean norm per sample, averaged over the batch, and
``s_x``, ``s_q`` trained with the network (homoscedastic uncertainty). The
positions inside the loss are normalised by the training set's mean and
scale (so ``beta`` does not depend on the size of the scene); the network's
answers are turned back into metres.

``q`` and ``-q`` are one rotation. Targets are put in the hemisphere of a
reference quaternion of the training data (the chordal mean, see
:func:`mean_quaternion`), so the network regresses one continuous branch
where the data allow; errors use the sign-free angle ``2 acos(|<q, q_hat>|)``.

Baselines (on held-out frames, fitted on the training frames of the same
world): the mean training pose (a constant), image retrieval (the pose of the
training frame whose downsampled, normalised grey image has the largest
cosine with the query's) and, for information, the oracle: the training pose
nearest to the ground truth (a lower bound of any retrieval's translation
error).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from nets.base import ModelError
from nets.train.data import Clip
from slam.geometry.so3 import quat_to_rot, rot_to_quat

log = logging.getLogger(__name__)

LOSSES = ("beta", "learned")
RETRIEVAL_WH = (32, 24)  # grey thumbnails of the retrieval baseline


# ------------------------------------------------------------------ quaternions and poses
def mean_quaternion(q: np.ndarray) -> np.ndarray:
    """The chordal L2 mean of unit quaternions ``q`` (N, 4) xyzw: the principal eigenvector of sum q q^T,
    with ``qw >= 0``. Sign-free: ``q`` and ``-q`` count alike."""
    q = np.asarray(q, np.float64)
    _, vecs = np.linalg.eigh(q.T @ q)
    m = vecs[:, -1]
    return -m if m[3] < 0 else m


def to_hemisphere(q: np.ndarray, q_ref: np.ndarray) -> np.ndarray:
    """``q`` (..., 4) with each sign flipped where needed so that ``<q, q_ref> >= 0``."""
    s = np.where((q * q_ref).sum(-1, keepdims=True) < 0, -1.0, 1.0)
    return q * s


def poses_to_xq(T_w_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4, 4) ``T_w_c`` -> positions (N, 3) metres and unit quaternions (N, 4) xyzw with qw >= 0."""
    T = np.asarray(T_w_c, np.float64).reshape(-1, 4, 4)
    return T[:, :3, 3].copy(), rot_to_quat(T[:, :3, :3]).reshape(-1, 4)


def xq_to_poses(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Positions (N, 3) and quaternions (N, 4) xyzw (normalised here) -> (N, 4, 4) float64 ``T_w_c``."""
    x = np.asarray(x, np.float64).reshape(-1, 3)
    T = np.tile(np.eye(4), (len(x), 1, 1))
    T[:, :3, :3] = quat_to_rot(np.asarray(q, np.float64).reshape(-1, 4))
    T[:, :3, 3] = x
    return T


def pose_errors(T_est: np.ndarray, T_gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Translation errors (metres) and rotation errors (degrees, ``2 acos(|<q, q_hat>|)``) of (N, 4, 4) poses."""
    x_e, q_e = poses_to_xq(T_est)
    x_g, q_g = poses_to_xq(T_gt)
    dot = np.clip(np.abs((q_e * q_g).sum(1)), 0.0, 1.0)
    return np.linalg.norm(x_e - x_g, axis=1), np.degrees(2.0 * np.arccos(dot))


# ------------------------------------------------------------------ the loss
def pose_loss(x_hat: torch.Tensor, q_hat: torch.Tensor, x: torch.Tensor, q: torch.Tensor, mode: str,
              beta: float = 1.0, s_x: torch.Tensor | None = None, s_q: torch.Tensor | None = None,
              q_ref: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of a batch (..., 3) / (..., 4) of predictions against targets (see the module docstring).

    ``q_hat`` need not be unit length (it is normalised here); the targets ``q`` are put in the hemisphere of
    ``q_ref`` when given. Returns the loss and its two terms (mean position and quaternion distances).
    """
    if mode not in LOSSES:
        raise ModelError(f"pose loss must be one of {LOSSES}, got {mode!r}")
    if q_ref is not None:
        q = torch.where((q * q_ref).sum(-1, keepdim=True) < 0, -q, q)
    q_unit = q_hat / q_hat.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    lx = (x_hat - x).norm(dim=-1).mean()
    lq = (q_unit - q).norm(dim=-1).mean()
    if mode == "beta":
        loss = lx + beta * lq
    else:
        if s_x is None or s_q is None:
            raise ModelError("the learned weighting needs s_x and s_q")
        loss = lx * torch.exp(-s_x) + s_x + lq * torch.exp(-s_q) + s_q
    return loss, {"pos": float(lx.detach()), "quat": float(lq.detach())}


# ------------------------------------------------------------------ the network parts
class ImageEncoder(nn.Module):
    """3x3 convolutions (stride 2, batch norm, ReLU), pooled to a coarse ``grid`` that keeps the layout, then a
    fully connected layer: (B, H, W, 3) uint8 RGB -> (B, feature_dim)."""

    def __init__(self, channels: list[int], feature_dim: int, grid: tuple[int, int] = (3, 4), dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        self.conv = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.fc = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in * grid[0] * grid[1], feature_dim),
                                nn.ReLU(inplace=True))

    @staticmethod
    def to_input(images: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float in [-0.5, 0.5]."""
        return images.permute(0, 3, 1, 2).float() / 255.0 - 0.5

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv(self.to_input(images))))


class PoseHead(nn.Module):
    """Features -> normalised position (3) and an unnormalised quaternion (4); holds the training set's
    position mean/scale and reference quaternion as buffers (saved in the checkpoint) and the loss weights."""

    def __init__(self, feature_dim: int, s_x: float, s_q: float):
        super().__init__()
        self.fc_x = nn.Linear(feature_dim, 3)
        self.fc_q = nn.Linear(feature_dim, 4)
        self.s_x = nn.Parameter(torch.tensor(float(s_x)))
        self.s_q = nn.Parameter(torch.tensor(float(s_q)))
        self.register_buffer("pos_mean", torch.zeros(3))
        self.register_buffer("pos_scale", torch.ones(()))
        self.register_buffer("q_ref", torch.tensor([0.0, 0.0, 0.0, 1.0]))
        with torch.no_grad():  # start at the reference rotation: (0, 0, 0, 1) before prepare()
            self.fc_q.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0]))

    @torch.no_grad()
    def set_statistics(self, x: np.ndarray, q: np.ndarray) -> None:
        """Position mean and scale (RMS distance from the mean, metres) and reference quaternion of the
        training poses; the quaternion output starts at the reference."""
        mean = x.mean(0)
        scale = max(float(np.sqrt(((x - mean) ** 2).sum(1).mean())), 1e-3)
        q_ref = mean_quaternion(q)
        self.pos_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.pos_scale.fill_(scale)
        self.q_ref.copy_(torch.as_tensor(q_ref, dtype=torch.float32))
        self.fc_q.bias.copy_(self.q_ref)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fc_x(f), self.fc_q(f)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.pos_mean) / self.pos_scale

    def to_metres(self, x_n: torch.Tensor) -> torch.Tensor:
        return x_n * self.pos_scale + self.pos_mean


def augment(images: np.ndarray, rng: np.random.Generator, shift_px: int, gain: float) -> np.ndarray:
    """Training augmentation of (N, H, W, 3) uint8 images: a random shift of up to ``shift_px`` pixels
    (edges replicated) and random brightness/contrast gains within ``1 +- gain``; drawn from ``rng`` only."""
    if shift_px <= 0 and gain <= 0:
        return images
    out = np.empty_like(images)
    h, w = images.shape[1:3]
    for i, im in enumerate(images):
        if shift_px > 0:
            dy, dx = rng.integers(-shift_px, shift_px + 1, 2)
            pad = np.pad(im, ((shift_px, shift_px), (shift_px, shift_px), (0, 0)), mode="edge")
            im = pad[shift_px + dy:shift_px + dy + h, shift_px + dx:shift_px + dx + w]
        if gain > 0:
            a, b = rng.uniform(1 - gain, 1 + gain), rng.uniform(-gain, gain) * 128
            im = np.clip(im.astype(np.float32) * a + b, 0, 255).astype(np.uint8)
        out[i] = im
    return out


# ------------------------------------------------------------------ data checks
def single_world(clips: list[Clip], model: str) -> str:
    """The one world ``clips`` share; several worlds or frames without poses are a :class:`ModelError`."""
    worlds = sorted({c.world for c in clips})
    if len(worlds) != 1:
        raise ModelError(f"{model} regresses poses in one scene's world frame: train it per scene, these clips "
                         f"span {len(worlds)} worlds ({', '.join(worlds[:4])}{', ...' if len(worlds) > 4 else ''}); "
                         "hold frames out with --holdout (e.g. traversal:b, every:5) instead of other scenes")
    if not any(c.has_poses.any() for c in clips):
        raise ModelError(f"{model}: the training clips have no ground-truth poses")
    return worlds[0]


def posed_frames(clips: list[Clip]) -> tuple[np.ndarray, np.ndarray]:
    """(images, T_w_c) of every frame with a pose in ``clips``."""
    ims = [c.images[c.has_poses] for c in clips]
    Ts = [c.T_w_c[c.has_poses] for c in clips]
    return np.concatenate(ims), np.concatenate(Ts)


# ------------------------------------------------------------------ evaluation and baselines
def _grey_codes(images: np.ndarray) -> np.ndarray:
    """Downsampled grey images, zero mean and unit length per image: (N, 32*24) float32."""
    import cv2

    g = np.stack([cv2.resize(cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2GRAY), RETRIEVAL_WH,
                             interpolation=cv2.INTER_AREA) for im in images]).reshape(len(images), -1)
    g = g.astype(np.float32)
    g -= g.mean(1, keepdims=True)
    return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-6)


def baseline_poses(fit_images: np.ndarray, fit_T: np.ndarray, images: np.ndarray,
                   T_gt: np.ndarray) -> dict[str, np.ndarray]:
    """Poses (N, 4, 4) of the baselines for query ``images`` (ground truth ``T_gt``, for the oracle only),
    from the training frames ``fit_images``/``fit_T``: mean pose, image retrieval, oracle nearest pose."""
    x, q = poses_to_xq(fit_T)
    mean = xq_to_poses(x.mean(0)[None], mean_quaternion(q)[None])[0]
    nn_idx = (_grey_codes(images) @ _grey_codes(fit_images).T).argmax(1)
    oracle = np.linalg.norm(T_gt[:, None, :3, 3] - fit_T[None, :, :3, 3], axis=2).argmin(1)
    return {"mean_pose": np.repeat(mean[None], len(images), 0), "retrieval": fit_T[nn_idx], "oracle": fit_T[oracle]}


def evaluate_poses(name: str, predict, clips: list[Clip], fit_clips: list[Clip] | None) -> dict[str, Any]:
    """Median translation (m) / rotation (deg) errors of ``predict(clip) -> (N, 4, 4)`` on the posed frames of
    ``clips`` beside the baselines fitted on ``fit_clips`` of the same world (on ``clips`` themselves when none
    are given, which makes retrieval and the oracle exact: said in the result)."""
    fit = fit_clips or clips
    by_world: dict[str, list[Clip]] = {}
    for c in fit:
        by_world.setdefault(c.world, []).append(c)
    errs: dict[str, tuple[list, list]] = {k: ([], []) for k in (name, "mean_pose", "retrieval", "oracle")}
    skipped = []
    for clip in clips:
        ok = clip.has_poses
        if clip.world not in by_world or not ok.any():
            skipped.append(clip.name)
            continue
        f_im, f_T = posed_frames(by_world[clip.world])
        T_gt = clip.T_w_c[ok]
        est = {name: predict(clip)[ok],
               **baseline_poses(f_im, f_T, clip.images[ok], T_gt)}
        for k, T in est.items():
            t, r = pose_errors(T, T_gt)
            errs[k][0].append(t)
            errs[k][1].append(r)
    if skipped:
        log.warning("%s: no training frames of the same world (or no poses) for clips %s: not evaluated",
                    name, skipped)
    if not errs[name][0]:
        raise ModelError(f"{name}: nothing to evaluate: no clip shares a world with the training clips "
                         "(a pose regressor is evaluated on frames of the scene it was trained on)")
    out: dict[str, Any] = {
        "frames": int(sum(len(t) for t in errs[name][0])),
        "baselines_fitted_on": "training clips" if fit_clips else "evaluation clips (retrieval/oracle exact)",
        "skipped_clips": skipped}
    for k, (t, r) in errs.items():
        t, r = np.concatenate(t), np.concatenate(r)
        out[k] = {"median_t_m": float(np.median(t)), "median_r_deg": float(np.median(r)),
                  "mean_t_m": float(np.mean(t)), "mean_r_deg": float(np.mean(r))}
    return out
