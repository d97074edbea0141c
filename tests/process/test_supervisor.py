"""The supervisor: restarts what may be restarted, stops on a failed source, stops in order when asked;
its children die with it, and a killed run's socket folder is cleaned at the next start."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from slam.nodes.lifeline import clean_stale_run_dirs
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


def _gone(pid: int) -> bool:
    """No such process, or a zombie nobody has reaped yet (a container's init may not reap)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def _wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and not all(_gone(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if not _gone(p)]


def test_children_die_with_a_killed_supervisor(tmp_path):
    """SIGKILL leaves a supervisor no chance to stop its children: the kernel's parent-death signal does."""
    pids = tmp_path / "pids"
    script = (
        "import sys, time\n"
        "from slam.nodes.supervisor import ProcessSpec, Supervisor\n"
        "sleep = [sys.executable, '-c', 'import time; time.sleep(60)']\n"  # no parent watch of its own
        "sup = Supervisor([ProcessSpec('slam', sleep, main=True), ProcessSpec('inference', sleep, restart=True)],\n"
        "                 poll_s=0.02)\n"
        f"sup.run(lambda s: open({str(pids)!r}, 'w').write(' '.join(str(c.proc.pid) for c in s.children.values())))\n"
    )
    sup = subprocess.Popen([PY, "-c", script])
    try:
        end = time.monotonic() + 30
        while not (pids.is_file() and len(pids.read_text().split()) == 2):
            assert time.monotonic() < end and sup.poll() is None, "the supervisor did not start its children"
            time.sleep(0.05)
        children = [int(p) for p in pids.read_text().split()]
        assert not any(_gone(p) for p in children)  # running
        sup.kill()
        sup.wait()
        assert not _wait_gone(children, 5.0), "children outlived their SIGKILLed supervisor"
    finally:
        sup.kill()
        for p in [int(p) for p in pids.read_text().split()] if pids.is_file() else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


def test_a_node_stops_when_its_parent_is_gone_without_the_kernel_signal(tmp_path):
    """The fallback: a node's parent watch (a child started by a plain fork, no PR_SET_PDEATHSIG)."""
    pid_file = tmp_path / "pid"
    node = ("import signal, sys, time\n"
            "from slam.nodes.lifeline import watch_parent\n"
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
            "assert watch_parent(0.05) is not None\n"
            "time.sleep(60)")
    parent = ("import os, subprocess, sys, time\n"
              f"p = subprocess.Popen([sys.executable, '-c', {node!r}], env={{**os.environ, 'SLAM_PARENT_PID': str(os.getpid())}})\n"
              f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
              "time.sleep(60)")
    mid = subprocess.Popen([PY, "-c", parent])
    try:
        end = time.monotonic() + 20
        while not (pid_file.is_file() and pid_file.read_text()):
            assert time.monotonic() < end
            time.sleep(0.05)
        child = int(pid_file.read_text())
        time.sleep(0.5)  # the child has started its watch
        assert not _gone(child)
        mid.kill()
        mid.wait()
        assert not _wait_gone([child], 5.0), "the node outlived its parent"
    finally:
        mid.kill()
        if pid_file.is_file() and pid_file.read_text():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_stale_run_folders_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen([PY, "-c", "pass"])
    dead.wait()  # a pid whose process is gone
    stale, live, foreign = tmp_path / "slam-run-a", tmp_path / "slam-run-b", tmp_path / "slam-run-c"
    for d in (stale, live, foreign):
        d.mkdir()
    (stale / "infer").write_text("")  # a socket file left behind
    (stale / "supervisor.pid").write_text(str(dead.pid))
    (live / "supervisor.pid").write_text(str(os.getppid()))  # a running supervisor's
    # foreign: no owner file (not made by a supervisor that claims its folder): not ours to remove
    assert clean_stale_run_dirs(tmp_path) == [stale]
    assert not stale.exists() and live.is_dir() and foreign.is_dir()


def _children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_killed_launch_run_takes_its_processes_along_and_its_folder_is_cleaned(tmp_path, tum_path):
    """slam-run --launch SIGKILLed: source, SLAM and slam-infer stop; the next start removes the socket folder."""
    seq = tum_path
    launch = tmp_path / "graph.yaml"
    launch.write_text("endpoints:\n  frames: ipc://{run}/frames\n  poses: ipc://{run}/poses\n  inference: ipc://{run}/infer\n"
                      "processes:\n  source: {kind: replay, realtime: true}\n  slam: {mode: rgbd}\n"
                      "  inference: {enabled: true, device: cpu, restart: true}\n")
    root = Path(tempfile.mkdtemp(prefix="runs-", dir="/tmp"))  # short (ipc paths), and only this run's folders
    run = subprocess.Popen([PY, "-m", "slam.cli.run", "--launch", str(launch), str(seq), "--out", str(tmp_path / "out")],
                           env={**os.environ, "TMPDIR": str(root)})
    children: list[int] = []
    try:
        end = time.monotonic() + 60
        while len(children) < 3:
            assert time.monotonic() < end and run.poll() is None, "the launch run did not start its processes"
            time.sleep(0.2)
            children = _children_of(run.pid)
        (run_dir,) = root.glob("slam-run-*")
        time.sleep(0.5)  # the nodes are past their imports: handlers and parent watches in place, or nearly
        assert run.poll() is None
        run.kill()
        run.wait()
        assert not _wait_gone(children, 30.0), "processes outlived their SIGKILLed supervisor"
        assert run_dir.is_dir()  # nobody cleaned up after the killed run...
        assert clean_stale_run_dirs(root) == [run_dir] and not run_dir.exists()  # ...the next start does
    finally:
        run.kill()
        for p in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
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
