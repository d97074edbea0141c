"""Camera files: ours (read/written), OpenCV's and ROS's ``camera_matrix`` files and EuRoC's ``sensor.yaml`` (read).

Our format (``PinholeCamera.to_dict``)::

    model: pinhole            # or fisheye (equidistant k1..k4, cv2.fisheye)
    width: 640                # pixels
    height: 480
    fx: 517.3                 # focal lengths and principal point, pixels
    fy: 516.5
    cx: 318.6
    cy: 255.3
    distortion_model: radtan  # or equidistant
    distortion: [k1, k2, p1, p2, k3]   # fisheye: [k1, k2, k3, k4]
    rms: 0.21                 # optional: reprojection RMS of the calibration, pixels

Other keys are kept by tools and ignored by readers. :func:`read_camera_file`
tells the formats apart by content.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from slam.datasets.euroc import read_sensor_yaml, sensor_camera
from slam.errors import DataError
from slam.geometry.camera import PinholeCamera, model_from_names


def read_camera_file(path: str | Path) -> PinholeCamera:
    """A camera from our YAML, OpenCV FileStorage YAML (``camera_matrix``, ``distortion_coefficients``,
    ``image_width``, ``image_height``), ROS ``camera_info`` YAML, or EuRoC/Kalibr ``sensor.yaml``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise DataError(path, f"cannot read camera file: {e.strerror}") from None
    except UnicodeDecodeError:
        raise DataError(path, "camera file is not text") from None
    if text.lstrip().startswith("%YAML") and "camera_matrix" in text:
        return _from_matrix_mapping(read_opencv_storage(path), path)
    d = read_sensor_yaml(path)  # PyYAML, with OpenCV's %YAML directive dropped
    if "fx" in d:
        return PinholeCamera.from_dict(d, source=path)
    if "intrinsics" in d:
        return sensor_camera(d, path)
    if "camera_matrix" in d:
        return _from_matrix_mapping(d, path)
    raise DataError(path, "not a camera file this reader knows: expected fx/fy/cx/cy (ours), camera_matrix "
                          "(OpenCV, ROS) or intrinsics (EuRoC sensor.yaml)")


def read_opencv_storage(path: Path) -> dict:
    """The entries of an OpenCV FileStorage YAML file that describe a camera, as plain Python values."""
    try:
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    except cv2.error as e:
        raise DataError(path, f"not a valid OpenCV FileStorage file: {str(e).strip()}") from None
    if not fs.isOpened():
        raise DataError(path, "OpenCV cannot open this FileStorage file")
    out: dict = {}
    try:
        for key in ("camera_matrix", "distortion_coefficients"):
            m = fs.getNode(key).mat()
            if m is not None:
                out[key] = np.asarray(m, np.float64).reshape(-1).tolist()
        for key in ("image_width", "image_height", "fisheye_model"):
            node = fs.getNode(key)
            if not node.empty():
                out[key] = int(node.real())
        for key in ("distortion_model", "camera_model"):
            node = fs.getNode(key)
            if not node.empty() and node.isString():
                out[key] = node.string()
    finally:
        fs.release()
    return out


def _numbers(value: object, key: str, path: Path) -> list[float]:
    """A list of numbers given inline or as OpenCV/ROS ``{rows, cols, data}``."""
    if isinstance(value, dict):
        value = value.get("data")
    try:
        return [float(v) for v in value]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise DataError(path, f"{key} must be a list of numbers (or rows/cols/data)") from None


def _from_matrix_mapping(d: dict, path: Path) -> PinholeCamera:
    """OpenCV/ROS style: 3x3 ``camera_matrix``, ``distortion_coefficients``, ``image_width/height``."""
    K = _numbers(d["camera_matrix"], "camera_matrix", path)
    if len(K) != 9:
        raise DataError(path, f"camera_matrix must hold 9 numbers, found {len(K)}")
    if abs(K[1]) > 1e-9 * abs(K[0]):
        raise DataError(path, f"camera_matrix has skew {K[1]:g}; only zero skew is supported")
    dist = _numbers(d.get("distortion_coefficients", []), "distortion_coefficients", path)
    fisheye = int(d.get("fisheye_model", 0) or 0) == 1
    dmodel = d.get("distortion_model")
    model = "fisheye" if fisheye else model_from_names(d.get("camera_model", "pinhole"), dmodel, path)
    n = 4 if model == "fisheye" else 5
    if any(abs(x) > 0 for x in dist[n:]):
        raise DataError(path, f"{len(dist)} distortion coefficients with non-zero terms beyond the {n} of the "
                              f"{'equidistant' if n == 4 else 'radial-tangential'} model (rational/thin-prism "
                              "models are not supported)")
    if "image_width" not in d or "image_height" not in d:
        raise DataError(path, "lacks image_width / image_height")
    try:
        return PinholeCamera(int(d["image_width"]), int(d["image_height"]), K[0], K[4], K[2], K[5],
                             tuple(dist[:n]), model=model)
    except ValueError as e:
        raise DataError(path, f"invalid camera: {e}") from None


def write_camera_file(path: str | Path, camera: PinholeCamera, *, rms_px: float | None = None,
                      comment: str = "", extra: dict | None = None) -> None:
    """Our YAML camera file: ``comment`` lines first (as ``#``), the camera, ``rms``, then ``extra`` keys."""
    d = camera.to_dict()
    if rms_px is not None:
        d["rms"] = round(float(rms_px), 5)
    d.update(extra or {})
    head = "".join(f"# {line}\n" if line else "#\n" for line in comment.splitlines())
    Path(path).write_text(head + yaml.safe_dump(d, sort_keys=False, default_flow_style=None, width=100))
