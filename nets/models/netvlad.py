"""NetVLAD (Arandjelović et al., "NetVLAD: CNN architecture for weakly supervised place recognition", CVPR 2016).

A small CNN gives local descriptors ``x_i`` (D channels on an H'xW' grid);
the NetVLAD layer pools them into one global descriptor:

    a_k(x_i) = softmax_k(w_k . x_i + b_k)                       soft assignment
    V(k, :)  = sum_i a_k(x_i) (x_i - c_k)                       residuals to trainable centres
    V        = L2(flatten(intra-normalise each V(k, :)))        K*D float32, unit length

``w_k``, ``b_k`` and ``c_k`` are trained independently; they start from
k-means centres of backbone features of training images with
``w_k = 2 alpha c_k``, ``b_k = -alpha |c_k|^2`` (the assignment is then
``softmax(-alpha |x_i - c_k|^2)``), ``alpha`` chosen so the nearest centre
gets about 100x the weight of the second nearest on average.

Training is weakly supervised by poses (:mod:`nets.retrieval`): for each
query the nearest of its positives in descriptor space (the paper's "best
potential positive") and the hardest in-batch negatives enter the margin
ranking loss ``sum_j relu(d^2(q, p*) + m - d^2(q, n_j))``.

Served as task ``descriptor``: a request ``{"image": HxWx3 uint8 RGB}`` gets
``{"descriptor": (K*D,) float32}``. Without a checkpoint the weights are
random (random centres too): descriptors still come, but they are not
trained, which the log says once and ``describe()["trained"]`` says always.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nets.base import ModelError
from nets.registry import register
from nets.retrieval import (OrbVlad, PlaceThresholds, database_mask, group_worlds, kmeans, pose_relations,
                            recall_at_k)
from nets.train.data import Clip, resize_image
from nets.train.trainable import TrainableModel

log = logging.getLogger(__name__)


class NetVLADLayer(nn.Module):
    """The NetVLAD pooling layer: (B, D, H, W) local descriptors -> (B, K*D) unit-length global descriptors."""

    def __init__(self, dim: int, clusters: int, normalize_input: bool = True):
        super().__init__()
        self.dim, self.clusters, self.normalize_input = dim, clusters, normalize_input
        self.assign = nn.Conv2d(dim, clusters, kernel_size=1, bias=True)  # w_k, b_k
        self.centroids = nn.Parameter(torch.rand(clusters, dim))  # c_k

    @torch.no_grad()
    def init_from_centroids(self, centroids: torch.Tensor, alpha: float) -> None:
        """``c_k`` = centroids, ``w_k = 2 alpha c_k``, ``b_k = -alpha |c_k|^2``."""
        c = centroids.to(self.centroids)
        self.centroids.copy_(c)
        self.assign.weight.copy_((2.0 * alpha * c)[:, :, None, None])
        self.assign.bias.copy_(-alpha * (c**2).sum(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize_input:
            x = F.normalize(x, dim=1)
        a = F.softmax(self.assign(x), dim=1).flatten(2)  # (B, K, N)
        xf = x.flatten(2)  # (B, D, N)
        v = torch.bmm(a, xf.transpose(1, 2)) - self.centroids[None] * a.sum(2, keepdim=True)  # (B, K, D)
        v = F.normalize(v, dim=2)  # intra-normalisation
        return F.normalize(v.flatten(1), dim=1)


class NetVLADNet(nn.Module):
    """Backbone (3x3 convolutions with ReLU, stride 2 first, no ReLU after the last) + NetVLAD layer."""

    def __init__(self, channels: list[int], clusters: int):
        super().__init__()
        layers: list[nn.Module] = []
        c_in, n_down = 3, max(3, len(channels) - 1)
        for i, c in enumerate(channels):
            layers.append(nn.Conv2d(c_in, c, 3, stride=2 if i < n_down else 1, padding=1))
            if i < len(channels) - 1:
                layers.append(nn.ReLU(inplace=True))
            c_in = c
        self.backbone = nn.Sequential(*layers)
        self.pool = NetVLADLayer(c_in, clusters)

    @staticmethod
    def to_input(images: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float in [-0.5, 0.5]."""
        return images.permute(0, 3, 1, 2).float() / 255.0 - 0.5

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.to_input(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(images))


def augment_image(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random view of ``image`` (H, W, 3) uint8 for training: a crop of 70-100 % of each side (aspect within
    +-15 %) resized back to (W, H), then gamma, contrast, global gain and per-channel gains each within
    exp(+-0.3), exp(+-0.3), exp(+-0.4) and exp(+-0.1): the viewpoint and lighting changes a place descriptor
    must not see."""
    h, w = image.shape[:2]
    scale, aspect = rng.uniform(0.7, 1.0), np.exp(rng.uniform(-0.15, 0.15))
    cw, ch = min(w, max(8, round(w * scale * aspect ** 0.5))), min(h, max(8, round(h * scale / aspect ** 0.5)))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    crop = cv2.resize(image[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR)
    f = crop.astype(np.float32) / 255.0
    f = f ** np.float32(np.exp(rng.uniform(-0.3, 0.3)))
    m = f.mean()
    f = (f - m) * np.float32(np.exp(rng.uniform(-0.3, 0.3))) + m
    f = f * np.float32(np.exp(rng.uniform(-0.4, 0.4))) * np.exp(rng.uniform(-0.1, 0.1, 3)).astype(np.float32)
    return np.clip(f * 255.0 + 0.5, 0, 255).astype(np.uint8)


@register
class NetVLAD(TrainableModel):
    name = "netvlad"
    task = "descriptor"
    version = "1"
    required_inputs = ("image",)
    architecture_keys = ("image_width", "image_height", "channels", "clusters")
    sizes = {
        "tiny": {"image_width": 64, "image_height": 48, "channels": [8, 16, 32], "clusters": 8, "lr": 1e-3,
                 "augment": 0.0, "train_pos_dist_m": None, "train_neg_dist_m": None},
        # benchmarks/netvlad.py, on the fixed room before scene variety: at 1e-3 the small net got worse than untrained on held-out rooms (recall@1 26 %
        # vs 41 %), at 1e-4 61 %, at 3e-4 79 % (3 epochs, seed 0); "full" is untried here (no GPU)
        # on the varied rooms (nets/train/data.py), 22 training rooms, 4 epochs, seed 0: augmentation 0.5 gave 80 %
        # on held-out rooms 6-7 and 89 % on the KITTI clip; 0.8 (6 rooms, 10 epochs) 72 % / 71 %, none (6 rooms,
        # 10 epochs) 79 %; none with 32 rooms, 3 epochs: 88 % but 57 % on KITTI (untrained: 74-89 % there)
        # KITTI (benchmark, 160 frames, seeds 0/1/2): lr 3e-4 + augmentation 0.5 gave 88.6/62.9/57.1 % vs ORB-VLAD
        # 68.6/74.3/74.3 (training loses the along-track ordering the random features keep). lr 1e-4, no
        # augmentation (its 70-100 % crops teach zoom = forward-motion invariance), training pairs within 0.5 m
        # and beyond 1 m (same-heading views 1 m apart become negatives): 68.6/80.0/80.0 % (seeds 3/4: 82.9/71.4
        # vs 65.7/71.4), held-out rooms 75.6/83.8/81.9 % (ORB-VLAD 51-58, untrained 44-48). Same without the
        # pair distances: 80.0/71.4/85.7; lr 3e-4 + those distances (augmented): 77/69/71 on frames 0-59
        "small": {"image_width": 160, "image_height": 120, "channels": [16, 32, 64, 64], "clusters": 16, "lr": 1e-4,
                  "augment": 0.0, "train_pos_dist_m": 0.5, "train_neg_dist_m": 1.0},
        "full": {"image_width": 320, "image_height": 240, "channels": [32, 64, 128, 256, 256], "clusters": 64,
                 "lr": 1e-4, "augment": 0.5, "train_pos_dist_m": None, "train_neg_dist_m": None},
    }
    default_conf = {
        "augment": 0.0,  # training: probability that an image is randomly cropped and photometrically jittered
        "train_pos_dist_m": None, "train_neg_dist_m": None,  # training pairs' distances [m]; None: pos/neg_dist_m
        **sizes["small"],  # the lr (Adam), augmentation and training pair distances of the size
        "batch_queries": 8,  # queries per batch (each with one positive): 2x images per batch
        "margin": 0.1,  # m of the ranking loss, on squared distances of unit vectors
        "hard_negatives": 10,  # hardest in-batch negatives per query that enter the loss
        "kmeans_images": 64,  # training images whose backbone features the centres are clustered from
        "pos_dist_m": 2.0, "pos_angle_deg": 30.0,  # positives: within both (evaluation; training too unless train_*)
        "neg_dist_m": 10.0, "neg_angle_deg": 60.0,  # negatives: beyond either (evaluation; training too unless train_*)
        "exclude_frames": 5,  # evaluation: a query's temporal neighbours (same clip) are not in its database
        "infer_batch": 32,  # images per forward pass when answering requests
    }

    def __init__(self, conf: dict[str, Any] | None = None, device: str = "cpu"):
        if conf is not None and "channels" in conf:
            conf = {**conf, "channels": [int(c) for c in conf["channels"]]}
        super().__init__(conf, device)
        self._warned_untrained = False

    def build_net(self) -> NetVLADNet:
        return NetVLADNet(list(self.conf["channels"]), int(self.conf["clusters"]))

    @property
    def thresholds(self) -> PlaceThresholds:
        c = self.conf
        return PlaceThresholds(c["pos_dist_m"], c["pos_angle_deg"], c["neg_dist_m"], c["neg_angle_deg"],
                               int(c["exclude_frames"]))

    @property
    def train_thresholds(self) -> PlaceThresholds:
        """The positives and negatives of training pairs: :attr:`thresholds` with ``train_pos_dist_m`` and
        ``train_neg_dist_m`` [m] where set (tighter distances teach the descriptor where along a view it is)."""
        c, th = self.conf, self.thresholds
        pos = th.pos_dist_m if c.get("train_pos_dist_m") is None else float(c["train_pos_dist_m"])
        neg = th.neg_dist_m if c.get("train_neg_dist_m") is None else float(c["train_neg_dist_m"])
        if neg < pos:
            raise ModelError(f"netvlad: train_neg_dist_m {neg} is below train_pos_dist_m {pos}: a pair would be "
                             "both a positive and a negative")
        return dataclasses.replace(th, pos_dist_m=pos, neg_dist_m=neg)

    # ------------------------------------------------------------ descriptors
    @torch.no_grad()
    def descriptors(self, images: np.ndarray, net: nn.Module | None = None) -> np.ndarray:
        """(N, K*D) float32 unit descriptors of (N, H, W, 3) uint8 images (resized to the input size)."""
        net = net or self.net
        was_training = net.training
        net.eval()
        size = self.input_size
        out = []
        bs = int(self.conf["infer_batch"])
        for i in range(0, len(images), bs):
            chunk = np.stack([resize_image(np.ascontiguousarray(im), size) for im in images[i:i + bs]])
            out.append(net(torch.from_numpy(chunk).to(self.device)).cpu().numpy())
        net.train(was_training)
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)

    @property
    def dim(self) -> int:
        return int(self.conf["channels"][-1]) * int(self.conf["clusters"])

    def infer(self, batch: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        if self.checkpoint_info is None and not self._warned_untrained:
            log.warning("netvlad: no checkpoint loaded: answering with untrained weights (random backbone and "
                        "centres); descriptors are not fit for place recognition")
            self._warned_untrained = True
        for r in batch:
            im = r["image"]
            if im.dtype != np.uint8 or im.ndim != 3 or im.shape[2] != 3:
                raise ValueError(f"netvlad: image must be HxWx3 uint8 RGB, got {im.shape} {im.dtype}")
        d = self.descriptors(np.stack([resize_image(r["image"], self.input_size) for r in batch]))
        return [{"descriptor": v} for v in d]

    # ------------------------------------------------------------ training
    @torch.no_grad()
    def prepare(self, clips: list[Clip], seed: int) -> None:
        """Centres by k-means over backbone features of ``kmeans_images`` training images; alpha from them."""
        images = np.concatenate([c.images for c in clips])
        rng = np.random.default_rng([seed, 7])
        pick = rng.choice(len(images), min(len(images), int(self.conf["kmeans_images"])), replace=False)
        self.net.eval()
        feats = self.net.features(torch.from_numpy(images[np.sort(pick)]).to(self.device))
        feats = F.normalize(feats, dim=1).permute(0, 2, 3, 1).reshape(-1, feats.shape[1]).cpu().numpy()
        if len(feats) > 20000:
            feats = feats[rng.choice(len(feats), 20000, replace=False)]
        centres = kmeans(feats, int(self.conf["clusters"]), seed)
        d2 = np.sort(((feats[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        alpha = -math.log(0.01) / max(float(np.mean(d2[:, 1] - d2[:, 0])), 1e-6)
        self.net.pool.init_from_centroids(torch.from_numpy(centres), alpha)
        log.info("netvlad: %d centres from %d features of %d images, alpha %.1f", len(centres), len(feats),
                 len(pick), alpha)

    def batches(self, clips: list[Clip], rng: np.random.Generator) -> Iterator[dict[str, Any]]:
        """Batches of ``batch_queries`` queries of one world, each with one positive (preferably outside its
        temporal neighbourhood) and the GT positive/negative relations (:attr:`train_thresholds`) among all images
        of the batch."""
        th, bq = self.train_thresholds, int(self.conf["batch_queries"])
        aug = float(self.conf.get("augment", 0.0))
        out = []
        for world in group_worlds(clips):
            pos, neg = pose_relations(world.T_w_c, th)
            far_pos = pos & database_mask(world, th)
            queries = rng.permutation(np.flatnonzero(pos.any(1)))
            for s in range(0, len(queries) - bq + 1, bq):  # full batches only: every step sees as many negatives
                q = queries[s:s + bq]
                p = np.array([rng.choice(np.flatnonzero(far_pos[i] if far_pos[i].any() else pos[i])) for i in q])
                rows = np.concatenate([q, p])
                images = np.stack([clips[world.clip_ids[r]].images[world.rows[r]] for r in rows])
                if aug > 0.0:
                    images = np.stack([augment_image(im, rng) if rng.random() < aug else im for im in images])
                out.append({"images": torch.from_numpy(images),
                            "pos": torch.from_numpy(pos[np.ix_(q, rows)]),
                            "neg": torch.from_numpy(neg[np.ix_(q, rows)])})
        order = rng.permutation(len(out))
        for i in order:
            yield out[i]

    def loss(self, net: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        d = net(batch["images"])  # (2B, K*D)
        nq = batch["pos"].shape[0]
        d2 = torch.cdist(d[:nq], d).pow(2)  # (B, 2B) squared distances query -> batch image
        inf = torch.finfo(d2.dtype).max
        best_pos = torch.where(batch["pos"], d2, torch.full_like(d2, inf)).min(1).values
        k = min(int(self.conf["hard_negatives"]), d2.shape[1])
        neg_d2 = torch.where(batch["neg"], d2, torch.full_like(d2, inf))
        hard = torch.topk(neg_d2, k, dim=1, largest=False).values
        valid = hard < inf
        hinge = F.relu(best_pos[:, None] + float(self.conf["margin"]) - hard) * valid
        loss = hinge.sum(1).mean()
        active = float((hinge > 0).float().sum() / valid.sum().clamp(min=1))
        return loss, {"active": active}

    @staticmethod
    def batch_samples(batch: dict[str, Any]) -> int:
        return int(batch["images"].shape[0])

    # ------------------------------------------------------------ evaluation
    def evaluate(self, clips: list[Clip], fit_clips: list[Clip] | None = None, seed: int = 0) -> dict[str, Any]:
        """Recall@1/5 of this model, of random retrieval, of the same network untrained (centres by k-means on
        ``fit_clips``) and of ORB-VLAD (vocabulary fitted on ``fit_clips``); on ``clips`` when no fit clips."""
        th = self.thresholds
        fit = fit_clips or clips
        mine = recall_at_k([self.descriptors(c.images) for c in clips], clips, th)
        torch_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        untrained = type(self)(self.conf, self.device)
        torch.random.set_rng_state(torch_state)
        untrained.prepare(fit, seed)
        base = recall_at_k([untrained.descriptors(c.images) for c in clips], clips, th)
        orb = OrbVlad(seed=seed).fit(fit)
        orbr = recall_at_k([orb.describe(c.images) for c in clips], clips, th)
        pick = ("recall@1", "recall@5")
        return {
            "queries": mine["queries"], "frames": sum(len(c) for c in clips), "worlds": len(group_worlds(clips)),
            "thresholds": vars(th), "baselines_fitted_on": "training clips" if fit_clips else "evaluation clips",
            "netvlad": {k: mine[k] for k in pick},
            "random": {k: mine[f"random_{k}"] for k in pick},
            "untrained_netvlad": {k: base[k] for k in pick},
            "orb_vlad": {k: orbr[k] for k in pick},
        }
