"""EuRoC MAV / ASL-format reader (Burri et al., IJRR 2016).

Layout (``path`` is the folder holding ``mav0/``, or ``mav0`` itself)::

    mav0/cam0/data.csv + data/<ns>.png + sensor.yaml   left camera (grayscale, distorted; without sensor.yaml:
                                                       EuRoC's published calib/cameras/euroc_cam0.yaml)
    mav0/cam1/...                                      right camera (optional -> stereo)
    mav0/imu0/data.csv + sensor.yaml                   200 Hz IMU: ns, gyro xyz [rad/s], accel xyz [m/s^2]
    mav0/state_groundtruth_estimate0/data.csv          body poses (optional)
    groundtruth/*.csv|*.txt                            alternative ground-truth files (optional)

Frames: IMU (= body for EuRoC) is the reference: ``T_b_c`` is the camera pose in
the IMU frame (``inv(T_BS_imu) @ T_BS_cam0``); ``stereo.T_l_r = inv(T_BS_cam0) @ T_BS_cam1``.
Nanosecond timestamps become float seconds.

Ground truth (body/IMU pose in world; the camera pose is ``T_w_b @ T_BS_cam0``),
first match wins:

1. the ``groundtruth=`` option (a file);
2. ``mav0/state_groundtruth_estimate0/data.csv`` (EuRoC's own file);
3. the ``*.csv``/``*.txt`` files in ``groundtruth/`` next to ``mav0`` (a
   comma-separated file is EuRoC csv ``ns, px py pz, qw qx qy qz, ...``,
   otherwise TUM ``s tx ty tz qx qy qz qw``): **the one whose time span (first
   to last line) covers the most frames is used**, a tie going to the EuRoC
   csv, then to the first name. On
   the shared V1_01_easy sample this picks OpenVINS' ``V1_01_easy.csv``, which
   covers all 95 frames, over EuRoC's original (TUM ``V1_01_easy_original.txt``,
   74 of 95 frames); the two differ by up to ~4.4 cm.

Ground-truth poses are interpolated at the frame times with at most
``gt_max_gap`` (0.1 s) between bracketing samples.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import yaml

from slam.datasets import register
from slam.datasets.base import (
    GT_MAX_GAP_S,
    Sequence,
    attach_right,
    camera_override,
    packaged_camera,
    packaged_camera_file,
    read_image,
)
from slam.datasets.images import image_size
from slam.datasets.textfiles import column_floats, column_ns, ns_to_s, read_rows
from slam.errors import DataError
from slam.geometry.camera import PinholeCamera, model_from_names
from slam.geometry.se3 import inv_pose
from slam.geometry.so3 import quat_to_rot
from slam.records import Frame, ImuSamples, StereoRig
from slam.trajectory import Trajectory, check_increasing, read_tum

log = logging.getLogger(__name__)


# ----------------------------------------------------------------- file readers
def read_sensor_yaml(path: Path) -> dict:
    """A Kalibr/EuRoC ``sensor.yaml``; the OpenCV ``%YAML:1.0`` directive (rejected by PyYAML) is dropped."""
    try:
        text = path.read_text()
    except OSError as e:
        raise DataError(path, f"cannot read: {e.strerror}") from None
    text = "\n".join("" if ln.startswith("%") else ln for ln in text.splitlines())  # keep line numbers
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise DataError(path, f"not valid YAML: {e}") from None
    if not isinstance(d, dict):
        raise DataError(path, "sensor file must be a YAML mapping")
    return d


def sensor_T_BS(d: dict, path: Path | str) -> np.ndarray:
    """The 4x4 ``T_BS`` (sensor -> body) of a sensor.yaml mapping (``data: [16]``, or the 16 numbers alone)."""
    try:
        T_BS = d["T_BS"]
        T = np.asarray(T_BS["data"] if isinstance(T_BS, dict) else T_BS, dtype=np.float64).reshape(4, 4)
    except KeyError:
        raise DataError(path, "lacks T_BS: {rows: 4, cols: 4, data: [16 numbers]}") from None
    except (TypeError, ValueError):
        raise DataError(path, "T_BS.data must hold 16 numbers") from None
    R = T[:3, :3]
    if not np.all(np.isfinite(T)) or np.abs(R @ R.T - np.eye(3)).max() > 1e-3 or abs(np.linalg.det(R) - 1) > 1e-3:
        raise DataError(path, "T_BS is not a rigid transform")
    return T


def sensor_camera(d: dict, path: Path | str) -> PinholeCamera:
    """Intrinsics of a Kalibr/EuRoC camera mapping (``resolution``, ``intrinsics: [fu, fv, cu, cv]``,
    ``distortion_model`` radial-tangential or equidistant, ``distortion_coefficients``)."""
    model = model_from_names(d.get("camera_model", "pinhole"), d.get("distortion_model", "radial-tangential"), path)
    try:
        w, h = (int(v) for v in d["resolution"])
        fu, fv, cu, cv = (float(v) for v in d["intrinsics"])
        dist = tuple(float(v) for v in d.get("distortion_coefficients") or ())
        return PinholeCamera(w, h, fu, fv, cu, cv, dist, model=model)
    except KeyError as e:
        raise DataError(path, f"lacks the key {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise DataError(path, f"invalid camera: {e}") from None


def euroc_camera(path: Path) -> tuple[PinholeCamera, np.ndarray]:
    """Camera intrinsics and ``T_BS`` (camera -> body) from a camera ``sensor.yaml``.

    A sequence without ``camN/sensor.yaml`` gets EuRoC's published calibration
    (``calib/cameras/euroc_camN.yaml``, the same for every EuRoC sequence) with a warning;
    one whose file disagrees with it at EuRoC's resolution is reported (the file is used).
    """
    published = f"euroc_{path.parent.name}.yaml"
    if not path.is_file() and path.parent.name in ("cam0", "cam1"):
        log.warning("%s: missing; using EuRoC's published calibration calib/cameras/%s", path, published)
        d = packaged_camera_file(published)
        return PinholeCamera.from_dict(d, published), sensor_T_BS(d, published)
    d = read_sensor_yaml(path)
    cam = sensor_camera(d, path)
    if path.parent.name in ("cam0", "cam1"):
        _cross_check(cam, packaged_camera(published), path, published)
    return cam, sensor_T_BS(d, path)


def _cross_check(cam: PinholeCamera, ref: PinholeCamera, path: Path, ref_name: str) -> None:
    """Warn when a camera of EuRoC's resolution has intrinsics more than 1% from EuRoC's published ones."""
    if (cam.width, cam.height) != (ref.width, ref.height):
        return  # not the VI-Sensor (e.g. a synthetic sequence in EuRoC layout)
    a = np.array([cam.fx, cam.fy, cam.cx, cam.cy])
    b = np.array([ref.fx, ref.fy, ref.cx, ref.cy])
    if np.max(np.abs(a - b) / b) > 0.01 or cam.model != ref.model:
        log.warning("%s: intrinsics %s differ from EuRoC's published calib/cameras/%s %s; using the file's",
                    path, np.round(a, 3).tolist(), ref_name, b.tolist())


def _check_published_size(cam: PinholeCamera, cam_dir: Path, image: Path) -> None:
    """Without ``sensor.yaml`` the published EuRoC camera is assumed: the images must have its size."""
    if (cam_dir / "sensor.yaml").is_file():
        return
    w, h = image_size(image)
    if (w, h) != (cam.width, cam.height):
        raise DataError(cam_dir / "sensor.yaml", f"missing, and the images are {w}x{h}, not the {cam.width}x"
                                                 f"{cam.height} of EuRoC's published camera: add sensor.yaml")


def read_camera_csv(path: Path) -> tuple[np.ndarray, list[str], list[int]]:
    """``cam*/data.csv``: (ns timestamps, image file names, line numbers); timestamps checked increasing."""
    rows, lines = read_rows(path, 2)
    ns = column_ns(path, rows, lines)
    check_increasing(path, ns, lines)
    return ns, [r[1] for r in rows], lines


def read_imu_csv(path: Path) -> ImuSamples:
    """EuRoC ``imu0/data.csv``: ns, gyro xyz [rad/s], accel xyz [m/s^2] -> :class:`ImuSamples` in seconds."""
    rows, lines = read_rows(path, 7)
    ns = column_ns(path, rows, lines)
    check_increasing(path, ns, lines)
    v = column_floats(path, rows, lines, slice(1, 7))
    return ImuSamples(ns_to_s(ns), v[:, 0:3].copy(), v[:, 3:6].copy())


def read_euroc_poses(path: Path) -> Trajectory:
    """EuRoC ground-truth csv: ``ns, px, py, pz, qw, qx, qy, qz[, ...]`` (note: w first) -> body poses."""
    rows, lines = read_rows(path, 8, 64)
    if not rows:
        raise DataError(path, "ground-truth file holds no poses")
    ns = column_ns(path, rows, lines)
    check_increasing(path, ns, lines)
    v = column_floats(path, rows, lines, slice(1, 8))
    norms = np.linalg.norm(v[:, 3:7], axis=1)
    bad = np.nonzero(np.abs(norms - 1.0) > 1e-2)[0]
    if bad.size:
        raise DataError(path, f"quaternion norm {norms[bad[0]]:.4f} is not 1", line=lines[int(bad[0])])
    poses = np.tile(np.eye(4), (len(rows), 1, 1))
    poses[:, :3, :3] = quat_to_rot(v[:, [4, 5, 6, 3]])  # w x y z -> x y z w
    poses[:, :3, 3] = v[:, 0:3]
    return Trajectory(ns_to_s(ns), poses)


def _data_lines(path: Path) -> tuple[str, str]:
    """First and last non-comment, non-blank lines of a text file ('' if none)."""
    try:
        stripped = (ln.strip() for ln in path.read_text(errors="replace").splitlines())
        lines = [s for s in stripped if s and not s.startswith("#")]
    except OSError as e:
        raise DataError(path, f"cannot read: {e.strerror}") from None
    return (lines[0], lines[-1]) if lines else ("", "")


def is_euroc_csv(path: Path) -> bool:
    """Whether the first data line of ``path`` is comma-separated (EuRoC csv) rather than TUM (whitespace)."""
    return "," in _data_lines(path)[0]


def _line_time(line: str) -> float:
    """Time in seconds of one ground-truth line: EuRoC csv (ns, commas) or TUM (seconds, spaces)."""
    if "," in line:
        return float(ns_to_s(np.array([int(line.split(",")[0])]))[0])
    return float(line.split()[0])


def time_span(path: Path) -> tuple[float, float] | None:
    """(first, last) time in seconds of a ground-truth file, from its first and last data lines only."""
    first, last = _data_lines(path)
    try:
        return _line_time(first), _line_time(last)
    except (ValueError, IndexError):
        return None  # malformed: reported by the full read if this file is chosen


def read_body_poses(path: Path) -> Trajectory:
    """A ground-truth file in either EuRoC csv or TUM format, told apart by content."""
    return read_euroc_poses(path) if is_euroc_csv(path) else read_tum(path)


# ----------------------------------------------------------------------- reader
@register("euroc")
class EurocSequence(Sequence):
    """A EuRoC/ASL sequence: mono or stereo camera, IMU and body ground truth."""

    layout = "mav0/ with cam0/ (EuRoC/ASL)"
    groundtruth_file: Path | None = None  # the file the ground truth was read from

    def __init__(self, path: str | Path, groundtruth: str | Path | None = None, gt_max_gap: float = GT_MAX_GAP_S):
        path = Path(path)
        self.mav0 = path if path.name == "mav0" else path / "mav0"
        self.root = self.mav0.parent
        self.name = self.root.name
        ns, self._left, lines = self._read_camera_list("cam0")
        self._check_timestamps(self.mav0 / "cam0" / "data.csv", ns_to_s(ns), lines)
        cam0, T_B_c0 = euroc_camera(self.mav0 / "cam0" / "sensor.yaml")
        self.camera = camera_override(self.root, self.mav0) or cam0
        _check_published_size(self.camera, self.mav0 / "cam0", self._left[0])
        self._right: list[Path | None] | None = None
        if (self.mav0 / "cam1" / "data.csv").is_file():
            self._setup_right(ns, T_B_c0)
        self._setup_imu(T_B_c0)
        self._setup_groundtruth(groundtruth, T_B_c0, gt_max_gap)

    @classmethod
    def detect(cls, path: Path) -> bool:
        mav0 = path if path.name == "mav0" else path / "mav0"
        return (mav0 / "cam0").is_dir()

    # ------------------------------------------------------------------ setup
    def _read_camera_list(self, cam: str) -> tuple[np.ndarray, list[Path], list[int]]:
        """(ns timestamps, image paths, csv line numbers) of ``cam``; listed images must exist."""
        csv = self.mav0 / cam / "data.csv"
        ns, names, lines = read_camera_csv(csv)
        paths = [self.mav0 / cam / "data" / s for s in names]
        for p, n in zip(paths, lines):
            if not p.is_file():
                raise DataError(csv, f"listed image {p} does not exist", line=n)
        return ns, paths, lines

    def _setup_right(self, ns_left: np.ndarray, T_B_c0: np.ndarray) -> None:
        ns, paths, _ = self._read_camera_list("cam1")
        cam1, T_B_c1 = euroc_camera(self.mav0 / "cam1" / "sensor.yaml")
        if paths:
            _check_published_size(cam1, self.mav0 / "cam1", paths[0])
        self.stereo = StereoRig(right=cam1, T_l_r=inv_pose(T_B_c0) @ T_B_c1)
        by_ns = dict(zip(ns.tolist(), paths))
        self._right = [by_ns.get(int(t)) for t in ns_left]
        missing = sum(p is None for p in self._right)
        if missing:
            log.warning("%s: %d cam0 frames have no cam1 image with the same timestamp", self.name, missing)

    def _setup_imu(self, T_B_c0: np.ndarray) -> None:
        csv = self.mav0 / "imu0" / "data.csv"
        if not csv.is_file():
            return
        self.imu = read_imu_csv(csv)
        sensor = self.mav0 / "imu0" / "sensor.yaml"
        T_B_imu = sensor_T_BS(read_sensor_yaml(sensor), sensor) if sensor.is_file() else np.eye(4)
        self.T_b_c = inv_pose(T_B_imu) @ T_B_c0

    def _setup_groundtruth(self, explicit: str | Path | None, T_B_c0: np.ndarray, max_gap: float) -> None:
        if explicit is not None:
            files = [Path(explicit)]
        elif (self.mav0 / "state_groundtruth_estimate0" / "data.csv").is_file():
            files = [self.mav0 / "state_groundtruth_estimate0" / "data.csv"]
        else:
            folder = self.root / "groundtruth"
            files = sorted(p for p in folder.glob("*") if p.suffix in (".csv", ".txt")) if folder.is_dir() else []
            files.sort(key=lambda p: not is_euroc_csv(p))  # stable: EuRoC csv first, then by name
        if len(files) > 1:  # keep the file whose span covers the most frames (max keeps the first of equals)
            files = [max(files, key=self._frames_covered)]
        if files:
            log.info("%s: ground truth from %s", self.name, files[0])
            self.groundtruth_file = files[0]
            self._set_groundtruth(read_body_poses(files[0]), max_gap, T_right=T_B_c0)

    def _frames_covered(self, path: Path) -> int:
        span = time_span(path)
        t = self.timestamps
        return -1 if span is None else int(np.count_nonzero((t >= span[0]) & (t <= span[1])))

    # ----------------------------------------------------------------- frames
    def _read_frame(self, i: int) -> Frame:
        frame = Frame(index=i, timestamp=float(self.timestamps[i]), image=read_image(self._left[i], self.camera),
                      camera=self.camera, source=str(self._left[i]))
        attach_right(self, frame, self._right, i)
        return frame
