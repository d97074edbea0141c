"""Depth and image noise: present with the documented statistics when on, absent when off."""

from __future__ import annotations

import numpy as np

from slam.synth import DepthNoise, apply_depth_noise


def test_no_noise_when_off(clean_seq, tiny_scene):
    f = clean_seq.render_frame(7)
    rgb, depth = tiny_scene.render(f.T_w_c, clean_seq.camera)
    np.testing.assert_array_equal(f.rgb, rgb)
    np.testing.assert_array_equal(f.depth, depth)
    assert np.all(f.depth > 0)  # closed room: no holes


def test_depth_noise_and_holes_when_on(noisy_seq, clean_seq):
    i = 7
    noisy, clean = noisy_seq.render_frame(i), clean_seq.render_frame(i)
    holes = noisy.depth == 0
    assert 0.002 < holes.mean() < 0.3
    ok = ~holes
    err = noisy.depth[ok].astype(np.float64) - clean.depth[ok]
    params = DepthNoise.from_config(noisy_seq.cfg)
    normalised = err / params.sigma(clean.depth[ok].astype(np.float64))
    assert 0.85 < normalised.std() < 1.15  # quantisation (0.2 mm) adds a little
    assert abs(normalised.mean()) < 0.05
    # quantised to the PNG depth step
    q = noisy.depth[ok].astype(np.float64) * params.depth_scale
    assert np.max(np.abs(q - np.round(q))) < 1e-2
    assert np.any(noisy.rgb != clean.rgb)
    d = noisy.rgb.astype(float) - clean.rgb
    assert 1.5 < d.std() < 2.5  # image_noise_std = 2


def test_holes_at_depth_edges_and_range_limits():
    rng = np.random.default_rng(0)
    depth = np.full((100, 100), 2.0, np.float32)
    depth[:, 50:] = 4.0  # a step edge at column 50
    depth[:10, :10] = 9.0  # beyond max range
    p = DepthNoise(pixel_dropout=0.0, blobs_per_frame=0.0, edge_dropout=1.0, edge_width=1)
    out = apply_depth_noise(depth, p, rng)
    assert np.all(out[:10, :10] == 0)
    assert np.all(out[10:, 48:52] == 0)  # the band around the edge is dropped
    assert np.all(out[10:, 20:40] > 0) and np.all(out[10:, 60:90] > 0)


def test_noise_deterministic_per_frame(noisy_seq):
    a, b = noisy_seq.render_frame(3), noisy_seq.render_frame(3)
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    c = noisy_seq.render_frame(4)
    assert not np.array_equal(a.depth == 0, c.depth == 0)
