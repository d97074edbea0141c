#!/usr/bin/env python3
"""Where the time goes: CPU per frame of each thread of the SLAM system, by step and by function.

    python benchmarks/profile_backbone.py [--seq /tmp/slam_bench/loop600_s0] [--mode rgbd] [--repeat 3]

Writes ``benchmarks/results/backbone_profile.md`` (and ``.json``) whole:

1. ``--repeat`` plain runs of ``slam-run SEQ --preload`` (frames decoded into
   memory first, as from a camera). For each, the CPU time (``time.thread_time``)
   each thread spends per frame: feature extraction (the pipeline's feature
   thread), tracking (the caller's thread) and local mapping (its thread, per
   keyframe and spread over the frames), and the per-step timings every run
   writes to ``summary.json``. Median (min-max) over the runs.
2. One run under ``cProfile``, one profiler per thread, and the functions
   with the most own time in each thread.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt, md_header, md_table, meta, summarise, write_results  # noqa: E402

from slam.backbone.local_mapping import LocalMapper  # noqa: E402
from slam.backbone.system import System  # noqa: E402
from slam.cli.run import main as slam_run  # noqa: E402

THREADS = ("features", "tracking", "local_mapping")


class _Meter:
    """Wraps System.prepare (feature thread), System.process (tracking) and LocalMapper.process (mapping)."""

    def __init__(self, profile: bool):
        self.cpu_s = dict.fromkeys(THREADS, 0.0)
        self.calls = dict.fromkeys(THREADS, 0)
        self.prof = {k: cProfile.Profile() for k in THREADS} if profile else None
        self._orig = (System.prepare, System.process, LocalMapper.process)

    def _wrap(self, key: str, fn):
        meter = self

        def wrapped(*a, **kw):
            t0 = time.thread_time()
            try:
                if meter.prof is not None:
                    return meter.prof[key].runcall(fn, *a, **kw)
                return fn(*a, **kw)
            finally:
                meter.cpu_s[key] += time.thread_time() - t0
                meter.calls[key] += 1

        return wrapped

    def __enter__(self) -> _Meter:
        System.prepare = self._wrap("features", self._orig[0])
        System.process = self._wrap("tracking", self._orig[1])
        LocalMapper.process = self._wrap("local_mapping", self._orig[2])
        return self

    def __exit__(self, *exc) -> None:
        System.prepare, System.process, LocalMapper.process = self._orig


def one_run(seq: str, mode: str, out: Path, profile: bool) -> tuple[dict, _Meter]:
    with _Meter(profile) as meter:
        rc = slam_run([seq, "--out", str(out), "--mode", mode, "--preload", "--no-progress", "--log-level", "WARNING"])
    if rc != 0:
        raise SystemExit(f"slam-run failed with exit code {rc}")
    s = json.loads((out / "summary.json").read_text())
    frames = max(meter.calls["tracking"], 1)
    t = s["timing_ms"]
    fig = {f"cpu_ms_per_frame_{k}": meter.cpu_s[k] * 1e3 / frames for k in THREADS}
    fig["cpu_ms_per_keyframe_local_mapping"] = meter.cpu_s["local_mapping"] * 1e3 / max(meter.calls["local_mapping"], 1)
    fig["keyframes_processed"] = meter.calls["local_mapping"]
    fig["interval_ms_median"] = t["frame_interval"]["median"]
    fig["interval_ms_p95"] = t["frame_interval"]["p95"]
    for k, v in (t.get("tracking_steps") or {}).items():
        fig[f"tracking_step_ms_{k}"] = (v or {}).get("median")
    for k, v in (t.get("local_mapping_steps") or {}).items():
        fig[f"mapping_step_ms_{k}"] = (v or {}).get("median")
    return fig, meter


def top_functions(prof: cProfile.Profile, n: int, frames: int) -> list[list[str]]:
    st = pstats.Stats(prof)
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _) in sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:n]:
        where = file.split("/main/")[-1].split("site-packages/")[-1]
        rows.append([f"`{func}` ({where}:{line})", f"{tt * 1e3 / frames:.2f}", f"{ct * 1e3 / frames:.2f}", str(nc)])
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq", default=os.path.join(os.environ.get("SLAM_BENCH_DATA", "/tmp/slam_bench"), "loop600_s0"))
    p.add_argument("--mode", default="rgbd")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="slam_profile_"))
    runs = [one_run(args.seq, args.mode, work / f"run{i}", profile=False)[0] for i in range(args.repeat)]
    summ = summarise(runs)
    _, meter = one_run(args.seq, args.mode, work / "profiled", profile=True)
    frames = max(meter.calls["tracking"], 1)

    m = meta(sequence=args.seq, mode=args.mode, repeats=args.repeat)
    md = [md_header(f"Where the time goes: {Path(args.seq).name}, {args.mode}, frames in memory", m, args.repeat)]
    md.append("\n## CPU per frame, by thread\n")
    md.append(md_table(["thread", "CPU ms per frame", "notes"], [
        ["feature extraction (pipeline thread)", fmt(summ["cpu_ms_per_frame_features"], 2), "ORB + grid selection"],
        ["tracking (caller's thread)", fmt(summ["cpu_ms_per_frame_tracking"], 2), "motion model, local map, keyframe"],
        ["local mapping (its thread)", fmt(summ["cpu_ms_per_frame_local_mapping"], 2),
         f"{fmt(summ['cpu_ms_per_keyframe_local_mapping'], 0)} ms per keyframe, "
         f"{fmt(summ['keyframes_processed'], 0)} keyframes"],
    ]))
    total = sum(summ[f"cpu_ms_per_frame_{k}"]["median"] for k in THREADS)
    md.append(f"\nTogether {total:.1f} ms of CPU per frame; on 2 cores the best sustained pose interval is about "
              f"{total / 2:.1f} ms if the threads overlap perfectly. Measured pose interval: median "
              f"{fmt(summ['interval_ms_median'])} ms, p95 {fmt(summ['interval_ms_p95'])} ms.\n")
    md.append("\n## Steps (milliseconds per call, median per run; from summary.json)\n")
    step_rows = [[k.replace("tracking_step_ms_", "tracking: ").replace("mapping_step_ms_", "local mapping: "),
                  fmt(v, 2)] for k, v in summ.items() if k.startswith(("tracking_step_ms_", "mapping_step_ms_"))]
    md.append(md_table(["step", "ms"], step_rows))
    for k in THREADS:
        md.append(f"\n## Own time by function: {k.replace('_', ' ')} thread (one profiled run, ms per frame)\n")
        md.append(md_table(["function", "own ms / frame", "cumulative ms / frame", "calls"],
                           top_functions(meter.prof[k], args.top, frames)))
    md.append("\n(cProfile adds its own overhead to Python-heavy code; compiled kernels and OpenCV show as single "
              "calls. The thread CPU table above comes from the runs without the profiler.)\n")
    write_results("backbone_profile", m, [{"runs": runs, "summary": summ}], "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
