"""`slam-eval` end to end: table, JSON, PNG, the script and the entry point, and one-line errors on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slam.cli.eval import main
from slam.geometry import so3_exp
from slam.trajectory import Trajectory, read_kitti, write_kitti, write_tum

from .eval_synth import perturb, similarity, smooth_trajectory

REPO = Path(__file__).resolve().parents[2]
KITTI = REPO.parent / "shared" / "data" / "kitti_odometry_seq07_first160"  # ../shared/data


@pytest.fixture
def tum_pair(tmp_path):
    t = np.arange(0.0, 12.0, 0.05)
    gt = smooth_trajectory(t)
    est = similarity(perturb(gt, np.random.default_rng(2)), so3_exp(np.array([0.0, 0.0, 0.8])), np.ones(3), 0.5)
    gp, ep = tmp_path / "gt.txt", tmp_path / "est.txt"
    write_tum(gp, gt)
    write_tum(ep, est)
    return gp, ep


def test_cli_writes_table_json_and_png(tum_pair, tmp_path, capsys):
    gp, ep = tum_pair
    out_json, out_png = tmp_path / "res" / "r.json", tmp_path / "res" / "r.png"
    rc = main([str(gp), str(ep), "--align", "sim3", "--delta", "5", "--delta-unit", "f",
               "--json", str(out_json), "--plot", str(out_png)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "ATE (m)" in text and "RPE r (deg)" in text and "KITTI" in text
    d = json.loads(out_json.read_text())
    assert d["matched"] == 240 and d["align"] == "sim3" and d["delta"] == 5 and d["delta_unit"] == "f"
    assert d["aligned"]["scale"] == pytest.approx(2.0, rel=0.02)
    for key in ("rmse", "mean", "median", "std", "min", "max", "sse"):
        assert key in d["ate"] and key in d["rpe"]["trans"] and key in d["rpe"]["rot"]
    assert 0 < d["ate"]["rmse"] < 0.2
    assert d["kitti"]["t_rel"] > 0 and d["kitti"]["r_rel"] > 0 and d["kitti"]["lengths"]
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_entry_point_and_benchmark_script(tum_pair, tmp_path):
    gp, ep = tum_pair
    for cmd in ([sys.executable, "-m", "slam.cli.eval"], [sys.executable, str(REPO / "benchmarks" / "evaluate.py")]):
        out = tmp_path / "o.json"
        r = subprocess.run(cmd + [str(gp), str(ep), "--align", "none", "--json", str(out)],
                           capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert json.loads(out.read_text())["aligned"]["scale"] == 1.0


@pytest.mark.skipif(not KITTI.exists(), reason="shared KITTI sample missing")
def test_kitti_ground_truth_against_itself_perturbed(tmp_path, capsys):
    gt = read_kitti(KITTI / "poses" / "07.txt")
    est = perturb(gt, np.random.default_rng(4), pos_sigma=0.05, rot_sigma=0.002, drift=0.02)
    ep = tmp_path / "est07.txt"
    write_kitti(ep, est)
    out = tmp_path / "k.json"
    rc = main([str(KITTI / "poses" / "07.txt"), str(ep), "--format", "kitti",
               "--times", str(KITTI / "sequences" / "07" / "times.txt"), "--json", str(out),
               "--plot", str(tmp_path / "k.png")])
    assert rc == 0, capsys.readouterr().err
    d = json.loads(out.read_text())
    assert d["matched"] == 160 and 0.02 < d["ate"]["rmse"] < 2.0
    assert d["kitti"]["auto_lengths"] and d["kitti"]["lengths"] == [9.0, 18.0, 27.0, 36.0, 45.0, 54.0, 63.0, 72.0]
    assert 0 < d["kitti"]["t_rel"] < 5


def _bad(capsys, argv) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("slam-eval: error: ")
    return err


def test_bad_inputs_give_one_line_and_exit_2(tum_pair, tmp_path, capsys):
    gp, ep = tum_pair
    assert "nope.txt" in _bad(capsys, [gp, tmp_path / "nope.txt"])

    lines = gp.read_text().splitlines()
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join(lines[:5] + ["1.0 2.0 oops"] + lines[5:]) + "\n")
    assert "bad.txt:6:" in _bad(capsys, [bad, ep])

    bad.write_text("\n".join(lines[:3] + [lines[3].replace(lines[3].split()[2], "nan", 1)] + lines[4:]) + "\n")
    err = _bad(capsys, [gp, bad])
    assert "bad.txt:4:" in err and "NaN" in err

    bad.write_text("\n".join(lines[:8] + [lines[9], lines[8]] + lines[10:]) + "\n")
    assert "bad.txt:10:" in _bad(capsys, [bad, ep])

    late = tmp_path / "late.txt"
    est = smooth_trajectory(np.arange(100.0, 105.0, 0.05))
    write_tum(late, est)
    assert "--max-diff" in _bad(capsys, [gp, late])

    few = tmp_path / "few.txt"
    write_tum(few, Trajectory(np.array([0.0, 0.05]), smooth_trajectory(np.array([0.0, 0.05])).poses))
    assert "at least 3" in _bad(capsys, [gp, few])

    assert "--delta" in _bad(capsys, [gp, ep, "--delta", "100000"])
    assert "whole number" in _bad(capsys, [gp, ep, "--delta", "1.5"])


def test_bad_kitti_inputs(tmp_path, capsys):
    poses = tmp_path / "p.txt"
    write_kitti(poses, smooth_trajectory(np.arange(0.0, 2.0, 0.1)))
    times = tmp_path / "times.txt"
    times.write_text("\n".join(f"{0.1 * i:.6f}" for i in range(19)) + "\n")  # one short
    assert "20 poses but 19 timestamps" in _bad(capsys, [poses, poses, "--format", "kitti", "--times", times])
    times.write_text("\n".join(f"{0.1 * i:.6f}" for i in (list(range(10)) + [5] + list(range(11, 20)))) + "\n")
    assert "times.txt:11:" in _bad(capsys, [poses, poses, "--format", "kitti", "--times", times])
    # auto-detected as KITTI (12 columns), so --times applies without --format kitti
    assert "times.txt:11:" in _bad(capsys, [poses, poses, "--times", times])
