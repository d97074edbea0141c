"""TUM RGB-D reader (Sturm et al., IROS 2012).

Layout: ``rgb.txt`` and ``depth.txt`` (``timestamp filename`` lines, ``#``
comments), ``rgb/*.png`` (8-bit colour), ``depth/*.png`` (16-bit, metres *
5000, 0 = invalid, registered to the colour camera) and ``groundtruth.txt``
(TUM trajectory of the colour camera, ~100 Hz).

* Each colour frame is paired with the nearest depth image closer than
  ``max_dt`` seconds (default 0.02 s, as TUM's ``associate.py``), one-to-one,
  closest pairs first. A frame without a partner, or whose depth file is
  missing/unreadable, is delivered with ``depth=None`` and ``"depth_missing"``.
* A colour or depth image whose size is not the camera's raises
  :class:`~slam.errors.CorruptFrameError` (the frame is skipped, with that reason).
* Ground truth is interpolated at the colour timestamps; frames whose
  bracketing poses are more than ``gt_max_gap`` s apart get none.
* Camera: ``camera.yaml`` in the folder, else TUM's published intrinsics for
  the sensor named in the folder name (``fr1``/``freiburg1``, 2, 3), else
  TUM's "ROS default" 525/525/319.5/239.5 with a warning.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from slam.datasets import register
from slam.datasets.base import GT_MAX_GAP_S, Sequence, camera_override, packaged_camera, read_image
from slam.datasets.images import TUM_DEPTH_SCALE, check_size, read_depth
from slam.datasets.textfiles import check_files_exist, read_image_list
from slam.errors import CorruptFrameError
from slam.geometry.camera import PinholeCamera
from slam.records import Frame
from slam.trajectory import read_tum

log = logging.getLogger(__name__)

ASSOCIATION_MAX_DT_S = 0.02
ROS_DEFAULT_CAMERA = PinholeCamera(640, 480, 525.0, 525.0, 319.5, 239.5)
_FREIBURG = re.compile(r"(?<![a-z])(?:freiburg|fr)([123])(?!\d)")


def associate(t_a: np.ndarray, t_b: np.ndarray, max_dt: float = ASSOCIATION_MAX_DT_S) -> dict[int, int]:
    """One-to-one pairs ``{i: j}`` with ``|t_a[i] - t_b[j]| < max_dt`` seconds, closest pairs chosen first.

    The rule of TUM's ``associate.py``; both inputs sorted ascending.
    """
    lo = np.searchsorted(t_b, t_a - max_dt, side="left")
    hi = np.searchsorted(t_b, t_a + max_dt, side="right")
    candidates = [(abs(t_a[i] - t_b[j]), i, j) for i in range(len(t_a)) for j in range(lo[i], hi[i])]
    candidates = [c for c in candidates if c[0] < max_dt]
    pairs: dict[int, int] = {}
    used_b: set[int] = set()
    for _, i, j in sorted(candidates):
        if i not in pairs and j not in used_b:
            pairs[i] = j
            used_b.add(j)
    return pairs


def freiburg_camera(root: Path) -> PinholeCamera | None:
    """TUM's published intrinsics for the sensor named by ``root`` or its parent folder (fr1/fr2/fr3)."""
    for part in reversed(root.resolve().parts[-2:]):
        m = _FREIBURG.search(part.lower())
        if m:
            log.info("%s: TUM freiburg%s intrinsics (from the folder name)", root, m.group(1))
            return packaged_camera(f"tum_fr{m.group(1)}.yaml")
    return None


@register("tum")
class TumSequence(Sequence):
    """A TUM RGB-D sequence folder; modes ``['rgbd', 'mono']`` (``['mono']`` without ``depth.txt``)."""

    layout = "rgb.txt (TUM RGB-D)"

    def __init__(
        self,
        path: str | Path,
        max_dt: float = ASSOCIATION_MAX_DT_S,
        gt_max_gap: float = GT_MAX_GAP_S,
        depth_scale: float = TUM_DEPTH_SCALE,
    ):
        self.root = Path(path)
        self.name = self.root.name
        self.depth_scale = float(depth_scale)
        rgb_list = self.root / "rgb.txt"
        t, names, lines = read_image_list(rgb_list)
        self._check_timestamps(rgb_list, t, lines)
        self._rgb = check_files_exist(rgb_list, self.root, names, lines)
        self._depth = self._associate_list(self.root / "depth.txt", max_dt)
        self.has_depth = self._depth is not None
        self.camera = self._load_camera()
        gt = self.root / "groundtruth.txt"
        if gt.is_file():
            self._set_groundtruth(read_tum(gt), gt_max_gap)

    @classmethod
    def detect(cls, path: Path) -> bool:
        return path.is_dir() and (path / "rgb.txt").is_file()

    # ------------------------------------------------------------------ setup
    def _associate_list(self, list_path: Path, max_dt: float, must_exist: bool = False) -> list[Path | None] | None:
        """Files of ``list_path`` (a TUM list) paired with the frames, None where unpaired; None if no list.

        With ``must_exist`` a listed file that is missing raises at its line
        (depth files are not checked: a missing depth image only flags its frame).
        """
        if not list_path.is_file():
            return None
        t, names, lines = read_image_list(list_path)
        if must_exist:
            check_files_exist(list_path, self.root, names, lines)
        pairs = associate(self.timestamps, t, max_dt)
        if len(pairs) < len(self):
            log.warning(
                "%s: %d of %d frames have no entry within %.3f s in %s",
                self.name, len(self) - len(pairs), len(self), max_dt, list_path.name,
            )
        return [self.root / names[pairs[i]] if i in pairs else None for i in range(len(self))]

    def _load_camera(self) -> PinholeCamera:
        cam = camera_override(self.root) or freiburg_camera(self.root)
        if cam is None:
            log.warning("%s: no camera.yaml and no fr1/fr2/fr3 in the folder name; using TUM's ROS default intrinsics "
                        "525/525/319.5/239.5, which may be wrong", self.root)
            cam = ROS_DEFAULT_CAMERA
        return cam

    # ----------------------------------------------------------------- frames
    def _read_frame(self, i: int) -> Frame:
        frame = Frame(index=i, timestamp=float(self.timestamps[i]), image=read_image(self._rgb[i], self.camera),
                      camera=self.camera, source=str(self._rgb[i]))
        if self._depth is not None and self.load_depth:
            frame.depth = self._read_depth(i)
            if frame.depth is None:
                frame.flags.add("depth_missing")
            else:  # depth at another size would be read at the wrong pixels: skip the frame
                check_size(self._depth[i], frame.depth, self.camera.width, self.camera.height, "depth image")
        return frame

    def _read_depth(self, i: int) -> np.ndarray | None:
        """Depth of frame ``i`` in metres, or None (logged) when there is no usable depth image."""
        path = self._depth[i] if self._depth is not None else None
        if path is None:
            log.warning("%s: frame %d has no depth image within the association tolerance", self.name, i)
            return None
        try:
            return read_depth(path, self.depth_scale)
        except CorruptFrameError as e:
            log.warning("%s; frame %d is delivered without depth", e, i)
            return None


__all__ = ["TumSequence", "associate", "freiburg_camera", "packaged_camera"]
