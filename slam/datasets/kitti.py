"""KITTI odometry reader (Geiger et al., CVPR 2012).

Layout::

    <root>/sequences/NN/image_0/%06d.png   left grayscale camera (rectified)
    <root>/sequences/NN/image_1/%06d.png   right grayscale camera (optional -> stereo)
    <root>/sequences/NN/calib.txt          "P0: 12 numbers" ... projection matrices of the rectified cameras
                                           (optional for 00-12: KITTI's published values, calib/cameras/kitti_*.yaml)
    <root>/sequences/NN/times.txt          one time in seconds per frame
    <root>/poses/NN.txt                    ground truth (optional): camera-0 pose in the frame-0 camera, 12 numbers

``path`` is the sequence folder, or ``<root>`` when it holds exactly one
sequence (or name one with ``sequence="07"``). Camera: fx, fy, cx, cy of P0,
no distortion; stereo baseline ``-P1[0,3] / P1[0,0]`` metres (right camera at
+baseline along the left camera's x axis).

The sequence's own ``calib.txt`` always wins (intrinsics differ between the
recording days); it is checked against the published values of its group
(``kitti_00-02.yaml``, ``kitti_03.yaml``, ``kitti_04-12.yaml``) and a mismatch is
logged. A sequence folder 00-12 without ``calib.txt`` uses its group's file.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from slam.datasets import register
from slam.datasets.base import (
    Sequence,
    attach_right,
    camera_override,
    packaged_camera_file,
    read_image,
)
from slam.datasets.images import image_size
from slam.datasets.textfiles import column_floats, read_rows
from slam.errors import CorruptFrameError, DataError
from slam.geometry.camera import PinholeCamera
from slam.records import Frame, StereoRig
from slam.trajectory import read_kitti

log = logging.getLogger(__name__)


def is_kitti_sequence(path: Path) -> bool:
    return (path / "image_0").is_dir() and (path / "times.txt").is_file()


def published_camera_file(sequence: str) -> str | None:
    """The shipped camera file of KITTI odometry sequence ``sequence`` ("00".."12"), or None."""
    if not re.fullmatch(r"\d\d", sequence) or int(sequence) > 12:
        return None
    n = int(sequence)
    return "kitti_00-02.yaml" if n <= 2 else "kitti_03.yaml" if n == 3 else "kitti_04-12.yaml"


def common_image_size(paths: list[Path], samples: int = 5) -> tuple[int, int]:
    """(width, height) most of ``samples`` images spread over ``paths`` have (one odd-sized image, even the
    first, does not set the camera's size; it is skipped when read). Unreadable samples are passed over;
    :class:`CorruptFrameError` when none can be read."""
    picks = sorted({round(k * (len(paths) - 1) / max(samples - 1, 1)) for k in range(samples)})
    sizes, error = [], None
    for k in picks:
        try:
            sizes.append(image_size(paths[k]))
        except CorruptFrameError as e:
            error = e
    if not sizes:
        raise error
    return max(sizes, key=lambda s: (sizes.count(s), -sizes.index(s)))


def _intrinsics(P: np.ndarray) -> tuple[float, float, float, float]:
    """fx, fy, cx, cy of a rectified 3x4 projection matrix."""
    return float(P[0, 0]), float(P[1, 1]), float(P[0, 2]), float(P[1, 2])


def read_calib(path: Path) -> dict[str, np.ndarray]:
    """``calib.txt``: ``{"P0": 3x4, "P1": 3x4, ...}`` (any ``KEY: 12 numbers`` lines)."""
    return read_calib_lines(path)[0]


def read_calib_lines(path: Path) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """:func:`read_calib` and the line of each key (for error messages)."""
    rows, lines = read_rows(path, 13)
    out: dict[str, np.ndarray] = {}
    where: dict[str, int] = {}
    for r, n in zip(rows, lines):
        if not r[0].endswith(":"):
            raise DataError(path, f"expected 'KEY: 12 numbers', found {' '.join(r)[:60]!r}", line=n)
        out[r[0][:-1]] = column_floats(path, [r], [n], slice(1, 13)).reshape(3, 4)
        where[r[0][:-1]] = n
    if "P0" not in out:
        raise DataError(path, "no P0 (left camera projection matrix)")
    return out, where


def calib_camera(path: Path, lines: dict[str, int], key: str, P: np.ndarray, width: int, height: int) -> PinholeCamera:
    """The camera of projection matrix ``key`` of calib.txt; one :class:`PinholeCamera` refuses (fx or fy not
    positive, ...) is a :class:`DataError` at the key's line, as in camera files."""
    try:
        return PinholeCamera(width, height, *_intrinsics(P))
    except ValueError as e:
        raise DataError(path, f"{key}: {e}", line=lines.get(key)) from None


def _cross_check(cam: PinholeCamera, published: PinholeCamera, calib_path: Path) -> None:
    """Log when calib.txt's P0 differs from the published values of the sequence's group (calib.txt is used)."""
    a = np.array([cam.fx, cam.fy, cam.cx, cam.cy])
    b = np.array([published.fx, published.fy, published.cx, published.cy])
    if np.max(np.abs(a - b) / b) <= 1e-3:
        return
    # at KITTI's image size this is probably a wrong calib.txt; at another size, not KITTI's camera at all
    level = logging.WARNING if (cam.width, cam.height) == (published.width, published.height) else logging.INFO
    log.log(level, "%s: P0 intrinsics %s differ from KITTI's published ones for this sequence %s; using calib.txt",
            calib_path, a.tolist(), b.tolist())


@register("kitti")
class KittiSequence(Sequence):
    """A KITTI odometry sequence: grayscale images delivered as RGB, optional stereo, ground truth by frame index."""

    layout = "image_0/ + times.txt (+ calib.txt), or sequences/NN/ (KITTI odometry)"

    def __init__(self, path: str | Path, sequence: str | None = None):
        self.seq_dir = self._find_sequence(Path(path), sequence)
        self.root = Path(path)
        self.name = self.seq_dir.name if self.root == self.seq_dir else f"{self.root.name}_{self.seq_dir.name}"
        times = self.seq_dir / "times.txt"
        rows, lines = read_rows(times, 1)
        self._check_timestamps(times, column_floats(times, rows, lines, 0), lines)
        self._left = self._image_paths("image_0", times, lines)
        calib_path = self.seq_dir / "calib.txt"
        calib, self._calib_lines = read_calib_lines(calib_path) if calib_path.is_file() else (None, {})
        self.camera = camera_override(self.seq_dir, self.root) or self._own_camera(calib, calib_path)
        self._right = None
        if (self.seq_dir / "image_1").is_dir():
            self._setup_stereo(calib, times, lines)
        self._setup_groundtruth()

    @classmethod
    def detect(cls, path: Path) -> bool:
        seqs = path / "sequences"
        return is_kitti_sequence(path) or (seqs.is_dir() and any(is_kitti_sequence(p) for p in seqs.iterdir()))

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _find_sequence(path: Path, sequence: str | None) -> Path:
        if sequence is None and is_kitti_sequence(path):
            return path
        seqs = path / "sequences"
        found = sorted(p.name for p in seqs.iterdir() if is_kitti_sequence(p)) if seqs.is_dir() else []
        listed = ", ".join(found) or "none"
        if sequence is not None:
            if str(sequence) not in found:
                raise DataError(path, f"no sequence {sequence!r} under sequences/ (found: {listed})")
            return seqs / str(sequence)
        if len(found) != 1:
            raise DataError(path, f"holds {len(found)} sequences ({listed}); pick one with sequence=")
        return seqs / found[0]

    def _image_paths(self, folder: str, times: Path, lines: list[int]) -> list[Path]:
        paths = [self.seq_dir / folder / f"{i:06d}.png" for i in range(len(self))]
        for p, n in zip(paths, lines):
            if not p.is_file():
                raise DataError(times, f"no image {p} for the frame of this line", line=n)
        return paths

    def _own_camera(self, calib: dict[str, np.ndarray] | None, calib_path: Path) -> PinholeCamera:
        """The camera of calib.txt's P0 (cross-checked), else the published one of this sequence number."""
        published = self._published()
        w, h = common_image_size(self._left)
        if calib is not None:
            cam = calib_camera(calib_path, self._calib_lines, "P0", calib["P0"], w, h)
            if published is not None:
                _cross_check(cam, published[0], calib_path)
            return cam
        if published is None:
            raise DataError(calib_path, f"missing, and {self.seq_dir.name!r} is not a KITTI odometry sequence 00-12 "
                                        "with a published camera: add calib.txt (or camera.yaml)")
        return self._published_camera(published, w, h)

    def _published(self) -> tuple[PinholeCamera, float, str] | None:
        """(camera, stereo baseline in metres, file name) published for this sequence number, or None."""
        name = published_camera_file(self.seq_dir.name)
        if name is None:
            return None
        d = packaged_camera_file(name)
        return PinholeCamera.from_dict(d, f"calib/cameras/{name}"), float(d["stereo_baseline_m"]), name

    def _published_camera(self, published: tuple[PinholeCamera, float, str], w: int, h: int) -> PinholeCamera:
        cam, _, name = published
        log.warning("%s: no calib.txt; using KITTI's published camera calib/cameras/%s", self.seq_dir, name)
        if (w, h) != (cam.width, cam.height):
            log.warning("%s: images are %dx%d but %s describes %dx%d images", self.seq_dir, w, h, name,
                        cam.width, cam.height)
        return PinholeCamera(w, h, cam.fx, cam.fy, cam.cx, cam.cy)

    def _setup_stereo(self, calib: dict[str, np.ndarray] | None, times: Path, lines: list[int]) -> None:
        if calib is None:  # no calib.txt: the published baseline (rectified pair, same intrinsics)
            published = self._published()
            if published is None:
                raise DataError(self.seq_dir / "calib.txt", "image_1/ exists but there is no calib.txt (P1) "
                                                            "to give the stereo baseline")
            baseline = published[1]
            right = self.camera
        else:
            P1 = calib.get("P1")
            if P1 is None:
                raise DataError(self.seq_dir / "calib.txt", "image_1/ exists but there is no P1")
            right = calib_camera(self.seq_dir / "calib.txt", self._calib_lines, "P1", P1, self.camera.width,
                                 self.camera.height)
            baseline = float(-P1[0, 3] / P1[0, 0])
        T_l_r = np.eye(4)
        T_l_r[0, 3] = baseline
        self.stereo = StereoRig(right=right, T_l_r=T_l_r)
        self._right = self._image_paths("image_1", times, lines)

    def _setup_groundtruth(self) -> None:
        seqs = self.seq_dir.parent
        poses = seqs.parent / "poses" / f"{self.seq_dir.name}.txt"
        if seqs.name != "sequences" or not poses.is_file():
            return
        traj = read_kitti(poses)  # one row per frame, by index
        if len(traj) != len(self):
            log.warning("%s: %d ground-truth poses for %d frames; matched by index", poses, len(traj), len(self))
        gt = np.full((len(self), 4, 4), np.nan)
        k = min(len(traj), len(self))
        gt[:k] = traj.poses[:k]
        self._gt_poses = gt

    # ----------------------------------------------------------------- frames
    def _read_frame(self, i: int) -> Frame:
        frame = Frame(index=i, timestamp=float(self.timestamps[i]), image=read_image(self._left[i], self.camera),
                      camera=self.camera, source=str(self._left[i]))
        attach_right(self, frame, self._right, i)
        return frame
