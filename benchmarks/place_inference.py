#!/usr/bin/env python3
"""NetVLAD descriptor latency per keyframe thumbnail, in-process vs ``slam-infer`` over ipc; results in
benchmarks/results/place_inference.{json,md}.

    python benchmarks/place_inference.py [--size small] [--thumbnails 60] [--burst 8] [--repeat 3]
                                         [--checkpoint nets/checkpoints/netvlad.pt]

Both paths are the one the SLAM process takes (:mod:`slam.inference`): a
:class:`~slam.inference.place.NetVladDescriber` over an ``InferenceClient``,
answered by ``nets.server``'s service in a thread of this process
(``inproc://``) or by a ``slam-infer`` process (``ipc://``). Measured:

* latency: one 160x120 thumbnail at a time, from ``submit`` to the ``poll``
  that returns its descriptor (the caller polls every 0.2 ms);
* burst: ``--burst`` thumbnails submitted together (as after a stall), time
  until the last descriptor, per thumbnail (the server batches them);
* the network alone: ``NetVLAD.descriptors`` on one thumbnail, no client.

Weights do not change the time: without ``--checkpoint`` an untrained network
of ``--size`` is saved with its sidecar to a temporary folder and served. The
server runs torch on one CPU thread (``OMP_NUM_THREADS=1``), as the in-process
server does by default (``LocalInferenceServer(cpu_threads=1)``: the other
core stays with tracking and local mapping).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fmt, md_header, md_table, meta, summarise, write_results  # noqa: E402

from slam.inference.place import NetVladDescriber, PlaceSettings, make_place_describer  # noqa: E402

POLL_S = 0.0002


def thumbnails(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(n)]


def save_untrained(size: str, folder: Path) -> Path:
    import torch

    from nets.models.netvlad import NetVLAD
    from nets.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = NetVLAD(NetVLAD.conf_for_size(size))
    path = folder / f"netvlad_{size}_untrained.pt"
    save_checkpoint(path, model.net.state_dict(), {"model": "netvlad", "architecture": model.architecture(),
                                                   "conf": model.conf, "input_size": list(model.input_size),
                                                   "data_summary": "untrained (timing only)"})
    return path


def wait_for(d: NetVladDescriber, keys: set) -> None:
    left = set(keys)
    end = time.monotonic() + 30
    while left:
        for a in d.poll():
            if a.descriptor is None and a.error and "no answer within" not in a.error:
                raise RuntimeError(f"descriptor request failed: {a.error}")
            if a.descriptor is not None:
                left.discard(a.key)
        if time.monotonic() > end:
            raise RuntimeError(f"no descriptor for {sorted(left)} within 30 s")
        time.sleep(POLL_S)


def measure(d: NetVladDescriber, thumbs: list[np.ndarray], burst: int) -> dict:
    none = np.zeros((0, 32), np.uint8)
    for i in range(3):  # warm-up
        d.submit(("warm", i), thumbs[i], none)
        wait_for(d, {("warm", i)})
    lat = []
    for i, t in enumerate(thumbs):
        t0 = time.perf_counter()
        d.submit(i, t, none)
        wait_for(d, {i})
        lat.append((time.perf_counter() - t0) * 1e3)
    per = []
    for b in range(0, len(thumbs) - burst + 1, burst):
        keys = {("burst", b + j) for j in range(burst)}
        t0 = time.perf_counter()
        for j in range(burst):
            d.submit(("burst", b + j), thumbs[b + j], none)
        wait_for(d, keys)
        per.append((time.perf_counter() - t0) * 1e3 / burst)
    return {"latency_ms": statistics.median(lat), "latency_p95_ms": float(np.percentile(lat, 95)),
            "burst_ms_per_thumbnail": statistics.median(per)}


def network_alone(checkpoint: Path, thumbs: list[np.ndarray]) -> dict:
    from slam.inference.local import LocalInferenceServer, checkpoint_config

    model = LocalInferenceServer(checkpoint_config(checkpoint), "cpu").models["descriptor"]
    for t in thumbs[:3]:
        model.descriptors(t[None])
    ms = []
    for t in thumbs:
        t0 = time.perf_counter()
        model.descriptors(t[None])
        ms.append((time.perf_counter() - t0) * 1e3)
    return {"latency_ms": statistics.median(ms), "latency_p95_ms": float(np.percentile(ms, 95))}


def start_server(checkpoint: Path, folder: Path) -> tuple[subprocess.Popen, str]:
    arch = json.loads(Path(checkpoint).with_suffix(".json").read_text())["architecture"]
    conf = {k: v for k, v in arch.items() if k not in ("model", "version")}
    cfg = folder / "models.yaml"
    cfg.write_text(json.dumps({"models": [{"model": "netvlad", "checkpoint": str(checkpoint), "conf": conf}]}))
    endpoint = f"ipc://{folder}/infer"
    proc = subprocess.Popen([sys.executable, "-m", "nets.server", "--bind", endpoint, "--device", "cpu",
                             "--config", str(cfg), "--log-level", "WARNING"],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # one torch thread, as in-process
    return proc, endpoint


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="small", choices=("tiny", "small", "full"))
    p.add_argument("--checkpoint", type=Path, help="a NetVLAD checkpoint to serve (default: an untrained --size)")
    p.add_argument("--thumbnails", type=int, default=60)
    p.add_argument("--burst", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="place-bench-"))
    ckpt = args.checkpoint or save_untrained(args.size, tmp)
    proc, endpoint = start_server(ckpt, tmp)
    try:
        local = make_place_describer(PlaceSettings(place="netvlad", checkpoint=str(ckpt), deadline_s=5.0))
        remote = make_place_describer(PlaceSettings(place="netvlad", infer=endpoint, checkpoint=str(ckpt),
                                                    deadline_s=5.0, probe_s=60.0))
        runs: dict[str, list[dict]] = {"network alone": [], "in-process": [], "ipc (slam-infer)": []}
        for r in range(args.repeat):
            thumbs = thumbnails(args.thumbnails, r)
            runs["network alone"].append(network_alone(ckpt, thumbs))
            for name, factory in (("in-process", local), ("ipc (slam-infer)", remote)):
                d = factory()
                try:
                    runs[name].append(measure(d, thumbs, args.burst))
                finally:
                    d.close()
    finally:
        proc.terminate()
        proc.wait(10)
    sidecar = json.loads(ckpt.with_suffix(".json").read_text())
    arch = sidecar["architecture"]
    m = meta(torch_threads=torch.get_num_threads(), omp=os.environ.get("OMP_NUM_THREADS"),
             architecture=arch, checkpoint=str(args.checkpoint) if args.checkpoint else f"untrained {args.size}")
    cases = [{"case": name, "runs": rs, "summary": summarise(rs)} for name, rs in runs.items()]
    rows = [[c["case"], fmt(c["summary"].get("latency_ms"), 2), fmt(c["summary"].get("latency_p95_ms"), 2),
             fmt(c["summary"].get("burst_ms_per_thumbnail"), 2)] for c in cases]
    md = md_header("NetVLAD descriptors through the inference client: in-process vs slam-infer over ipc", m,
                   args.repeat)
    md += (f"\nNetwork: NetVLAD {arch['image_width']}x{arch['image_height']} input, channels {arch['channels']}, "
           f"{arch['clusters']} clusters ({m['checkpoint']}), CPU, torch on 1 thread in both processes. "
           f"Thumbnails: 160x120 RGB, {args.thumbnails} per run (random pixels, seed = run). Latency: submit "
           "to the poll that returns the descriptor, one at a time (median of the run, then median over runs); "
           f"burst: {args.burst} submitted together, time to the last answer / {args.burst}. "
           "Network alone: NetVLAD.descriptors on one thumbnail, no client, no bus.\n\n")
    md += md_table(["path", "latency ms", "p95 ms", f"burst of {args.burst}, ms per thumbnail"], rows)
    write_results("place_inference", m, cases, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
