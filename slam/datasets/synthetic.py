"""Reader of the project's synthetic layout (``slam-synth`` v1, see ``docs/synthetic_layout.md``).

A TUM-like folder marked by ``synth.json``: ``rgb.txt``/``depth.txt`` lists and
``groundtruth.txt`` are read by the TUM reader (this class extends it), plus

* ``camera.yaml`` (required; the exact camera of the render),
* ``right.txt`` + ``right/`` when ``stereo_baseline_m`` is set: a rectified pair,
  the right camera at ``+baseline`` along the left camera's x axis,
* ``imu.csv`` (EuRoC imu0 columns, ns) with ``T_b_c`` from ``synth.json``.

Modes follow what is present: rgbd with depth, stereo with right images,
-inertial with an IMU.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from slam.datasets import register
from slam.datasets.base import GT_MAX_GAP_S, attach_right, camera_override
from slam.datasets.euroc import read_imu_csv
from slam.datasets.images import TUM_DEPTH_SCALE
from slam.datasets.tum import ASSOCIATION_MAX_DT_S, TumSequence
from slam.errors import DataError
from slam.geometry.camera import PinholeCamera
from slam.records import Frame, StereoRig

log = logging.getLogger(__name__)

SYNTH_FORMAT, SYNTH_VERSION = "slam-synth", 1


def read_synth_json(path: Path) -> dict:
    """The ``synth.json`` metadata, checked for the format marker."""
    try:
        meta = json.loads(path.read_text())
    except OSError as e:
        raise DataError(path, f"cannot read: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON: {e.msg}", line=e.lineno) from None
    found = meta.get("format") if isinstance(meta, dict) else None
    if found != SYNTH_FORMAT:
        raise DataError(path, f"not a {SYNTH_FORMAT!r} metadata file (format: {found!r})")
    if meta.get("version") != SYNTH_VERSION:
        log.warning("%s: version %r, this reader knows version %d", path, meta.get("version"), SYNTH_VERSION)
    return meta


@register("synthetic")
class SyntheticSequence(TumSequence):
    """A rendered synthetic sequence with exact ground truth; any of rgbd / stereo / inertial modes."""

    layout = "synth.json (project synthetic layout)"

    def __init__(self, path: str | Path, max_dt: float = ASSOCIATION_MAX_DT_S, gt_max_gap: float = GT_MAX_GAP_S):
        root = Path(path)
        self.meta = read_synth_json(root / "synth.json")
        scale = self._meta_float("depth_scale", TUM_DEPTH_SCALE)
        super().__init__(root, max_dt=max_dt, gt_max_gap=gt_max_gap, depth_scale=scale)
        self.name = str(self.meta.get("name") or root.name)
        self._right = None
        baseline = self.meta.get("stereo_baseline_m")
        if baseline is not None and (root / "right.txt").is_file():
            self._right = self._associate_list(root / "right.txt", max_dt, must_exist=True)
            T_l_r = np.eye(4)
            T_l_r[0, 3] = self._meta_float("stereo_baseline_m", 0.0)
            self.stereo = StereoRig(right=self.camera, T_l_r=T_l_r)
        if (root / "imu.csv").is_file():
            self.imu = read_imu_csv(root / "imu.csv")
            self.T_b_c = self._meta_pose("T_b_c")

    @classmethod
    def detect(cls, path: Path) -> bool:
        return path.is_dir() and (path / "synth.json").is_file()

    # ------------------------------------------------------------------ setup
    def _load_camera(self) -> PinholeCamera:
        cam = camera_override(self.root)
        if cam is None:
            raise DataError(self.root / "camera.yaml", "file is missing (a synthetic sequence must carry its camera)")
        return cam

    def _meta_float(self, key: str, default: float) -> float:
        v = self.meta.get(key)
        try:
            v = default if v is None else float(v)
        except (TypeError, ValueError):
            raise DataError(self.root / "synth.json", f"{key} must be a number, found {v!r}") from None
        if not np.isfinite(v):
            raise DataError(self.root / "synth.json", f"{key} must be finite, found {v!r}")
        return v

    def _meta_pose(self, key: str) -> np.ndarray:
        try:
            T = np.asarray(self.meta[key], dtype=np.float64).reshape(4, 4)
        except KeyError:
            raise DataError(self.root / "synth.json", f"{key} is missing (needed with imu.csv)") from None
        except (TypeError, ValueError):
            raise DataError(self.root / "synth.json", f"{key} must be a 4x4 matrix") from None
        R = T[:3, :3]
        if not np.all(np.isfinite(T)) or np.abs(R @ R.T - np.eye(3)).max() > 1e-6:
            raise DataError(self.root / "synth.json", f"{key} is not a rigid transform")
        return T

    # ----------------------------------------------------------------- frames
    def _read_frame(self, i: int) -> Frame:
        frame = super()._read_frame(i)
        attach_right(self, frame, self._right, i)
        return frame
