"""Video-file reader (``.mp4 .avi .mkv .mov .webm``) through ``cv2.VideoCapture``.

Timestamps: the container's presentation times (``CAP_PROP_POS_MSEC``) in
seconds, read in one pass over the file when it is opened; where the backend
reports none (all zero), ``index / fps`` (``fps=`` option, else the
container's rate). Times that do not increase raise :class:`DataError`.

Camera: ``<video stem>.yaml`` or ``camera.yaml`` next to the file (project
format), else a guess (fx = fy = 0.9 * width, principal point at the centre)
with a warning, since a guessed focal length skews every metric result.

Frames are decoded sequentially from one open capture, so iteration costs one
decode per frame; going back re-opens the file and skips forward.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import cv2
import numpy as np

from slam.datasets import register
from slam.datasets.base import Sequence, load_camera_yaml, packaged_camera
from slam.datasets.images import check_size
from slam.errors import CorruptFrameError, DataError
from slam.geometry.camera import PinholeCamera
from slam.records import Frame

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")


def guess_camera(width: int, height: int) -> PinholeCamera:
    """A plausible camera for an unknown video: ~58 degree horizontal field of view, centred, no distortion.

    At 640x480 this is the shipped ``calib/cameras/webcam_default.yaml`` (the same guess, as a
    file to replace with ``slam-calib camera``'s output).
    """
    if (width, height) == (640, 480):
        return packaged_camera("webcam_default.yaml")
    return PinholeCamera(width, height, 0.9 * width, 0.9 * width, (width - 1) / 2.0, (height - 1) / 2.0)


@register("video")
class VideoSequence(Sequence):
    """Frames of a video file; mode ``['mono']``."""

    layout = f"a video file ({' '.join(VIDEO_SUFFIXES)})"
    sequential = True  # one cv2.VideoCapture: reading it from two threads at once crashes OpenCV

    def __init__(self, path: str | Path, fps: float | None = None):
        self.root = Path(path)
        self.name = self.root.stem
        self._cap: cv2.VideoCapture | None = None
        self._next = 0  # index of the frame the open capture delivers next
        self._lock = threading.Lock()  # one decoder, whichever thread asks
        cap = self._open()
        ok, first = cap.read()
        if not ok or first is None:
            raise DataError(self.root, "the video holds no decodable frames")
        rate = fps or cap.get(cv2.CAP_PROP_FPS)
        pos_ms = [cap.get(cv2.CAP_PROP_POS_MSEC)]
        while cap.grab():  # one pass for the frame times (grab() skips the colour conversion)
            pos_ms.append(cap.get(cv2.CAP_PROP_POS_MSEC))
        cap.release()
        self.timestamps = self._times(np.asarray(pos_ms, dtype=np.float64), fps, rate)
        self.camera = self._load_camera(first.shape[1], first.shape[0])

    @classmethod
    def detect(cls, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    # ------------------------------------------------------------------ setup
    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.root))
        if not cap.isOpened():
            raise DataError(self.root, "cannot open the video (unknown codec or not a video)")
        return cap

    def _times(self, pos_ms: np.ndarray, fps: float | None, rate: float) -> np.ndarray:
        """Frame times in seconds from the container, else from the frame rate."""
        n = pos_ms.shape[0]
        if fps is None and np.all(np.isfinite(pos_ms)) and (n == 1 or np.any(pos_ms[1:] != 0)):
            t = pos_ms / 1000.0
        elif rate and rate > 0:
            log.info("%s: no frame times in the container; using index / %.3f fps", self.root, rate)
            t = np.arange(n) / float(rate)
        else:
            raise DataError(self.root, "the video has neither frame times nor a frame rate; pass fps=")
        bad = np.nonzero(np.diff(t) <= 0)[0]
        if bad.size:
            k = int(bad[0]) + 1
            raise DataError(
                self.root, f"frame {k}: timestamp {t[k]:.6f} s does not increase (frame {k - 1}: {t[k - 1]:.6f} s)"
            )
        return t

    def _load_camera(self, width: int, height: int) -> PinholeCamera:
        for p in (self.root.with_suffix(".yaml"), self.root.parent / "camera.yaml"):
            if p.is_file():
                log.info("%s: camera from %s", self.name, p)
                return load_camera_yaml(p)
        cam = guess_camera(width, height)
        log.warning(
            "%s: no %s or camera.yaml next to the video; GUESSING the camera fx = fy = %.1f (0.9 * width), "
            "principal point at the centre, no distortion", self.name, self.root.with_suffix(".yaml").name, cam.fx,
        )
        return cam

    # ----------------------------------------------------------------- frames
    def _read_frame(self, i: int) -> Frame:
        with self._lock:
            return self._decode(i)

    def _decode(self, i: int) -> Frame:
        if self._cap is None or i < self._next:
            self.close()
            self._cap, self._next = self._open(), 0
        while self._next < i:  # skip forward without converting
            if not self._cap.grab():
                raise CorruptFrameError(self.root, f"frame {self._next} cannot be decoded")
            self._next += 1
        ok, bgr = self._cap.read()
        self._next += 1
        if not ok or bgr is None:
            raise CorruptFrameError(self.root, f"frame {i} cannot be decoded")
        image = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB if bgr.ndim == 2 else cv2.COLOR_BGR2RGB)
        source = f"{self.root}#{i}"
        check_size(source, image, self.camera.width, self.camera.height, f"frame {i}")
        return Frame(index=i, timestamp=float(self.timestamps[i]), image=image, camera=self.camera, source=source)
