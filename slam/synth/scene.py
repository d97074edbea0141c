"""Scene geometry: a closed room with boxes, as textured planar rectangles ("quads").

World frame: z up, the floor at z = 0, the room centred on the origin in x and y.
The default room (:data:`DEFAULT_LAYOUT`) is one fixed 8 x 6 x 3 m box with
:data:`BOXES`; :func:`make_layout` varies it per seed (room size, corner
blocks that make it L-shaped, partitions, boxes, tables and shelves) and can
add a repeated-texture distractor (two panels sharing one texture).
Each quad has an origin corner ``O`` and two orthogonal edge vectors ``U``
(width) and ``V`` (height); its visible side is ``normal``. Texture
coordinates of a point ``p`` on the quad are ``((p - O).U/|U|, (p - O).V/|V|)``
in metres.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    kind: str  # "floor", "ceiling", "wall", "box" or "panel": picks the texture palette
    share: int = -1  # quads with the same share id >= 0 get one texture (the first one's); -1: own texture

    @property
    def size_m(self) -> tuple[float, float]:
        return float(np.linalg.norm(self.U)), float(np.linalg.norm(self.V))

    def triangles(self) -> tuple[np.ndarray, np.ndarray]:
        """(4, 3) vertices and (2, 3) triangles."""
        v = np.stack([self.O, self.O + self.U, self.O + self.U + self.V, self.O + self.V])
        return v, np.array([[0, 1, 2], [0, 2, 3]])


def _quad(O, U, V, normal, kind, share: int = -1) -> Quad:
    return Quad(*(np.asarray(x, dtype=np.float64) for x in (O, U, V, normal)), kind=kind, share=share)


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


PANEL_SIZE = (1.6, 1.1)  # width, height of the distractor panels [m]
Box = tuple[float, float, float, float, float, float]  # (centre x, centre y, size x, size y, size z, base z) [m]


@dataclass(frozen=True)
class Panel:
    """A flat rectangle ``margin`` in front of a wall (a poster): ``wall`` is "+x", "-x", "+y" or "-y" (the wall
    at that side of the room), ``along`` the centre along the wall [m], ``z`` the centre height [m], ``size``
    (width, height) [m]; panels with the same ``share`` id show the same texture."""

    wall: str
    along: float
    z: float
    size: tuple[float, float]
    share: int = 0
    margin: float = 0.015

    def quad(self, room: tuple[float, float, float]) -> Quad:
        hx, hy = room[0] / 2, room[1] / 2
        w, h = self.size
        up = (0.0, 0.0, h)
        if self.wall == "+x":  # faces -x; U runs along -y so the texture reads left to right from inside
            return _quad((hx - self.margin, self.along + w / 2, self.z - h / 2), (0, -w, 0), up, (-1, 0, 0),
                         "panel", self.share)
        if self.wall == "-x":
            return _quad((-hx + self.margin, self.along - w / 2, self.z - h / 2), (0, w, 0), up, (1, 0, 0),
                         "panel", self.share)
        if self.wall == "+y":
            return _quad((self.along - w / 2, hy - self.margin, self.z - h / 2), (w, 0, 0), up, (0, -1, 0),
                         "panel", self.share)
        if self.wall == "-y":
            return _quad((self.along + w / 2, -hy + self.margin, self.z - h / 2), (-w, 0, 0), up, (0, 1, 0),
                         "panel", self.share)
        raise ValueError(f"panel wall must be +x, -x, +y or -y, got {self.wall!r}")

    def as_box(self, room: tuple[float, float, float]) -> Box:
        """The panel as a zero-thickness box (for :func:`clearance`)."""
        q = self.quad(room)
        lo = np.minimum(q.O, q.O + q.U + q.V)
        hi = np.maximum(q.O, q.O + q.U + q.V)
        c, s = (lo + hi) / 2, hi - lo
        return (float(c[0]), float(c[1]), float(s[0]), float(s[1]), float(s[2]), float(lo[2]))


@dataclass(frozen=True)
class RoomLayout:
    """A room: its size (x, y, z) [m], centred on the origin, the boxes in it and the wall panels."""

    size: tuple[float, float, float] = ROOM_SIZE
    boxes: tuple[Box, ...] = BOXES
    panels: tuple[Panel, ...] = field(default_factory=tuple)

    def quads(self) -> list[Quad]:
        quads = room_quads(self.size)
        for b in self.boxes:
            quads += box_quads(*b)
        quads += [p.quad(self.size) for p in self.panels]
        return quads

    def solids(self) -> list[Box]:
        """Every box and panel as a box (for :func:`clearance`)."""
        return list(self.boxes) + [p.as_box(self.size) for p in self.panels]


DEFAULT_LAYOUT = RoomLayout()


def scene_quads(layout: RoomLayout | None = None) -> list[Quad]:
    """All quads of the room and its boxes (the default room when ``layout`` is None)."""
    return (layout or DEFAULT_LAYOUT).quads()


def _box_sdf(p: np.ndarray, box: Box) -> np.ndarray:
    cx, cy, sx, sy, sz, z0 = box
    c = np.array([cx, cy, z0 + sz / 2])
    half = np.array([sx, sy, sz]) / 2
    q = np.abs(p - c) - half  # signed distance to an axis-aligned box
    outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
    inside = np.minimum(np.max(q, axis=1), 0.0)
    return outside + inside


def clearance(points_w: np.ndarray, layout: RoomLayout | tuple[float, float, float] | None = None) -> np.ndarray:
    """(N,) distance [m] from each world point to the nearest surface (walls, floor, ceiling, boxes, panels).

    Negative inside a box or outside the room. ``layout``: the room (default: :data:`DEFAULT_LAYOUT`); a bare
    (x, y, z) size means the default boxes in a room of that size.
    """
    if layout is None:
        layout = DEFAULT_LAYOUT
    elif not isinstance(layout, RoomLayout):
        layout = RoomLayout(size=tuple(layout))
    p = np.asarray(points_w, dtype=np.float64).reshape(-1, 3)
    hx, hy, h = layout.size[0] / 2, layout.size[1] / 2, layout.size[2]
    d = np.min(np.stack([hx - np.abs(p[:, 0]), hy - np.abs(p[:, 1]), p[:, 2], h - p[:, 2]], -1), axis=1)
    for box in layout.solids():
        d = np.minimum(d, _box_sdf(p, box))
    return d


# ----------------------------------------------------------------- per-seed variety
def _ellipse_points(rx: float, ry: float, n: int = 180) -> np.ndarray:
    a = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return np.stack([rx * np.cos(a), ry * np.sin(a)], -1)


def _rect_dist_2d(pts: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    q = np.abs(pts - np.array([cx, cy])) - np.array([sx, sy]) / 2
    return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(1), 0.0)


def _clear_of_path(cx: float, cy: float, sx: float, sy: float, path: np.ndarray, keepout: tuple[float, float],
                   margin: float) -> bool:
    """The footprint is outside the keep-out ellipse and at least ``margin`` from its outline."""
    outside = (cx / keepout[0]) ** 2 + (cy / keepout[1]) ** 2 > 1.0
    return bool(outside and _rect_dist_2d(path, cx, cy, sx, sy).min() >= margin)


def make_layout(seed: int, variety: bool = True, distractor: bool = False,
                keepout: tuple[float, float] = (1.7, 1.1), margin: float = 0.8) -> RoomLayout:
    """The room of ``seed``: with ``variety`` a random size, 0-2 corner blocks (an L- or T-shaped floor plan),
    0-2 partitions from the walls, and boxes, tables and shelves; otherwise the default room. Nothing comes
    within ``margin`` [m] (in x, y) of the ellipse with semi-axes ``keepout`` [m] around the centre, nor inside
    it, so a trajectory on or inside that ellipse keeps its clearance. With ``distractor`` two identical
    1.6 x 1.1 m panels hang on opposite walls (the same texture at two places: a place descriptor's trap), and
    no box stands in front of them.
    """
    rng = np.random.default_rng([int(seed), 5])
    if not variety:
        size, boxes = ROOM_SIZE, list(BOXES)
    else:
        need_x, need_y = 2 * (keepout[0] + margin + 0.4), 2 * (keepout[1] + margin + 0.4)
        size = (float(rng.uniform(need_x, need_x + 4.0)), float(rng.uniform(need_y, need_y + 3.0)),
                float(rng.uniform(2.4, 3.4)))
        boxes = _furnish(rng, size, keepout, margin)
    panels: list[Panel] = []
    if distractor:
        hx, hy = size[0] / 2, size[1] / 2
        walls = ("+y", "-y") if rng.random() < 0.5 or not variety else ("+x", "-x")
        half_len = hx if walls[0].endswith("y") else hy
        along = float(rng.uniform(-0.3, 0.3) * half_len)
        pw, ph = PANEL_SIZE
        z = min(1.45, size[2] - ph / 2 - 0.1)
        panels = [Panel(walls[0], along, z, (pw, ph), share=0), Panel(walls[1], -along, z, (pw, ph), share=0)]
        # nothing may stand between a panel and the room: drop boxes in front of either
        keep = []
        for b in boxes:
            cx, cy, sx, sy = b[:4]
            blocked = False
            for pn in panels:
                pb = pn.as_box(size)
                px, py = pb[0], pb[1]
                if pn.wall.endswith("y"):
                    blocked |= abs(cx - px) < (sx + pw) / 2 + 0.2 and abs(cy - py) < sy / 2 + 1.2
                else:
                    blocked |= abs(cy - py) < (sy + pw) / 2 + 0.2 and abs(cx - px) < sx / 2 + 1.2
            if not blocked:
                keep.append(b)
        boxes = keep
    return RoomLayout(size=tuple(size), boxes=tuple(boxes), panels=tuple(panels))


def _furnish(rng: np.random.Generator, size: tuple[float, float, float], keepout: tuple[float, float],
             margin: float) -> list[Box]:
    """Corner blocks, partitions, boxes, tables and shelves for a room of ``size``, clear of the keep-out."""
    hx, hy, h = size[0] / 2, size[1] / 2, size[2]
    path = _ellipse_points(*keepout)
    boxes: list[Box] = []
    footprints: list[tuple[float, float, float, float]] = []

    def free(cx: float, cy: float, sx: float, sy: float, wall_gap: float = 0.03) -> bool:
        if abs(cx) + sx / 2 > hx - wall_gap or abs(cy) + sy / 2 > hy - wall_gap:
            return False
        if not _clear_of_path(cx, cy, sx, sy, path, keepout, margin):
            return False
        return all(abs(cx - fx) > (sx + fsx) / 2 + 0.03 or abs(cy - fy) > (sy + fsy) / 2 + 0.03
                   for fx, fy, fsx, fsy in footprints)

    # corner blocks: full height, reaching 5 cm into the walls and above the ceiling (no face on a wall)
    for _ in range(int(rng.integers(0, 3))):
        sgn_x, sgn_y = rng.choice([-1.0, 1.0], 2)
        for _try in range(10):
            sx, sy = rng.uniform(0.6, 2.0), rng.uniform(0.6, 1.6)
            cx, cy = sgn_x * (hx - sx / 2 + 0.05), sgn_y * (hy - sy / 2 + 0.05)
            if _clear_of_path(cx, cy, sx, sy, path, keepout, margin) and all(
                    abs(cx - fx) > (sx + fsx) / 2 + 0.03 or abs(cy - fy) > (sy + fsy) / 2 + 0.03
                    for fx, fy, fsx, fsy in footprints):
                boxes.append((float(cx), float(cy), float(sx), float(sy), h + 0.05, 0.0))
                footprints.append((cx, cy, sx, sy))
                break
    # partitions: 10 cm thick walls from a side wall into the room, full or 2 m high
    for _ in range(int(rng.integers(0, 3))):
        for _try in range(10):
            along_x = rng.random() < 0.5  # partition on a +-y wall, running along y
            length = rng.uniform(0.5, 1.5)
            zt = h + 0.05 if rng.random() < 0.5 else 2.0
            if along_x:
                cx, sx, sy = rng.uniform(-hx + 0.5, hx - 0.5), 0.1, length
                cy = rng.choice([-1.0, 1.0]) * (hy - length / 2 + 0.05)
            else:
                cy, sx, sy = rng.uniform(-hy + 0.5, hy - 0.5), length, 0.1
                cx = rng.choice([-1.0, 1.0]) * (hx - length / 2 + 0.05)
            if _clear_of_path(cx, cy, sx, sy, path, keepout, margin) and all(
                    abs(cx - fx) > (sx + fsx) / 2 + 0.03 or abs(cy - fy) > (sy + fsy) / 2 + 0.03
                    for fx, fy, fsx, fsy in footprints):
                boxes.append((float(cx), float(cy), float(sx), float(sy), float(zt), 0.0))
                footprints.append((cx, cy, sx, sy))
                break
    # furniture
    for _ in range(int(rng.integers(6, 16))):
        kind = rng.choice(["box", "box", "table", "shelf"])
        for _try in range(20):
            cx, cy = rng.uniform(-hx, hx), rng.uniform(-hy, hy)
            if kind == "box":
                sx, sy, sz = rng.uniform(0.3, 1.2), rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.8)
                if not free(cx, cy, sx, sy):
                    continue
                boxes.append((float(cx), float(cy), float(sx), float(sy), float(min(sz, h - 0.3)), 0.0))
                if rng.random() < 0.3:  # a smaller box on top
                    tx, ty = rng.uniform(0.2, 0.8) * sx, rng.uniform(0.2, 0.8) * sy
                    boxes.append((float(cx + rng.uniform(-0.1, 0.1) * sx), float(cy + rng.uniform(-0.1, 0.1) * sy),
                                  float(tx), float(ty), float(rng.uniform(0.2, 0.5)), float(min(sz, h - 0.3))))
            elif kind == "table":
                sx, sy = rng.uniform(0.8, 1.6), rng.uniform(0.6, 1.0)
                if rng.random() < 0.5:
                    sx, sy = sy, sx
                top = rng.uniform(0.68, 0.78)
                if not free(cx, cy, sx, sy):
                    continue
                boxes.append((float(cx), float(cy), float(sx), float(sy), 0.04, float(top)))
                for ex in (-1, 1):
                    for ey in (-1, 1):
                        boxes.append((float(cx + ex * (sx / 2 - 0.06)), float(cy + ey * (sy / 2 - 0.06)),
                                      0.05, 0.05, float(top), 0.0))
            else:  # shelf against nothing in particular: two sides, a back, 3-5 boards
                w, d, sh = rng.uniform(0.8, 1.6), rng.uniform(0.3, 0.45), min(rng.uniform(1.3, 2.1), h - 0.2)
                facing_x = rng.random() < 0.5
                sx, sy = (d, w) if facing_x else (w, d)
                if not free(cx, cy, sx, sy):
                    continue
                t = 0.03
                if facing_x:  # open towards the room centre along x
                    back_x = cx + np.sign(cx) * (d / 2 - t / 2)
                    boxes.append((float(back_x), float(cy), t, float(w), float(sh), 0.0))
                    for e in (-1, 1):
                        boxes.append((float(cx - np.sign(cx) * t / 2), float(cy + e * (w / 2 - t / 2)),
                                      float(d - t), t, float(sh), 0.0))
                    inner = (float(cx - np.sign(cx) * t / 2), float(cy), float(d - t), float(w - 2 * t))
                else:
                    back_y = cy + np.sign(cy) * (d / 2 - t / 2)
                    boxes.append((float(cx), float(back_y), float(w), t, float(sh), 0.0))
                    for e in (-1, 1):
                        boxes.append((float(cx + e * (w / 2 - t / 2)), float(cy - np.sign(cy) * t / 2),
                                      t, float(d - t), float(sh), 0.0))
                    inner = (float(cx), float(cy - np.sign(cy) * t / 2), float(w - 2 * t), float(d - t))
                n_boards = int(rng.integers(3, 6))
                for z in np.linspace(0.1, sh - 0.05, n_boards):
                    boxes.append((inner[0], inner[1], inner[2] - 0.004, inner[3] - 0.004, 0.025, float(z)))
            footprints.append((cx, cy, sx, sy))
            break
    return boxes
