"""Every command in the README's bash blocks runs as printed (or is skipped here for a stated reason).

The commands run one after the other, in README order, in a scratch copy of the
repository layout: ``TMP/repo`` holds links to the repository's folders (``launch``,
``calib``, ``scripts``, ...) and gets the outputs (``data/``, ``out/``), and
``TMP/shared/data`` links to the shared recordings (``slam.datasets.data_root()``,
i.e. ``$SLAM_DATA`` or ``../shared/data``), so ``../shared/data`` in a command
resolves as it does for a user in a checkout beside ``shared/``. ``slam-*`` on
``PATH`` are small scripts running this repository's code with this interpreter
(what ``. .venv/bin/activate`` gives a user after ``scripts/setup.sh``).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from slam.datasets import data_root

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
ENTRY_POINTS = {"slam-run": "slam.cli.run", "slam-eval": "slam.cli.eval", "slam-synth": "slam.cli.synth",
                "slam-calib": "calib.cli", "slam-keys": "slam.bus.keys", "slam-infer": "nets.server"}

# Commands not run here, by prefix, with the reason. Anything else in a bash block is run.
SKIP: dict[str, str] = {
    "bash scripts/setup.sh": "installs system and Python packages; .ci/run runs it on a fresh machine",
    ". .venv/bin/activate": "the set-up's environment; here slam-* on PATH run this checkout",
    "python3 -m pytest": "the test suite itself",
    "slam-calib camera /dev/video0": "needs a live camera",
    "slam-calib camera shots/": "needs the user's photos of a calibration board",
    "slam-calib stereo left/ right/": "needs the user's stereo photos of a calibration board",
    "slam-calib convert sensor.yaml": "needs the user's camera file",
    "slam-run --camera /dev/video0": "needs a live camera and a serial IMU",
    "slam-run --launch launch/webcam_imu.yaml": "needs a live camera and a serial IMU",
    "slam-run --launch launch/split_inference.yaml": "needs a camera and a GPU box on the network",
    "slam-infer --bind tcp://0.0.0.0:5555 --device cuda": "needs a GPU and CURVE keys of a real deployment",
}


def readme_commands(text: str) -> list[str]:
    """Command lines of the ``bash`` blocks, in order: continuation lines joined, comments dropped,
    ``a && b`` split into its commands."""
    cmds: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
            if line:
                cmds += [c.strip() for c in line.split("&&")]
    return [re.sub(r"\s+", " ", c) for c in cmds]


def skip_reason(cmd: str) -> str | None:
    return next((why for prefix, why in SKIP.items() if cmd.startswith(prefix)), None)


COMMANDS = readme_commands(README.read_text())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("readme")
    repo = root / "repo"
    repo.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in {".git", ".venv", "data", "out"} and not entry.name.startswith("."):
            (repo / entry.name).symlink_to(entry)
    shared = data_root()
    if not shared.is_dir():
        pytest.skip(f"shared recordings {shared} not available")
    (root / "shared").mkdir()
    (root / "shared" / "data").symlink_to(shared)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for name, module in ENTRY_POINTS.items():
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m {module} \"$@\"\n")
        script.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(REPO)}
    env.pop("SLAM_DATA", None)  # ../shared/data must resolve by itself
    return repo, env


def test_readme_commands_are_found_and_every_skip_is_used():
    assert any(c.startswith("slam-synth --preset demo") for c in COMMANDS)
    assert any(c.startswith("slam-eval ../shared/data/kitti_odometry_seq07_first160") for c in COMMANDS)
    unused = [p for p in SKIP if not any(c.startswith(p) for c in COMMANDS)]
    assert not unused, f"SKIP entries for commands no longer in the README: {unused}"


@pytest.mark.slow
@pytest.mark.parametrize("cmd", COMMANDS)
def test_readme_command_runs_as_printed(cmd, workspace):
    reason = skip_reason(cmd)
    if reason:
        pytest.skip(reason)
    repo, env = workspace
    r = subprocess.run(["bash", "-c", cmd], cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{cmd}\nexit {r.returncode}\n{r.stderr[-3000:]}"
