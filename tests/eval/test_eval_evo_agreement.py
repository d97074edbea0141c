"""Our ATE and RPE agree with evo (Python API and CLI) to 1e-6 on the same TUM files."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import zipfile

import numpy as np
import pytest

from slam.eval import compute
from slam.geometry import so3_exp
from slam.trajectory import Trajectory, read_tum, write_tum

from .eval_synth import perturb, similarity, smooth_trajectory

evo_fi = pytest.importorskip("evo.tools.file_interface")
from evo.core import filters, lie_algebra, metrics, sync  # noqa: E402

TOL = 1e-6
STATS = ("rmse", "mean", "median", "std", "min", "max", "sse")


def _files(tmp_path, *, gt_rate=30.0, est_rate=30.0, duration=20.0, scale=1.0, est_shift=0.0, seed=0):
    """GT and EST TUM files: EST = GT resampled, perturbed, in another frame (and scale), stamps shifted."""
    rng = np.random.default_rng(seed)
    t_gt = np.arange(0.0, duration, 1.0 / gt_rate)
    t_est = 1.0 + np.arange(0.0, duration - 2.0, 1.0 / est_rate) + rng.uniform(-0.003, 0.003, 1)[0]
    gt = smooth_trajectory(t_gt)
    est = perturb(smooth_trajectory(t_est), rng)
    est = similarity(est, so3_exp(np.array([0.3, -0.2, 1.1])), np.array([5.0, -2.0, 1.0]), scale)
    est = Trajectory(est.timestamps + est_shift, est.poses)
    gp, ep = tmp_path / "gt.txt", tmp_path / "est.txt"
    write_tum(gp, gt)
    write_tum(ep, est)
    return gp, ep


def _evo_pair(gp, ep, max_diff=0.01, t_offset=0.0, align="se3"):
    ref = evo_fi.read_tum_trajectory_file(str(gp))
    est = evo_fi.read_tum_trajectory_file(str(ep))
    ref, est = sync.associate_trajectories(ref, est, max_diff=max_diff, offset_2=t_offset)
    if align != "none":
        est.align(ref, correct_scale=(align == "sim3"))
    return ref, est


def _evo_stats(metric, data):
    metric.process_data(data)
    return metric.get_all_statistics()


def _assert_stats(ours: dict, theirs: dict) -> None:
    for k in STATS:
        assert ours[k] == pytest.approx(theirs[k], abs=TOL, rel=0), k


def _ours(gp, ep, **kw):
    return compute(read_tum(gp), read_tum(ep), **kw)


@pytest.mark.parametrize("align,scale", [("se3", 1.0), ("sim3", 0.37), ("none", 1.0)])
def test_ate_and_rpe_frames_match_evo(tmp_path, align, scale):
    gp, ep = _files(tmp_path, scale=scale)
    ev = _ours(gp, ep, align=align, delta=3, delta_unit="f")
    ref, est = _evo_pair(gp, ep, align=align)
    assert len(ev.gt) == ref.num_poses
    d = ev.to_dict()
    _assert_stats(d["ate"], _evo_stats(metrics.APE(metrics.PoseRelation.translation_part), (ref, est)))
    rt = metrics.RPE(metrics.PoseRelation.translation_part, 3, metrics.Unit.frames)
    rr = metrics.RPE(metrics.PoseRelation.rotation_angle_deg, 3, metrics.Unit.frames)
    _assert_stats(d["rpe"]["trans"], _evo_stats(rt, (ref, est)))
    _assert_stats(d["rpe"]["rot"], _evo_stats(rr, (ref, est)))
    if align == "sim3":
        assert d["aligned"]["scale"] == pytest.approx(1.0 / scale, rel=1e-2)


@pytest.mark.parametrize("align,delta", [("se3", 1.5), ("sim3", 2.0), ("none", 0.7)])
def test_rpe_metres_match_evo(tmp_path, align, delta):
    gp, ep = _files(tmp_path, scale=0.5 if align == "sim3" else 1.0, seed=3)
    ev = _ours(gp, ep, align=align, delta=delta, delta_unit="m")
    ref, est = _evo_pair(gp, ep, align=align)
    d = ev.to_dict()
    relations = ((metrics.PoseRelation.translation_part, "trans"), (metrics.PoseRelation.rotation_angle_deg, "rot"))
    for rel, key in relations:
        m = metrics.RPE(rel, delta, metrics.Unit.meters)
        _assert_stats(d["rpe"][key], _evo_stats(m, (copy.deepcopy(ref), copy.deepcopy(est))))
        assert [j for _, j in ev.rpe_pairs] == m.delta_ids


def test_rpe_seconds_match_evo_frames_on_uniform_stamps(tmp_path):
    """evo has no seconds unit: on stamps exactly 0.1 s apart, 0.5 s is evo's 5 frames."""
    t = np.round(np.arange(0, 200) * 0.1, 6)
    rng = np.random.default_rng(7)
    gp, ep = tmp_path / "gt.txt", tmp_path / "est.txt"
    write_tum(gp, smooth_trajectory(t))
    write_tum(ep, perturb(smooth_trajectory(t), rng))
    ev = _ours(gp, ep, delta=0.5, delta_unit="s")
    ref, est = _evo_pair(gp, ep)
    d = ev.to_dict()
    _assert_stats(d["rpe"]["trans"], _evo_stats(metrics.RPE(metrics.PoseRelation.translation_part, 5), (ref, est)))
    _assert_stats(d["rpe"]["rot"], _evo_stats(metrics.RPE(metrics.PoseRelation.rotation_angle_deg, 5), (ref, est)))


def test_rpe_seconds_match_evo_rule_on_irregular_stamps(tmp_path):
    """On jittered stamps, our seconds pairs are evo's path rule applied to elapsed time."""
    gp, ep = _files(tmp_path, gt_rate=100.0, est_rate=23.0, seed=5)
    ev = _ours(gp, ep, delta=0.35, delta_unit="s")
    ref, est = _evo_pair(gp, ep)
    time_poses = [lie_algebra.se3(np.eye(3), np.array([s, 0.0, 0.0])) for s in est.timestamps]
    pairs = filters.filter_pairs_by_path(time_poses, 0.35)
    assert ev.rpe_pairs == pairs
    E = [metrics.RPE.rpe_base(ref.poses_se3[i], ref.poses_se3[j], est.poses_se3[i], est.poses_se3[j]) for i, j in pairs]
    np.testing.assert_allclose(ev.rpe_trans, [np.linalg.norm(e[:3, 3]) for e in E], atol=TOL, rtol=0)
    np.testing.assert_allclose(ev.rpe_rot, [lie_algebra.so3_log_angle(e[:3, :3], True) for e in E], atol=TOL, rtol=0)


@pytest.mark.parametrize(
    "gt_rate,est_rate,shift,t_offset",
    [(100.0, 30.0, 0.0, 0.0),  # GT denser than EST: EST drives the matching
     (120.0, 20.0, 0.5, -0.5),  # ... with EST stamps 0.5 s late, undone by --t-offset
     (15.0, 40.0, 0.0, 0.0),  # EST denser: GT drives
     (15.0, 40.0, -2.0, 2.0)],
)
def test_association_matches_evo(tmp_path, gt_rate, est_rate, shift, t_offset):
    gp, ep = _files(tmp_path, gt_rate=gt_rate, est_rate=est_rate, est_shift=shift, seed=11)
    ev = _ours(gp, ep, align="se3", t_offset=t_offset)
    ref, est = _evo_pair(gp, ep, t_offset=t_offset)
    np.testing.assert_array_equal(ev.gt.timestamps, ref.timestamps)
    np.testing.assert_array_equal(ev.est.timestamps, est.timestamps)
    _assert_stats(ev.to_dict()["ate"], _evo_stats(metrics.APE(metrics.PoseRelation.translation_part), (ref, est)))


@pytest.mark.skipif(shutil.which("evo_ape") is None or shutil.which("evo_rpe") is None, reason="evo CLI missing")
def test_cli_matches_evo_cli(tmp_path):
    """`slam-eval --align sim3` vs `evo_ape tum GT EST -as` and `evo_rpe ... --delta 2 --delta_unit m -as`."""
    from slam.cli.eval import main

    gp, ep = _files(tmp_path, gt_rate=60.0, est_rate=20.0, scale=2.5, seed=9)
    out = tmp_path / "ours.json"
    assert main([str(gp), str(ep), "--align", "sim3", "--delta", "2", "--delta-unit", "m", "--json", str(out)]) == 0
    ours = json.loads(out.read_text())

    def evo_stats(cmd: list[str], name: str) -> dict:
        zp = tmp_path / name
        subprocess.run(cmd + ["--save_results", str(zp), "--no_warnings"], check=True, capture_output=True)
        with zipfile.ZipFile(zp) as z:
            return json.loads(z.read("stats.json"))

    ape = evo_stats(["evo_ape", "tum", str(gp), str(ep), "-as"], "ape.zip")
    rpe = evo_stats(["evo_rpe", "tum", str(gp), str(ep), "-as", "--delta", "2", "--delta_unit", "m"], "rpe.zip")
    _assert_stats(ours["ate"], ape)
    _assert_stats(ours["rpe"]["trans"], rpe)
