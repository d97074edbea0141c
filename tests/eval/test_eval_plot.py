"""The ATE plot: stretches not tracked stay gaps, and the ground truth shows under a close estimate."""

from __future__ import annotations

import numpy as np
from matplotlib.collections import LineCollection

from slam.eval.evaluate import compute
from slam.eval.plot import evaluation_figure, plot_evaluation

from .eval_synth import perturb, smooth_trajectory

LOST = np.arange(40, 55)  # frames not tracked


def _evaluation():
    gt = smooth_trajectory(np.arange(100) / 10.0)
    keep = np.setdiff1d(np.arange(100), LOST)
    est = perturb(gt, np.random.default_rng(1), pos_sigma=0.002, rot_sigma=0.001).subset(keep)
    return compute(gt, est, align="se3")


def test_lost_frames_are_a_gap_not_a_joining_line(tmp_path):
    ev = _evaluation()
    fig = evaluation_figure(ev)
    top, over_time = fig.axes[0], fig.axes[1]
    before, after = ev.est.positions[LOST[0] - 1], ev.est.positions[LOST[0]]  # the estimate's last/first around it
    (est,) = [c for c in top.collections if isinstance(c, LineCollection)]
    for seg in est.get_segments():  # no segment of the estimate spans the lost stretch
        assert not (np.allclose(seg[0], before[[0, 1]]) and np.allclose(seg[1], after[[0, 1]]))
    assert len(est.get_segments()) == len(ev.est) - 2  # one segment fewer than consecutive pairs
    gt_line = next(ln for ln in top.get_lines() if ln.get_label() == "ground truth")
    assert np.isnan(gt_line.get_xydata()).any()  # ground truth broken at the same place
    err_line = next(ln for ln in over_time.get_lines() if ln.get_label() == "ATE")
    t, e = err_line.get_xydata().T
    i = int(np.nonzero(np.isnan(e))[0][0])
    assert np.isnan(e).sum() == 1 and t[i - 1] < t[i + 1] - 1.0  # the NaN sits across the 1.5 s not tracked
    # ... and the gap is marked, not just left blank
    assert any("not tracked" in str(h.get_label()) for h in top.collections + over_time.patches)
    # The ground truth is drawn under the estimate, wider, so a close estimate does not hide it.
    assert gt_line.get_zorder() < est.get_zorder() and gt_line.get_linewidth() > 2 * est.get_linewidths()[0]

    png = plot_evaluation(ev, tmp_path / "p" / "ate.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and [p.name for p in png.parent.iterdir()] == ["ate.png"]
