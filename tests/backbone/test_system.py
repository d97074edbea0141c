"""End to end through the threads: synthetic sequences with exact ground truth, and lost/recovered tracking."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from slam.eval import compute
from slam.geometry import inv_pose
from slam.records import StereoRig
from slam.synth import SynthSequence
from slam.backbone.config import SlamConfig
from slam.backbone.system import System
from slam.backbone.frontend.tracking import State
from slam.trajectory import Trajectory
from tests.accuracy import assert_beats_trivial
from tests.conftest import small_demo

N = 60


@pytest.fixture(scope="module")
def frames():
    """60 frames (2 s) of the demo trajectory at 320x240, rendered in memory with sensor noise."""
    cfg = small_demo(N, imu=False)
    seq = SynthSequence(cfg)
    rig = StereoRig(seq.camera, seq.T_l_r)
    return seq.camera, rig, list(seq.frames())


def _gt(frames) -> Trajectory:
    return Trajectory(np.array([f.timestamp for f in frames]), np.stack([f.T_w_c_gt for f in frames]))


def _run(camera, mode, frames, rig=None, cfg=None):
    system = System(camera, mode, cfg, stereo=rig)
    try:
        results = [system.process(f) for f in frames]
    finally:
        system.shutdown()
    return system, results


@pytest.mark.parametrize("mode,max_ate", [("rgbd", 0.02), ("stereo", 0.03)])
def test_tracks_synthetic_sequence_through_threads(frames, mode, max_ate):
    camera, rig, fr = frames
    system, results = _run(camera, mode, fr, rig if mode == "stereo" else None)
    assert system.mapper.error is None
    assert all(r.state == State.OK for r in results), [r.state for r in results]
    assert len(system.map.keyframes) >= 2 and len(system.map.points) > 200
    traj = system.trajectory()
    assert len(traj) == N
    print(f"\n  {mode}:", assert_beats_trivial(traj, _gt(fr), "se3", bound=max_ate))
    # Constant-velocity predictions feed poses back frame after frame: every pose must stay rigid.
    R = traj.poses[:, :3, :3]
    np.testing.assert_allclose(np.einsum("nji,njk->nik", R, R), np.broadcast_to(np.eye(3), R.shape), atol=1e-9)
    # The first frame anchors the map: its pose is the identity.
    np.testing.assert_allclose(traj.poses[0], np.eye(4), atol=1e-9)


def test_black_frames_are_lost_then_tracking_resumes_in_a_new_map(frames):
    """Relocalisation off (tests/backbone/test_relocalization.py has it on): a new map after lost_frames_reset."""
    camera, _, fr = frames
    black = [dataclasses.replace(f, image=np.zeros_like(f.image), depth=np.zeros_like(f.depth)) for f in fr[20:26]]
    seq = fr[:20] + black + fr[26:]
    cfg = SlamConfig()
    cfg.tracking.relocalization = False
    system, results = _run(camera, "rgbd", seq, cfg=cfg)
    states = [r.state for r in results]
    assert all(s == State.OK for s in states[:20])
    assert all(s != State.OK for s in states[20:26])  # reported lost (then re-initialising)
    assert set(system.lost_frames()) >= {20}
    assert all(s == State.OK for s in states[27:])  # a new map from the first textured frame on
    assert system.tracker.map_id == 1
    traj = system.trajectory()
    assert len(traj) == N - 6
    gt = _gt([f for f, s in zip(seq, states) if s == State.OK])
    # Each map on its own tracks well: well below any trivial answer on the same frames.
    before, after = traj.subset(slice(0, 20)), traj.subset(slice(20, None))
    print("\n  before the loss:", assert_beats_trivial(before, gt.subset(slice(0, 20)), "se3", bound=0.008))
    print("  after the loss:", assert_beats_trivial(after, gt.subset(slice(20, None)), "se3", bound=0.02))
    # The new map starts where the camera was last seen, not at the origin: with the first map aligned to the
    # truth, the first pose after the loss is off by about the motion during the blackout (which nothing saw),
    # far less than a restart at the origin. Across both maps a straight line still scores better (110 vs
    # 134 mm): the 0.29 m moved in the dark stays as an offset, so no whole-trajectory bound is asserted.
    T = compute(gt.subset(slice(0, 20)), before, "se3").T_align
    p_first = T[:3, :3] @ after.positions[0] + T[:3, 3]
    gap = np.linalg.norm(gt.positions[20] - gt.positions[19])
    at_origin = np.linalg.norm(gt.positions[20] - gt.positions[0])
    assert np.linalg.norm(p_first - gt.positions[20]) < gap + 0.02 < 0.5 * at_origin


def test_relative_pose_of_frames_follows_keyframe_corrections(frames):
    camera, _, fr = frames
    system, _ = _run(camera, "rgbd", fr[:30])
    ref_id = system.records[-1].ref_kf_id
    before = system.trajectory().poses
    D = np.eye(4)
    D[:3, 3] = [0.1, -0.05, 0.02]
    with system.map.lock:  # as if local BA had moved the keyframe by D (in the world frame)
        kf = system.map.keyframes[ref_id]
        kf.T_c_w = kf.T_c_w @ inv_pose(D)
    after = system.trajectory().poses
    moved = np.array([r.ref_kf_id == ref_id for r in system.records])
    assert moved.any()
    np.testing.assert_allclose(after[moved], D @ before[moved], atol=1e-9)
    np.testing.assert_allclose(after[~moved], before[~moved], atol=1e-12)


def test_trajectory_leaves_out_frames_whose_keyframe_pose_is_lost(frames, caplog):
    """A broken keyframe chain must not cost the whole run's trajectory."""
    camera, _, fr = frames
    system, _ = _run(camera, "rgbd", fr[:20])
    full = system.trajectory()
    victim = system.records[5].ref_kf_id
    with system.map.lock:  # simulate the bug: the keyframe disappears without a trace
        del system.map.keyframes[victim]
        system.map.erased_keyframes.pop(victim, None)
    part = system.trajectory()
    n_lost = sum(r.ref_kf_id == victim for r in system.records)
    assert n_lost > 0 and len(part) == len(full) - n_lost
    assert "left out of the trajectory" in caplog.text


def test_tracks_synthetic_sequence_monocular_through_threads(frames):
    """Two-view initialisation, then tracking with local mapping in its thread; scale from Sim(3) alignment."""
    camera, _, fr = frames
    system, results = _run(camera, "mono", fr)
    assert system.mapper.error is None
    first = next(i for i, r in enumerate(results) if r.state == State.OK)
    assert first < 15, [r.state for r in results[:20]]
    assert all(r.state == State.OK for r in results[first:]), [r.state for r in results]
    traj = system.trajectory()
    assert len(traj) >= N - first
    path = _gt(fr).path_length()
    print(f"\n  mono: first tracked frame {first},", assert_beats_trivial(traj, _gt(fr), "sim3", bound=0.02 * path))
