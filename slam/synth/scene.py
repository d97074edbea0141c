"""Scene geometry: a closed room with boxes, as textured planar rectangles ("quads").

World frame: z up, the floor at z = 0, the room centred on the origin in x and y.
Each quad has an origin corner ``O`` and two orthogonal edge vectors ``U``
(width) and ``V`` (height); its visible side is ``normal``. Texture
coordinates of a point ``p`` on the quad are ``((p - O).U/|U|, (p - O).V/|V|)``
in metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROOM_SIZE = (8.0, 6.0, 3.0)  # x, y, z extent [m]

# Boxes: (centre x, centre y, size x, size y, size z, base z) [m]; stacked boxes sit on the ones below.
# Placed along the walls (2+ cm away, no coplanar faces), a few free-standing between the path and
# the walls for occlusion and depth variation, and one in the middle of the loop.
BOXES: tuple[tuple[float, float, float, float, float, float], ...] = (
    (3.45, -1.5, 0.9, 1.0, 0.9, 0.0),
    (3.5, -1.45, 0.6, 0.6, 0.5, 0.9),
    (3.6, 1.6, 0.6, 0.8, 1.6, 0.0),
    (3.5, 0.35, 0.7, 0.5, 0.45, 0.0),
    (-3.5, 0.5, 0.8, 1.4, 0.7, 0.0),
    (-3.45, 0.35, 0.5, 0.5, 0.45, 0.7),
    (-3.4, -2.3, 1.0, 1.0, 1.2, 0.0),
    (-3.3, 2.2, 1.2, 1.0, 0.55, 0.0),
    (0.8, 2.6, 1.2, 0.6, 0.8, 0.0),
    (0.7, 2.62, 0.5, 0.4, 0.4, 0.8),
    (-1.5, 2.55, 0.7, 0.7, 1.8, 0.0),
    (2.3, 2.5, 0.6, 0.8, 1.0, 0.0),
    (-0.5, -2.6, 1.4, 0.6, 1.0, 0.0),
    (2.0, -2.55, 0.6, 0.7, 0.5, 0.0),
    (-2.2, -2.6, 0.6, 0.6, 0.7, 0.0),
    (2.75, 0.3, 0.45, 0.45, 1.1, 0.0),
    (-2.75, -0.9, 0.6, 0.6, 0.8, 0.0),
    (0.5, -2.15, 0.5, 0.5, 0.9, 0.0),
    (-1.1, 2.0, 0.5, 0.4, 0.6, 0.0),
    (0.0, 0.0, 0.5, 0.5, 0.6, 0.0),
)


@dataclass(frozen=True)
class Quad:
    """A planar rectangle: corners ``O, O+U, O+U+V, O+V``; ``normal`` points to the visible side."""

    O: np.ndarray
    U: np.ndarray
    V: np.ndarray
    normal: np.ndarray
    kind: str  # "floor", "ceiling", "wall" or "box": picks the texture palette

    @property
    def size_m(self) -> tuple[float, float]:
        return float(np.linalg.norm(self.U)), float(np.linalg.norm(self.V))

    def triangles(self) -> tuple[np.ndarray, np.ndarray]:
        """(4, 3) vertices and (2, 3) triangles."""
        v = np.stack([self.O, self.O + self.U, self.O + self.U + self.V, self.O + self.V])
        return v, np.array([[0, 1, 2], [0, 2, 3]])


def _quad(O, U, V, normal, kind) -> Quad:
    return Quad(*(np.asarray(x, dtype=np.float64) for x in (O, U, V, normal)), kind=kind)


def room_quads(size: tuple[float, float, float] = ROOM_SIZE, overlap: float = 0.01) -> list[Quad]:
    """Floor, ceiling and four walls, normals pointing inward; faces overlap slightly so no ray leaks at corners."""
    hx, hy, h = size[0] / 2, size[1] / 2, size[2]
    e = overlap
    return [
        _quad((-hx - e, -hy - e, 0), (2 * hx + 2 * e, 0, 0), (0, 2 * hy + 2 * e, 0), (0, 0, 1), "floor"),
        _quad((-hx - e, hy + e, h), (2 * hx + 2 * e, 0, 0), (0, -2 * hy - 2 * e, 0), (0, 0, -1), "ceiling"),
        _quad((-hx - e, -hy, -e), (2 * hx + 2 * e, 0, 0), (0, 0, h + 2 * e), (0, 1, 0), "wall"),
        _quad((hx + e, hy, -e), (-2 * hx - 2 * e, 0, 0), (0, 0, h + 2 * e), (0, -1, 0), "wall"),
        _quad((hx, -hy - e, -e), (0, 2 * hy + 2 * e, 0), (0, 0, h + 2 * e), (-1, 0, 0), "wall"),
        _quad((-hx, hy + e, -e), (0, -2 * hy - 2 * e, 0), (0, 0, h + 2 * e), (1, 0, 0), "wall"),
    ]


def box_quads(cx: float, cy: float, sx: float, sy: float, sz: float, z0: float) -> list[Quad]:
    """The five visible faces of an axis-aligned box resting at height ``z0`` (no bottom face)."""
    x0, x1, y0, y1, z1 = cx - sx / 2, cx + sx / 2, cy - sy / 2, cy + sy / 2, z0 + sz
    return [
        _quad((x0, y0, z1), (sx, 0, 0), (0, sy, 0), (0, 0, 1), "box"),
        _quad((x0, y0, z0), (sx, 0, 0), (0, 0, sz), (0, -1, 0), "box"),
        _quad((x1, y1, z0), (-sx, 0, 0), (0, 0, sz), (0, 1, 0), "box"),
        _quad((x1, y0, z0), (0, sy, 0), (0, 0, sz), (1, 0, 0), "box"),
        _quad((x0, y1, z0), (0, -sy, 0), (0, 0, sz), (-1, 0, 0), "box"),
    ]


def scene_quads() -> list[Quad]:
    """All quads of the room and its boxes."""
    quads = room_quads()
    for b in BOXES:
        quads += box_quads(*b)
    return quads


def clearance(points_w: np.ndarray, size: tuple[float, float, float] = ROOM_SIZE) -> np.ndarray:
    """(N,) distance [m] from each world point to the nearest surface (walls, floor, ceiling, boxes).

    Negative inside a box or outside the room.
    """
    p = np.asarray(points_w, dtype=np.float64).reshape(-1, 3)
    hx, hy, h = size[0] / 2, size[1] / 2, size[2]
    d = np.min(np.stack([hx - np.abs(p[:, 0]), hy - np.abs(p[:, 1]), p[:, 2], h - p[:, 2]], -1), axis=1)
    for cx, cy, sx, sy, sz, z0 in BOXES:
        c = np.array([cx, cy, z0 + sz / 2])
        half = np.array([sx, sy, sz]) / 2
        q = np.abs(p - c) - half  # signed distance to an axis-aligned box
        outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
        inside = np.minimum(np.max(q, axis=1), 0.0)
        d = np.minimum(d, outside + inside)
    return d
