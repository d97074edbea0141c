"""Pinhole camera with one of two lens-distortion models.

* ``model="pinhole"``: radial-tangential (plumb-bob, OpenCV order ``k1 k2 p1 p2 [k3]``).
* ``model="fisheye"``: equidistant (Kannala-Brandt, ``k1 k2 k3 k4``), OpenCV's
  ``cv2.fisheye`` convention: for a ray at angle ``theta = atan(r)`` from the
  optical axis (``r`` = radius of the normalised point ``(x/z, y/z)``),
  ``theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)``
  and the distorted normalised point is ``(theta_d / r) (x/z, y/z)``.

Pixel coordinates: ``(u, v)`` with the origin at the centre of the top-left
pixel (OpenCV's convention). Camera frame: x right, y down, z forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from slam.errors import DataError

MODELS = ("pinhole", "fisheye")
N_COEFFS = {"pinhole": 5, "fisheye": 4}  # distortion terms of each model
# names other tools use for our two distortion models (Kalibr/EuRoC, ROS, OpenCV)
RADTAN_NAMES = ("radtan", "radial-tangential", "plumb_bob", "plumb-bob")
EQUIDISTANT_NAMES = ("equidistant", "equi", "fisheye", "kannala-brandt")


@dataclass(frozen=True)
class PinholeCamera:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    # pinhole: k1, k2, p1, p2, k3; fisheye: k1, k2, k3, k4 (missing trailing terms are zero)
    dist: tuple[float, ...] = field(default=(0.0, 0.0, 0.0, 0.0, 0.0))
    model: str = "pinhole"  # "pinhole" (radial-tangential) or "fisheye" (equidistant)

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("fx", "fy", "cx", "cy"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.model not in MODELS:
            raise ValueError(f"camera model must be one of {MODELS}, got {self.model!r}")
        n = N_COEFFS[self.model]
        d = tuple(float(x) for x in self.dist)
        d = (d[:n] if not any(d[n:]) else d) + (0.0,) * max(0, n - len(d))  # surplus zero terms are dropped
        if len(d) != n:
            kind = "radial-tangential" if self.model == "pinhole" else "equidistant (fisheye)"
            raise ValueError(f"{kind} distortion takes at most {n} terms, got {len(self.dist)}")
        object.__setattr__(self, "dist", d)
        values = (self.fx, self.fy, self.cx, self.cy) + d
        if self.width <= 0 or self.height <= 0 or not (self.fx > 0 and self.fy > 0) or not np.all(np.isfinite(values)):
            raise ValueError(f"invalid camera (sizes and focal lengths must be positive, all values finite): {self}")

    # ------------------------------------------------------------------ basics
    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def is_fisheye(self) -> bool:
        return self.model == "fisheye"

    @property
    def has_distortion(self) -> bool:
        # an equidistant lens bends rays even with k = 0 (r_d = atan(r), not r)
        return self.is_fisheye or any(abs(x) > 0.0 for x in self.dist)

    def undistorted(self) -> "PinholeCamera":
        """The same intrinsics without distortion (the model of an undistorted image): a plain pinhole."""
        return replace(self, dist=(0.0,) * 5, model="pinhole")

    def scaled(self, factor: float) -> "PinholeCamera":
        """Camera of the image resized by ``factor`` (pixel-centre convention)."""
        return replace(
            self,
            width=int(round(self.width * factor)),
            height=int(round(self.height * factor)),
            fx=self.fx * factor,
            fy=self.fy * factor,
            cx=(self.cx + 0.5) * factor - 0.5,
            cy=(self.cy + 0.5) * factor - 0.5,
        )

    # --------------------------------------------------------------- distortion
    def distort_normalized(self, xn: np.ndarray) -> np.ndarray:
        """Apply the distortion to (N, 2) normalised image coordinates ``(x/z, y/z)``."""
        if self.is_fisheye:
            return self._distort_equidistant(np.asarray(xn, dtype=np.float64))
        if not self.has_distortion:  # a plain pinhole (e.g. the model of undistorted keypoints)
            return np.asarray(xn, dtype=np.float64)
        k1, k2, p1, p2, k3 = self.dist
        x, y = xn[..., 0], xn[..., 1]
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
        yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
        return np.stack([xd, yd], axis=-1)

    def undistort_normalized(self, xd: np.ndarray, iterations: int = 20) -> np.ndarray:
        """Invert :meth:`distort_normalized` by Gauss-Newton (vectorised, exact to ~1e-12 in range)."""
        xd = np.asarray(xd, dtype=np.float64)
        if not self.has_distortion:
            return xd.copy()
        if self.is_fisheye:
            return self._undistort_equidistant(xd, iterations)
        k1, k2, p1, p2, k3 = self.dist
        x = xd.copy()
        for _ in range(iterations):
            u, v = x[..., 0], x[..., 1]
            r2 = u * u + v * v
            radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
            drad = k1 + r2 * (2.0 * k2 + 3.0 * k3 * r2)  # d radial / d r2
            res = self.distort_normalized(x) - xd
            # Jacobian of the distortion map
            j00 = radial + 2.0 * u * u * drad + 2.0 * p1 * v + 6.0 * p2 * u
            j01 = 2.0 * u * v * drad + 2.0 * p1 * u + 2.0 * p2 * v
            j10 = 2.0 * u * v * drad + 2.0 * p1 * u + 2.0 * p2 * v
            j11 = radial + 2.0 * v * v * drad + 6.0 * p1 * v + 2.0 * p2 * u
            det = j00 * j11 - j01 * j10
            dx = (j11 * res[..., 0] - j01 * res[..., 1]) / det
            dy = (-j10 * res[..., 0] + j00 * res[..., 1]) / det
            x = x - np.stack([dx, dy], axis=-1)
            if np.max(np.abs(res), initial=0.0) < 1e-14:
                break
        return x

    def _theta_d(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Equidistant ``theta_d(theta)`` and its derivative (angles in radians)."""
        k1, k2, k3, k4 = self.dist
        t2 = theta * theta
        poly = 1.0 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4)))
        dpoly = 1.0 + t2 * (3.0 * k1 + t2 * (5.0 * k2 + t2 * (7.0 * k3 + t2 * 9.0 * k4)))
        return theta * poly, dpoly

    def _distort_equidistant(self, xn: np.ndarray) -> np.ndarray:
        r = np.hypot(xn[..., 0], xn[..., 1])
        theta_d, _ = self._theta_d(np.arctan(r))
        # theta_d / r -> 1 as r -> 0 (cv2.fisheye uses the same cut-off)
        scale = np.where(r > 1e-8, theta_d / np.where(r > 1e-8, r, 1.0), 1.0)
        return xn * scale[..., None]

    def _undistort_equidistant(self, xd: np.ndarray, iterations: int) -> np.ndarray:
        """Invert the equidistant model: Newton on ``theta_d(theta)``, then ``r = tan(theta)``."""
        theta_d = np.minimum(np.hypot(xd[..., 0], xd[..., 1]), np.pi / 2)
        theta = theta_d.copy()
        for _ in range(iterations):
            f, df = self._theta_d(theta)
            step = (f - theta_d) / np.where(np.abs(df) > 1e-12, df, 1e-12)
            theta = np.clip(theta - step, 0.0, np.pi / 2 - 1e-9)
            if np.max(np.abs(step), initial=0.0) < 1e-14:
                break
        scale = np.where(theta_d > 1e-8, np.tan(theta) / np.where(theta_d > 1e-8, theta_d, 1.0), 1.0)
        return xd * scale[..., None]

    # ---------------------------------------------------- project / unproject
    def pixel_to_normalized(self, uv: np.ndarray) -> np.ndarray:
        """(N, 2) distorted pixels -> (N, 2) undistorted normalised coordinates."""
        uv = np.asarray(uv, dtype=np.float64)
        xd = np.stack([(uv[..., 0] - self.cx) / self.fx, (uv[..., 1] - self.cy) / self.fy], axis=-1)
        return self.undistort_normalized(xd)

    def normalized_to_pixel(self, xn: np.ndarray) -> np.ndarray:
        """(N, 2) undistorted normalised coordinates -> (N, 2) distorted pixels."""
        xd = self.distort_normalized(np.asarray(xn, dtype=np.float64))
        return np.stack([self.fx * xd[..., 0] + self.cx, self.fy * xd[..., 1] + self.cy], axis=-1)

    def project(self, points_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project (N, 3) camera-frame points; returns (N, 2) pixels and a mask of points in front (z > 0)."""
        p = np.asarray(points_c, dtype=np.float64)
        z = p[..., 2]
        in_front = z > 1e-9
        zs = np.where(in_front, z, 1.0)
        xn = np.stack([p[..., 0] / zs, p[..., 1] / zs], axis=-1)
        return self.normalized_to_pixel(xn), in_front

    def unproject(self, uv: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """(N, 2) distorted pixels with z-depth (metres) -> (N, 3) camera-frame points."""
        xn = self.pixel_to_normalized(uv)
        d = np.asarray(depth, dtype=np.float64)
        return np.stack([xn[..., 0] * d, xn[..., 1] * d, d], axis=-1)

    def in_image(self, uv: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Mask of pixels inside the image (pixel centres from 0 to size - 1) with a margin."""
        uv = np.asarray(uv)
        return (
            (uv[..., 0] >= -0.5 + margin)
            & (uv[..., 0] <= self.width - 0.5 - margin)
            & (uv[..., 1] >= -0.5 + margin)
            & (uv[..., 1] <= self.height - 0.5 - margin)
        )

    def undistort_points(self, uv: np.ndarray) -> np.ndarray:
        """Distorted pixels -> pixels of the ideal (undistorted) camera with the same K."""
        xn = self.pixel_to_normalized(uv)
        return np.stack([self.fx * xn[..., 0] + self.cx, self.fy * xn[..., 1] + self.cy], axis=-1)

    def undistort_maps(self) -> tuple[np.ndarray, np.ndarray]:
        """``cv2.remap`` maps that resample a distorted image into the undistorted camera (same K)."""
        u, v = np.meshgrid(np.arange(self.width, dtype=np.float64), np.arange(self.height, dtype=np.float64))
        xn = np.stack([(u - self.cx) / self.fx, (v - self.cy) / self.fy], axis=-1)
        src = self.normalized_to_pixel(xn)
        return src[..., 0].astype(np.float32), src[..., 1].astype(np.float32)

    def undistort_image(self, image: np.ndarray, interpolation: int | None = None) -> np.ndarray:
        """Resample ``image`` so it follows :meth:`undistorted` (nearest-neighbour for depth maps)."""
        import cv2

        if not self.has_distortion:
            return image
        if interpolation is None:
            interpolation = cv2.INTER_NEAREST if image.dtype == np.float32 and image.ndim == 2 else cv2.INTER_LINEAR
        mx, my = self._maps()
        return cv2.remap(image, mx, my, interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def _maps(self) -> tuple[np.ndarray, np.ndarray]:
        maps = self.__dict__.get("_cached_maps")
        if maps is None:
            maps = self.undistort_maps()
            object.__setattr__(self, "_cached_maps", maps)
        return maps

    # ------------------------------------------------------------------- files
    def to_dict(self) -> dict:
        """The project's camera-file mapping (``model``, size, ``fx fy cx cy`` in pixels, ``distortion``)."""
        return {
            "model": self.model,
            "width": int(self.width),
            "height": int(self.height),
            "fx": float(self.fx),
            "fy": float(self.fy),
            "cx": float(self.cx),
            "cy": float(self.cy),
            "distortion_model": "equidistant" if self.is_fisheye else "radtan",
            "distortion": [float(x) for x in self.dist],
        }

    @classmethod
    def from_dict(cls, d: dict, source: str | Path | None = None) -> "PinholeCamera":
        """Read :meth:`to_dict`'s mapping; other keys (``rms``, a calibration report, ...) are ignored.

        ``model: pinhole`` with ``distortion_model: radtan`` (or none) is radial-tangential;
        ``model: fisheye``, or ``pinhole`` with ``distortion_model: equidistant``, is equidistant.
        """
        try:
            model = model_from_names(d.get("model", "pinhole"), d.get("distortion_model"), source)
            return cls(
                width=int(d["width"]),
                height=int(d["height"]),
                fx=float(d["fx"]),
                fy=float(d["fy"]),
                cx=float(d["cx"]),
                cy=float(d["cy"]),
                dist=tuple(float(x) for x in d.get("distortion", ()) or ()),
                model=model,
            )
        except KeyError as e:
            raise DataError(source, f"camera file lacks the key {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            if isinstance(e, DataError):
                raise
            raise DataError(source, f"invalid camera: {e}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "PinholeCamera":
        import yaml

        path = Path(path)
        try:
            d = yaml.safe_load(path.read_text())
        except OSError as e:
            raise DataError(path, f"cannot read camera file: {e.strerror}") from None
        except UnicodeDecodeError:
            raise DataError(path, "camera file is not UTF-8 text") from None
        except yaml.YAMLError as e:
            raise DataError(path, f"not valid YAML: {e}") from None
        if not isinstance(d, dict):
            raise DataError(path, "camera file must be a YAML mapping")
        return cls.from_dict(d, source=path)

    def to_yaml(self, path: str | Path) -> None:
        import yaml

        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def model_from_names(model: object, distortion_model: object, source: str | Path | None = None) -> str:
    """Our model name (``pinhole``/``fisheye``) for a camera model and distortion model as files spell them."""
    m = str(model).lower()
    dm = None if distortion_model is None else str(distortion_model).lower()
    if m in ("fisheye", "equidistant") and (dm is None or dm in EQUIDISTANT_NAMES):
        return "fisheye"
    if m == "pinhole":
        if dm is None or dm in RADTAN_NAMES:
            return "pinhole"
        if dm in EQUIDISTANT_NAMES:
            return "fisheye"
    raise DataError(source, f"camera model {model!r} with distortion model {distortion_model!r} is not supported "
                            "(pinhole with radtan, or fisheye / pinhole with equidistant)")
