"""What a run leaves behind, written as one set (:mod:`slam.fileset`):

* ``trajectory.txt``: TUM, ``T_w_c`` of every tracked frame of the *largest* map (most tracked frames);
  after a reset (tracking lost for long) the other maps' frames are in ``trajectory_map{N}.txt``, since each
  map has its own world frame until maps are merged (loop closing);
* ``keyframes.txt`` (``keyframes_map{N}.txt``): the keyframes of each map, likewise;
* ``map.npz``: the map save file (:mod:`slam.backbone.map.map_io`); ``map.ply``: its points with colour;
* ``summary.json``, written last: counts, timing, a ``maps`` section (per map: id, frames, first/last frame,
  keyframes, points, files), the evaluation when there is ground truth (each map aligned on its own), and
  ``files``: the name, size and SHA-256 of every other file of the set. A folder whose ``summary.json`` is
  missing, or whose files do not match it, holds an interrupted save (:func:`verify_outputs`).
* ``trajectory_ate.png`` with ``slam-run --plot``, when the sequence has ground truth.

Only these names are ever written or removed in ``--out``: it may hold other files of the user's.
Shared by in-process replay, live runs (``slam-run``) and the SLAM process of
a launch file (``slam.nodes.tracker``), so all of them write the same files.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from slam.backbone.frontend.tracking import State
from slam.backbone.map.map_io import map_to_arrays
from slam.backbone.system import System
from slam.errors import DataError
from slam.fileset import FileSet, remove_stale_temporaries, sha256_of, verify, write_atomic
from slam.trajectory import Trajectory, format_kitti, format_tum, per_frame_poses

log = logging.getLogger(__name__)

SUMMARY = "summary.json"
PLOT = "trajectory_ate.png"
_OUTPUT_NAME = re.compile(r"^((trajectory|keyframes)(_map\d+)?\.txt|trajectory_kitti\.txt|map\.npz|map\.ply|summary\.json|trajectory_ate\.png)$")


def is_output_name(name: str) -> bool:
    """Whether ``name`` is one of the files a run writes (the only names it may replace or remove)."""
    return _OUTPUT_NAME.match(name) is not None


def prepare_out_dir(path: str | Path) -> Path:
    """Check, before a run, that its outputs can be written to ``path``; raise :class:`DataError` if not.

    Refuses a path that is a file (or lies under one) and a folder that cannot be written. Creates nothing.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(path, "the output folder is a file; give a folder (it is created if missing)")
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise DataError(path, f"cannot create the output folder: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(path, f"cannot write the output folder: permission denied on {parent}")
    return path


def verify_outputs(out: str | Path) -> list[str]:
    """Problems of a run's folder: empty when ``summary.json`` is there and every file it names is intact."""
    return verify(out, SUMMARY)


@dataclass
class FrameTimes:
    """Per-frame timing of a run (milliseconds), recorded as each pose comes out of the tracker."""

    tracking_ms: list[float] = field(default_factory=list)  # the tracking step alone
    interval_ms: list[float] = field(default_factory=list)  # between consecutive poses: the sustained rate
    latency_ms: list[float] = field(default_factory=list)  # from the frame's arrival / capture to its pose
    t_last: float = field(default_factory=time.perf_counter)

    def add(self, tracking_ms: float, latency_s: float | None) -> None:
        now = time.perf_counter()
        self.tracking_ms.append(tracking_ms)
        self.interval_ms.append((now - self.t_last) * 1e3)
        self.t_last = now
        if latency_s is not None:
            self.latency_ms.append(latency_s * 1e3)

    def fps(self, last: int = 30) -> float:
        """Poses per second over the last ``last`` frames (for a progress bar)."""
        return 1e3 / max(float(np.mean(self.interval_ms[-last:])), 1e-9) if self.interval_ms else 0.0


@dataclass
class RunTrajectory(Trajectory):
    """Every tracked frame's ``T_w_c``, and which map it belongs to (each map has its own world frame)."""

    map_ids: np.ndarray | None = None  # (N,) int64; None: all one map

    def __post_init__(self) -> None:
        super().__post_init__()
        n = len(self.timestamps)
        self.map_ids = np.zeros(n, np.int64) if self.map_ids is None else np.asarray(self.map_ids, np.int64).reshape(-1)
        if self.map_ids.shape[0] != n:
            raise ValueError(f"{self.map_ids.shape[0]} map ids for {n} poses")

    def of_map(self, map_id: int) -> Trajectory:
        return self.subset(self.map_ids == map_id)

    def largest_map(self) -> int | None:
        """The map with most poses (the lowest id on a tie); None when empty. Its poses go to trajectory.txt."""
        if len(self.map_ids) == 0:
            return None
        ids, counts = np.unique(self.map_ids, return_counts=True)
        return int(ids[np.argmax(counts)])


def run_trajectory(system: System) -> RunTrajectory:
    """:meth:`System.trajectory` with the map id of each pose (from the per-frame records)."""
    traj = system.trajectory()
    map_of = {r.timestamp: getattr(r, "map_id", 0) for r in system.records}
    return RunTrajectory(traj.timestamps, traj.poses, np.array([map_of[t] for t in traj.timestamps], np.int64))


def _file_names(map_id: int, largest: int | None) -> tuple[str, str]:
    if map_id == largest:
        return "trajectory.txt", "keyframes.txt"
    return f"trajectory_map{map_id}.txt", f"keyframes_map{map_id}.txt"


def save_run(out: Path, system: System, head: dict, n: int, skipped: list, times: FrameTimes,
             wall: float) -> tuple[dict, RunTrajectory]:
    """Write the run's files and a first ``summary.json`` (``head`` first) as one set; return the summary and trajectory.

    The caller adds the evaluation (:func:`evaluate_run`) and writes the summary again with :func:`write_summary`.
    A kill at any point leaves the previous set or this one as summary.json describes it, or no summary.json
    (an unfinished save), never a mix that claims to be complete; the next save removes the temporaries.
    """
    out = _ready(out)
    traj = run_trajectory(system)
    largest = traj.largest_map()
    kf_maps = getattr(system, "keyframe_maps", {})
    with system.map.lock:  # one consistent snapshot (the lock is re-entrant)
        arrays = map_to_arrays(system.map)
        kfs = sorted((k for k in system.map.keyframes.values() if not k.bad), key=lambda k: (k.timestamp, k.id))
        kf_traj = RunTrajectory(np.array([k.timestamp for k in kfs]), np.array([k.T_w_c for k in kfs]),
                                np.array([kf_maps.get(k.id, 0) for k in kfs], np.int64))
        good = np.array([not system.map.points[i].bad for i in arrays["pt_id"].tolist()], bool)
    if largest is None:  # no tracked frame (only keyframes, if any): trajectory.txt is that map's, empty
        largest = kf_traj.largest_map()
    pt_maps = np.array([kf_maps.get(int(k), 0) for k in arrays["pt_ref_kf"]], np.int64)
    maps = []
    fs = FileSet(out, SUMMARY, owns=is_output_name)
    try:
        for map_id in sorted(set(traj.map_ids.tolist()) | set(kf_traj.map_ids.tolist())):
            t_name, k_name = _file_names(map_id, largest)
            frames = [r.index for r in system.records if getattr(r, "map_id", 0) == map_id]
            fs.stage_text(t_name, format_tum(traj.of_map(map_id)))
            fs.stage_text(k_name, format_tum(kf_traj.of_map(map_id)))
            maps.append({"id": map_id, "frames": int(np.sum(traj.map_ids == map_id)),
                         "first_frame": min(frames, default=None), "last_frame": max(frames, default=None),
                         "keyframes": int(np.sum(kf_traj.map_ids == map_id)),
                         "map_points": int(np.sum(good & (pt_maps == map_id))),
                         "trajectory": t_name, "keyframes_file": k_name})
        if not maps:  # nothing tracked: the files are still there, empty
            fs.stage_text("trajectory.txt", format_tum(traj))
            fs.stage_text("keyframes.txt", format_tum(kf_traj))
        if head.get("reader") == "KittiSequence" and len(traj) > 0:
            # the KITTI devkit wants one pose per image: a frame without one holds the previous pose
            stamps = dict.fromkeys(range(n), np.nan) | {r.index: r.timestamp for r in system.results}  # NaN: skipped
            main_traj = traj.of_map(largest)
            fs.stage_text("trajectory_kitti.txt", format_kitti(per_frame_poses(main_traj, np.array(list(stamps.values())))))
        fs.stage("map.npz", lambda f: np.savez(f, **arrays))
        colours = point_colours(arrays, getattr(system, "keyframe_colours", {}))
        fs.stage("map.ply", lambda f: write_ply(f, arrays["pt_position"], colours, arrays["pt_normal"]))
        if len(maps) > 1:
            log.warning("%d maps (tracking was lost and a new map started): trajectory.txt holds map %d (%d of %d "
                        "poses), the others trajectory_map{N}.txt", len(maps), largest,
                        int(np.sum(traj.map_ids == largest)), len(traj))
        interval_ms = times.interval_ms
        states = [r.state for r in system.results]
        summary = {
            **head,
            "frames": n,
            "tracked_frames": len(system.records),
            "lost_frames": system.lost_frames(),
            "initialising_frames": int(sum(s == State.NOT_INITIALIZED for s in states)),
            # frame, keyframe and inliers of each relocalisation (after a loss, or in a loaded map)
            "relocalizations": list(getattr(getattr(system, "tracker", None), "relocalizations", [])),
            "skipped_frames": skipped,
            "keyframes": int(sum(not k.bad for k in system.map.keyframes.values())),
            "map_points": int(sum(not p.bad for p in system.map.points.values())),
            # One entry per map (a new one after each reset); trajectory.txt holds the largest.
            "maps": maps,
            "trajectory_map": largest,
            "timing_ms": {
                "frame_interval": stats(np.array(interval_ms)),
                # arrival of a frame (its recorded time with --realtime, else when decoded; live: its
                # capture time) to its pose
                "latency": stats(np.array(times.latency_ms)),
                "tracking": stats(np.array(times.tracking_ms)),
                "tracking_steps": {k: stats(np.array([r.timings_ms.get(k, np.nan) for r in system.results]))
                                   for k in ("features", "motion", "local_map", "keyframe", "lock_wait")},
                "local_mapping_per_keyframe": stats(np.array(system.mapper.timings_ms)),
                "local_ba": stats(np.array(system.mapper.ba_ms)),
                "local_mapping_steps": {k: stats(np.array(v)) for k, v in system.mapper.step_ms.items()},
            },
            # Closed loops (keyframes, frame, correction of the current keyframe's pose) and global BA runs.
            **_loop_summary(system),
            # Sustained rate: poses out per second (prefetched feature extraction overlaps tracking).
            "tracking_fps": float(1e3 / np.median(interval_ms)) if len(interval_ms) else None,
            "wall_s": wall,
            "outputs": [*fs.staged, SUMMARY],
            "config": system.cfg.to_dict(),
        }
        summary = fs.commit(summary)
    finally:
        fs.discard()
    return summary, traj


def _loop_summary(system: System) -> dict:
    closer = getattr(system, "loop_closer", None)
    if closer is None:
        return {"loops": [], "loop_closing": {"enabled": False}}
    info = closer.summary()
    return {"loops": info.pop("loops"), "loop_closing": info}


def _ready(out: str | Path) -> Path:
    out = prepare_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out, is_output_name)
    return out


def stats(ms: np.ndarray) -> dict | None:
    ms = ms[np.isfinite(ms)] if len(ms) else ms
    if len(ms) == 0:
        return None
    return {"median": float(np.median(ms)), "p95": float(np.percentile(ms, 95)), "max": float(ms.max()), "n": len(ms)}


# ------------------------------------------------------------------ point cloud
def point_colours(arrays: dict[str, np.ndarray], keyframe_colours: dict[int, np.ndarray]) -> np.ndarray:
    """(P, 3) uint8 RGB of the map points of ``arrays`` (:func:`map_to_arrays`).

    A point takes the colour of its keypoint in its reference keyframe, else in another keyframe that
    observes it, from the colours sampled when each keyframe was made (:attr:`System.keyframe_colours`);
    mid grey when none has one (e.g. the first keyframe of a monocular map).
    """
    pt_id, ref, obs = arrays["pt_id"], arrays["pt_ref_kf"], arrays["observations"]
    out = np.full((len(pt_id), 3), 128, np.uint8)
    if len(obs) == 0 or len(pt_id) == 0:
        return out
    row = np.searchsorted(pt_id, obs[:, 0])  # pt_id is sorted
    col = np.zeros((len(obs), 3), np.uint8)
    has = np.zeros(len(obs), bool)
    for kf in np.unique(obs[:, 1]).tolist():
        c = keyframe_colours.get(kf)
        if c is None:
            continue
        sel = np.nonzero((obs[:, 1] == kf) & (obs[:, 2] < len(c)))[0]
        col[sel], has[sel] = c[obs[sel, 2]], True
    score = has * 2 + (obs[:, 1] == ref[row])  # coloured first, the reference keyframe's first among those
    order = np.lexsort((-score, row))
    first = order[np.r_[True, row[order][1:] != row[order][:-1]]]
    first = first[has[first]]
    out[row[first]] = col[first]
    if len(first) < len(pt_id):
        log.info("%d of %d map points have no colour (no observing keyframe kept one): grey",
                 len(pt_id) - len(first), len(pt_id))
    return out


def write_ply(f: BinaryIO, positions: np.ndarray, colours: np.ndarray, normals: np.ndarray | None = None) -> None:
    """Binary little-endian PLY of points (world frame, metres), RGB colours and optional unit normals."""
    fields = [("x", "<f8"), ("y", "<f8"), ("z", "<f8")]
    if normals is not None:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    v = np.zeros(len(positions), dtype=fields)
    v["x"], v["y"], v["z"] = np.asarray(positions, np.float64).reshape(-1, 3).T
    if normals is not None:
        v["nx"], v["ny"], v["nz"] = np.asarray(normals, np.float32).reshape(-1, 3).T
    v["red"], v["green"], v["blue"] = np.asarray(colours, np.uint8).reshape(-1, 3).T
    ply_type = {"<f8": "double", "<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0",
              "comment SLAM map points: world frame of the first map, metres",
              f"element vertex {len(v)}", *(f"property {ply_type[t]} {name}" for name, t in fields), "end_header"]
    f.write(("\n".join(header) + "\n").encode("ascii"))
    f.write(v.tobytes())


# ------------------------------------------------------------------ evaluation
def evaluate_run(seq, traj: Trajectory, mode: str, plot: str | Path | None = None) -> dict | None:
    """ATE/RPE against the sequence's ground truth, when it has one (Sim3 for monocular modes).

    Each map is aligned and evaluated on its own (``maps``); the top-level numbers are those of the largest
    map, the one in trajectory.txt. ``plot``: also write the ATE plot of that map there (PNG), named in ``plot``.
    """
    from slam.eval.common import EvalError
    from slam.eval.evaluate import compute

    gt = seq.groundtruth()
    if gt is None or len(gt) < 3 or len(traj) < 3:
        if plot is not None:
            log.info("no ground truth to compare with: no plot")
        return None
    if not isinstance(traj, RunTrajectory):
        traj = RunTrajectory(traj.timestamps, traj.poses)
    align = "sim3" if mode.startswith("mono") else "se3"
    largest = traj.largest_map()
    entries, main_ev = [], None
    for map_id in np.unique(traj.map_ids).tolist():
        part = traj.of_map(map_id)
        entry = {"map": map_id, "frames": len(part)}
        if len(part) < 3:
            entries.append({**entry, "error": "fewer than 3 poses"})
            continue
        try:
            ev = compute(gt, part, align=align)
        except (EvalError, ValueError) as e:
            log.warning("evaluation of map %d skipped: %s", map_id, e)
            entries.append({**entry, "error": str(e)})
            continue
        entries.append({**entry, "matched": len(ev.gt), "align": align, "ate_rmse_m": _rmse(ev.ate_errors),
                        "rpe_trans_rmse_m": _rmse(ev.rpe_trans), "rpe_rot_rmse_deg": _rmse(ev.rpe_rot),
                        "scale": ev.scale, "gt_path_length_m": float(ev.gt.path_length())})
        if map_id == largest:
            main_ev = ev
    main = next(e for e in entries if e["map"] == largest)
    if main_ev is None:
        return None
    res = {"align": align, "map": largest, "ate_rmse_m": main["ate_rmse_m"],
           "rpe_trans_rmse_m": main["rpe_trans_rmse_m"], "rpe_rot_rmse_deg": main["rpe_rot_rmse_deg"],
           "scale": main["scale"], "path_length_m": float(gt.path_length()), "maps": entries}
    if plot is not None:
        from slam.eval.plot import plot_evaluation

        title = (f"{getattr(seq, 'name', '')}: ATE rmse {main['ate_rmse_m']:.4g} m ({align})"
                 + (f", map {largest} of {len(entries)}" if len(entries) > 1 else ""))
        plot = plot_evaluation(main_ev, plot, title)
        res["plot"] = plot.name
    return res


def _rmse(e: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(e)))) if len(e) else float("nan")


# ------------------------------------------------------------------ summary
def loaded_map_summary(path: str | Path, counts: tuple[int, int], system: System) -> dict:
    """``summary.json``'s ``loaded_map`` (``slam-run --map``): the file, its keyframes and points when loaded
    (``counts``), and where the run relocalised in it (None, and ``new_map_started``, when it never did)."""
    relocs = [r for r in system.tracker.relocalizations if r["loaded_map"]]
    n_kf, n_pt = counts
    return {"file": str(path), "keyframes": n_kf, "map_points": n_pt,
            "relocalized_at_frame": relocs[0]["frame"] if relocs else None,
            "relocalized_against_keyframe": relocs[0]["keyframe"] if relocs else None,
            "new_map_started": not relocs and bool(system.records)}


def save_empty_run(out: Path, head: dict, live: dict, wall: float) -> dict:
    """Outputs of a live run that got no frame: empty trajectories and a summary saying why."""
    out = _ready(out)
    empty = Trajectory(np.zeros(0), np.zeros((0, 4, 4)))
    fs = FileSet(out, SUMMARY, owns=is_output_name)
    try:
        fs.stage_text("trajectory.txt", format_tum(empty))
        fs.stage_text("keyframes.txt", format_tum(empty))
        summary = {**head, "frames": 0, "tracked_frames": 0, "lost_frames": [], "keyframes": 0, "map_points": 0,
                   "maps": [], "tracking_fps": None, "wall_s": wall, "outputs": [*fs.staged, SUMMARY],
                   "evaluation": None, "live": live}
        return fs.commit(summary)
    finally:
        fs.discard()


def write_summary(out: Path, summary: dict) -> None:
    """Write ``summary.json`` atomically, naming (size, SHA-256) every output: those :func:`save_run` wrote and
    any written since (the plot named by the evaluation)."""
    out = Path(out)
    files = dict(summary.get("files") or {})
    names = [n for n in summary.get("outputs", []) if n != SUMMARY]
    ev = summary.get("evaluation")
    if isinstance(ev, dict) and ev.get("plot") and ev["plot"] not in names:
        names.append(ev["plot"])
    for name in names:
        if name not in files and (out / name).is_file():
            files[name] = {"bytes": (out / name).stat().st_size, "sha256": sha256_of(out / name)}
    summary["outputs"] = [*names, SUMMARY]
    summary["files"] = files
    text = json.dumps(summary, indent=2, default=str) + "\n"
    write_atomic(out / SUMMARY, lambda f: f.write(text.encode()))
