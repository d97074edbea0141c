"""Scene variety of the generator: per-seed rooms, texture families, exposure, directional light, distractor."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from slam.errors import DataError
from slam.geometry.camera import PinholeCamera
from slam.geometry.se3 import make_pose
from slam.synth import SynthConfig, SynthSequence, SyntheticScene, preset
from slam.synth.scene import DEFAULT_LAYOUT, clearance, make_layout
from slam.synth.sequence import apply_gain, scene_layout
from slam.synth.texture import FAMILIES, family_texture

SMALL = {"width": 96, "height": 72, "fx": 80.0, "fy": 80.0, "cx": 47.5, "cy": 35.5, "stereo": False, "imu": False,
         "noise": False, "texels_per_m": 60.0}


def small(name: str = "tiny", **over) -> SynthConfig:
    return SynthConfig.from_dict({**SMALL, **over}, base=preset(name))


def look_at(centre, forward) -> np.ndarray:
    """Camera pose at ``centre`` with optical axis ``forward`` (image y roughly down)."""
    z = np.asarray(forward, float) / np.linalg.norm(forward)
    up = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return make_pose(np.stack([x, y, z], 1), centre)


def test_variety_is_opt_in():
    for name in ("demo", "loop600", "tiny", "noloop600"):
        cfg = preset(name)
        assert not (cfg.room_variety or cfg.texture_variety or cfg.distractor)
        assert cfg.exposure_gain == 1.0 and cfg.exposure_jitter == 0.0 and cfg.light_dir_strength == 0.0
        assert scene_layout(cfg) is DEFAULT_LAYOUT
    d = preset("loop600_distractor")
    assert d.distractor and d.num_frames == 600 and scene_layout(d).panels


@pytest.mark.parametrize("bad", [{"exposure_gain": 0.0}, {"exposure_jitter": -0.1}, {"light_dir_strength": 1.5},
                                 {"layout_keepout": [1.0, 0.0]}])
def test_bad_variety_settings_are_refused(bad):
    with pytest.raises(DataError):
        SynthConfig.from_dict(bad)


def test_rooms_vary_per_seed_and_keep_the_path_clear():
    keepout, margin = (1.7, 1.1), 0.8
    layouts = [make_layout(s, keepout=keepout, margin=margin) for s in range(12)]
    sizes = np.array([lay.size for lay in layouts])
    assert np.ptp(sizes[:, 0]) > 1.0 and np.ptp(sizes[:, 1]) > 1.0 and np.ptp(sizes[:, 2]) > 0.3
    assert len({len(lay.boxes) for lay in layouts}) > 3
    # tables (5 boxes: a 4 cm top + 4 legs) and full-height corner blocks occur
    assert any(any(abs(b[4] - 0.04) < 1e-9 and b[5] > 0.6 for b in lay.boxes) for lay in layouts)
    assert any(any(b[4] > lay.size[2] for b in lay.boxes) for lay in layouts)
    # every point on or inside the keep-out ellipse, at camera heights, keeps the margin to every surface
    a = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    pts = np.concatenate([np.stack([f * keepout[0] * np.cos(a), f * keepout[1] * np.sin(a), np.full_like(a, z)], 1)
                          for f in (0.5, 1.0) for z in (1.0, 1.4, 1.6)])
    for lay in layouts:
        assert clearance(pts, lay).min() >= margin - 1e-9
        # the clearance is that of this room: a point inside any box is negative
        b = lay.boxes[0]
        assert clearance(np.array([[b[0], b[1], b[5] + b[4] / 2]]), lay)[0] < 0


def test_varied_sequence_keeps_its_clearance():
    cfg = small(room_variety=True, texture_variety=True, layout_keepout=(1.3, 0.9), min_clearance_m=0.5, seed=3)
    seq = SynthSequence(cfg)
    assert seq.layout is not DEFAULT_LAYOUT and seq.min_clearance() >= cfg.min_clearance_m
    img = seq.render_frame(0).rgb
    assert img.std() > 10


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "shapes"])
def test_texture_families_are_textured_and_seeded(family):
    a = family_texture(family, 80, 120, np.random.default_rng(1), 100.0)
    b = family_texture(family, 80, 120, np.random.default_rng(1), 100.0)
    c = family_texture(family, 80, 120, np.random.default_rng(2), 100.0)
    assert a.shape == (80, 120, 3) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.std() > 3.0  # not a flat colour
    with pytest.raises(ValueError, match="family"):
        family_texture("plaid", 8, 8, np.random.default_rng(0), 100.0)


def test_exposure_gain_and_jitter():
    base = SynthSequence(small())
    dark = SynthSequence(small(exposure_gain=0.6), scene=base.scene)
    assert np.array_equal(dark.render_frame(3).rgb, apply_gain(base.render_frame(3).rgb, 0.6))
    jit = SynthSequence(small(exposure_jitter=0.3), scene=base.scene)
    gains = np.array([jit.exposure(i) for i in range(40)])
    assert np.all(gains >= np.exp(-0.3) - 1e-12) and np.all(gains <= np.exp(0.3) + 1e-12)
    assert gains.std() > 0.05 and np.array_equal(gains, [jit.exposure(i) for i in range(40)])
    assert np.array_equal(jit.render_frame(7).rgb, apply_gain(base.render_frame(7).rgb, gains[7]))


def test_directional_light_scales_by_the_normal(tiny_scene):
    cam = PinholeCamera(64, 48, 40.0, 40.0, 31.5, 23.5)
    T = look_at([1.0, -1.0, 1.4], [0.0, 0.0, -1.0])  # straight down at the floor: n = +z
    plain, _ = tiny_scene.render(T, cam)
    az, el, s = 30.0, 30.0, 0.4
    lit, _ = tiny_scene.render(T, cam, light_dir_w=np.array([np.cos(np.radians(el)) * np.cos(np.radians(az)),
                                                               np.cos(np.radians(el)) * np.sin(np.radians(az)),
                                                               np.sin(np.radians(el))]), light_strength=s)
    c = (slice(12, 36), slice(16, 48))
    want = np.clip(plain[c].astype(float) * (1 + s * np.sin(np.radians(el))), 0, 255)
    assert np.abs(lit[c].astype(float) - want).max() <= 1.0
    assert lit[c].mean() > plain[c].mean() * 1.15


def test_distractor_repeats_one_texture_on_two_walls():
    cfg = small("loop600_distractor")
    seq = SynthSequence(cfg)
    lay = seq.layout
    (pa, pb) = lay.panels
    assert pa.share == pb.share and pa.wall != pb.wall and pa.size == pb.size
    cam = PinholeCamera(64, 48, 40.0, 40.0, 31.5, 23.5)
    views = []
    for pn in (pa, pb):
        q = pn.quad(lay.size)
        centre = q.O + (q.U + q.V) / 2
        views.append(seq.scene.render(look_at(centre + 1.0 * q.normal, -q.normal), cam)[0].astype(float))
    c = (slice(10, 38), slice(14, 50))  # the panel fills this crop (1.1 x 0.8 m at 1 m)
    same = np.abs(views[0][c] - views[1][c]).mean()
    # the same spot without the distractor shows the wall there, not the panel
    wall = SynthSequence(small("loop600"))
    q = pa.quad(lay.size)
    other = wall.scene.render(look_at(q.O + (q.U + q.V) / 2 + q.normal, -q.normal), cam)[0].astype(float)
    assert same < 3.0 and np.abs(views[0][c] - other[c]).mean() > 10 * max(same, 1.0)


def test_noloop_never_returns_and_loop_does():
    for name, returns in (("noloop600", False), ("loop600", True)):
        cfg = preset(name)
        seq = SynthSequence(dataclasses.replace(cfg, stereo=False, imu=False))
        p = seq.T_w_c[:, :3, 3]
        phase = np.unwrap(np.arctan2(p[:, 1] / cfg.radius_y, p[:, 0] / cfg.radius_x))
        assert np.all(np.diff(phase) > 0)  # always moving on along the loop
        swept = np.degrees(phase[-1] - phase[0])
        assert (swept > 350) if returns else (swept < 190)
