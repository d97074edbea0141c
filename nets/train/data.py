"""Training and evaluation data for every learned model: posed clips from any sequence the readers open.

A :class:`Clip` is one traversal held in memory at the model's input size:
images (uint8 RGB, resized), ground-truth poses ``T_w_c`` and, when asked,
depth (float32 metres, 0 = invalid, resized with nearest neighbour). Clips
that share a ``world`` have poses in one world frame (two traversals of the
same synthetic room), so a model may compare their poses; clips of different
worlds are never compared.

Synthetic clips come from :func:`synth_clips`: for each seed, two traversals
of the same textured room along different loops (radius, height, heading),
rendered once with :func:`slam.synth.generate` into a cache folder and read
back with the ordinary reader. With ``variety`` (the default) each seed is a
different room (size, shape, furniture, texture families; a repeated-texture
distractor in odd seeds) and the two traversals see it under different
lighting (exposure gain, per-frame exposure jitter, a directional light from
another direction), so a place descriptor must be invariant to lighting.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from slam.datasets import open_sequence
from slam.errors import DataError

log = logging.getLogger(__name__)

# Synthetic scenes for training: the "tiny" preset (40 frames, one 4 s loop at 10 Hz) rendered at 160x120,
# without depth, stereo or IMU unless a model asks. Traversal "b" runs a smaller, lower loop turned inwards,
# so its views of a place differ from traversal "a"'s in position (up to ~0.5 m) and heading.
SYNTH_RENDER = {"width": 160, "height": 120, "fx": 131.25, "fy": 131.25, "cx": 79.5, "cy": 59.5,
                "stereo": False, "imu": False, "min_clearance_m": 0.5}
SYNTH_CACHE_VERSION = 2  # 2: scene variety (room layouts, texture families, lighting) exists
SYNTH_TRAVERSALS = {
    "a": {},
    "b": {"radius_x": 1.0, "radius_y": 0.65, "height_m": 1.2, "yaw_offset": 0.35, "pitch_mean": 0.2},
}
# Scene variety of the training rooms: objects stay clear of traversal a's loop (the "tiny" preset's 1.3 x 0.9 m
# ellipse), so traversal b (inside it) is clear too.
SYNTH_VARIETY = {"room_variety": True, "texture_variety": True, "layout_keepout": [1.3, 0.9]}


def traversal_lighting(seed: int, traversal: str) -> dict:
    """Lighting of traversal ``traversal`` of room ``seed`` (seeded): an exposure gain (a and b differ by a
    factor 1.35 to 2, either way), per-frame exposure jitter of +-10 %, and a directional light of strength
    0.2-0.5 from a random direction (a and b at least 90 deg apart in azimuth)."""
    rng = np.random.default_rng([int(seed), 13])
    gain_a = float(np.exp(rng.uniform(-0.3, 0.3)))
    ratio = float(np.exp(rng.uniform(0.3, 0.7) * rng.choice([-1.0, 1.0])))
    az_a = float(rng.uniform(0.0, 360.0))
    az_b = az_a + float(rng.uniform(90.0, 270.0))
    el = rng.uniform(15.0, 60.0, 2)
    strength = rng.uniform(0.2, 0.5, 2)
    i = 0 if traversal == "a" else 1
    return {"exposure_gain": gain_a if i == 0 else gain_a * ratio, "exposure_jitter": 0.1,
            "light_dir_strength": float(strength[i]), "light_dir_deg": [(az_a, az_b)[i] % 360.0, float(el[i])]}


@dataclass
class Clip:
    """One traversal in memory. ``images``: (N, H, W, 3) uint8 RGB at the model's input size;
    ``T_w_c``: (N, 4, 4) float64 camera-to-world ground truth (NaN rows where there is none);
    ``depth``: (N, H, W) float32 metres (0 = invalid) or None; ``world``: clips with the same world share
    a world frame; ``frame_index``: the frame numbers in the source sequence."""

    name: str
    world: str
    images: np.ndarray
    T_w_c: np.ndarray
    frame_index: np.ndarray
    depth: np.ndarray | None = None
    source: str = ""

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def has_poses(self) -> np.ndarray:
        """(N,) bool: frames with a ground-truth pose."""
        return np.isfinite(self.T_w_c).all(axis=(1, 2))


def resize_image(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """``image`` (H, W, 3) uint8 resized to ``size_wh`` = (width, height) (area filter when shrinking)."""
    if (image.shape[1], image.shape[0]) == tuple(size_wh):
        return image
    shrink = image.shape[1] > size_wh[0]
    return cv2.resize(image, tuple(size_wh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def load_clip(path: str | Path, size_wh: tuple[int, int], world: str | None = None, with_depth: bool = False,
              stride: int = 1, max_frames: int | None = None) -> Clip:
    """Read the sequence at ``path`` (any layout :func:`slam.datasets.open_sequence` knows) into a :class:`Clip`.

    Images are resized to ``size_wh`` (width, height) without keeping the aspect ratio; every ``stride``-th
    frame is kept, at most ``max_frames``. Raises :class:`~slam.errors.DataError` for an unreadable sequence.
    """
    seq = open_sequence(path)
    seq.use_streams("rgbd" if with_depth and seq.has_depth else "mono")
    idx = np.arange(0, len(seq), max(1, int(stride)))
    if max_frames is not None:
        idx = idx[: int(max_frames)]
    images, poses, depths = [], [], []
    try:
        for i in idx:
            f = seq[int(i)]
            images.append(resize_image(f.image, size_wh))
            poses.append(np.full((4, 4), np.nan) if f.T_w_c_gt is None else np.asarray(f.T_w_c_gt, np.float64))
            if with_depth:
                d = np.zeros(f.image.shape[:2], np.float32) if f.depth is None else f.depth
                depths.append(cv2.resize(d, tuple(size_wh), interpolation=cv2.INTER_NEAREST))
    finally:
        seq.close()
    if not images:
        raise DataError(path, "sequence has no frames")
    clip = Clip(name=seq.name, world=world or str(Path(path).resolve()), images=np.stack(images),
                T_w_c=np.stack(poses), frame_index=idx.astype(np.int64),
                depth=np.stack(depths) if with_depth else None, source=str(path))
    n_gt = int(clip.has_poses.sum())
    log.info("%s: %d frames at %dx%d, %d with ground-truth poses", clip.name, len(clip), *size_wh, n_gt)
    return clip


def parse_seeds(text: str) -> list[int]:
    """``"0-7"`` -> 0..7, ``"1,3,5-6"`` -> [1, 3, 5, 6]; a clear ValueError otherwise."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = part.split("-", 1)
                seeds.extend(range(int(lo), int(hi) + 1))
            elif part:
                seeds.append(int(part))
        except ValueError:
            raise ValueError(f"bad seed list {text!r}: use e.g. 0-7 or 1,3,5") from None
    if not seeds:
        raise ValueError(f"bad seed list {text!r}: no seeds")
    return seeds


def synth_config(seed: int, traversal: str, with_depth: bool = False, variety: bool = True):
    """The :class:`~slam.synth.SynthConfig` of synthetic traversal ``traversal`` ("a" or "b") of room ``seed``;
    ``variety``: the room of the seed under the traversal's lighting (see :func:`traversal_lighting`), else
    the fixed room under fixed lights."""
    from slam.synth import SynthConfig, preset

    base = preset("tiny")
    over = {**SYNTH_RENDER, **SYNTH_TRAVERSALS[traversal], "depth": bool(with_depth), "seed": int(seed),
            "name": f"tiny-s{seed}-{traversal}"}
    if variety:
        over.update(SYNTH_VARIETY, distractor=bool(seed % 2), **traversal_lighting(seed, traversal),
                    name=f"varied-s{seed}-{traversal}")
    return SynthConfig.from_dict(over, base=base)


def render_synth(seed: int, cache_dir: str | Path, with_depth: bool = False, variety: bool = True) -> list[Path]:
    """Folders of the traversals of room ``seed`` under ``cache_dir``, rendered on first use.

    The folder name carries a hash of the config and of :data:`SYNTH_CACHE_VERSION` (raised when the generator
    renders the same config differently), so a changed setting or renderer renders anew; a folder is complete
    when its ``.done`` marker exists (an interrupted render is redone).
    """
    from slam.synth import SynthSequence, generate

    cache_dir = Path(cache_dir)
    out, scene = [], None
    for trav in SYNTH_TRAVERSALS:
        cfg = synth_config(seed, trav, with_depth, variety)
        key = hashlib.sha1(json.dumps({"config": cfg.to_dict(), "version": SYNTH_CACHE_VERSION},
                                      sort_keys=True).encode()).hexdigest()[:8]
        folder = cache_dir / f"{cfg.name}-{key}"
        if not (folder / ".done").is_file():
            seq = SynthSequence(cfg, scene=scene)  # traversals of one room share its textures
            generate(cfg, folder, layout="native", progress=False, sequence=seq)
            scene = seq.scene
            (folder / ".done").write_text(json.dumps(dataclasses.asdict(cfg), default=list) + "\n")
        out.append(folder)
    return out


def synth_clips(seeds: list[int], cache_dir: str | Path, size_wh: tuple[int, int],
                with_depth: bool = False, variety: bool = True) -> list[Clip]:
    """Two clips (traversals a and b, one world) per synthetic room ``seed``, rendered into ``cache_dir`` once;
    ``variety``: varied rooms and lighting (see :func:`synth_config`)."""
    clips = []
    for seed in seeds:
        for folder in render_synth(seed, cache_dir, with_depth, variety):
            clips.append(load_clip(folder, size_wh, world=f"synth-{seed}", with_depth=with_depth))
    return clips


def default_cache_dir() -> Path:
    """``$SLAM_CACHE`` or ``~/.cache/slam``, sub-folder ``synth``."""
    import os

    root = os.environ.get("SLAM_CACHE") or Path.home() / ".cache" / "slam"
    return Path(root) / "synth"
