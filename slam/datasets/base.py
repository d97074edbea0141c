"""The interface every dataset reader implements: a random-access sequence of :class:`~slam.records.Frame`.

A reader subclasses :class:`Sequence`, fills the attributes in its
``__init__`` (then calls :meth:`Sequence._check_timestamps`) and implements
:meth:`Sequence.detect` and :meth:`Sequence._read_frame`. The base class adds
what is the same everywhere: the IMU samples of each frame, the ground truth,
the modes, indexing and iteration.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import ClassVar

import numpy as np
import yaml

from slam.datasets.images import check_size, read_rgb
from slam.errors import DataError
from slam.geometry.camera import PinholeCamera
from slam.records import Frame, ImuSamples, StereoRig
from slam.trajectory import Trajectory, check_increasing, interpolate_poses

log = logging.getLogger(__name__)

#: Every mode a sequence can support, richest first.
ALL_MODES = ("rgbd", "stereo-inertial", "stereo", "mono-inertial", "mono")
GT_MAX_GAP_S = 0.1  # ground-truth samples further apart than this are not interpolated between


class Sequence(ABC):
    """A recorded sequence: frames in time order plus calibration, IMU stream and ground truth.

    Attributes (set by the reader):
      root: the folder (or file, for a video) the sequence was opened from.
      name: a short name for logs and output files.
      camera: intrinsics of the left/RGB camera (overridden by a ``camera.yaml`` in the folder).
      stereo: the right camera and ``T_l_r`` (right -> left), or None.
      T_b_c: 4x4 pose of the (left) camera in the IMU/body frame, or None.
      imu: the whole IMU stream (IMU frame, sorted by time), or None.
      timestamps: (N,) float64 seconds of the frames, strictly increasing.
      has_depth: whether frames carry depth (the sequence is RGB-D).
    """

    kind: ClassVar[str] = ""  # registry name, set by @register
    layout: ClassVar[str] = ""  # what detect() looks for, for error messages
    sequential: ClassVar[bool] = False  # frames must be read one at a time, in order (one decoder: a video)

    root: Path
    name: str
    camera: PinholeCamera
    stereo: StereoRig | None = None
    T_b_c: np.ndarray | None = None
    imu: ImuSamples | None = None
    timestamps: np.ndarray
    has_depth: bool = False
    # Streams a caller does not need are not decoded (a PNG costs ~10 ms): see ``use_streams``.
    load_depth: bool = True
    load_right: bool = True
    # (N, 4, 4) ground-truth T_w_c at the frame times, NaN where there is none; None: no ground truth at all
    _gt_poses: np.ndarray | None = None

    @classmethod
    @abstractmethod
    def detect(cls, path: Path) -> bool:
        """Whether ``path`` looks like this reader's layout (cheap: file names only, never raises)."""

    @abstractmethod
    def _read_frame(self, i: int) -> Frame:
        """Frame ``i`` with its images loaded; ``imu`` and ``T_w_c_gt`` are filled in by the base class."""

    # ------------------------------------------------------------ sequence API
    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    def __getitem__(self, i: int) -> Frame:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"frame {i} out of range for a sequence of {n} frames")
        i = int(i) % n
        frame = self._read_frame(i)
        check_frame_sizes(frame, self)
        frame.imu = self.imu_for_frame(i)
        frame.T_w_c_gt = self.groundtruth_pose(i)
        return frame

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self[i]

    def use_streams(self, mode: str) -> None:
        """Decode only what ``mode`` uses: depth for rgbd, the right image for stereo modes."""
        self.load_depth = mode == "rgbd"
        self.load_right = mode.startswith("stereo")

    def close(self) -> None:
        """Release open files (a no-op for readers that hold none)."""

    def __enter__(self) -> "Sequence":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, {len(self)} frames, modes={self.modes})"

    @property
    def modes(self) -> list[str]:
        """Supported modes, richest first, from ``ALL_MODES``."""
        inertial = self.imu is not None and len(self.imu) > 0 and self.T_b_c is not None
        have = {
            "rgbd": self.has_depth,
            "stereo-inertial": self.stereo is not None and inertial,
            "stereo": self.stereo is not None,
            "mono-inertial": inertial,
            "mono": True,
        }
        return [m for m in ALL_MODES if have[m]]

    def imu_for_frame(self, i: int) -> ImuSamples:
        """IMU samples with ``t_{i-1} < t <= t_i`` (frame 0: every sample up to ``t_0``)."""
        if self.imu is None:
            return ImuSamples()
        t0 = -np.inf if i == 0 else float(self.timestamps[i - 1])
        return self.imu.between(t0, float(self.timestamps[i]))

    # ------------------------------------------------------------ ground truth
    def groundtruth_pose(self, i: int) -> np.ndarray | None:
        """Ground-truth ``T_w_c`` of frame ``i``, or None where the dataset has none."""
        if self._gt_poses is None or np.isnan(self._gt_poses[i, 0, 0]):
            return None
        return self._gt_poses[i].copy()

    def groundtruth(self) -> Trajectory | None:
        """Camera ``T_w_c`` at the frame timestamps that have ground truth; None if the sequence has none."""
        if self._gt_poses is None:
            return None
        ok = ~np.isnan(self._gt_poses[:, 0, 0])
        return Trajectory(self.timestamps[ok], self._gt_poses[ok])

    def _set_groundtruth(
        self, traj: Trajectory, max_gap: float = GT_MAX_GAP_S, T_right: np.ndarray | None = None
    ) -> int:
        """Interpolate ``traj`` at the frame times (``@ T_right``, e.g. body -> camera); returns frames covered."""
        poses, ok = interpolate_poses(traj, self.timestamps, max_gap=max_gap)
        if T_right is not None:
            poses = poses @ T_right
        poses[~ok] = np.nan
        self._gt_poses = poses
        if not ok.all():
            log.info("%s: ground truth covers %d of %d frames", self.name, int(ok.sum()), len(self))
        return int(ok.sum())

    # ----------------------------------------------------- helpers for readers
    def _check_timestamps(self, path: Path, timestamps: np.ndarray, lines: list[int] | None = None) -> None:
        """Set ``self.timestamps`` after checking: non-empty, strictly increasing (errors at ``path:line``)."""
        t = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        if t.size == 0:
            raise DataError(path, "the sequence holds no frames")
        check_increasing(path, t, lines if lines is not None else list(range(1, t.size + 1)))
        self.timestamps = t


def read_image(path: str | Path, camera: PinholeCamera, what: str = "image") -> np.ndarray:
    """An image as RGB (:func:`~slam.datasets.images.read_rgb`), checked to be ``camera``'s size: a frame
    at another size raises :class:`~slam.errors.CorruptFrameError` (naming the file and both sizes)."""
    return check_size(path, read_rgb(path), camera.width, camera.height, what)


def check_frame_sizes(frame: Frame, seq: Sequence) -> None:
    """Every image of ``frame`` must have its camera's size (what each reader checks with the file names;
    this catches a reader that does not)."""
    check_size(frame.source, frame.image, seq.camera.width, seq.camera.height)
    if frame.depth is not None:
        check_size(frame.source, frame.depth, seq.camera.width, seq.camera.height, "depth image of this frame")
    if frame.right is not None and seq.stereo is not None:
        right = seq.stereo.right
        check_size(frame.source, frame.right, right.width, right.height, "right image of this frame")


def attach_right(seq: Sequence, frame: Frame, paths: list | None, i: int) -> None:
    """Load frame ``i``'s right image into ``frame`` when the sequence has one and the mode uses it.

    ``paths[i]`` may be None (no right image near that time): the frame is flagged ``right_missing``.
    A right image at another size than the right camera's raises :class:`~slam.errors.CorruptFrameError`.
    """
    if paths is None or not seq.load_right:
        return
    if paths[i] is None:
        frame.flags.add("right_missing")
    else:
        right = seq.stereo.right if seq.stereo is not None else seq.camera
        frame.right = read_image(paths[i], right, "right image")


def load_camera_yaml(path: Path) -> PinholeCamera:
    """A project camera file; malformed, non-text or non-finite ones raise :class:`DataError`."""
    return PinholeCamera.from_yaml(path)


def packaged_camera_file(filename: str) -> dict:
    """The mapping of a camera file shipped in ``calib/cameras/`` (package data), extra keys included."""
    source = f"calib/cameras/{filename}"
    try:
        text = resources.files("calib").joinpath("cameras", filename).read_text()
    except (FileNotFoundError, ModuleNotFoundError):
        raise DataError(source, "no such packaged camera file (is the package installed with its data?)") from None
    d = yaml.safe_load(text)
    if not isinstance(d, dict):
        raise DataError(source, "camera file must be a YAML mapping")
    return d


def packaged_camera(filename: str) -> PinholeCamera:
    """A camera file shipped in ``calib/cameras/`` (loaded as package data)."""
    return PinholeCamera.from_dict(packaged_camera_file(filename), source=f"calib/cameras/{filename}")


def camera_override(*folders: Path) -> PinholeCamera | None:
    """The camera of the first ``camera.yaml`` found in ``folders`` (project format), or None."""
    for folder in folders:
        p = folder / "camera.yaml"
        if p.is_file():
            log.info("camera from %s", p)
            return load_camera_yaml(p)
    return None
