"""Render a synthetic sequence to disk in one of the supported layouts."""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
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
    progress: bool | Callable[[int], object] = True,
    sequence: SynthSequence | None = None,
) -> Path:
    """Render the sequence of ``cfg`` into ``out_dir`` in ``layout`` (native, tum, euroc, kitti).

    Files this layout writes are replaced; other files in ``out_dir`` are left alone. A prepared
    ``sequence`` (e.g. sharing a built scene) may be passed instead; its config then wins.
    ``progress``: a tqdm bar (True), nothing (False), or a function called with the number
    of frames finished since its last call. Frames are rendered and written by
    ``cfg.write_threads`` threads (0: one per core); each frame's pixels depend on its index
    alone, so the files are the same with any number of threads.
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

    def render_and_write(i: int) -> None:
        writer.write_frame(seq.render_frame(i, with_depth=with_depth))

    # Threads overlap one frame's ray casting (Open3D, multi-threaded) with another's shading and
    # PNG encoding (numpy and OpenCV release the GIL): ~1.6x on 2 cores.
    workers = cfg.write_threads if cfg.write_threads > 0 else (os.cpu_count() or 1)
    bar = tqdm(total=len(seq), desc=f"slam-synth {cfg.name}", unit="frame") if progress is True else None
    advance = bar.update if bar is not None else (progress if callable(progress) else None)
    pending: deque[Future] = deque()
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for i in range(len(seq)):
                pending.append(pool.submit(render_and_write, i))
                while len(pending) >= 2 * workers:  # bounded memory; re-raises render/write errors
                    pending.popleft().result()
                    if advance is not None:
                        advance(1)
            while pending:
                pending.popleft().result()
                if advance is not None:
                    advance(1)
    finally:
        for f in pending:
            f.cancel()
        if bar is not None:
            bar.close()
    imu = seq.imu() if cfg.imu else None
    writer.finish(imu)
    log.info("wrote %s (%d frames, %s) in %.1f s", writer.out, len(seq), layout, time.perf_counter() - t0)
    return writer.out
