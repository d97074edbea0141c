"""Start, watch and stop the processes of a launch file (``slam-run --launch``).

Each process is a child started in its own session, so a Ctrl-C in the
terminal reaches only the supervisor, which then stops the graph in order:
the source first (it ends its stream), then the SLAM process gets time to
finish the frames it has and save the map and trajectory, then the rest.
When the source ends its stream by itself it exits only once the SLAM
process has taken the end of the stream (flow control, ``slam.nodes.source``),
so the supervisor then waits for the SLAM process as long as it takes
(``wait_main_after_source``): no fixed drain time a slow machine runs out of.
A process marked ``restart`` (the inference server) is started again when it
dies, with a growing pause; the run ends when the ``main`` process (SLAM)
exits. A ``required`` process that dies (the source) stops the graph.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from slam.nodes.lifeline import PARENT_ENV, die_with_parent

log = logging.getLogger(__name__)


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    restart: bool = False  # start again when it dies (inference server, viewer)
    main: bool = False  # the run ends when this one exits (SLAM)
    required: bool = False  # if it dies with an error, the graph stops (the source)
    stop_signal: int = signal.SIGTERM
    stop_timeout_s: float = 10.0  # after the stop signal, SIGKILL
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class _Child:
    spec: ProcessSpec
    proc: subprocess.Popen | None = None
    starts: int = 0
    next_start: float = 0.0
    backoff_s: float = 0.5
    exit_codes: list[int] = field(default_factory=list)


class Supervisor:
    """Runs ``specs`` until the main process exits, a required one fails, or :meth:`request_stop`."""

    def __init__(self, specs: list[ProcessSpec], log_dir: Path | None = None, poll_s: float = 0.1,
                 drain_s: float = 10.0, wait_main_after_source: bool = False):
        if sum(s.main for s in specs) != 1:
            raise ValueError("exactly one process must be main")
        self.children = {s.name: _Child(s) for s in specs}
        self.log_dir = log_dir
        self.poll_s = poll_s
        self.drain_s = drain_s  # after the source stops, how long the main process may take to finish by itself
        # a source that ended by itself (status 0) confirmed the main process took its whole stream: wait for
        # the main process without a limit (until a stop request)
        self.wait_main_after_source = wait_main_after_source
        self._stop_requested = False
        self.failed: str | None = None  # why the run failed, if it did

    # ----------------------------------------------------------------- control
    def request_stop(self, *_: object) -> None:
        """Signal handler: stop the graph in order (idempotent)."""
        if not self._stop_requested:
            log.info("stopping the process graph")
        self._stop_requested = True

    def _start(self, c: _Child) -> None:
        env = {**os.environ, **c.spec.env, PARENT_ENV: str(os.getpid())}  # children die with us: slam.nodes.lifeline
        out = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{c.spec.name}.log", "ab")  # noqa: SIM115 - the child owns it
        c.proc = subprocess.Popen(c.spec.argv, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                                  start_new_session=True, preexec_fn=partial(die_with_parent, os.getpid()))
        if out is not None:
            out.close()
        c.starts += 1
        log.info("%s started (pid %d%s)", c.spec.name, c.proc.pid, f", restart {c.starts - 1}" if c.starts > 1 else "")

    def _stop_child(self, c: _Child, sig: int | None = None) -> None:
        p = c.proc
        if p is None or p.poll() is not None:
            return
        try:
            p.send_signal(sig or c.spec.stop_signal)
            p.wait(c.spec.stop_timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s: killed", c.spec.name, c.spec.stop_timeout_s)
            p.kill()
            p.wait()
        except ProcessLookupError:
            pass

    # -------------------------------------------------------------------- run
    def run(self, on_start: Callable[[Supervisor], None] | None = None) -> int:
        """Start everything, supervise, stop in order; 0, or 1 if the run failed (see ``failed``)."""
        main = next(c for c in self.children.values() if c.spec.main)
        for c in self.children.values():
            self._start(c)
        if on_start is not None:
            on_start(self)
        source_ended = False
        try:
            while True:
                if self._stop_requested or source_ended:
                    break
                if main.proc.poll() is not None:
                    break
                now = time.monotonic()
                for c in self.children.values():
                    if c is main or c.proc is None:
                        continue
                    code = c.proc.poll()
                    if code is None:
                        continue
                    if c.next_start == 0.0:  # just noticed
                        c.exit_codes.append(code)
                        if c.spec.required:
                            if code != 0:
                                self.failed = f"{c.spec.name} exited with status {code}"
                                log.error("%s; stopping", self.failed)
                                self._stop_requested = True
                            else:  # a source that ended its stream: SLAM finishes on its own (or is told to)
                                c.proc = None
                                source_ended = True
                            continue
                        if not c.spec.restart:
                            log.warning("%s exited with status %s", c.spec.name, code)
                            c.proc = None
                            continue
                        log.warning("%s died (status %s); restarting in %.1f s", c.spec.name, code, c.backoff_s)
                        c.next_start = now + c.backoff_s
                        c.backoff_s = min(2 * c.backoff_s, 5.0)
                    elif now >= c.next_start:
                        c.next_start = 0.0
                        self._start(c)
                time.sleep(self.poll_s)
        except KeyboardInterrupt:
            self.request_stop()
        return self._shutdown(main, source_ended)

    def _shutdown(self, main: _Child, source_ended: bool = False) -> int:
        # source first (it ends its stream), then SLAM (it saves; it gets ``drain_s`` to finish the frames
        # it has by itself, then SIGTERM: an end-of-stream message can be lost with frames the bus dropped),
        # then the rest
        for c in self.children.values():
            if c.spec.required and not c.spec.main:
                self._stop_child(c)
        if source_ended and self.wait_main_after_source:
            try:
                while main.proc.poll() is None and not self._stop_requested:
                    time.sleep(self.poll_s)
            except KeyboardInterrupt:
                self.request_stop()
            if self._stop_requested:  # asked to stop while the main process finishes: now
                self._stop_child(main)
        if main.proc.poll() is None:  # it ends by itself at the end of the stream; else asked to
            try:
                main.proc.wait(self.drain_s)
            except subprocess.TimeoutExpired:
                self._stop_child(main)
        for c in self.children.values():
            if not c.spec.main:
                self._stop_child(c)
        code = main.proc.returncode
        if code != 0 and self.failed is None:
            self.failed = f"{main.spec.name} exited with status {code}"
        return 1 if self.failed else 0

    def restarts(self, name: str) -> int:
        return max(0, self.children[name].starts - 1)
