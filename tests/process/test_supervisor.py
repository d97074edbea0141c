"""The supervisor: restarts what may be restarted, stops on a failed source, stops in order when asked."""

from __future__ import annotations

import sys
import threading
import time

from slam.nodes.supervisor import ProcessSpec, Supervisor

PY = sys.executable


def _py(code: str) -> list[str]:
    return [PY, "-c", code]


def test_restarts_a_dying_process_until_main_ends(tmp_path):
    sup = Supervisor([
        ProcessSpec("slam", _py("import time; time.sleep(2.0)"), main=True),
        ProcessSpec("inference", _py("import sys; sys.exit(3)"), restart=True),
    ], log_dir=tmp_path / "logs", poll_s=0.02)
    assert sup.run() == 0
    assert sup.restarts("inference") >= 2  # backoff 0.5 s, 1 s, ...
    assert sup.children["inference"].exit_codes[:2] == [3, 3]
    assert (tmp_path / "logs" / "inference.log").is_file()


def test_failed_source_stops_the_graph_and_the_run_fails(tmp_path):
    flag = tmp_path / "stopped"
    main = ("import signal, sys, time, pathlib\n"
            f"signal.signal(signal.SIGTERM, lambda *a: (pathlib.Path({str(flag)!r}).write_text('saved'), sys.exit(0)))\n"
            "time.sleep(30)")
    sup = Supervisor([ProcessSpec("slam", _py(main), main=True, stop_timeout_s=5),
                      ProcessSpec("source", _py("import sys; sys.exit(4)"), required=True)],
                     poll_s=0.02, drain_s=0.5)
    t0 = time.monotonic()
    assert sup.run() == 1
    assert "source exited with status 4" in sup.failed
    assert flag.read_text() == "saved"  # SLAM got SIGTERM and saved
    assert time.monotonic() - t0 < 10


def test_source_that_ends_normally_lets_slam_finish_by_itself():
    sup = Supervisor([ProcessSpec("slam", _py("import time; time.sleep(1.0)"), main=True),
                      ProcessSpec("source", _py("pass"), required=True)], poll_s=0.02)
    assert sup.run() == 0 and sup.failed is None


def test_stop_request_stops_everything_in_order(tmp_path):
    log = tmp_path / "order.txt"
    handler = ("import signal, sys, time\n"
               "def h(*a):\n"
               f"    open({str(log)!r}, 'a').write(sys.argv[1] + chr(10)); sys.exit(0)\n"
               "signal.signal(signal.SIGTERM, h)\n"
               "time.sleep(30)")
    sup = Supervisor([ProcessSpec("slam", [PY, "-c", handler, "slam"], main=True),
                      ProcessSpec("source", [PY, "-c", handler, "source"], required=True),
                      ProcessSpec("inference", [PY, "-c", handler, "inference"], restart=True)],
                     poll_s=0.02, drain_s=0.3)
    threading.Timer(1.0, sup.request_stop).start()
    assert sup.run() == 0
    assert log.read_text().split() == ["source", "slam", "inference"]


def test_main_that_misses_the_end_of_stream_is_stopped_after_the_drain_time(tmp_path):
    """A SLAM process still waiting after the source ended (its end-of-stream lost) gets SIGTERM and saves."""
    flag = tmp_path / "saved"
    main = ("import signal, sys, time, pathlib\n"
            f"signal.signal(signal.SIGTERM, lambda *a: (pathlib.Path({str(flag)!r}).write_text('ok'), sys.exit(0)))\n"
            "time.sleep(60)")
    sup = Supervisor([ProcessSpec("slam", _py(main), main=True),
                      ProcessSpec("source", _py("pass"), required=True)], poll_s=0.02, drain_s=1.0)
    t0 = time.monotonic()
    assert sup.run() == 0 and sup.failed is None
    assert flag.read_text() == "ok" and time.monotonic() - t0 < 10


def _slow_main(flag) -> list[str]:
    """A SLAM process that needs 3 s after the source ended; says whether it finished or was stopped."""
    return _py("import signal, sys, time, pathlib\n"
               f"p = pathlib.Path({str(flag)!r})\n"
               "signal.signal(signal.SIGTERM, lambda *a: (p.write_text('stopped'), sys.exit(0)))\n"
               "time.sleep(3.0); p.write_text('finished')")


def test_source_that_confirmed_its_stream_lets_slam_finish_however_long_it_takes(tmp_path):
    """No fixed drain time: a source that ended by itself had its whole stream taken (flow control)."""
    flag = tmp_path / "flag"
    sup = Supervisor([ProcessSpec("slam", _slow_main(flag), main=True),
                      ProcessSpec("source", _py("pass"), required=True)], poll_s=0.02, drain_s=0.2,
                     wait_main_after_source=True)
    assert sup.run() == 0 and flag.read_text() == "finished"


def test_stop_request_while_slam_finishes_still_stops_it(tmp_path):
    flag = tmp_path / "flag"
    sup = Supervisor([ProcessSpec("slam", _slow_main(flag), main=True),
                      ProcessSpec("source", _py("pass"), required=True)], poll_s=0.02, drain_s=0.2,
                     wait_main_after_source=True)
    threading.Timer(1.5, sup.request_stop).start()
    assert sup.run() == 0 and flag.read_text() == "stopped"
