"""Why a replay tracked no frame at all, in words a newcomer can act on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from slam.backbone.config import SlamConfig
from slam.backbone.frontend.tracking import FrameResult, State
from slam.trajectory import Trajectory

AT_REST_M = 0.05  # below this translation [m] a clip gives a monocular initialiser no baseline to work with


def why_untracked(results: Sequence[FrameResult], mode: str, modes: Sequence[str], cfg: SlamConfig,
                  groundtruth: Trajectory | None = None) -> str:
    """One sentence: what the tracker did with the frames, the likely cause, and the modes to try instead."""
    n = len(results)
    if n == 0:
        return "no frame reached the tracker (every frame was skipped; see skipped_frames)"
    init = sum(r.state == State.NOT_INITIALIZED for r in results)
    motion = ""
    if groundtruth is not None and len(groundtruth) >= 2:
        p = groundtruth.positions
        moved = float(np.max(np.linalg.norm(p - p[0], axis=1)))
        R0 = groundtruth.poses[0, :3, :3]
        cos = (np.einsum("nij,ij->n", groundtruth.poses[:, :3, :3], R0) - 1.0) / 2.0  # trace(R0^T R) = 1 + 2 cos
        turned = float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).max())
        motion = (f"; the ground truth moves {100 * moved:.1f} cm and turns {turned:.1f} deg over the clip"
                  + (" (a camera at rest)" if moved < AT_REST_M else ""))
    if mode.startswith("mono") and init == n:
        tc = cfg.tracking
        others = [m for m in modes if not m.startswith("mono")]
        advice = (f"; modes {', '.join(others)} start from a single frame (--mode {others[0]})" if others else
                  f"; this sequence offers only {', '.join(modes)}: monocular modes need a clip in which the "
                  "camera translates")
        return (f"all {n} frames stayed in monocular initialisation, which needs two views with parallax "
                f"(median >= {tc.mono_init_min_parallax_deg:g} deg over >= {tc.mono_init_min_points} points, "
                f"tracking.mono_init_*){motion}{advice}")
    lost = sum(r.state == State.LOST for r in results)
    return f"of {n} frames, {init} stayed initialising and {lost} were lost{motion}"
