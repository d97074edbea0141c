"""Accuracy assertions that a broken tracker fails: every ATE bound is checked against trivial answers.

``assert_beats_trivial(est, gt, align, bound)`` scores the estimate, scores the
trivial estimates of :mod:`slam.eval.baselines` on the same matched frames with
the same alignment, and asserts both that the bound sits well below the best
trivial answer (so it can never drift up to what a tracker that does nothing
scores) and that the estimate meets the bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slam.datasets import open_sequence
from slam.eval import compute
from slam.eval.baselines import trivial_ates
from slam.eval.metrics import AlignMethod
from slam.trajectory import Trajectory, read_tum


@dataclass(frozen=True)
class TrivialCheck:
    """The estimate's ATE, the bound, and each trivial estimate's ATE (metres), on ``matched`` frames."""

    ate: float
    bound: float
    trivial: dict[str, float]
    matched: int

    @property
    def best_trivial(self) -> tuple[str, float]:
        name = min(self.trivial, key=self.trivial.__getitem__)
        return name, self.trivial[name]

    def __str__(self) -> str:
        name, value = self.best_trivial
        return (f"ATE {1e3 * self.ate:.1f} mm on {self.matched} frames, bound {1e3 * self.bound:.1f} mm, "
                f"best trivial {name} {1e3 * value:.1f} mm")


def check_bound(ate: float, bound: float, trivial: dict[str, float], matched: int, margin: float) -> TrivialCheck:
    """Assert ``margin * bound <= min(trivial)`` and ``ate <= bound``; the numbers for a report."""
    res = TrivialCheck(float(ate), float(bound), dict(trivial), int(matched))
    name, value = res.best_trivial
    assert margin * bound <= value, (
        f"the bound {1e3 * bound:.1f} mm is not {margin}x below the trivial answer {name} "
        f"({1e3 * value:.1f} mm); all: { {k: round(1e3 * v, 1) for k, v in trivial.items()} } mm")
    assert ate <= bound, f"ATE {1e3 * ate:.1f} mm above the bound {1e3 * bound:.1f} mm ({res})"
    return res


def assert_beats_trivial(est: Trajectory, gt: Trajectory, align: AlignMethod, bound: float, margin: float = 2.0,
                         restarts_at: tuple[float, ...] = (), max_diff: float = 0.01) -> TrivialCheck:
    """ATE RMSE of ``est`` within ``bound`` metres, and every trivial estimate ``margin`` times above it.

    ``est`` and ``gt`` are associated by timestamp (``max_diff`` seconds, as
    ``slam-eval``); the trivial estimates are built on the matched ground-truth
    frames only, so a tracker that drops frames is compared on what it kept.
    ``restarts_at``: timestamps (s) where the tracker restarted after a loss;
    each adds the restart-at-origin answers from that frame on.
    """
    ev = compute(gt, est, align, max_diff=max_diff)
    restarts = tuple(int(np.searchsorted(ev.gt.timestamps, t - max_diff)) for t in restarts_at)
    restarts = tuple(r for r in restarts if 0 < r < len(ev.gt))
    trivial = trivial_ates(ev.gt, align, restarts)
    ate = float(np.sqrt(np.mean(ev.ate_errors**2)))
    return check_bound(ate, bound, trivial, len(ev.gt), margin)


def assert_run_beats_trivial(sequence, out, align: AlignMethod, bound: float, margin: float = 2.0,
                             **options) -> TrivialCheck:
    """:func:`assert_beats_trivial` for a ``slam-run`` output folder against its sequence's ground truth."""
    gt = open_sequence(sequence, **options).groundtruth()
    assert gt is not None, f"{sequence} has no ground truth"
    return assert_beats_trivial(read_tum(out / "trajectory.txt"), gt, align, bound, margin)


def trivial_over_offsets(gt: Trajectory, steps: np.ndarray, align: AlignMethod) -> dict[str, float]:
    """Each trivial answer's best ATE (m) on frames ``steps + k`` of ``gt``, over every offset ``k`` that fits.

    For an estimate whose first frame is unknown and searched (a live camera's host clock): the trivial
    answers get the same search, so a short window where the camera barely moves counts against the bound.
    """
    steps = np.asarray(steps, dtype=int)
    best: dict[str, float] = {}
    for k in range(len(gt) - int(steps[-1])):
        for name, value in trivial_ates(gt.subset(steps + k), align).items():
            best[name] = min(best.get(name, np.inf), value)
    return best
