"""Image files -> the arrays every reader delivers.

Colour: H x W x 3 uint8 RGB (grayscale is replicated to three channels,
OpenCV's BGR is swapped). Depth: H x W float32 metres, 0 = no measurement.
Unreadable, corrupt or truncated files, and images whose size is not the
camera's (:func:`check_size`), raise :class:`~slam.errors.CorruptFrameError`:
the frame is skipped with that reason.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from slam.errors import CorruptFrameError

TUM_DEPTH_SCALE = 5000.0  # 16-bit depth units per metre (TUM RGB-D convention)


def _decode(path: Path) -> np.ndarray:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorruptFrameError(path, "image file is missing") from None
    except OSError as e:
        raise CorruptFrameError(path, f"cannot read image: {e.strerror}") from None
    if not data:
        raise CorruptFrameError(path, "image file is empty")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise CorruptFrameError(path, "cannot decode image (corrupt, truncated or not an image)")
    return img


def read_rgb(path: str | Path) -> np.ndarray:
    """Read a colour or grayscale image as H x W x 3 uint8 RGB."""
    path = Path(path)
    img = _decode(path)
    if img.dtype == np.uint16:  # 16-bit intensity: keep the most significant byte
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise CorruptFrameError(path, f"unsupported image sample type {img.dtype}")
    if img.ndim == 2 or img.shape[2] == 1:
        return cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    raise CorruptFrameError(path, f"unsupported number of channels {img.shape[2]}")


def read_depth(path: str | Path, scale: float = TUM_DEPTH_SCALE) -> np.ndarray:
    """Read a 16-bit single-channel depth PNG as float32 metres (``value / scale``; 0 stays 0 = invalid)."""
    path = Path(path)
    img = _decode(path)
    if img.dtype != np.uint16 or img.ndim != 2:
        shape = "x".join(str(s) for s in img.shape)
        raise CorruptFrameError(path, f"depth must be a 16-bit single-channel image, found {img.dtype} {shape}")
    return img.astype(np.float32) / np.float32(scale)


def check_size(path: str | Path, image: np.ndarray, width: int, height: int, what: str = "image") -> np.ndarray:
    """``image`` when it is ``width`` x ``height`` pixels (the camera's), else :class:`CorruptFrameError`
    naming ``path`` and both sizes (pixels read at the wrong size would not line up with the camera)."""
    h, w = image.shape[:2]
    if (w, h) != (int(width), int(height)):
        raise CorruptFrameError(path, f"{what} is {w}x{h} but the camera is {int(width)}x{int(height)}")
    return image


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image: read from the PNG header when possible, else by decoding."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError as e:
        raise CorruptFrameError(path, f"cannot read image: {e.strerror}") from None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        w, h = struct.unpack(">II", head[16:24])
        if w > 0 and h > 0:
            return int(w), int(h)
    img = _decode(path)
    return int(img.shape[1]), int(img.shape[0])
