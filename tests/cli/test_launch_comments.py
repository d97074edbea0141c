"""The example commands in the launch files' header comments are valid command lines."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from slam.cli.run import parse_args as run_args
from slam.cli.synth import parse_args as synth_args

LAUNCH = Path(__file__).resolve().parents[2] / "launch"
PARSERS = {"slam-run": run_args, "slam-synth": synth_args}


def _commands() -> list[tuple[str, str]]:
    out = []
    for f in sorted(LAUNCH.glob("*.yaml")):
        for line in f.read_text().splitlines():
            if not line.startswith("#"):
                continue
            for m in re.finditer(r"(slam-(?:run|synth)\b[^#(]*)", line):
                out += [(f.name, c.strip()) for c in m.group(1).split("&&")]
    return out


@pytest.mark.parametrize("name,cmd", _commands())
def test_launch_file_comment_commands_parse(name, cmd):
    prog, *argv = shlex.split(cmd)
    try:
        PARSERS[prog](argv)
    except SystemExit as e:  # argparse's way of saying the command line is wrong
        pytest.fail(f"{name}: {cmd!r} is not a valid {prog} command line (exit {e.code})")
