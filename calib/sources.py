"""Where calibration images come from: a folder of images, a video file, or a live camera.

``open_source("shots/")``, ``open_source("board.mp4")``, ``open_source("0")`` or
``open_source("/dev/video0")`` give an iterable of :class:`SourceFrame`.
Bad input raises :class:`~slam.errors.DataError` naming the file or device.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from slam.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp")
_DEVICE = re.compile(r"^(?:\d+|/dev/video\d+)$")


@dataclass
class SourceFrame:
    name: str  # the image file, or "<video or device>#<frame index>"
    index: int  # frame index in the source (counting skipped frames)
    image: np.ndarray  # uint8, grey or BGR as read


def is_device(source: str | Path) -> bool:
    """Whether ``source`` names a camera: a device index ("0") or ``/dev/videoN``."""
    return bool(_DEVICE.match(str(source))) and not Path(str(source)).is_file()


class FrameSource(ABC):
    """Frames of one source, every ``stride``-th one; ``live`` for a camera (endless, real time)."""

    kind = ""
    live = False

    def __init__(self, source: str | Path, stride: int = 1):
        if stride < 1:
            raise ValueError(f"stride must be at least 1, got {stride}")
        self.source = str(source)
        self.stride = int(stride)

    @abstractmethod
    def __iter__(self) -> Iterator[SourceFrame]:
        """The frames, in order."""

    def close(self) -> None:
        """Release the device or file (a no-op for folders)."""


class FolderSource(FrameSource):
    """The images of a folder, sorted by file name."""

    kind = "folder"

    def __init__(self, source: str | Path, stride: int = 1):
        super().__init__(source, stride)
        folder = Path(source)
        self.files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise DataError(folder, f"no images in this folder (looked for {' '.join(IMAGE_SUFFIXES)})")
        self.files = self.files[:: self.stride]

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[SourceFrame]:
        for i, path in enumerate(self.files):
            yield SourceFrame(str(path), i * self.stride, read_image(path))


class CaptureSource(FrameSource):
    """Frames of a video file or a camera through ``cv2.VideoCapture``."""

    def __init__(self, source: str | Path, stride: int = 1):
        super().__init__(source, stride)
        self.live = is_device(source)
        self.kind = "device" if self.live else "video"
        s = str(source)
        target: int | str = int(s) if s.isdigit() else s
        self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            what = ("cannot open the camera device (is it connected and not used by another program?)" if self.live
                    else "cannot open the video (unknown codec or not a video)")
            raise DataError(source, what)

    def __iter__(self) -> Iterator[SourceFrame]:
        index = 0
        while True:
            ok, image = self._cap.read()
            if not ok or image is None:
                if index == 0:
                    raise DataError(self.source, "delivers no frames" if self.live else "holds no decodable frames")
                return
            yield SourceFrame(f"{self.source}#{index}", index, image)
            for _ in range(self.stride - 1):  # grab() skips the decoding of the frames we drop
                index += 1
                if not self._cap.grab():
                    return
            index += 1

    def close(self) -> None:
        self._cap.release()


def open_source(source: str | Path, stride: int = 1) -> FrameSource:
    """A folder of images, a video file or a camera (``0``, ``/dev/video0``), every ``stride``-th frame."""
    path = Path(str(source))
    if path.is_dir():
        return FolderSource(path, stride)
    if path.is_file():
        return CaptureSource(path, stride)
    if is_device(source):
        return CaptureSource(str(source), stride)
    raise DataError(source, "no such folder of images, video file or camera device")


def read_image(path: Path) -> np.ndarray:
    """An image file as uint8 (grey or BGR); :class:`DataError` naming the file when it cannot be decoded."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(path, "cannot read the image (missing, corrupt or not an image)")
    if image.dtype != np.uint8:  # 16-bit images: keep the top 8 bits
        image = (image / 257.0).astype(np.uint8) if image.dtype == np.uint16 else None
        if image is None:
            raise DataError(path, "unsupported image depth (8- or 16-bit images only)")
    return image


def paired_frames(left: FrameSource, right: FrameSource) -> Iterator[tuple[SourceFrame, SourceFrame]]:
    """The frames of a stereo pair's two sources, matched by file name (folders holding the same names),
    else by sorted file name (folders with as many images), else by frame index (videos, cameras)."""
    if isinstance(left, FolderSource) and isinstance(right, FolderSource):
        names_l = [p.name for p in left.files]
        names_r = [p.name for p in right.files]
        if names_l != names_r and len(names_l) != len(names_r):
            common = sorted(set(names_l) & set(names_r))
            if not common:
                raise DataError(right.source, f"holds {len(names_r)} images and {left.source} {len(names_l)}, with "
                                              "no file names in common: cannot pair them")
            log.warning("pairing the %d images with the same name in %s and %s", len(common), left.source,
                        right.source)
            keep_l, keep_r = set(common), set(common)
            left.files = [p for p in left.files if p.name in keep_l]
            right.files = [p for p in right.files if p.name in keep_r]
    it_r = iter(right)
    for fl in left:
        fr = next(it_r, None)
        if fr is None:
            log.warning("%s ended before %s; pairs stop at frame %d", right.source, left.source, fl.index)
            return
        yield fl, fr
