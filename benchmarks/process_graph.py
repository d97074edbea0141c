#!/usr/bin/env python3
"""The process graph against in-process replay: end-to-end latency, rate, accuracy; inference round trips.

    python benchmarks/process_graph.py [--synth-dir /tmp/slam_bench] [--frames 300]

1. The synthetic ``demo`` sequence (640x480 RGB-D, 30 Hz), decoded into
   memory first as a camera delivers frames (decoding these noisy PNGs costs
   ~25 ms of CPU per frame), through ``slam-run --launch`` of
   ``launch/synthetic_replay.yaml`` with ``preload: true`` (source, SLAM and
   inference server as three processes on ipc) and through in-process
   ``slam-run --preload --realtime``. Latency is from a frame's due time (its recorded
   time, as a camera's capture time) to its pose in the SLAM process, in both.
2. Round trips to ``slam-infer`` on CPU over ipc: a heartbeat, and a
   640x480 image request answered by a fixed-function model (the learned
   models report theirs here as they land).

Writes benchmarks/results/process_graph.json and process_graph.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from slam.bus.codec import Message
from slam.bus.rpc import RpcClient
from slam.cli.launch_run import run_launch
from slam.cli.run import main as slam_run
from slam.synth import generate, preset

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _row(name: str, s: dict) -> dict:
    t = s["timing_ms"]
    ev = s.get("evaluation") or {}
    return {"case": name, "frames": s["frames"], "tracked": s["tracked_frames"], "lost": len(s["lost_frames"]),
            "ate_rmse_m": ev.get("ate_rmse_m"), "latency_ms_median": t["latency"]["median"],
            "latency_ms_p95": t["latency"]["p95"], "interval_ms_median": t["frame_interval"]["median"],
            "interval_ms_p95": t["frame_interval"]["p95"], "tracking_ms_median": t["tracking"]["median"]}


def graph_vs_in_process(seq: Path, work: Path, frames: int) -> list[dict]:
    rows = []
    out = work / "in_process"
    assert slam_run([str(seq), "--out", str(out), "--realtime", "--preload", "--no-progress", "--log-level",
                     "WARNING", "--max-frames", str(frames)]) == 0
    rows.append(_row("in-process replay (--preload --realtime)", json.loads((out / "summary.json").read_text())))
    out = work / "graph"
    launch = work / "graph.yaml"  # launch/synthetic_replay.yaml with the frames decoded first, as from a camera
    launch.write_text((ROOT / "launch" / "synthetic_replay.yaml").read_text().replace(
        "{kind: replay, realtime: true, mode: rgbd}", "{kind: replay, realtime: true, preload: true, mode: rgbd}"))
    assert "preload: true" in launch.read_text()
    assert run_launch(launch, seq, out, "WARNING", max_frames=frames) == 0
    s = json.loads((out / "summary.json").read_text())
    rows.append({**_row("process graph over ipc (source, SLAM, slam-infer)", s),
                 "bus_gaps": s["bus"]["frames"]["gaps"], "heartbeats": s["inference"]["heartbeats"]})
    return rows


def inference_round_trips(work: Path, n: int = 200) -> list[dict]:
    cfg = work / "models.yaml"
    cfg.write_text("models:\n  - model: 'tests.nets.toy_models:BrightnessDepth'\n")
    endpoint = f"ipc://{work}/infer"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "nets.server", "--bind", endpoint, "--device", "cpu",
                             "--config", str(cfg), "--log-level", "WARNING"], env=env)
    client = RpcClient(None, endpoint, heartbeat_s=0.05)
    rows = []
    try:
        t_end = time.monotonic() + 30
        while client.server_info is None and time.monotonic() < t_end:
            client.poll()
            time.sleep(0.01)
        image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        for name, msg in (("heartbeat (no payload)", Message("infer", "heartbeat", 0, 0.0)),
                          ("640x480 RGB image -> 640x480 float32 map (fixed-function toy model)",
                           Message("infer", "depth", 0, 0.0, {}, {"image": image}))):
            rtt = []
            for _ in range(n):
                t0 = time.perf_counter()
                client.submit(msg, deadline_s=5.0)
                done = []
                while not done:
                    done = [r for r in client.poll() if r.reply is not None]
                rtt.append((time.perf_counter() - t0) * 1e3)
            rows.append({"request": name, "n": n, "rtt_ms_median": float(np.median(rtt)),
                         "rtt_ms_p95": float(np.percentile(rtt, 95))})
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)
    return rows


def write(meta: dict, graph: list[dict], rpc: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "process_graph.json").write_text(json.dumps({"meta": meta, "graph": graph, "inference": rpc},
                                                           indent=2))
    lines = [f"# Process graph benchmark ({meta['date']}, {meta['cpus']} CPUs)", "",
             f"`{meta['command']}`", "",
             f"Synthetic `demo` sequence, 640x480 RGB-D at 30 Hz, first {meta['frames']} frames, decoded into "
             "memory before the run (as a camera delivers frames; PNG decoding would cost ~25 ms of CPU per frame "
             "on these 2 cores).", "",
             "| run | frames | tracked | lost | ATE RMSE (m) | latency ms median / p95 | pose interval ms median / p95 "
             "| tracking ms median |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in graph:
        ate = f"{r['ate_rmse_m']:.4f}" if r["ate_rmse_m"] is not None else "-"
        lines.append(f"| {r['case']} | {r['frames']} | {r['tracked']} | {r['lost']} | {ate} | "
                     f"{r['latency_ms_median']:.1f} / {r['latency_ms_p95']:.1f} | "
                     f"{r['interval_ms_median']:.1f} / {r['interval_ms_p95']:.1f} | {r['tracking_ms_median']:.1f} |")
    lines += ["", "* **latency**: from a frame's due time (its recorded time, as a camera's capture time) "
              "to its pose in the SLAM process, so decoding, the bus hop "
              "(`benchmarks/results/bus.md`: ~2 ms for a 640x480 RGB-D frame over ipc) and feature extraction count.",
              "* **pose interval**: wall time between consecutive poses (30 Hz input: ~33 ms when keeping up).",
              "* Decoding the PNGs during the run instead (no preload) does not fit on these 2 cores at 30 Hz, in "
              "either form: measured 2026-11-25, in-process latency 0.75 s median and growing, the graph 1.6 s with "
              "12 of 300 frames dropped by the bus (a subscriber that falls behind loses frames; it never blocks "
              "the source).", "",
              "## Inference server round trips (CPU, ipc)", "",
              "| request | n | round trip ms median / p95 |", "| --- | --- | --- |"]
    for r in rpc:
        lines.append(f"| {r['request']} | {r['n']} | {r['rtt_ms_median']:.2f} / {r['rtt_ms_p95']:.2f} |")
    lines += ["", "No learned model is in `nets/models/` yet: each model's round trip joins this table when it "
              "lands. The toy model's compute is a mean over channels (~1 ms), so its row is mostly transport "
              "(a 0.9 MB request and a 1.2 MB answer)."]
    (RESULTS / "process_graph.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--synth-dir", type=Path, default=Path(os.environ.get("SLAM_BENCH_DATA", "/tmp/slam_bench")))
    p.add_argument("--frames", type=int, default=300)
    args = p.parse_args()
    seq = args.synth_dir / "demo"
    if not (seq / "synth.json").is_file():
        generate(preset("demo"), seq, progress=False)
    with tempfile.TemporaryDirectory(prefix="graph-bench-") as tmp:
        graph = graph_vs_in_process(seq, Path(tmp), args.frames)
        rpc = inference_round_trips(Path(tmp))
    meta = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "frames": args.frames,
            "command": "python benchmarks/process_graph.py"}
    write(meta, graph, rpc)
    print((RESULTS / "process_graph.md").read_text())


if __name__ == "__main__":
    main()
