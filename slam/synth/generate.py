"""Render a synthetic sequence to disk in one of the supported layouts."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from slam.synth.config import SynthConfig
from slam.synth.sequence import SynthSequence
from slam.synth.writers import WRITERS

log = logging.getLogger(__name__)

LAYOUTS = tuple(WRITERS)
# Below this many frames a process's start (imports, ~1-2 s, and its own scene, ~3 s) costs more than it saves.
MIN_FRAMES_FOR_PROCESSES = 60
CHUNK = 4  # frames per task sent to a process


def _render_in_threads(seq: SynthSequence, writer, with_depth: bool, workers: int,
                       advance: Callable[[int], object]) -> None:
    def render_and_write(i: int) -> None:
        writer.write_frame(seq.render_frame(i, with_depth=with_depth))

    pending: deque[Future] = deque()
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for i in range(len(seq)):
                pending.append(pool.submit(render_and_write, i))
                while len(pending) >= 2 * workers:  # bounded memory; re-raises render/write errors
                    pending.popleft().result()
                    advance(1)
            while pending:
                pending.popleft().result()
                advance(1)
    finally:
        for f in pending:
            f.cancel()


# Per-process state of the rendering processes (spawned: each builds its own scene from the config).
_worker: dict = {}


def _worker_init(cfg: SynthConfig, out_dir: str, layout: str) -> None:
    seq = SynthSequence(cfg)
    _worker["seq"], _worker["writer"] = seq, WRITERS[layout](Path(out_dir), seq, cfg.png_compression)


def _worker_render(indices: list[int], with_depth: bool) -> int:
    seq, writer = _worker["seq"], _worker["writer"]
    for i in indices:
        writer.write_frame(seq.render_frame(i, with_depth=with_depth))
    return len(indices)


def _render_in_processes(cfg: SynthConfig, out_dir: Path, layout: str, with_depth: bool, workers: int,
                         advance: Callable[[int], object]) -> None:
    # spawn, not fork: the parent may hold Open3D/TBB threads, which do not survive a fork
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(cfg, str(out_dir), layout)) as pool:
        futures = [pool.submit(_worker_render, list(range(i, min(i + CHUNK, cfg.num_frames))), with_depth)
                   for i in range(0, cfg.num_frames, CHUNK)]
        try:
            for f in futures:  # in order; re-raises render/write errors
                advance(f.result())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


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
    ``cfg.write_threads`` workers (0: one per core): processes for a long sequence built here
    (Open3D's ray casting holds the GIL, so threads barely overlap), else threads. Each frame's
    pixels depend on its index alone, so the files are the same with any number of workers.
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
    with_depth = cfg.depth and writer.needs_depth
    workers = cfg.write_threads if cfg.write_threads > 0 else (os.cpu_count() or 1)
    bar = tqdm(total=len(seq), desc=f"slam-synth {cfg.name}", unit="frame") if progress is True else None
    advance = bar.update if bar is not None else (progress if callable(progress) else (lambda n: None))
    try:
        if sequence is None and workers > 1 and len(seq) >= MIN_FRAMES_FOR_PROCESSES:
            log.info("rendering %d frames (%s layout) to %s in %d processes", len(seq), layout, writer.out, workers)
            _render_in_processes(cfg, Path(out_dir), layout, with_depth, workers, advance)
        else:
            _ = seq.scene  # build textures before the progress bar starts
            log.info("scene ready in %.1f s; rendering %d frames (%s layout) to %s", time.perf_counter() - t0,
                     len(seq), layout, writer.out)
            _render_in_threads(seq, writer, with_depth, workers, advance)
    finally:
        if bar is not None:
            bar.close()
    imu = seq.imu() if cfg.imu else None
    writer.finish(imu)
    log.info("wrote %s (%d frames, %s) in %.1f s", writer.out, len(seq), layout, time.perf_counter() - t0)
    return writer.out
