"""Trajectory: closed-form derivatives against finite differences, loop closure, clearance to surfaces."""

from __future__ import annotations

import numpy as np
import pytest

from slam.geometry import rotation_angle, so3_log, vee
from slam.synth import LoopTrajectory, SynthSequence, preset

from .conftest import tiny


@pytest.fixture(scope="module")
def traj() -> LoopTrajectory:
    return LoopTrajectory(preset("loop600"))


def test_derivatives_match_finite_differences(traj):
    h = 1e-5
    for t in (0.0, 1.3, 7.77, 15.2):
        s, sp, sm = traj.state(t), traj.state(t + h), traj.state(t - h)
        np.testing.assert_allclose(s.v_w, (sp.p_w - sm.p_w) / (2 * h), atol=1e-6)
        np.testing.assert_allclose(s.a_w, (sp.v_w - sm.v_w) / (2 * h), atol=1e-6)
        omega_fd = vee(s.R_w_b.T @ (sp.R_w_b - sm.R_w_b) / (2 * h))
        np.testing.assert_allclose(s.omega_b, omega_fd, atol=1e-6)
        # second check of omega through the log map over a small step
        np.testing.assert_allclose(so3_log(sm.R_w_b.T @ sp.R_w_b) / (2 * h), s.omega_b, atol=1e-6)


def test_loop_closes(traj):
    T0, T1 = traj.poses_w_c(np.array([0.0, traj.period]))
    np.testing.assert_allclose(T0, T1, atol=1e-9)
    seq = SynthSequence(tiny())
    steps = np.linalg.norm(np.diff(seq.T_w_c[:, :3, 3], axis=0), axis=1)
    gap = np.linalg.norm(seq.T_w_c[-1, :3, 3] - seq.T_w_c[0, :3, 3])
    assert gap <= 1.05 * steps.max()
    assert rotation_angle(seq.T_w_c[-1, :3, :3].T @ seq.T_w_c[0, :3, :3]) < 0.5  # within a frame's turn (rad)


@pytest.mark.parametrize("name", ["tiny", "demo", "loop600"])
def test_clearance_and_camera_looks_around(name):
    seq = SynthSequence(preset(name))
    assert seq.min_clearance() >= seq.cfg.min_clearance_m
    # optical axis mostly horizontal (looks at walls and boxes), tilted down a little
    z_axis = seq.T_w_c[:, :3, 2]
    assert np.all(np.abs(z_axis[:, 2]) < 0.45)


def test_camera_frame_convention():
    """Camera z forward = body x, camera y down = -world z at level flight."""
    seq = SynthSequence(tiny())
    R_b_c = seq.T_b_c[:3, :3]
    assert R_b_c[:, 2] @ np.array([1.0, 0, 0]) > 0.99
    assert R_b_c[:, 1] @ np.array([0, 0, -1.0]) > 0.99
    np.testing.assert_allclose(R_b_c @ R_b_c.T, np.eye(3), atol=1e-12)


def test_frames_records_and_motion(clean_seq):
    """The in-memory reader-style records: IMU since the previous frame, ground truth attached."""
    frames = []
    for f in clean_seq.frames():
        frames.append(f)
        if len(frames) == 3:
            break
    assert [f.index for f in frames] == [0, 1, 2]
    assert len(frames[0].imu) == 1 and len(frames[1].imu) == 20  # 200 Hz, 10 fps
    assert frames[1].imu.t[-1] == frames[1].timestamp
    np.testing.assert_allclose(frames[2].T_w_c_gt, clean_seq.T_w_c[2])
    m = clean_seq.motion_summary()
    assert m["max_turn_deg"] < 25 and m["max_step_m"] < 0.35
