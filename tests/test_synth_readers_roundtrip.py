"""The generator's exports read back through the reader registry: the two halves of the foundation agree."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from slam.datasets import open_sequence
from slam.synth import SynthSequence, generate, preset
from slam.geometry import inv_pose

N = 6


@pytest.fixture(scope="module")
def synth() -> SynthSequence:
    return SynthSequence(dataclasses.replace(preset("tiny"), num_frames=N))


@pytest.mark.parametrize(
    "layout,reader,modes",
    [
        ("native", "SyntheticSequence", ["rgbd", "stereo-inertial", "stereo", "mono-inertial", "mono"]),
        ("tum", "TumSequence", ["rgbd", "mono"]),
        ("euroc", "EurocSequence", ["stereo-inertial", "stereo", "mono-inertial", "mono"]),
        ("kitti", "KittiSequence", ["stereo", "mono"]),
    ],
)
def test_each_layout_reads_back(tmp_path, synth, layout, reader, modes):
    root = generate(synth.cfg, tmp_path / layout, layout=layout, progress=False, sequence=synth)
    seq = open_sequence(root)
    assert type(seq).__name__ == reader
    assert seq.modes == modes
    assert len(seq) == N
    np.testing.assert_allclose(seq.timestamps - seq.timestamps[0], synth.frame_t - synth.frame_t[0], atol=1e-6)
    cam = synth.cfg.camera()
    assert (seq.camera.fx, seq.camera.cx, seq.camera.width) == pytest.approx((cam.fx, cam.cx, cam.width))

    # Ground truth: exact camera poses (KITTI's are relative to the first frame).
    gt = seq.groundtruth()
    expected = synth.T_w_c
    if layout == "kitti":
        expected = inv_pose(expected[0]) @ expected
    np.testing.assert_allclose(gt.poses, expected, atol=1e-6)

    f = seq[2]
    rendered = synth.render_frame(2)
    assert f.image.shape == (cam.height, cam.width, 3) and f.image.dtype == np.uint8
    if layout in ("native", "tum"):
        # Depth survives the 16-bit PNG within its quantisation (+ the generator's sensor noise).
        ok = (f.depth > 0) & (rendered.depth > 0)
        assert ok.mean() > 0.8
        assert np.median(np.abs(f.depth[ok] - rendered.depth[ok])) < 0.01
        assert np.abs(f.image.astype(int) - rendered.rgb).mean() < 1.0
    else:
        assert f.depth is None
    if "stereo" in modes:
        assert seq.stereo.baseline == pytest.approx(synth.cfg.stereo_baseline)
        assert f.right is not None and f.right.shape == f.image.shape
    if "mono-inertial" in modes:
        # 200 Hz IMU between 10 Hz frames: 20 samples per frame; accel sees gravity.
        assert len(f.imu) == 20
        assert np.linalg.norm(f.imu.accel.mean(axis=0)) == pytest.approx(9.81, abs=1.0)
        np.testing.assert_allclose(seq.T_b_c, synth.T_b_c, atol=1e-9)


def test_use_streams_decodes_only_what_the_mode_needs(tmp_path, synth):
    seq = open_sequence(generate(synth.cfg, tmp_path / "native", progress=False, sequence=synth))
    expected = {"rgbd": (True, False), "stereo": (False, True), "mono": (False, False), "stereo-inertial": (False, True)}
    for mode, (has_depth, has_right) in expected.items():
        seq.use_streams(mode)
        f = seq[1]
        assert (f.depth is not None, f.right is not None) == (has_depth, has_right), mode
        assert "depth_missing" not in f.flags  # skipped on purpose, not missing
