"""Trajectories: timestamps + 4x4 poses, TUM and KITTI file formats, interpolation.

TUM format: ``timestamp tx ty tz qx qy qz qw`` per line, ``#`` comments.
KITTI format: 12 numbers per line, the row-major 3x4 ``[R | t]``; no timestamps
(they come from ``times.txt`` or the line index).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slam.errors import DataError
from slam.textio import check_increasing, column_floats, read_rows, read_text  # noqa: F401 (check_increasing re-exported)
from slam.geometry.se3 import inv_pose, make_pose
from slam.geometry.so3 import quat_to_rot, rot_to_quat, so3_exp, so3_log


@dataclass
class Trajectory:
    """``poses[i]`` is ``T_w_c`` (camera or body to world) at ``timestamps[i]`` seconds."""

    timestamps: np.ndarray  # (N,) float64
    poses: np.ndarray  # (N, 4, 4) float64

    def __post_init__(self) -> None:
        self.timestamps = np.asarray(self.timestamps, dtype=np.float64).reshape(-1)
        self.poses = np.asarray(self.poses, dtype=np.float64).reshape(-1, 4, 4)
        if self.timestamps.shape[0] != self.poses.shape[0]:
            raise ValueError(f"{self.timestamps.shape[0]} timestamps for {self.poses.shape[0]} poses")

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    @property
    def positions(self) -> np.ndarray:
        return self.poses[:, :3, 3]

    def subset(self, idx: np.ndarray | slice) -> "Trajectory":
        return Trajectory(self.timestamps[idx], self.poses[idx])

    def path_length(self) -> float:
        """Length in metres of the polyline through the positions."""
        if len(self) < 2:
            return 0.0
        return float(np.sum(np.linalg.norm(np.diff(self.positions, axis=0), axis=1)))

    def transformed(self, T_left: np.ndarray | None = None, T_right: np.ndarray | None = None) -> "Trajectory":
        """``T_left @ pose @ T_right`` for every pose (e.g. world change, body-to-camera)."""
        poses = self.poses
        if T_left is not None:
            poses = np.asarray(T_left) @ poses
        if T_right is not None:
            poses = poses @ np.asarray(T_right)
        return Trajectory(self.timestamps.copy(), poses)

    def relative_to_first(self) -> "Trajectory":
        """The trajectory expressed in the frame of its first pose (first pose = identity)."""
        return self.transformed(T_left=inv_pose(self.poses[0]))


# ---------------------------------------------------------------------- TUM
def parse_tum_rows(path: str | Path, ncols: int = 8) -> tuple[np.ndarray, list[int]]:
    """Numeric rows of a whitespace/comma-separated text file; '#' comments and blank lines skipped.

    Returns the (N, ncols) array and the 1-based line number of each row, and
    raises :class:`DataError` naming the line of any malformed or non-finite row.
    """
    rows, lines = read_rows(path, ncols)
    if not rows:
        return np.zeros((0, ncols)), lines
    return column_floats(path, rows, lines, slice(0, ncols)), lines


def read_tum(path: str | Path, allow_empty: bool = False) -> Trajectory:
    """Read a TUM trajectory; errors name the file and line (malformed row, NaN, bad quaternion, order)."""
    data, lines = parse_tum_rows(path, 8)
    if data.shape[0] == 0 and not allow_empty:
        raise DataError(path, "trajectory file holds no poses")
    norms = np.linalg.norm(data[:, 4:8], axis=1)
    bad = np.nonzero(np.abs(norms - 1.0) > 1e-2)[0]
    if bad.size:
        i = int(bad[0])
        raise DataError(path, f"quaternion norm {norms[i]:.4f} is not 1", line=lines[i])
    check_increasing(path, data[:, 0], lines)
    poses = np.tile(np.eye(4), (data.shape[0], 1, 1))
    poses[:, :3, :3] = quat_to_rot(data[:, 4:8])
    poses[:, :3, 3] = data[:, 1:4]
    return Trajectory(data[:, 0], poses)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def format_tum(traj: Trajectory) -> str:
    lines = ["# timestamp tx ty tz qx qy qz qw"]
    for t, T in zip(traj.timestamps, traj.poses):
        q = rot_to_quat(T[:3, :3])
        p = T[:3, 3]
        lines.append(
            f"{t:.6f} {p[0]:.9f} {p[1]:.9f} {p[2]:.9f} {q[0]:.9f} {q[1]:.9f} {q[2]:.9f} {q[3]:.9f}"
        )
    return "\n".join(lines) + "\n"


def write_tum(path: str | Path, traj: Trajectory) -> None:
    atomic_write_text(path, format_tum(traj))


# -------------------------------------------------------------------- KITTI
def read_kitti(path: str | Path, timestamps: np.ndarray | None = None) -> Trajectory:
    """Read a KITTI pose file; ``timestamps`` (e.g. from times.txt) default to the line index."""
    data, lines = parse_tum_rows(path, 12)
    if data.shape[0] == 0:
        raise DataError(path, "pose file holds no poses")
    poses = np.tile(np.eye(4), (data.shape[0], 1, 1))
    poses[:, :3, :4] = data.reshape(-1, 3, 4)
    det = np.linalg.det(poses[:, :3, :3])
    bad = np.nonzero(np.abs(det - 1.0) > 1e-2)[0]
    if bad.size:
        i = int(bad[0])
        raise DataError(path, f"rotation block has determinant {det[i]:.4f}, not 1", line=lines[i])
    if timestamps is None:
        timestamps = np.arange(data.shape[0], dtype=np.float64)
    elif len(timestamps) != data.shape[0]:
        raise DataError(path, f"{data.shape[0]} poses but {len(timestamps)} timestamps")
    return Trajectory(np.asarray(timestamps, dtype=np.float64), poses)


def format_kitti(traj: Trajectory) -> str:
    """KITTI pose file text: one line per pose, the 3x4 ``T_w_c`` row-major (no timestamps)."""
    return "".join(" ".join(f"{v:.9e}" for v in T[:3, :4].reshape(-1)) + "\n" for T in traj.poses)


def write_kitti(path: str | Path, traj: Trajectory) -> None:
    atomic_write_text(path, format_kitti(traj))


# ------------------------------------------------------------- interpolation
def interpolate_poses(traj: Trajectory, query_t: np.ndarray, max_gap: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Poses at ``query_t``: linear in position, geodesic (slerp) in rotation.

    Returns (M, 4, 4) poses and a mask of queries that lie inside the
    trajectory with bracketing samples at most ``max_gap`` seconds apart
    (poses outside the mask are NaN).
    """
    q = np.asarray(query_t, dtype=np.float64).reshape(-1)
    ts = traj.timestamps
    out = np.full((q.shape[0], 4, 4), np.nan)
    ok = np.zeros(q.shape[0], dtype=bool)
    if len(traj) == 0:
        return out, ok
    j = np.searchsorted(ts, q, side="right")  # ts[j-1] <= q < ts[j]
    for k, (tq, jj) in enumerate(zip(q, j)):
        if jj > 0 and ts[jj - 1] == tq:
            out[k], ok[k] = traj.poses[jj - 1], True
            continue
        if jj == 0 or jj == len(ts):
            continue
        t0, t1 = ts[jj - 1], ts[jj]
        if t1 - t0 > max_gap:
            continue
        a = (tq - t0) / (t1 - t0)
        T0, T1 = traj.poses[jj - 1], traj.poses[jj]
        R = T0[:3, :3] @ so3_exp(a * so3_log(T0[:3, :3].T @ T1[:3, :3]))
        out[k] = make_pose(R, (1 - a) * T0[:3, 3] + a * T1[:3, 3])
        ok[k] = True
    return out, ok


# ------------------------------------------------------------ file formats
FORMATS = ("tum", "kitti")
FORMAT_COLUMNS = {8: "tum", 12: "kitti"}


def detect_format(path: str | Path) -> str:
    """``"tum"`` or ``"kitti"`` from the column count of the first data line (8 = TUM, 12 = KITTI), as evo does.

    Raises :class:`DataError` naming the line when it has another count or the file holds no data line.
    """
    text = read_text(path)
    for n, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        cols = len(s.replace(",", " ").split())
        if cols not in FORMAT_COLUMNS:
            raise DataError(path, f"{cols} columns: neither TUM (8: timestamp tx ty tz qx qy qz qw) nor KITTI "
                                  "(12: row-major 3x4 [R|t])", line=n)
        return FORMAT_COLUMNS[cols]
    raise DataError(path, "trajectory file holds no poses")


def find_kitti_times(pose_path: str | Path) -> Path | None:
    """The ``times.txt`` that belongs to a KITTI pose file, when the folder layout says where it is.

    Looks beside the file, then in the odometry layout ``<root>/poses/NN.txt`` ->
    ``<root>/sequences/NN/times.txt``. None when neither exists.
    """
    p = Path(pose_path)
    for cand in (p.parent / "times.txt", p.parent.parent / "sequences" / p.stem / "times.txt"):
        if cand.is_file():
            return cand
    return None


def per_frame_poses(traj: Trajectory, frame_stamps: np.ndarray) -> Trajectory:
    """One pose per frame stamp (s, sorted; NaN for a frame whose stamp is unknown), for formats that need
    every image (the KITTI devkit refuses a result file with fewer lines than ground-truth poses).

    A frame with a pose in ``traj`` (same stamp) gets it; a frame without one (lost,
    skipped) keeps the previous frame's pose (no motion), and frames before the first
    pose get the first pose: the devkit then counts their missing motion as error
    instead of failing on a short file. ``traj`` must not be empty.
    """
    stamps = np.asarray(frame_stamps, dtype=np.float64).reshape(-1)
    if len(traj) == 0:
        raise ValueError("per_frame_poses: the trajectory is empty")
    known = np.nan_to_num(np.fmax.accumulate(stamps), nan=-np.inf) if stamps.size else stamps
    j = np.clip(np.searchsorted(traj.timestamps, known, side="right") - 1, 0, len(traj) - 1)
    return Trajectory(stamps, traj.poses[j])
