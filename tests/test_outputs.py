"""What a run leaves behind (slam.outputs): one set committed by summary.json, per-map trajectories, map.ply."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import signal
import time
import warnings

import numpy as np
import pytest

from slam.backbone.map.map_io import load_map, save_map
from slam.backbone.config import SlamConfig
from slam.backbone.system import System
from slam.eval import evaluate
from slam.geometry import make_pose, so3_exp
from slam.outputs import FrameTimes, evaluate_run, save_run, write_summary
from slam.synth import SynthSequence
from slam.trajectory import Trajectory, read_tum
from tests.conftest import small_demo

# frames 15..20 black: with relocalisation off, lost for lost_frames_reset (5) frames, then a new map
N, BLACK = 38, range(15, 21)


class _Seq:
    name = "synthetic"

    def __init__(self, frames):
        self.gt = Trajectory(np.array([f.timestamp for f in frames]), np.stack([f.T_w_c_gt for f in frames]))

    def groundtruth(self) -> Trajectory:
        return self.gt


def _track(camera, frames, new_map_prior=None) -> System:
    cfg = SlamConfig()
    cfg.tracking.relocalization = False  # a new map after the loss (relocalisation would stay in the first)
    system = System(camera, "rgbd", cfg, threaded=False)
    for f in frames:
        system.process(f)
        if f.index == BLACK[-1] and new_map_prior is not None:
            # Where the new map starts is a guess (the last pose seen); after a long loss it can be far off,
            # as on the KITTI clip. Put it far off on purpose: the new map's frame is unrelated to the first's.
            system.tracker.T_w_c_prior = new_map_prior
    return system


@pytest.fixture(scope="module")
def runs():
    """Two runs over one rendered synthetic sequence: 15 plain frames (A), and all 38 with a reset (B)."""
    seq = SynthSequence(small_demo(N, imu=False))
    fr = list(seq.frames())
    black = [dataclasses.replace(f, image=np.zeros_like(f.image), depth=np.zeros_like(f.depth)) for f in fr[15:21]]
    frames_b = fr[:15] + black + fr[21:]
    a = _track(seq.camera, fr[:15])
    b = _track(seq.camera, frames_b, make_pose(so3_exp(np.array([0.0, 1.2, 0.0])), np.array([3.0, 0.5, -2.0])))
    return {"A": a, "B": b, "frames": fr, "frames_b": frames_b, "seq": _Seq(fr)}


def _save(out, system, n=N):
    return save_run(out, system, {"sequence": "synthetic", "mode": "rgbd"}, n, [], FrameTimes(), 1.0)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _committed(out) -> dict | None:
    """The files summary.json names, when it is there and every one matches its size and sha256; else None."""
    try:
        files = json.loads((out / "summary.json").read_text())["files"]
    except FileNotFoundError:
        return None
    for name, meta in files.items():
        p = out / name
        assert p.is_file() and p.stat().st_size == meta["bytes"] and _sha(p) == meta["sha256"], \
            f"summary.json names {name} but the file differs: a mixed set that claims to be complete"
    return files


# ---------------------------------------------------------------------------- per map
def test_map_reset_writes_one_trajectory_per_map_and_evaluates_each(runs, tmp_path):
    summary, traj = _save(tmp_path, runs["B"])
    summary["evaluation"] = evaluate_run(runs["seq"], traj, "rgbd")
    write_summary(tmp_path, summary)
    summary = json.loads((tmp_path / "summary.json").read_text())

    maps = {m["id"]: m for m in summary["maps"]}
    assert sorted(maps) == [0, 1]
    assert (maps[0]["first_frame"], maps[0]["last_frame"]) == (0, 14)
    assert maps[1]["first_frame"] > BLACK[-1] - 1 and maps[1]["last_frame"] == N - 1
    assert maps[0]["keyframes"] >= 1 and maps[1]["keyframes"] >= 1
    # The largest map (most frames) is trajectory.txt, the other beside it.
    assert maps[1]["frames"] > maps[0]["frames"] and summary["trajectory_map"] == 1
    assert (maps[1]["trajectory"], maps[0]["trajectory"]) == ("trajectory.txt", "trajectory_map0.txt")
    t0, t1 = read_tum(tmp_path / "trajectory_map0.txt"), read_tum(tmp_path / "trajectory.txt")
    assert (len(t0), len(t1)) == (maps[0]["frames"], maps[1]["frames"])
    assert len(t0) + len(t1) == len(runs["B"].records)
    assert len(read_tum(tmp_path / "keyframes.txt")) == maps[1]["keyframes"]
    assert len(read_tum(tmp_path / "keyframes_map0.txt")) == maps[0]["keyframes"]

    # Each map aligned on its own tracks the truth closely; one alignment of both (what trajectory.txt
    # used to hold) cannot, since the maps' world frames are unrelated.
    ev = summary["evaluation"]
    per_map = {e["map"]: e["ate_rmse_m"] for e in ev["maps"]}
    gt = runs["seq"].gt
    joint = evaluate(gt, traj, align="se3")["ate"]["rmse"]
    still = Trajectory(gt.timestamps, np.repeat(gt.poses[:1], len(gt), axis=0))  # trivial: never moves
    trivial = evaluate(gt, still, align="se3")["ate"]["rmse"]
    assert max(per_map.values()) < 0.02 < 0.2 * trivial, (per_map, trivial)
    assert joint > 10 * max(per_map.values()), (joint, per_map)
    assert ev["map"] == 1 and ev["ate_rmse_m"] == per_map[1]


# ---------------------------------------------------------------------------- map.ply
def test_map_ply_has_every_point_with_its_keypoint_colour(runs, tmp_path):
    o3d = pytest.importorskip("open3d")
    system, frames = runs["A"], runs["frames"]
    _save(tmp_path, system, 15)
    cloud = o3d.io.read_point_cloud(str(tmp_path / "map.ply"))
    m = load_map(tmp_path / "map.npz")
    ids = sorted(m.points)
    assert len(cloud.points) == len(ids) > 200
    np.testing.assert_allclose(np.asarray(cloud.points), m.points_array(np.array(ids)), atol=1e-9)
    assert cloud.has_colors()
    # Expected: the image colour at the point's keypoint in its reference keyframe (RGB-D: keyframes are
    # tracked frames, whose images the test still has).
    want = []
    for pid in ids:
        p = m.points[pid]
        kf = m.keyframes[p.ref_kf_id]
        u, v = np.rint(kf.features.uv[p.observations[kf.id]]).astype(int)
        img = frames[kf.frame_index].image
        want.append(img[min(max(v, 0), img.shape[0] - 1), min(max(u, 0), img.shape[1] - 1)])
    got = np.rint(np.asarray(cloud.colors) * 255).astype(int)
    np.testing.assert_array_equal(got, np.array(want, int))
    assert len(np.unique(got, axis=0)) > 20  # textured scene: not one flat colour


# ---------------------------------------------------------------------------- permissions
def test_map_npz_has_the_permissions_of_the_other_outputs(runs, tmp_path):
    old = os.umask(0o022)
    try:
        _save(tmp_path / "run", runs["A"], 15)
        save_map(runs["A"].map, tmp_path / "alone.npz")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(tmp_path / "run" / "map.npz") == mode(tmp_path / "run" / "trajectory.txt") == 0o644
    assert mode(tmp_path / "alone.npz") == mode(tmp_path / "plain.txt") == 0o644


# ---------------------------------------------------------------------------- kills during a save
def _fork_save(out, system, kill_after_op: int | None = None) -> int:
    """Save ``system`` into ``out`` in a child process; it SIGKILLs itself right after file operation
    ``kill_after_op`` (fsync, rename, unlink, counted from 1). Returns the child's pid."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: the child only writes files
        pid = os.fork()
    if pid:
        return pid
    try:
        if kill_after_op is not None:
            count = [0]

            def counted(fn):
                def op(*a, **k):
                    r = fn(*a, **k)
                    count[0] += 1
                    if count[0] == kill_after_op:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return r
                return op

            os.fsync, os.replace, os.unlink = counted(os.fsync), counted(os.replace), counted(os.unlink)
        _save(out, system)
    finally:
        os._exit(0)


def _count_ops(monkeypatch, out, old, new) -> int:
    """File operations (fsync, rename, unlink) of a save of run ``new`` over the outputs of run ``old``."""
    _save(out, old, 15)
    n = [0]
    for name in ("fsync", "replace", "unlink"):
        fn = getattr(os, name)

        def op(*a, _fn=fn, **k):
            n[0] += 1
            return _fn(*a, **k)
        monkeypatch.setattr(os, name, op)
    _save(out, new)
    monkeypatch.undo()
    return n[0]


def test_kill_during_save_leaves_the_old_or_the_new_set(runs, tmp_path, monkeypatch):
    """SIGKILL at every step of a save over a previous run's outputs, and at random moments.

    The folder must then hold the complete old set or the complete new set as summary.json describes it
    (sizes, sha256), or no summary.json at all (an unfinished save, marked as such) with every file whole;
    the user's own file stays; the next save leaves the new set and no temporary.
    """
    ref = tmp_path / "ref"
    _save(ref, runs["A"], 15)
    old = _committed(ref)
    _save(ref, runs["B"])
    new = _committed(ref)
    assert old and new and old["trajectory.txt"] != new["trajectory.txt"]
    whole = {name: {m["sha256"] for m in (old.get(name), new.get(name)) if m} for name in set(old) | set(new)}
    n_ops = _count_ops(monkeypatch, tmp_path / "count", runs["A"], runs["B"])
    t0 = time.perf_counter()
    _save(tmp_path / "timing", runs["B"])
    save_s = time.perf_counter() - t0

    print(f"\n  {n_ops} file operations in a save of {save_s * 1e3:.0f} ms")
    rng = random.Random(0)
    kills = [("op", k) for k in range(1, n_ops + 1)] + [("time", rng.uniform(0.0, 1.5 * save_s)) for _ in range(6)]
    seen = set()
    for i, (how, when) in enumerate(kills):
        out = tmp_path / f"kill{i}"
        _save(out, runs["A"], 15)
        (out / "notes.txt").write_text("the user's own file")
        if how == "op":
            pid = _fork_save(out, runs["B"], kill_after_op=when)
        else:
            pid = _fork_save(out, runs["B"])
            time.sleep(when)
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

        files = _committed(out)
        state = "old" if files == old else "new" if files == new else "unfinished" if files is None else "other"
        assert state != "other", (how, when, files)
        seen.add(state)
        for p in out.iterdir():  # every output in place is whole: one run's version or the other's
            if p.name in whole:
                assert _sha(p) in whole[p.name], (how, when, p.name)
        assert (out / "notes.txt").read_text() == "the user's own file"

        _save(out, runs["B"])  # the next save: the new set, and nothing left of the killed one
        assert _committed(out) == new
        assert sorted(p.name for p in out.iterdir()) == sorted([*new, "summary.json", "notes.txt"]), (how, when)
    assert seen == {"old", "new", "unfinished"}, seen


def test_next_save_removes_temporaries_of_killed_saves_and_outputs_the_run_no_longer_has(runs, tmp_path):
    _save(tmp_path, runs["B"])  # two maps: trajectory_map0.txt, keyframes_map0.txt
    assert (tmp_path / "trajectory_map0.txt").is_file()
    stale = [".map.npz.k2x_9qab.tmp",  # tempfile.mkstemp's name, as map_io made it before
             ".map.npz.999999999.0123abcd.tmp", ".trajectory.txt.999999999.89abcdef.tmp"]  # no such pid
    for name in stale:
        (tmp_path / name).write_bytes(b"\0" * 4096)
    mine = [".my-notes.tmp", "notes.txt", ".map.npz.mine"]  # the user's files: never touched
    for name in mine:
        (tmp_path / name).write_text("mine")
    _save(tmp_path, runs["A"], 15)  # one map
    files = _committed(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*files, "summary.json", *mine])
    assert "trajectory_map0.txt" not in files
