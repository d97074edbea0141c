"""Console output of the CLIs: log lines never glued onto a progress bar, no bar off a terminal, quiet config."""

from __future__ import annotations

import fcntl
import importlib
import logging
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

import pytest

from slam.cli import console

REPO = Path(__file__).resolve().parents[2]

# A bar of 20 steps with an INFO line in the middle, as the initialiser logs while slam-run's bar runs.
DRIVER = textwrap.dedent("""
    import logging, sys, time
    MODE = sys.argv[1]
    log = logging.getLogger("slam.backbone.frontend.initializer")
    if MODE == "console":
        from slam.cli import console
        console.setup("INFO")
        bar = console.progress(20, "slam-run")
    else:  # what the CLIs did before: basicConfig and a bare tqdm bar on stderr
        from tqdm import tqdm
        logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
        bar = tqdm(total=20, desc="slam-run", unit="frame", file=sys.stderr, mininterval=0)
    for i in range(20):
        bar.update()
        bar.set_postfix(state="initialising", refresh=True)
        if i == 10:
            log.info("monocular map initialised from frames 0 and 6 with 162 points")
        time.sleep(0.01)
    bar.close()
""")


def _run_on_a_terminal(mode: str) -> str:
    """Run the driver with stderr (and stdout) on a pseudo-terminal; everything it printed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 120-column window
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"}
    p = subprocess.Popen([sys.executable, "-c", DRIVER, mode], stdout=slave, stderr=slave, env=env, cwd=REPO)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    p.wait(timeout=60)
    os.close(master)
    return out.decode(errors="replace")


def _glued(text: str) -> list[str]:
    """Log lines that do not start at the beginning of a terminal line."""
    return [text[max(0, m.start() - 30):m.end() + 20] for m in re.finditer(r"INFO slam\.", text)
            if m.start() > 0 and text[m.start() - 1] not in "\r\n"]


def test_log_lines_print_above_the_bar_not_glued_onto_it():
    plain = _run_on_a_terminal("plain")
    assert "initialising]" in plain and _glued(plain), "the driver no longer shows the old fault"
    ours = _run_on_a_terminal("console")
    assert "monocular map initialised" in ours and "slam-run" in ours
    assert not _glued(ours), _glued(ours)


def test_no_bar_off_a_terminal_but_a_plain_line(caplog, tmp_path):
    log_file = tmp_path / "run.log"
    with open(log_file, "w") as stream, caplog.at_level("INFO", logger="slam.progress"):
        bar = console.Progress(30, "slam-run", stream=stream, interval_s=0.0)
        for _ in range(30):
            bar.update()
            bar.set_postfix(fps="25", state="ok", refresh=False)
        bar.close()
    assert not bar.is_bar and "\r" not in log_file.read_text()
    lines = [r.getMessage() for r in caplog.records if r.name == "slam.progress"]
    assert lines[-1].startswith("slam-run: 30/30 frames") and "state=ok" in lines[-1]


@pytest.mark.parametrize("mod", ["slam.cli.run", "slam.cli.eval", "slam.cli.synth"])
def test_help_texts_have_no_rest_markup(mod, capsys):
    main = importlib.import_module(mod).main
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "usage:" in out
    assert "``" not in out, out[:300]
    assert "--verbose" in out


def test_synth_prints_no_config_and_no_bar_on_a_pipe(tmp_path):
    cmd = [sys.executable, "-m", "slam.cli.synth", "--preset", "tiny", "--frames", "2", "--no-imu",
           "--out", str(tmp_path / "s")]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    assert '"texels_per_m"' not in r.stderr  # the configuration is in synth.json (and --verbose)
    assert "\r" not in r.stderr  # stderr is a pipe: no bar
    assert re.search(r"slam-synth tiny: 2/2 frames", r.stderr), r.stderr


def test_config_is_logged_at_debug(caplog):
    log = logging.getLogger("slam.test")
    with caplog.at_level("INFO"):
        console.log_config(log, "config", {"texels_per_m": 250.0})
    assert not caplog.records
    with caplog.at_level("DEBUG"):
        console.log_config(log, "config", {"texels_per_m": 250.0})
    assert caplog.records[0].levelname == "DEBUG" and '"texels_per_m": 250.0' in caplog.records[0].getMessage()
