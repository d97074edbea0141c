#!/usr/bin/env python3
"""Speed of the optimisers on synthetic problems: motion-only pose optimisation against the g2o reference, and
local bundle adjustment with both backends (build vs optimise split, whether the solver releases the GIL).

    PYTHONPATH=. python benchmarks/optim_speed.py [--quick]

Prints the timings (they were the ``__main__`` sections of tests/backbone/test_optim.py and test_local_ba.py).
The synthetic problems are the unit tests' own (tests/backbone), so the numbers describe the tested cases.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from slam.backbone.optim.local_ba import BACKENDS
from slam.backbone.optim.pose import optimize_pose
from tests.backbone.test_local_ba import _max_pose_error, _perturbed_start, ba_scene, gil_check, run_ba
from tests.backbone.test_optim import BF, CX, CY, FX, FY, optimize_pose_g2o, perturb, pose_scene


def pose_benchmark(quick: bool = False) -> None:
    rng = np.random.default_rng(42)
    print("optimize_pose (mixed mono/stereo, 20% outliers), median of runs:")
    for n in (300, 600, 1000):
        s = pose_scene(rng, n=n, stereo_frac=0.5, outlier_frac=0.2)
        T0 = perturb(rng, s.T_c_w)
        reps = 5 if quick else 20
        times, times_g2o = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            optimize_pose(T0, s.X, s.uv, s.ur, s.w, FX, FY, CX, CY, BF)
            times.append(time.perf_counter() - t0)
        for _ in range(max(reps // 4, 2)):
            t0 = time.perf_counter()
            optimize_pose_g2o(T0, s.X, s.uv, s.ur, s.w)
            times_g2o.append(time.perf_counter() - t0)
        print(f"  N={n:5d}: {1e3 * np.median(times):6.2f} ms   (g2o reference {1e3 * np.median(times_g2o):6.2f} ms)")




def local_ba_benchmark(quick: bool = False) -> None:
    rng = np.random.default_rng(42)
    # about a monocular keyframe's window in the running system
    n_kf, n_pts = (6, 600) if quick else (10, 3000)
    s = ba_scene(rng, n_kf=n_kf, n_pts=n_pts, obs_per_pt=4, stereo_frac=0.0, outlier_frac=0.1)
    fixed = {100, 101, 102, 103}
    for backend in BACKENDS:
        for _ in range(1 if quick else 3):
            poses0, X0 = _perturbed_start(rng, s, fixed, trans=0.01, rot_deg=0.3, pt_sigma=0.02)  # as after tracking
            res = run_ba(s, poses0, X0, fixed, iterations=(5, 5), backend=backend)
            st = res.stats
            err = _max_pose_error(res.poses, s.poses)
            print(f"local BA {backend:6s} {n_kf} kf ({len(fixed)} fixed), {n_pts} pts, {st.n_edges} obs: "
                  f"build {1e3 * st.build_s:.1f} ms, optimize {1e3 * st.optimize_s:.1f} ms, "
                  f"total {1e3 * st.total_s:.1f} ms; {st.n_outliers} outliers, max pose err {1e3 * err[0]:.2f} mm")  # fmt: skip
        during, idle = gil_check(s, fixed, backend)
        print(f"  GIL: a Python thread spins {during:.0f} loops/ms inside the solver vs {idle:.0f} alone "
              f"({'released' if during > 0.3 * idle else 'HELD'})")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller problems, fewer repetitions")
    args = ap.parse_args()
    pose_benchmark(args.quick)
    local_ba_benchmark(args.quick)


if __name__ == "__main__":
    main()
