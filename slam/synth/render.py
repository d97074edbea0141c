"""Ray-cast rendering of the textured scene with Open3D's ``RaycastingScene`` (CPU).

For every pixel a ray leaves the camera centre along ``R_w_c K^-1 [u, v, 1]``
(z component 1 in the camera frame), so the hit parameter ``t_hit`` *is* the
z-depth. The hit point is mapped to its quad's texture coordinates and the
colour read from the mip-mapped atlas (trilinear: bilinear in two levels
chosen by the texel footprint, blended).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import open3d as o3d

from slam.geometry.camera import PinholeCamera
from slam.synth.scene import Quad, RoomLayout, scene_quads
from slam.synth.texture import MIP_LEVELS, TextureAtlas, build_atlas

log = logging.getLogger(__name__)


class SyntheticScene:
    """The textured room, ready to render from any camera pose.

    ``seed`` picks the textures; the geometry is ``layout`` (default: the fixed room of
    :mod:`slam.synth.scene`) or the given ``quads``; ``texture_families`` draws each quad's texture from
    several procedural families instead of the one shapes texture.
    """

    def __init__(
        self,
        seed: int = 0,
        texels_per_m: float = 250.0,
        shape_density: float = 250.0,
        quads: list[Quad] | None = None,
        layout: RoomLayout | None = None,
        texture_families: bool = False,
    ):
        self.layout = layout
        self.quads = scene_quads(layout) if quads is None else quads
        self.atlas: TextureAtlas = build_atlas(
            self.quads, np.random.default_rng([int(seed), 1]), texels_per_m, shape_density, families=texture_families
        )
        verts, tris, tri_quad = [], [], []
        for qi, q in enumerate(self.quads):
            v, f = q.triangles()
            tris.append(f + 4 * qi)
            verts.append(v)
            tri_quad += [qi] * len(f)
        self._scene = o3d.t.geometry.RaycastingScene()
        self._scene.add_triangles(
            o3d.core.Tensor(np.concatenate(verts).astype(np.float32)),
            o3d.core.Tensor(np.concatenate(tris).astype(np.uint32)),
        )
        # Open3D builds the BVH on the first cast; do it here, once, so that threads rendering
        # frames at the same time (slam.synth.generate) never race to build it.
        self._scene.cast_rays(o3d.core.Tensor(np.array([[0, 0, 0, 0, 0, 1]], dtype=np.float32)))
        # Per triangle (float32 row): atlas_x = Ax . p + bx, atlas_y = Ay . p + by (level-0 pixels), normal.
        # One extra last row for rays that hit nothing: coordinates far outside the atlas (black).
        tpm = self.atlas.texels_per_m
        rows = []
        for qi, q in enumerate(self.quads):
            u = q.U / np.linalg.norm(q.U) * tpm
            v = q.V / np.linalg.norm(q.V) * tpm
            ox, oy = self.atlas.offsets[qi]
            rows.append(np.concatenate([u, [ox - 0.5 - u @ q.O], v, [oy - 0.5 - v @ q.O], q.normal]))
        table = np.asarray(rows)[np.asarray(tri_quad)]
        miss = np.zeros((1, table.shape[1]))
        miss[0, 3] = miss[0, 7] = -1e4
        # stored column-wise (11 contiguous arrays): per-pixel gathers and products stay contiguous (fast)
        self._cols = np.ascontiguousarray(np.concatenate([table, miss]).T.astype(np.float32))
        self._miss = table.shape[0]
        self._rays_cache: dict[PinholeCamera, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        h, w = self.atlas.levels[0].shape[:2]
        log.debug("scene: %d quads, texture atlas %dx%d at %.0f texels/m", len(self.quads), w, h, tpm)

    # ---------------------------------------------------------------- rays
    def _camera_rays(self, camera: PinholeCamera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Camera-frame ray directions ``(x, y, 1)`` as float32 arrays ``x, y`` (H*W,) and their norms."""
        rays = self._rays_cache.get(camera)
        if rays is None:
            u, v = np.meshgrid(np.arange(camera.width, dtype=np.float64), np.arange(camera.height, dtype=np.float64))
            xn = camera.pixel_to_normalized(np.stack([u.ravel(), v.ravel()], -1))  # distortion honoured
            x, y = (np.ascontiguousarray(xn[:, k], dtype=np.float32) for k in (0, 1))
            rays = (x, y, np.sqrt(x * x + y * y + np.float32(1.0)))
            self._rays_cache[camera] = rays
        return rays

    def cast(self, origin_w: np.ndarray, dirs_w: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Cast rays from one origin along ``dirs_w = [dx, dy, dz]`` (world frame, each (N,)).

        Returns ``t_hit`` (N,) float32 in units of the direction length (inf = miss) and primitive ids.
        """
        n = dirs_w[0].shape[0]
        o = np.asarray(origin_w, dtype=np.float32)
        rays = cv2.merge([np.full(n, o[0], np.float32), np.full(n, o[1], np.float32), np.full(n, o[2], np.float32),
                          *dirs_w]).reshape(n, 6)  # interleave (fast)
        out = self._scene.cast_rays(o3d.core.Tensor(rays), nthreads=0)
        return out["t_hit"].numpy(), out["primitive_ids"].numpy()

    # -------------------------------------------------------------- render
    def render(
        self, T_w_c: np.ndarray, camera: PinholeCamera, with_depth: bool = True,
        light_dir_w: np.ndarray | None = None, light_strength: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Render the view of camera ``camera`` at pose ``T_w_c`` (camera -> world).

        Returns RGB (H, W, 3) uint8 and z-depth (H, W) float32 metres (0 where no surface
        was hit), or None for the depth when ``with_depth`` is False. Noise-free.
        With ``light_strength`` s > 0 a directional light towards unit ``light_dir_w`` (world, pointing to
        the light) scales each pixel by ``1 + s (n . l)`` (n: its surface normal), clipped to [0, 2]; the
        baked point-light shading stays.
        """
        H, W = camera.height, camera.width
        R = np.asarray(T_w_c[:3, :3], dtype=np.float32)
        c = np.asarray(T_w_c[:3, 3], dtype=np.float32)
        x, y, dn = self._camera_rays(camera)
        d = [R[k, 0] * x + R[k, 1] * y + R[k, 2] for k in range(3)]  # R_w_c (x, y, 1): camera z = 1
        t_hit, prim = self.cast(c, d)
        hit = np.isfinite(t_hit)
        t = np.where(hit, t_hit, np.float32(0.0))
        idx = np.where(hit, prim, self._miss)
        g = [col[idx] for col in self._cols]  # per-pixel triangle data: Ax(3) bx Ay(3) by n(3)
        p = [c[k] + t * d[k] for k in range(3)]  # hit points, world [m]
        mx = g[0] * p[0] + g[1] * p[1] + g[2] * p[2] + g[3]
        my = g[4] * p[0] + g[5] * p[1] + g[6] * p[2] + g[7]
        # Texel footprint of a pixel -> mip level (isotropic compromise: sqrt of the obliquity).
        cos_inc = np.abs(g[8] * d[0] + g[9] * d[1] + g[10] * d[2]) / dn
        k = np.float32(self.atlas.texels_per_m / (0.5 * (camera.fx + camera.fy)))
        footprint = (k * t) * dn / np.sqrt(np.maximum(cos_inc, np.float32(0.02)))
        lam = np.clip(np.log2(np.maximum(footprint, np.float32(1e-6))), 0.0, MIP_LEVELS - 1.0)
        rgb = self._sample(mx.reshape(H, W), my.reshape(H, W), lam.reshape(H, W))
        if light_strength > 0.0:
            lw = np.asarray(light_dir_w, np.float32) / np.float32(np.linalg.norm(light_dir_w))
            ndotl = g[8] * lw[0] + g[9] * lw[1] + g[10] * lw[2]
            gain = np.clip(1.0 + np.float32(light_strength) * ndotl, 0.0, 2.0).reshape(H, W, 1)
            rgb = np.clip(rgb.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)
        depth = t.reshape(H, W) if with_depth else None
        return rgb, depth

    def _sample(self, mx: np.ndarray, my: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """Trilinear mip-mapped lookup of the atlas at level-0 pixel coordinates ``mx, my`` (float32)."""
        out, w_sum = None, None
        for k in range(int(np.floor(lam.min())), min(int(np.ceil(lam.max())), MIP_LEVELS - 1) + 1):
            w = np.maximum(np.float32(0.0), 1.0 - np.abs(lam - np.float32(k)))  # tent weights sum to 1
            s = np.float32(1.0 / (1 << k))
            img = cv2.remap(
                self.atlas.levels[k], mx * s, my * s, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
            )
            if out is None:
                out, w_sum = img, w
            else:  # running weighted mean: (w_sum * out + w * img) / (w_sum + w)
                out = cv2.blendLinear(out, img, w_sum, w)
                w_sum = w_sum + w
        return out
