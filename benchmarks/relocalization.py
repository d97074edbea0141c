#!/usr/bin/env python3
"""Relocalisation: a lost tracker brought back after 2 s of black frames, and a second pass with ``--map``.

    python benchmarks/relocalization.py [--repeat 3] [--synth-dir /tmp/slam_bench] [--only SUBSTRING ...]

* **black frames**: the demo room at 640x480, 30 Hz, on a slow loop (40 s) so that the camera comes back
  to texture where the map was built, 0.45 m further on: 45 textured frames, 60 black (2 s), 45 textured,
  tracked as ``slam-run`` replays (threaded local mapping, back-pressure). Figures: frames from texture
  returning to the first tracked frame, the position error of the frames after it (in the alignment of the
  frames before the loss, SE3, no realignment) and the number of maps; the same with
  ``tracking.relocalization=false`` (a new map at the last pose), the trivial alternative.
* **--map**: ``slam-run`` over the synthetic ``demo`` sequence (300 frames, 10 s loop) saves its map; a
  second run over frames 100-299 with ``--map`` relocalises in it. Figure: its ATE in the first run's frame
  (against the ground truth aligned to the first run, no alignment of its own), and the same without ``--map``.
* **pose prior, retrieval unavailable**: the same ``--map`` pass, but the tracker's place describer answers
  nothing (its inference server gone), so place retrieval cannot relocalise; the per-map priors are trained by
  ``slam-train posenet|vidloc --map FIRST_RUN/map.npz --size tiny`` (seeded by the run) and run in-process
  (``slam-run --pose-prior``). Figures: the frame of the pass at which it relocalised in the old map, by what,
  and its ATE in the first run's frame; the prior's own median error over the frames it answered (ground truth
  brought into the first run's frame); beside them no prior, and a trivial prior answering the mean pose of
  the map's keyframes for every frame.

Writes ``results/relocalization.{json,md}`` whole; with ``--only`` the cases not named keep their last runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, check, fmt, md_header, md_table, meta, summarise, write_results  # noqa: E402
from slam.backbone.frontend.pose_prior import ImmediatePosePrior  # noqa: E402
from slam.backbone.loop.place import OrbVladDescriber, PlaceAnswer  # noqa: E402
from slam.backbone.config import SlamConfig  # noqa: E402
from slam.backbone.frontend.tracking import State  # noqa: E402
from slam.backbone.system import System  # noqa: E402
from slam.cli.run import main as slam_run  # noqa: E402
from slam.datasets import open_sequence  # noqa: E402
from slam.eval import compute, errors_after  # noqa: E402
from slam.records import Frame  # noqa: E402
from slam.replay import PipelineItem  # noqa: E402
from slam.runner import Runner, default_mapping_lag  # noqa: E402
from slam.synth import SynthSequence, generate, preset  # noqa: E402
from slam.trajectory import Trajectory, read_tum  # noqa: E402

BEFORE, BLACK, AFTER = 45, 60, 45
MAP_LATER = 100  # the --map pass starts at this frame


# ------------------------------------------------------------------ black frames
def black_frames() -> tuple:
    cfg = dataclasses.replace(preset("demo"), num_frames=BEFORE + BLACK + AFTER, loop_period_s=40.0, imu=False,
                              stereo=False)
    seq = SynthSequence(cfg)
    frames = []
    for i in range(len(seq)):
        if BEFORE <= i < BEFORE + BLACK:
            img, depth = np.zeros((cfg.height, cfg.width, 3), np.uint8), np.zeros((cfg.height, cfg.width), np.float32)
        else:
            f = seq.render_frame(i)
            img, depth = f.rgb, f.depth
        frames.append(Frame(index=i, timestamp=float(seq.frame_us[i]) / 1e6, image=img, camera=seq.camera,
                            depth=depth, T_w_c_gt=seq.T_w_c[i].copy()))
    return seq.camera, frames


def run_black(camera, frames, relocalization: bool) -> dict:
    cfg = SlamConfig()
    cfg.tracking.relocalization = relocalization
    system = System(camera, "rgbd", cfg)
    runner = Runner(system, back_pressure=True, mapping_lag=default_mapping_lag("rgbd"))
    t0 = time.perf_counter()
    try:
        runner.run(PipelineItem(f.index, f, None, None, None) for f in frames)
    finally:
        system.shutdown()
    states = [r.state for r in system.results]
    back = next((i for i in range(BEFORE + BLACK, len(frames)) if states[i] == State.OK), None)
    gt = Trajectory(np.array([f.timestamp for f in frames]), np.stack([f.T_w_c_gt for f in frames]))
    err = errors_after(gt, system.trajectory(), frames[BEFORE].timestamp, "se3")
    reloc = system.tracker.relocalizations[0] if system.tracker.relocalizations else {}
    reloc_ms = [r.timings_ms["relocalization"] for r in system.results if "relocalization" in r.timings_ms
                and r.index >= BEFORE + BLACK]
    return {"frames_to_recover": None if back is None else back - BEFORE - BLACK,
            "error_after_max_m": float(err.max()) if len(err) else None,
            "error_after_median_m": float(np.median(err)) if len(err) else None,
            "error_first_m": float(err[0]) if len(err) else None,
            "maps": len({r.map_id for r in system.records}), "inliers": reloc.get("inliers"),
            "reloc_ms_success_frame": reloc_ms[-1] if reloc_ms else None,
            "wall_s": time.perf_counter() - t0}


# ------------------------------------------------------------------ --map
def later_part(seq: Path, dest: Path, start: int) -> Path:
    dest.mkdir(parents=True)
    for name in ("camera.yaml", "synth.json", "groundtruth.txt"):
        shutil.copy(seq / name, dest / name)
    for name in ("rgb", "depth"):
        (dest / name).symlink_to(seq / name)
        lines = (seq / f"{name}.txt").read_text().splitlines(keepends=True)
        (dest / f"{name}.txt").write_text("".join(lines[:1] + lines[1 + start:]))
    return dest


def ate_in_frame_of(seq: Path, run1: Path, run2: Path | Trajectory) -> float:
    """ATE RMSE (m) of ``run2``'s trajectory (a run folder, or the trajectory) in ``run1``'s frame."""
    gt = open_sequence(seq).groundtruth()
    T = compute(gt, read_tum(run1 / "trajectory.txt"), "se3").T_align
    est = read_tum(run2 / "trajectory.txt") if isinstance(run2, Path) else run2
    idx = np.searchsorted(gt.timestamps, est.timestamps - 1e-6)
    p = est.positions @ T[:3, :3].T + T[:3, 3]
    return float(np.sqrt(np.mean(np.sum((p - gt.positions[idx]) ** 2, axis=1))))


def run_map(seq: Path, later: Path, tmp: Path, i: int) -> dict:
    run1, run2, plain = tmp / f"run1_{i}", tmp / f"run2_{i}", tmp / f"plain_{i}"
    common = ["--mode", "rgbd", "--no-progress", "--log-level", "WARNING"]
    slam_run([str(seq), "--out", str(run1), *common])
    t0 = time.perf_counter()
    rc = slam_run([str(later), "--out", str(run2), "--map", str(run1 / "map.npz"), *common])
    wall = time.perf_counter() - t0
    slam_run([str(later), "--out", str(plain), *common])
    s1 = json.loads((run1 / "summary.json").read_text())
    s = json.loads((run2 / "summary.json").read_text())
    return {"rc": rc, "first_run_ate_m": s1["evaluation"]["ate_rmse_m"],
            "ate_in_first_frame_m": ate_in_frame_of(seq, run1, run2),
            "ate_without_map_m": ate_in_frame_of(seq, run1, plain),
            "relocalized_at_frame": s["loaded_map"]["relocalized_at_frame"], "lost": len(s["lost_frames"]),
            "keyframes_loaded": s["loaded_map"]["keyframes"], "keyframes_after": s["keyframes"], "wall_s": wall}


# ------------------------------------------------------------------ pose prior, retrieval unavailable
GENERATED = ("command", "date", "commit")  # what each case records of the run that made it
PRIORS = ("none", "mean keyframe pose", "posenet", "vidloc")
PRIOR_EPOCHS = 40  # slam-train ... --size tiny --epochs: about 40 s each on 2 CPUs


class _RetrievalUnavailable(OrbVladDescriber):
    """The tracker's place describer while its inference server is gone: every request answered with an error."""

    def submit(self, key, thumbnail, descriptors) -> bool:
        with self._lock:
            self._answers.append(PlaceAnswer(key, None, "the inference server is gone"))
        return True


class _MeanPosePrior(ImmediatePosePrior):
    """The trivial prior: the mean pose of a map's keyframes (mean centre, chordal mean rotation), every frame."""

    name = "mean-keyframe-pose"

    def __init__(self, m):
        super().__init__()
        T = np.stack([kf.T_w_c for kf in m.keyframes.values() if not kf.bad])
        u, _, vt = np.linalg.svd(T[:, :3, :3].sum(0))
        self.T = np.eye(4)
        self.T[:3, :3] = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
        self.T[:3, 3] = T[:, :3, 3].mean(0)

    def pose(self, key, thumbnail, earlier) -> np.ndarray:
        return self.T.copy()


class _Recorded:
    """A pose prior whose answers are kept (frame index -> ``T_w_c``), to measure the prior itself."""

    def __init__(self, prior):
        self.prior, self.name, self.clip_len = prior, prior.name, prior.clip_len
        self.poses: dict[int, np.ndarray] = {}

    def submit(self, key, thumbnail, earlier=()) -> bool:
        return self.prior.submit(key, thumbnail, earlier)

    def poll(self):
        out = self.prior.poll()
        self.poses.update({a.key[1]: a.T_w_c for a in out if a.T_w_c is not None})
        return out

    def available(self) -> bool:
        return self.prior.available()

    def close(self) -> None:
        self.prior.close()


def prior_errors(s, T_align: np.ndarray, poses: dict[int, np.ndarray]) -> tuple[float | None, float | None]:
    """Median position (m) and rotation (deg) error of a prior's answers against the ground truth of ``s``
    (the answers in the first run's map frame, brought into the ground truth's by ``T_align``)."""
    t, r = [], []
    for i, T in poses.items():
        gt = s.groundtruth_pose(i)
        if gt is None:
            continue
        T = T_align @ T
        t.append(float(np.linalg.norm(T[:3, 3] - gt[:3, 3])))
        c = (np.trace(gt[:3, :3].T @ T[:3, :3]) - 1.0) / 2.0
        r.append(float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))))
    return (float(np.median(t)), float(np.median(r))) if t else (None, None)


def train_prior(model: str, first_map: Path, out: Path, seed: int) -> Path:
    """``slam-train MODEL --map FIRST_MAP`` (tiny, CPU, seeded): the per-map prior's checkpoint."""
    from nets.train.cli import train_main

    rc = train_main([model, "--map", str(first_map), "--out", str(out), "--size", "tiny", "--epochs",
                     str(PRIOR_EPOCHS), "--seed", str(seed), "--device", "cpu", "--no-progress", "--no-eval",
                     "--conf", '{"batches_per_epoch": 10}', "--log-level", "WARNING"])
    if rc != 0:
        raise RuntimeError(f"slam-train {model} --map {first_map} failed ({rc})")
    return out


def run_prior(seq: Path, later: Path, run1: Path, prior: str, checkpoint: Path | None) -> dict:
    """The ``--map`` pass over ``later`` in ``run1``'s map with place retrieval unavailable and ``prior``."""
    from slam.backbone.map.map_io import load_map_for_run
    from slam.inference.pose_prior import make_pose_prior
    from slam.replay import FramePipeline

    cfg = SlamConfig()
    s = open_sequence(later)
    s.use_streams("rgbd")
    old = load_map_for_run(run1 / "map.npz", s.camera, cfg.features.scale_factor, cfg.features.n_levels, "rgbd")
    base = (None if prior == "none" else (lambda: _MeanPosePrior(old)) if checkpoint is None
            else make_pose_prior(checkpoint))
    made: list[_Recorded] = []

    def factory() -> _Recorded:
        made.append(_Recorded(base()))
        return made[-1]

    system = System(s.camera, "rgbd", cfg, initial_map=old, pose_prior=None if base is None else factory)
    system.tracker.relocalizer.describer = _RetrievalUnavailable()
    runner = Runner(system, back_pressure=True, mapping_lag=default_mapping_lag("rgbd"))
    pipe = FramePipeline(s, system.prepare, len(s))
    t0 = time.perf_counter()
    try:
        runner.run(pipe)
    finally:
        pipe.close()
        system.shutdown()
    relocs = [r for r in system.tracker.relocalizations if r["loaded_map"]]  # into the old map
    first = relocs[0] if relocs else {}
    traj = system.trajectory()
    T_align = compute(open_sequence(seq).groundtruth(), read_tum(run1 / "trajectory.txt"), "se3").T_align
    err_t, err_r = prior_errors(s, T_align, made[0].poses) if made else (None, None)
    return {"relocalized_at_frame": first.get("frame"), "source": first.get("source"),
            "inliers": first.get("inliers"), "ate_in_first_frame_m": ate_in_frame_of(seq, run1, traj),
            "maps": len({r.map_id for r in system.records}), "prior_answers": len(made[0].poses) if made else 0,
            "prior_median_t_m": err_t, "prior_median_r_deg": err_r, "wall_s": time.perf_counter() - t0}


def prior_cases(demo: Path, later: Path, tmp: Path, repeat: int) -> list[dict]:
    """Per repeat: a first run over demo (its map), priors trained on that map, then each prior's pass."""
    runs: dict[str, list[dict]] = {p: [] for p in PRIORS}
    common = ["--mode", "rgbd", "--no-progress", "--log-level", "WARNING"]
    for i in range(repeat):
        run1 = tmp / f"prior_run1_{i}"
        slam_run([str(demo), "--out", str(run1), *common])
        ckpts = {m: train_prior(m, run1 / "map.npz", tmp / f"{m}_{i}.pt", seed=i) for m in ("posenet", "vidloc")}
        for prior in PRIORS:
            runs[prior].append(run_prior(demo, later, run1, prior, ckpts.get(prior)))
            logging.getLogger("bench").warning("prior %s run %d: %s", prior, i, runs[prior][-1])
    return [{"name": f"pose prior, retrieval unavailable: {p}", "runs": r, "summary": summarise(r)}
            for p, r in runs.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--synth-dir", type=Path, default=Path("/tmp/slam_bench"))
    ap.add_argument("--only", nargs="*", help="substrings of case names to run (the others keep their last runs)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    m = meta()
    old = RESULTS / "relocalization.json"
    kept: dict[str, dict] = {}
    if args.only and old.is_file():
        prev = json.loads(old.read_text())
        for c in prev.get("cases", []):  # each kept case says which run made it
            kept[c["name"]] = {**c, "generated": c.get("generated") or {k: prev["meta"].get(k) for k in GENERATED}}

    def wanted(name: str) -> bool:
        return not args.only or any(o in name for o in args.only)

    cases: list[dict] = []
    if wanted("black frames"):
        camera, frames = black_frames()
        black = [run_black(camera, frames, True) for _ in range(args.repeat)]
        plain = [run_black(camera, frames, False)]
        cases += [{"name": "black frames (relocalisation)", "runs": black, "summary": summarise(black)},
                  {"name": "black frames (relocalisation off: new map)", "runs": plain, "summary": summarise(plain)}]
    demo = args.synth_dir / "demo"
    if wanted("--map second pass") or wanted("pose prior"):
        if not (demo / "synth.json").is_file():
            generate(preset("demo"), demo, progress=False)
        with tempfile.TemporaryDirectory() as tmp:
            later = later_part(demo, Path(tmp) / "demo_later", MAP_LATER)
            if wanted("--map second pass"):
                maps = [run_map(demo, later, Path(tmp), i) for i in range(args.repeat)]
                cases.append({"name": "--map second pass", "runs": maps, "summary": summarise(maps)})
            if wanted("pose prior"):
                cases += prior_cases(demo, later, Path(tmp), args.repeat)
    for c in cases:
        c["generated"] = {k: m.get(k) for k in GENERATED}
    names = [c["name"] for c in cases]
    cases += [c for n, c in kept.items() if n not in names]
    by_name = {c["name"]: c for c in cases}
    order = ["black frames (relocalisation)", "black frames (relocalisation off: new map)", "--map second pass",
             *(f"pose prior, retrieval unavailable: {p}" for p in PRIORS)]
    cases = [by_name[n] for n in order if n in by_name]
    black, maps = by_name["black frames (relocalisation)"]["runs"], by_name["--map second pass"]["runs"]
    b, p, mp = (by_name[n]["summary"] for n in order[:3])
    rows = [
        ["black frames, relocalisation", fmt(b["frames_to_recover"], 0), fmt(b["inliers"], 0),
         fmt(b["error_first_m"], 4), fmt(b["error_after_max_m"], 4), fmt(b["maps"], 0)],
        ["black frames, relocalisation off (new map)", fmt(p["frames_to_recover"], 0), "-",
         fmt(p["error_first_m"], 4), fmt(p["error_after_max_m"], 4), fmt(p["maps"], 0)],
    ]
    worst_back = max(r["frames_to_recover"] if r["frames_to_recover"] is not None else 1 << 30 for r in black)
    worst_err = max(r["error_after_max_m"] if r["error_after_max_m"] is not None else np.inf for r in black)
    worst_map = max(r["ate_in_first_frame_m"] for r in maps)
    md = md_header("Relocalisation", m, args.repeat) + "\n"
    earlier = [c for c in cases if c["name"] in kept and c["name"] not in names]
    if earlier:
        md += ("Kept from earlier runs (not named by --only): " + "; ".join(
            f"{c['name']} (`{c['generated']['command']}`, {c['generated']['date']}, commit "
            f"`{c['generated']['commit']}`)" for c in earlier) + ".\n")
    md += "\n" + __doc__.split("\n\n", 2)[2].rsplit("\n\n", 1)[0] + "\n\n"
    md += md_table(["case", "frames to recover", "inliers", "error first frame (m)", "error after, max (m)", "maps"],
                   rows)
    md += "\n\n" + md_table(["--map pass over demo frames 100-299", "first run ATE (m)", "ATE in its frame (m)",
                             "without --map (m)", "relocalised at frame", "keyframes loaded / after"],
                            [["demo 300, rgbd", fmt(mp["first_run_ate_m"], 4), fmt(mp["ate_in_first_frame_m"], 4),
                              fmt(mp["ate_without_map_m"], 4), fmt(mp["relocalized_at_frame"], 0),
                              f"{fmt(mp['keyframes_loaded'], 0)} / {fmt(mp['keyframes_after'], 0)}"]])
    prior_rows = []
    for name in PRIORS:
        case = by_name.get(f"pose prior, retrieval unavailable: {name}")
        if case is not None:
            c = case["summary"]
            prior_rows.append([name, f"{fmt(c['prior_median_t_m'], 3)} / {fmt(c['prior_median_r_deg'], 1)}",
                               fmt(c["relocalized_at_frame"], 0),
                               ", ".join(sorted({r["source"] or "-" for r in case["runs"]})),
                               fmt(c["ate_in_first_frame_m"], 4)])
    if prior_rows:
        md += "\n\n" + md_table(["--map pass, place retrieval unavailable: prior",
                                   "prior's median error (m / deg)", "relocalised in the old map at frame", "by",
                                   "ATE in the first run's frame (m)"], prior_rows)
    md += "\n\n## Targets\n\n" + md_table(["target", "", "figures"], [
        check("back on track within 10 frames of texture returning (every run)", worst_back < 10,
              f"worst {worst_back} frames"),
        check("pose error after relocalisation <= 5 cm (every run)", worst_err <= 0.05, f"worst {worst_err:.4f} m"),
        check("--map pass: ATE in the old map's frame <= 1 cm (every run)", worst_map <= 0.01,
              f"worst {worst_map:.4f} m"),
    ])
    write_results("relocalization", m, cases, md)
    print(md)


if __name__ == "__main__":
    main()
