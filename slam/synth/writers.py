"""Writers of a rendered synthetic sequence in the project layout and in the TUM, EuRoC and KITTI layouts.

See ``docs/synthetic_layout.md`` for the contract. ``write_frame`` may be called from several
threads at once (one frame each); ``finish`` writes the text files, the marker file last.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from slam.geometry.se3 import inv_pose
from slam.geometry.so3 import rot_to_quat
from slam.trajectory import Trajectory, atomic_write_text, format_tum, write_kitti

if TYPE_CHECKING:
    from slam.synth.imu import ImuData
    from slam.synth.sequence import SynthFrame, SynthSequence

log = logging.getLogger(__name__)

IMU_HEADER = (
    "#timestamp [ns],w_RS_S_x [rad s^-1],w_RS_S_y [rad s^-1],w_RS_S_z [rad s^-1],"
    "a_RS_S_x [m s^-2],a_RS_S_y [m s^-2],a_RS_S_z [m s^-2]"
)
STATE_HEADER = (
    "#timestamp, p_RS_R_x [m], p_RS_R_y [m], p_RS_R_z [m], q_RS_w [], q_RS_x [], q_RS_y [], q_RS_z [], "
    "v_RS_R_x [m s^-1], v_RS_R_y [m s^-1], v_RS_R_z [m s^-1], "
    "b_w_RS_S_x [rad s^-1], b_w_RS_S_y [rad s^-1], b_w_RS_S_z [rad s^-1], "
    "b_a_RS_S_x [m s^-2], b_a_RS_S_y [m s^-2], b_a_RS_S_z [m s^-2]"
)


def fmt_us(us: int) -> str:
    """Seconds with 6 decimals from integer microseconds, exactly (no float rounding)."""
    return f"{us // 1_000_000}.{us % 1_000_000:06d}"


def depth_to_png16(depth: np.ndarray, scale: float) -> np.ndarray:
    """Metres (float, 0 = invalid) -> uint16 depth units (clipped to 65535)."""
    return np.clip(np.round(depth.astype(np.float64) * scale), 0, 65535).astype(np.uint16)


def imu_csv(imu: ImuData) -> str:
    rows = [IMU_HEADER]
    for ns, w, a in zip(imu.t_ns, imu.gyro, imu.accel):
        rows.append(f"{int(ns)}," + ",".join(f"{x + 0.0:.12g}" for x in (*w, *a)))
    return "\n".join(rows) + "\n"


def state_csv(imu: ImuData) -> str:
    """EuRoC state_groundtruth_estimate0 rows: body position, quaternion (w first), velocity, biases."""
    rows = [STATE_HEADER]
    for k in range(len(imu.t_ns)):
        qx, qy, qz, qw = rot_to_quat(imu.R_w_b[k])
        vals = (*imu.p_w[k], qw, qx, qy, qz, *imu.v_w[k], *imu.bias_gyro[k], *imu.bias_accel[k])
        rows.append(f"{int(imu.t_ns[k])}," + ",".join(f"{x + 0.0:.12g}" for x in vals))
    return "\n".join(rows) + "\n"


def _list_txt(names: list[tuple[int, str]]) -> str:
    return "# timestamp filename\n" + "".join(f"{fmt_us(us)} {name}\n" for us, name in names)


class LayoutWriter(ABC):
    """Base: knows the sequence, prepares folders, writes frames and the final text files."""

    layout = "?"
    needs_depth = True  # whether this layout stores depth (lets the generator skip it)

    def __init__(self, out: Path, seq: SynthSequence, png_compression: int = 1):
        self.out = Path(out)
        self.seq = seq
        self.cfg = seq.cfg
        self._png = [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)]

    @abstractmethod
    def outputs(self) -> list[str]:
        """Top-level names this layout writes (removed first so no stale frames stay behind)."""

    @abstractmethod
    def folders(self) -> list[Path]:
        """Folders to create before the frames are written."""

    def prepare(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        for name in self.outputs():
            p = self.out / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
        for f in self.folders():
            f.mkdir(parents=True, exist_ok=True)

    @abstractmethod
    def write_frame(self, frame: SynthFrame) -> None:
        """Write one rendered frame (called from writer threads)."""

    @abstractmethod
    def finish(self, imu: ImuData | None) -> None:
        """Write the per-sequence files (lists, calibration, IMU, ground truth, marker)."""

    # helpers
    def _imwrite(self, path: Path, img: np.ndarray) -> None:
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(path), img, self._png):
            raise OSError(f"{path}: cv2.imwrite failed")

    def _gray(self, rgb: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


class NativeWriter(LayoutWriter):
    """The project layout (``synth.json`` marker); also the base of the TUM layout."""

    layout = "native"
    with_extras = True  # synth.json, right/, imu*.csv

    def outputs(self) -> list[str]:
        return ["synth.json", "camera.yaml", "rgb.txt", "depth.txt", "right.txt", "rgb", "depth", "right",
                "groundtruth.txt", "imu.csv", "imu_groundtruth.csv"]

    def folders(self) -> list[Path]:
        f = [self.out / "rgb"]
        if self.cfg.depth:
            f.append(self.out / "depth")
        if self.cfg.stereo and self.with_extras:
            f.append(self.out / "right")
        return f

    def write_frame(self, frame: SynthFrame) -> None:
        name = f"{fmt_us(frame.t_us)}.png"
        self._imwrite(self.out / "rgb" / name, frame.rgb)
        if frame.depth is not None:
            self._imwrite(self.out / "depth" / name, depth_to_png16(frame.depth, self.cfg.depth_scale))
        if frame.right is not None and self.with_extras:
            self._imwrite(self.out / "right" / name, frame.right)

    def finish(self, imu: ImuData | None) -> None:
        seq, cfg = self.seq, self.cfg
        us = [int(x) for x in seq.frame_us]
        atomic_write_text(self.out / "rgb.txt", _list_txt([(u, f"rgb/{fmt_us(u)}.png") for u in us]))
        if cfg.depth:
            atomic_write_text(self.out / "depth.txt", _list_txt([(u, f"depth/{fmt_us(u)}.png") for u in us]))
        if cfg.stereo and self.with_extras:
            atomic_write_text(self.out / "right.txt", _list_txt([(u, f"right/{fmt_us(u)}.png") for u in us]))
        gt = format_tum(Trajectory(seq.frame_t, seq.T_w_c))
        gt_lines = gt.splitlines()
        # format_tum writes "%.6f" timestamps; replace them by the exact microsecond strings
        gt = "\n".join([gt_lines[0]] + [f"{fmt_us(u)} {ln.split(' ', 1)[1]}" for u, ln in zip(us, gt_lines[1:])]) + "\n"
        atomic_write_text(self.out / "groundtruth.txt", gt)
        seq.camera.to_yaml(self.out / "camera.yaml")
        if not self.with_extras:
            return
        if imu is not None:
            atomic_write_text(self.out / "imu.csv", imu_csv(imu))
            atomic_write_text(self.out / "imu_groundtruth.csv", state_csv(imu))
        atomic_write_text(self.out / "synth.json", json.dumps(seq.metadata(), indent=1) + "\n")


class TumWriter(NativeWriter):
    """TUM RGB-D layout: rgb/, depth/, rgb.txt, depth.txt, groundtruth.txt (+ camera.yaml)."""

    layout = "tum"
    with_extras = False


def _matrix_yaml(T: np.ndarray, indent: str = "  ") -> str:
    vals = [f"{x:.12g}" for x in np.asarray(T).reshape(-1)]
    rows = [", ".join(vals[i : i + 4]) for i in range(0, 16, 4)]
    return f"{indent}cols: 4\n{indent}rows: 4\n{indent}data: [" + (",\n" + indent + "       ").join(rows) + "]\n"


class EurocWriter(LayoutWriter):
    """EuRoC MAV layout under ``mav0/`` (grayscale cameras, IMU, body state ground truth)."""

    layout = "euroc"
    needs_depth = False

    def outputs(self) -> list[str]:
        return ["mav0"]

    def folders(self) -> list[Path]:
        f = [self.out / "mav0" / "cam0" / "data", self.out / "mav0" / "state_groundtruth_estimate0"]
        if self.cfg.stereo:
            f.append(self.out / "mav0" / "cam1" / "data")
        if self.cfg.imu:
            f.append(self.out / "mav0" / "imu0")
        return f

    def write_frame(self, frame: SynthFrame) -> None:
        name = f"{frame.t_ns}.png"
        self._imwrite(self.out / "mav0" / "cam0" / "data" / name, self._gray(frame.rgb))
        if frame.right is not None:
            self._imwrite(self.out / "mav0" / "cam1" / "data" / name, self._gray(frame.right))

    def _cam_yaml(self, T_BS: np.ndarray, comment: str) -> str:
        c = self.seq.camera
        return (
            "%YAML:1.0\n# General sensor definitions.\nsensor_type: camera\n"
            f"comment: {comment}\n\n# Sensor extrinsics wrt. the body-frame.\nT_BS:\n{_matrix_yaml(T_BS)}\n"
            f"# Camera specific definitions.\nrate_hz: {self.cfg.fps:g}\nresolution: [{c.width}, {c.height}]\n"
            f"camera_model: pinhole\nintrinsics: [{c.fx:.12g}, {c.fy:.12g}, {c.cx:.12g}, {c.cy:.12g}] #fu, fv, cu, cv\n"
            "distortion_model: radial-tangential\n"
            f"distortion_coefficients: [{', '.join(f'{d:.12g}' for d in c.dist[:4])}]\n"
        )

    def _imu_yaml(self) -> str:
        c = self.cfg
        return (
            "%YAML:1.0\n#Default imu sensor yaml file\nsensor_type: imu\ncomment: slam-synth IMU\n\n"
            f"# Sensor extrinsics wrt. the body-frame.\nT_BS:\n{_matrix_yaml(np.eye(4))}"
            f"rate_hz: {c.imu_rate_hz:g}\n\n"
            "# inertial sensor noise model parameters (static)\n"
            f"gyroscope_noise_density: {c.gyro_noise_density:.6e}"
            "     # [ rad / s / sqrt(Hz) ]   ( gyro \"white noise\" )\n"
            f"gyroscope_random_walk: {c.gyro_random_walk:.6e}"
            "       # [ rad / s^2 / sqrt(Hz) ] ( gyro bias diffusion )\n"
            f"accelerometer_noise_density: {c.accel_noise_density:.6e}"
            "  # [ m / s^2 / sqrt(Hz) ]   ( accel \"white noise\" )\n"
            f"accelerometer_random_walk: {c.accel_random_walk:.6e}"
            "    # [ m / s^3 / sqrt(Hz) ].  ( accel bias diffusion )\n"
        )

    def finish(self, imu: ImuData | None) -> None:
        seq, mav = self.seq, self.out / "mav0"
        ns = [int(x) for x in seq.frame_ns]
        cams = [("cam0", seq.T_b_c, "slam-synth left camera")]
        if self.cfg.stereo:
            cams.append(("cam1", seq.T_b_c @ seq.T_l_r, "slam-synth right camera"))
        for cam, T_BS, comment in cams:
            rows = "".join(f"{n},{n}.png\n" for n in ns)
            atomic_write_text(mav / cam / "data.csv", "#timestamp [ns],filename\n" + rows)
            atomic_write_text(mav / cam / "sensor.yaml", self._cam_yaml(T_BS, comment))
        if imu is not None and self.cfg.imu:
            atomic_write_text(mav / "imu0" / "data.csv", imu_csv(imu))
            atomic_write_text(mav / "imu0" / "sensor.yaml", self._imu_yaml())
        gt = imu if imu is not None else seq.body_states_at_imu_rate()
        atomic_write_text(mav / "state_groundtruth_estimate0" / "data.csv", state_csv(gt))
        atomic_write_text(mav / "body.yaml", "%YAML:1.0\ncomment: slam-synth body (IMU) frame\n")


class KittiWriter(LayoutWriter):
    """KITTI odometry layout: sequences/00/image_0|1, calib.txt, times.txt, poses/00.txt."""

    layout = "kitti"
    needs_depth = False

    def outputs(self) -> list[str]:
        return ["sequences", "poses"]

    def folders(self) -> list[Path]:
        s = self.out / "sequences" / "00"
        f = [s / "image_0", self.out / "poses"]
        if self.cfg.stereo:
            f.append(s / "image_1")
        return f

    def write_frame(self, frame: SynthFrame) -> None:
        s = self.out / "sequences" / "00"
        self._imwrite(s / "image_0" / f"{frame.index:06d}.png", self._gray(frame.rgb))
        if frame.right is not None:
            self._imwrite(s / "image_1" / f"{frame.index:06d}.png", self._gray(frame.right))

    def finish(self, imu: ImuData | None) -> None:
        seq, s = self.seq, self.out / "sequences" / "00"
        if seq.camera.has_distortion:
            log.warning("KITTI calib.txt cannot hold distortion: the images are not rectified")
        P0 = np.hstack([seq.camera.K, np.zeros((3, 1))])
        P1 = P0.copy()
        P1[0, 3] = -seq.camera.fx * (self.cfg.stereo_baseline if self.cfg.stereo else 0.0)
        mats = (("P0", P0), ("P1", P1), ("P2", P0), ("P3", P1))  # no colour cameras: P2/P3 repeat P0/P1
        lines = [f"{n}: " + " ".join(f"{v:.12e}" for v in P.reshape(-1)) for n, P in mats]
        atomic_write_text(s / "calib.txt", "\n".join(lines) + "\n")
        atomic_write_text(s / "times.txt", "".join(f"{t:.9e}\n" for t in seq.frame_t))
        write_kitti(self.out / "poses" / "00.txt", Trajectory(seq.frame_t, inv_pose(seq.T_w_c[0]) @ seq.T_w_c))


WRITERS: dict[str, type[LayoutWriter]] = {
    "native": NativeWriter,
    "tum": TumWriter,
    "euroc": EurocWriter,
    "kitti": KittiWriter,
}
