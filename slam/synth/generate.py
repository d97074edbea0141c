"""Render a synthetic sequence to disk in one of the supported layouts."""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from slam.synth.config import SynthConfig
from slam.synth.sequence import SynthSequence
from slam.synth.writers import WRITERS

log = logging.getLogger(__name__)

LAYOUTS = tuple(WRITERS)


def generate(
    cfg: SynthConfig,
    out_dir: str | Path,
    layout: str = "native",
    progress: bool = True,
    sequence: SynthSequence | None = None,
) -> Path:
    """Render the sequence of ``cfg`` into ``out_dir`` in ``layout`` (native, tum, euroc, kitti).

    Files this layout writes are replaced; other files in ``out_dir`` are left alone. A prepared
    ``sequence`` (e.g. sharing a built scene) may be passed instead; its config then wins.
    Returns the output folder.
    """
    if layout not in WRITERS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(WRITERS)}")
    t0 = time.perf_counter()
    seq = sequence if sequence is not None else SynthSequence(cfg)
    cfg = seq.cfg
    clear = seq.min_clearance()
    if clear < cfg.min_clearance_m:
        log.warning("trajectory comes %.2f m close to a surface (asked for >= %.2f m)", clear, cfg.min_clearance_m)
    motion = seq.motion_summary()
    log.info("%.2f loops of %.1f s: peak %.2f m/s, %.0f deg/s, %.2f m/s^2", cfg.duration / cfg.loop_period,
             cfg.loop_period, motion["max_speed_mps"], motion["max_rate_dps"], motion["max_accel_mps2"])
    if motion["max_turn_deg"] > 20.0 or motion["max_step_m"] > 0.25:
        log.warning("fast motion: up to %.1f deg and %.2f m between frames (set a longer loop_period_s)",
                    motion["max_turn_deg"], motion["max_step_m"])
    writer = WRITERS[layout](Path(out_dir), seq, cfg.png_compression)
    writer.prepare()
    _ = seq.scene  # build textures before the progress bar starts
    log.info("scene ready in %.1f s; rendering %d frames (%s layout) to %s", time.perf_counter() - t0,
             cfg.num_frames, layout, writer.out)
    with_depth = cfg.depth and writer.needs_depth
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=max(1, cfg.write_threads)) as pool:
        for i in tqdm(range(len(seq)), desc=f"slam-synth {cfg.name}", unit="frame", disable=not progress):
            frame = seq.render_frame(i, with_depth=with_depth)
            pending.append(pool.submit(writer.write_frame, frame))
            while len(pending) > 2 * max(1, cfg.write_threads):
                pending.popleft().result()  # bounded memory; re-raises write errors
        while pending:
            pending.popleft().result()
    imu = seq.imu() if cfg.imu else None
    writer.finish(imu)
    log.info("wrote %s (%d frames, %s) in %.1f s", writer.out, len(seq), layout, time.perf_counter() - t0)
    return writer.out
