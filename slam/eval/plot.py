"""PNG of an evaluation: top view of ground truth and aligned estimate coloured by ATE, and ATE over time.

Uses matplotlib's Agg canvas directly (no pyplot, no global backend change).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slam.eval.evaluate import Evaluation

AXIS_NAMES = ("x", "y", "z")


def top_view_axes(positions: np.ndarray) -> tuple[int, int]:
    """The two coordinate axes (indices, ascending) along which ``positions`` extend most."""
    extent = np.ptp(np.asarray(positions, dtype=np.float64).reshape(-1, 3), axis=0)
    a, b = sorted(np.argsort(-extent, kind="stable")[:2].tolist())
    return int(a), int(b)


def plot_evaluation(ev: Evaluation, path: str | Path, title: str = "") -> Path:
    """Write the PNG to ``path`` and return it; positions in metres, ATE in metres, time in seconds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    gt, est, err = ev.gt.positions, ev.est.positions, ev.ate_errors
    a, b = top_view_axes(gt)
    fig = Figure(figsize=(12, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    ax, ax_t = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.3, 1]})

    ax.plot(gt[:, a], gt[:, b], "--", color="0.4", lw=1.2, label="ground truth")
    pts = est[:, [a, b]]
    vmax = float(err.max()) if err.size and err.max() > 0 else 1.0
    if len(pts) >= 2:
        segs = np.stack([pts[:-1], pts[1:]], axis=1)
        lc = LineCollection(segs, cmap="viridis", linewidths=2.0, label=f"estimate ({ev.align} aligned)")
        lc.set_array(0.5 * (err[:-1] + err[1:]))
        lc.set_clim(0.0, vmax)
        ax.add_collection(lc)
        fig.colorbar(lc, ax=ax, label="ATE (m)")
    ax.scatter(pts[:, 0], pts[:, 1], c=err, cmap="viridis", vmin=0.0, vmax=vmax, s=6)
    ax.set_xlabel(f"{AXIS_NAMES[a]} (m)")
    ax.set_ylabel(f"{AXIS_NAMES[b]} (m)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    ax.legend(loc="best", fontsize=8)
    ax.set_title("top view")

    t = ev.est.timestamps - ev.est.timestamps[0]
    rmse = float(np.sqrt(np.mean(err**2)))
    ax_t.plot(t, err, color="tab:blue", lw=1.2, label="ATE")
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
