"""PNG of an evaluation: top view of ground truth and aligned estimate coloured by ATE, and ATE over time.

Stretches not tracked are gaps in the lines, not straight joins.

Uses matplotlib's Agg canvas directly (no pyplot, no global backend change).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from slam.eval.evaluate import Evaluation
from slam.fileset import write_atomic

AXIS_NAMES = ("x", "y", "z")


def top_view_axes(positions: np.ndarray) -> tuple[int, int]:
    """The two coordinate axes (indices, ascending) along which ``positions`` extend most."""
    extent = np.ptp(np.asarray(positions, dtype=np.float64).reshape(-1, 3), axis=0)
    a, b = sorted(np.argsort(-extent, kind="stable")[:2].tolist())
    return int(a), int(b)


def tracking_gaps(timestamps: np.ndarray, max_dt: float | None = None) -> np.ndarray:
    """Indices ``i`` where poses ``i`` and ``i + 1`` are more than ``max_dt`` seconds apart: frames not tracked between.

    Default ``max_dt``: 1.5 times the median step, so one missing frame is a gap.
    """
    dt = np.diff(np.asarray(timestamps, dtype=np.float64))
    if len(dt) == 0:
        return np.zeros(0, np.int64)
    limit = 1.5 * float(np.median(dt)) if max_dt is None else float(max_dt)
    return np.nonzero(dt > limit)[0]


def broken_at(values: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """``values`` (N, ...) with a NaN row inserted after each index of ``gaps``: a plotted line breaks there."""
    values = np.asarray(values, dtype=np.float64)
    return np.insert(values, np.asarray(gaps, np.int64) + 1, np.nan, axis=0)


def evaluation_figure(ev: Evaluation, title: str = "", max_dt: float | None = None):
    """The matplotlib Figure (Agg canvas) of :func:`plot_evaluation`.

    Frames not tracked (a time step over ``max_dt`` seconds, see :func:`tracking_gaps`) break the lines
    instead of joining their ends, and are marked: crosses in the top view, grey bands over time. The
    ground truth is drawn under the estimate, wider and lighter, so it shows around a close estimate.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    gt, est, err = ev.gt.positions, ev.est.positions, ev.ate_errors
    t = ev.est.timestamps - ev.est.timestamps[0] if len(ev.est) else np.zeros(0)
    gaps = tracking_gaps(ev.est.timestamps, max_dt)
    a, b = top_view_axes(gt)
    fig = Figure(figsize=(12, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    ax, ax_t = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.3, 1]})

    g = broken_at(gt[:, [a, b]], gaps)
    ax.plot(g[:, 0], g[:, 1], "-", color="0.55", lw=4.0, alpha=0.5, solid_capstyle="round", zorder=1,
            label="ground truth")
    pts = est[:, [a, b]]
    vmax = float(err.max()) if err.size and err.max() > 0 else 1.0
    if len(pts) >= 2:
        keep = np.ones(len(pts) - 1, bool)
        keep[gaps] = False  # no segment across frames not tracked
        segs = np.stack([pts[:-1], pts[1:]], axis=1)[keep]
        lc = LineCollection(segs, cmap="viridis", linewidths=1.5, zorder=2, label=f"estimate ({ev.align} aligned)")
        lc.set_array((0.5 * (err[:-1] + err[1:]))[keep])
        lc.set_clim(0.0, vmax)
        ax.add_collection(lc)
        fig.colorbar(lc, ax=ax, label="ATE (m)")
    ax.scatter(pts[:, 0], pts[:, 1], c=err, cmap="viridis", vmin=0.0, vmax=vmax, s=4, zorder=3)
    if len(gaps):
        ends = pts[np.concatenate([gaps, gaps + 1])]
        ax.scatter(ends[:, 0], ends[:, 1], marker="x", color="tab:red", s=30, zorder=4,
                   label=f"not tracked between ({len(gaps)} gap{'s' if len(gaps) > 1 else ''})")
    ax.set_xlabel(f"{AXIS_NAMES[a]} (m)")
    ax.set_ylabel(f"{AXIS_NAMES[b]} (m)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    ax.legend(loc="best", fontsize=8)
    ax.set_title("top view")

    rmse = float(np.sqrt(np.mean(err**2))) if err.size else float("nan")
    ax_t.plot(broken_at(t, gaps), broken_at(err, gaps), color="tab:blue", lw=1.2, label="ATE")
    for k, i in enumerate(gaps):
        ax_t.axvspan(t[i], t[i + 1], color="0.85", zorder=0, label="not tracked" if k == 0 else None)
    ax_t.axhline(rmse, color="tab:red", ls=":", lw=1.0, label=f"rmse {rmse:.4g} m")
    ax_t.set_xlabel("time from start (s)")
    ax_t.set_ylabel("ATE (m)")
    ax_t.set_ylim(bottom=0.0)
    ax_t.grid(alpha=0.3)
    ax_t.legend(loc="best", fontsize=8)
    ax_t.set_title("error over time")

    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_evaluation(ev: Evaluation, path: str | Path, title: str = "", max_dt: float | None = None) -> Path:
    """Write the PNG to ``path`` (atomically) and return it; positions in metres, ATE in metres, time in seconds."""
    fig = evaluation_figure(ev, title, max_dt)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: f.write(buf.getvalue()))
    return path
