"""Rendering: geometric and photometric consistency between frames, closed room, texture richness."""

from __future__ import annotations

import cv2
import numpy as np

from slam.geometry import inv_pose, transform_points


def _bilinear(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup of ``img`` (H, W[, C]) float at (N, 2) pixel coordinates (inside the image)."""
    u0 = np.floor(uv[:, 0]).astype(int)
    v0 = np.floor(uv[:, 1]).astype(int)
    a = uv[:, 0] - u0
    b = uv[:, 1] - v0
    if img.ndim == 3:
        a, b = a[:, None], b[:, None]
    return ((1 - a) * (1 - b) * img[v0, u0] + a * (1 - b) * img[v0, u0 + 1]
            + (1 - a) * b * img[v0 + 1, u0] + a * b * img[v0 + 1, u0 + 1])


def _warp(seq, i: int, j: int):
    """Back-project frame i's depth, project into frame j; returns per-point z_j, pixel in j, colours in i."""
    fi, fj = seq.render_frame(i), seq.render_frame(j)
    cam = seq.camera
    v, u = np.nonzero(fi.depth > 0)
    pts_ci = cam.unproject(np.stack([u, v], -1).astype(float), fi.depth[v, u])
    pts_cj = transform_points(inv_pose(fj.T_w_c) @ fi.T_w_c, pts_ci)
    uv, front = cam.project(pts_cj)
    inside = front & (uv[:, 0] >= 1) & (uv[:, 0] < cam.width - 2) & (uv[:, 1] >= 1) & (uv[:, 1] < cam.height - 2)
    return fi, fj, pts_cj[inside, 2], uv[inside], fi.rgb[v, u][inside].astype(float)


def test_depth_consistent_between_frames(clean_seq):
    for i, j in ((5, 6), (20, 22)):
        _, fj, z, uv, _ = _warp(clean_seq, i, j)
        # 1/z is affine in the pixel coordinates on a plane, so interpolating inverse depth is exact there
        inv = np.where(fj.depth > 0, 1.0 / np.maximum(fj.depth, 1e-6), 0.0).astype(np.float64)
        zj = 1.0 / np.maximum(_bilinear(inv, uv), 1e-9)
        diff = np.abs(zj - z)
        visible = diff < 0.05  # the rest is occluded in j or straddles a depth edge
        assert visible.mean() > 0.5, f"frames {i},{j} overlap too little"
        assert np.median(diff[visible]) < 1e-3, np.median(diff[visible])
        assert np.percentile(diff[visible], 90) < 5e-3


def test_colours_consistent_between_frames(clean_seq):
    _, fj, z, uv, col_i = _warp(clean_seq, 5, 6)
    inv = 1.0 / np.maximum(fj.depth.astype(np.float64), 1e-6)
    visible = (np.abs(1.0 / _bilinear(inv, uv) - z) < 0.01) & (uv[:, 0] < fj.rgb.shape[1] - 5)
    col_j = _bilinear(fj.rgb.astype(float), uv[visible])
    err = np.abs(col_j - col_i[visible]).mean(1)
    # a 3-pixel misregistration of the same images, for scale
    shifted = np.abs(_bilinear(fj.rgb.astype(float), uv[visible] + [3.0, 0.0]) - col_i[visible]).mean(1)
    assert np.median(err) < 8.0, np.median(err)
    assert np.median(err) < 0.3 * np.median(shifted)


def test_render_closed_room_and_shapes(clean_seq):
    f = clean_seq.render_frame(0)
    cam = clean_seq.camera
    assert f.rgb.shape == (cam.height, cam.width, 3) and f.rgb.dtype == np.uint8
    assert f.depth.shape == (cam.height, cam.width) and f.depth.dtype == np.float32
    assert f.right.shape == f.rgb.shape
    assert np.all(f.depth > 0.5), "every ray must hit a surface, none closer than 0.5 m"
    assert f.depth.max() < 11.0


def test_depth_is_z_not_range(tiny_scene, clean_seq):
    """A camera facing a wall squarely sees a constant z-depth across the image."""
    from slam.geometry import make_pose

    R_w_c = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # looking along +x, level
    T = make_pose(R_w_c, [1.0, -0.5, 2.0])  # 3 m from the x = 4 wall
    _, depth = tiny_scene.render(T, clean_seq.camera)
    band = depth[40:140]  # rows that hit the wall between the boxes (below 1.7 m) and the ceiling
    np.testing.assert_allclose(band, 3.0, atol=1e-5)


def test_stereo_right_is_left_shifted_by_baseline(clean_seq):
    """Right image pixels equal left image pixels at disparity fx * b / z (rectified pair)."""
    f = clean_seq.render_frame(3)
    cam, b = clean_seq.camera, clean_seq.cfg.stereo_baseline
    v, u = np.mgrid[20:cam.height - 20:4, 40:cam.width - 20:4]
    z = f.depth[v, u].astype(float)
    ur = u - cam.fx * b / z
    ok = ur >= 1
    left = f.rgb[v[ok], u[ok]].astype(float)
    right = _bilinear(f.right.astype(float), np.stack([ur[ok], v[ok]], -1).astype(float))
    assert np.median(np.abs(left - right)) < 8.0


def test_texture_rich_for_orb(clean_seq):
    f = clean_seq.render_frame(10)
    gray = cv2.cvtColor(f.rgb, cv2.COLOR_RGB2GRAY)
    kps = cv2.ORB_create(1000).detect(gray, None)
    assert len(kps) >= 500  # 320x240 image
    pts = np.array([k.pt for k in kps])
    H, _, _ = np.histogram2d(pts[:, 1], pts[:, 0], bins=[4, 4], range=[[0, 240], [0, 320]])
    assert (H > 0).sum() >= 14


def test_distorted_camera_renders_the_same_rays(tiny_scene, clean_seq):
    """A radial-tangential camera sees at pixel (u, v) what the ideal camera sees at undistort(u, v)."""
    from slam.geometry import PinholeCamera

    ideal = clean_seq.camera
    dist = PinholeCamera(ideal.width, ideal.height, ideal.fx, ideal.fy, ideal.cx, ideal.cy, (-0.25, 0.08, 0.001, -0.001))
    T = clean_seq.T_w_c[8]
    _, d_ideal = tiny_scene.render(T, ideal)
    _, d_dist = tiny_scene.render(T, dist)
    v, u = np.mgrid[30:ideal.height - 30:7, 30:ideal.width - 30:7]
    uv = dist.undistort_points(np.stack([u.ravel(), v.ravel()], -1).astype(float))
    inside = ideal.in_image(uv, margin=2.0)
    z_ideal = 1.0 / _bilinear(1.0 / d_ideal.astype(np.float64), uv[inside])
    diff = np.abs(z_ideal - d_dist[v.ravel()[inside], u.ravel()[inside]])
    assert np.median(diff) < 1e-4
