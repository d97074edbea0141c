"""Procedural textures for the scene quads, packed into one mip-mapped atlas with baked lighting.

Every quad gets its own non-repeating texture (seeded): multi-scale colour
noise under many random shapes (rectangles, discs, rings, lines, polygons,
text) of sizes from about 1 cm to 25 cm, then a fine grain on top so no
region is uniform. With ``families`` each quad instead draws one of several
texture families (:data:`FAMILIES`: the shapes above, stripes, bricks,
tiles, colour noise, soft blobs) at a random scale in a random palette.
Quads with the same ``share`` id get one texture (a repeated-texture
distractor). Lambertian shading from fixed point lights is baked into
the texels, so the rendered colour of a surface point does not depend on the
viewpoint (photometric consistency between frames).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from slam.synth.scene import Quad

log = logging.getLogger(__name__)

GUTTER = 24  # texels of reflected border around each quad texture (bilinear and mip sampling stay inside)
MIP_LEVELS = 4  # level k is the atlas downsampled by 2^k (cv2.pyrDown)
ATLAS_WIDTH = 4096
LIGHTS_W = np.array([[-2.0, -0.5, 2.5], [2.0, 0.5, 2.5], [0.0, 0.0, 1.6]])  # point lights [m]
LIGHT_GAINS = np.array([0.5, 0.5, 0.2])
AMBIENT = 0.5

# Base colours (RGB) per surface kind; each quad picks one and jitters it.
PALETTES: dict[str, list[tuple[int, int, int]]] = {
    "floor": [(150, 105, 70), (120, 90, 60), (170, 130, 90), (110, 110, 105)],
    "wall": [(215, 205, 180), (180, 200, 215), (200, 215, 185), (225, 195, 185), (190, 185, 210)],
    "ceiling": [(225, 225, 220), (210, 215, 220)],
    "panel": [(230, 230, 225), (40, 40, 45), (200, 180, 120)],
    "box": [(200, 70, 50), (60, 120, 190), (70, 160, 80), (210, 170, 60), (140, 80, 160), (90, 90, 95), (190, 120, 60)],
}
_TEXT_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789#%&@"
_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_PLAIN)


def _random_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3) RGB colours, each either dark or bright (high contrast against mid-tone backgrounds)."""
    hsv = np.empty((1, n, 3), np.uint8)
    hsv[0, :, 0] = rng.uniform(0, 180, n)
    hsv[0, :, 1] = rng.uniform(0.1, 1.0, n) * 255
    dark = rng.random(n) < 0.5
    hsv[0, :, 2] = np.where(dark, rng.uniform(0.05, 0.35, n), rng.uniform(0.7, 1.0, n)) * 255
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0].astype(int)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell_px: float, channels: int) -> np.ndarray:
    """Band-limited noise (std ~1): a random grid of ``cell_px`` spacing upsampled bicubically."""
    gh, gw = max(2, math.ceil(h / cell_px) + 1), max(2, math.ceil(w / cell_px) + 1)
    grid = rng.standard_normal((gh, gw, channels), dtype=np.float32)
    up = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return up.reshape(h, w, channels)


def _draw_shapes(img: np.ndarray, rng: np.random.Generator, sizes_px: np.ndarray) -> None:
    """Draw one random shape per entry of ``sizes_px`` (diameter in texels), in that order."""
    h, w = img.shape[:2]
    n = len(sizes_px)
    if n == 0:
        return
    # all random parameters drawn in bulk (fast, and the stream order stays fixed)
    cols = _random_colours(rng, n)
    cols2 = _random_colours(rng, n)
    kinds = rng.integers(0, 7, n)
    xs = rng.uniform(-0.1, 1.0, n)
    ys = rng.uniform(-0.1, 1.0, n)
    ang = rng.uniform(0, np.pi, n)
    u1 = rng.uniform(0, 1, n)
    ints = rng.integers(0, 1 << 30, (n, 3))
    poly_ang = np.sort(rng.uniform(0, 2 * np.pi, (n, 10)), axis=1)
    poly_rad = rng.uniform(0.4, 1.0, (n, 10))
    for i in range(n):
        size = float(sizes_px[i])
        r = max(2, int(size / 2))
        x = int(xs[i] * w if xs[i] >= 0 else xs[i] * size)
        y = int(ys[i] * h if ys[i] >= 0 else ys[i] * size)
        col = tuple(int(c) for c in cols[i])
        k = kinds[i]
        if k == 0:  # rotated filled rectangle
            rect = ((float(x), float(y)), (2.0 * r, 2.0 * r * (0.3 + 0.7 * u1[i])), float(np.rad2deg(ang[i])))
            box = cv2.boxPoints(rect)
            cv2.fillPoly(img, [np.round(box).astype(np.int32)], col, cv2.LINE_AA)
        elif k == 1:  # disc
            cv2.circle(img, (x, y), r, col, -1, cv2.LINE_AA)
        elif k == 2:  # ring
            cv2.circle(img, (x, y), r, col, max(1, int(r * (0.15 + 0.25 * u1[i]))), cv2.LINE_AA)
        elif k == 3:  # thick line segment
            dx, dy = int(2 * r * np.cos(ang[i])), int(2 * r * np.sin(ang[i]))
            cv2.line(img, (x - dx, y - dy), (x + dx, y + dy), col, max(1, int(r * (0.1 + 0.25 * u1[i]))), cv2.LINE_AA)
        elif k == 4:  # irregular star-shaped polygon ("blob")
            m = 5 + ints[i, 0] % 6
            a, rad = poly_ang[i, :m], r * poly_rad[i, :m]
            pts = np.stack([x + rad * np.cos(a), y + rad * np.sin(a)], -1)
            cv2.fillPoly(img, [np.round(pts).astype(np.int32)], col, cv2.LINE_AA)
        elif k == 5:  # text
            m = 1 + ints[i, 0] % 4
            text = "".join(_TEXT_CHARS[(ints[i, 1] >> (5 * j)) % len(_TEXT_CHARS)] for j in range(m))
            scale = max(0.3, size / 30.0)
            font = _FONTS[ints[i, 2] % len(_FONTS)]
            cv2.putText(img, text, (x, y), font, scale, col, max(1, int(scale * (1.0 + 1.5 * u1[i]))), cv2.LINE_AA)
        else:  # small checkerboard patch (strong corners)
            m = 2 + ints[i, 0] % 3
            c = max(2, (2 * r) // m)
            col2 = tuple(int(v) for v in cols2[i])
            for a in range(m):
                for b in range(m):
                    cv2.rectangle(img, (x + a * c, y + b * c), (x + (a + 1) * c - 1, y + (b + 1) * c - 1),
                                  col if (a + b) % 2 == 0 else col2, -1)


def quad_texture(quad: Quad, rng: np.random.Generator, texels_per_m: float, shape_density: float) -> np.ndarray:
    """(h, w, 3) uint8 RGB texture of ``quad`` (unlit), ``texels_per_m`` texels per metre along U and V."""
    wm, hm = quad.size_m
    w, h = max(4, math.ceil(wm * texels_per_m)), max(4, math.ceil(hm * texels_per_m))
    pal = PALETTES[quad.kind]
    base = np.asarray(pal[int(rng.integers(0, len(pal)))], dtype=np.float32) + rng.normal(0, 12, 3).astype(np.float32)
    img = base + 15.0 * _smooth_noise(rng, h, w, 0.25 * texels_per_m, 3)  # colour variation at ~25 cm
    img += 30.0 * _smooth_noise(rng, h, w, 0.12 * texels_per_m, 1)  # brightness variation at ~12 cm
    img += 25.0 * _smooth_noise(rng, h, w, 0.03 * texels_per_m, 1)  # mottling at ~3 cm
    img = np.clip(img, 0, 255).astype(np.uint8)
    n_shapes = int(rng.poisson(shape_density * wm * hm))
    # log-uniform sizes from 1 cm to 25 cm (but at least 3 texels); big ones first so small ones break them up
    sizes = np.sort(np.exp(rng.uniform(np.log(0.01), np.log(0.25), n_shapes)) * texels_per_m)[::-1]
    _draw_shapes(img, rng, np.maximum(sizes, 3.0))
    grain = 10.0 * _smooth_noise(rng, h, w, 2.0, 1) + 5.0 * rng.standard_normal((h, w, 1), dtype=np.float32)
    return np.clip(img.astype(np.float32) + grain, 0, 255).astype(np.uint8)


FAMILIES = ("shapes", "stripes", "bricks", "tiles", "noise", "blobs")


def _palette(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3) float32 RGB colours around one random hue (harmonious, varied in value)."""
    hsv = np.empty((1, n, 3), np.uint8)
    hue = rng.uniform(0, 180)
    hsv[0, :, 0] = (hue + rng.normal(0, 12, n)) % 180
    hsv[0, :, 1] = rng.uniform(0.1, 0.8) * 255 * rng.uniform(0.7, 1.0, n)
    hsv[0, :, 2] = rng.uniform(0.25, 0.95, n) * 255
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0].astype(np.float32)


def family_texture(family: str, h: int, w: int, rng: np.random.Generator, texels_per_m: float) -> np.ndarray:
    """(h, w, 3) float32 RGB texture of one procedural ``family`` (not "shapes") at a random scale [0..255]."""
    tpm = texels_per_m
    cols = _palette(rng, 4)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if family == "stripes":
        period = rng.uniform(0.04, 0.4) * tpm  # 4 to 40 cm
        ang = rng.choice([0.0, np.pi / 2, rng.uniform(0, np.pi)])
        t = (xx * np.cos(ang) + yy * np.sin(ang)) / period
        duty = rng.uniform(0.2, 0.8)
        band = (t % 1.0 < duty).astype(np.float32)
        img = cols[0] * band[..., None] + cols[1] * (1 - band[..., None])
        if rng.random() < 0.5:  # every third band in an accent colour
            accent = ((np.floor(t) % 3) == 0) & (band > 0)
            img = np.where(accent[..., None], cols[2], img)
    elif family in ("bricks", "tiles"):
        if family == "bricks":
            bw, bh = rng.uniform(0.15, 0.35) * tpm, rng.uniform(0.05, 0.12) * tpm
        else:
            bw = rng.uniform(0.08, 0.6) * tpm
            bh = bw * rng.choice([1.0, 1.0, 0.5, 2.0])
        gap = max(1.0, rng.uniform(0.005, 0.02) * tpm)
        row = np.floor(yy / bh)
        shift = (row % 2) * 0.5 * bw if family == "bricks" else 0.0
        col = np.floor((xx + shift) / bw)
        fx, fy = (xx + shift) - col * bw, yy - row * bh
        mortar = (fx < gap) | (fy < gap)
        n_cell = (int(np.ceil(h / bh)) + 2) * (int(np.ceil(w / bw)) + 3)
        jitter = rng.normal(0, 14, (n_cell, 3)).astype(np.float32)
        cid = ((row.astype(np.int64) * (int(np.ceil(w / bw)) + 3) + col.astype(np.int64) + 1) % n_cell)
        checker = ((row + col) % 2).astype(np.float32)[..., None] if family == "tiles" and rng.random() < 0.4 else 0
        img = cols[0] + jitter[cid] + (cols[1] - cols[0]) * checker
        img = np.where(mortar[..., None], cols[2], img)
    elif family == "noise":
        a = _smooth_noise(rng, h, w, rng.uniform(0.02, 0.3) * tpm, 1)
        b = _smooth_noise(rng, h, w, rng.uniform(0.005, 0.05) * tpm, 1)
        m = np.clip(0.5 + 0.35 * a + 0.2 * b, 0, 1)
        img = cols[0] * m + cols[1] * (1 - m)
    elif family == "blobs":
        img = np.broadcast_to(cols[0], (h, w, 3)).copy()
        r_m = rng.uniform(0.03, 0.25)
        n = int(np.clip(rng.poisson(w * h / (tpm * tpm) / (r_m * r_m) * 0.6), 1, 4000))
        for _ in range(n):
            c = tuple(float(v) for v in cols[1 + int(rng.integers(0, 3))] + rng.normal(0, 10, 3))
            r = max(2, int(rng.uniform(0.5, 1.5) * r_m * tpm))
            cv2.circle(img, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), r, c, -1, cv2.LINE_AA)
        img = cv2.GaussianBlur(img, (0, 0), max(0.5, rng.uniform(0.0, 0.3) * r_m * tpm))
    else:
        raise ValueError(f"unknown texture family {family!r}; choose one of {', '.join(FAMILIES)}")
    return np.asarray(img, np.float32)


def varied_texture(quad: Quad, rng: np.random.Generator, texels_per_m: float, shape_density: float) -> np.ndarray:
    """(h, w, 3) uint8 RGB texture of ``quad`` (unlit) from a random family of :data:`FAMILIES`; a panel
    always gets the dense "shapes" family (a distinctive poster)."""
    family = "shapes" if quad.kind == "panel" else FAMILIES[int(rng.integers(0, len(FAMILIES)))]
    if family == "shapes":
        return quad_texture(quad, rng, texels_per_m, shape_density * float(rng.uniform(0.3, 1.5)))
    wm, hm = quad.size_m
    w, h = max(4, math.ceil(wm * texels_per_m)), max(4, math.ceil(hm * texels_per_m))
    img = family_texture(family, h, w, rng, texels_per_m)
    img = img + 12.0 * _smooth_noise(rng, h, w, 0.2 * texels_per_m, 1)  # large-scale dirt
    img = np.clip(img, 0, 255).astype(np.uint8)
    n = int(rng.poisson(0.1 * shape_density * wm * hm)) if rng.random() < 0.4 else 0
    if n > 0:  # a few marks on top
        sizes = np.sort(np.exp(rng.uniform(np.log(0.02), np.log(0.25), n)) * texels_per_m)[::-1]
        _draw_shapes(img, rng, np.maximum(sizes, 3.0))
    grain = 6.0 * _smooth_noise(rng, h, w, 2.0, 1) + 4.0 * rng.standard_normal((h, w, 1), dtype=np.float32)
    return np.clip(img.astype(np.float32) + grain, 0, 255).astype(np.uint8)


def shading(points_w: np.ndarray, normal_w: np.ndarray) -> np.ndarray:
    """Lambertian irradiance factor in [AMBIENT, 1] at world points with a common normal (view-independent)."""
    shade = np.full(points_w.shape[:-1], AMBIENT, dtype=np.float64)
    for L, gain in zip(LIGHTS_W, LIGHT_GAINS):
        d = L - points_w
        dist = np.linalg.norm(d, axis=-1)
        cos = np.maximum(d @ normal_w / np.maximum(dist, 1e-9), 0.0)
        shade += gain * cos / (1.0 + 0.04 * dist**2)
    return np.minimum(shade, 1.0)


def _lit(tex: np.ndarray, quad: Quad, texels_per_m: float) -> np.ndarray:
    h, w = tex.shape[:2]
    u_hat = quad.U / np.linalg.norm(quad.U)
    v_hat = quad.V / np.linalg.norm(quad.V)
    # shading is smooth, so evaluate it on a coarse grid (every 4 texels) and upsample
    step = 4
    s = (np.arange(0, w + step, step) + 0.5) / texels_per_m
    r = (np.arange(0, h + step, step) + 0.5) / texels_per_m
    P = quad.O + s[None, :, None] * u_hat + r[:, None, None] * v_hat
    sh = shading(P, quad.normal).astype(np.float32)
    sh = cv2.resize(sh, (sh.shape[1] * step, sh.shape[0] * step), interpolation=cv2.INTER_LINEAR)[:h, :w]
    return np.clip(tex.astype(np.float32) * sh[..., None], 0, 255).astype(np.uint8)


@dataclass
class TextureAtlas:
    """All quad textures in one image pyramid.

    ``levels[k]`` is level ``k`` (RGB uint8); ``offsets[q] = (x, y)`` is the atlas pixel of
    quad ``q``'s texel (0, 0) at level 0. A point at texture coordinates ``(s, t)`` metres
    is sampled at atlas pixel ``(x + s * tpm - 0.5, y + t * tpm - 0.5)`` (pixel-centre convention);
    at level ``k`` the coordinate is divided by ``2^k`` (pyrDown keeps pixel i at 2i).
    """

    levels: list[np.ndarray]
    offsets: np.ndarray  # (Q, 2) float64
    texels_per_m: float


def build_atlas(quads: list[Quad], rng: np.random.Generator, texels_per_m: float, shape_density: float,
                families: bool = False) -> TextureAtlas:
    """Generate, light and pack the textures of ``quads`` (shelf packing) and build the mip pyramid.

    ``families``: each quad's texture from a random family (:func:`varied_texture`), else the shapes texture.
    Quads with the same ``share`` id >= 0 reuse the first one's unlit texture (cropped or reflected to size).
    """
    tiles = []
    shared: dict[int, np.ndarray] = {}
    for q in quads:
        if q.share >= 0 and q.share in shared:
            raw = shared[q.share]
            wm, hm = q.size_m
            w, h = max(4, math.ceil(wm * texels_per_m)), max(4, math.ceil(hm * texels_per_m))
            if raw.shape[:2] != (h, w):
                raw = cv2.copyMakeBorder(raw, 0, max(0, h - raw.shape[0]), 0, max(0, w - raw.shape[1]),
                                         cv2.BORDER_REFLECT_101)[:h, :w]
        else:
            make = varied_texture if families else quad_texture
            raw = make(q, rng, texels_per_m, shape_density)
            if q.share >= 0:
                shared[q.share] = raw
        tex = _lit(raw, q, texels_per_m)
        tiles.append(cv2.copyMakeBorder(tex, GUTTER, GUTTER, GUTTER, GUTTER, cv2.BORDER_REFLECT_101))
    width = max(ATLAS_WIDTH, max(t.shape[1] for t in tiles))
    order = sorted(range(len(tiles)), key=lambda i: -tiles[i].shape[0])
    pos = [(0, 0)] * len(tiles)
    x = y = row_h = 0
    for i in order:
        th, tw = tiles[i].shape[:2]
        if x + tw > width:
            x, y, row_h = 0, y + row_h, 0
        pos[i] = (x, y)
        x += tw
        row_h = max(row_h, th)
    height = y + row_h
    if max(width, height) >= 32767:
        raise ValueError(f"texture atlas {width}x{height} is too large for cv2.remap; lower texels_per_m")
    atlas = np.zeros((height, width, 3), dtype=np.uint8)
    for (x, y), t in zip(pos, tiles):
        atlas[y : y + t.shape[0], x : x + t.shape[1]] = t
    levels = [atlas]
    for _ in range(1, MIP_LEVELS):
        levels.append(cv2.pyrDown(levels[-1]))
    offsets = np.array([(x + GUTTER, y + GUTTER) for x, y in pos], dtype=np.float64)
    log.debug("texture atlas %dx%d (%.0f MB)", width, height, atlas.nbytes / 1e6)
    return TextureAtlas(levels, offsets, float(texels_per_m))
