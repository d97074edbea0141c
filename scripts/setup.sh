#!/usr/bin/env bash
# Install everything the project needs on a fresh Debian/Ubuntu machine (CPU is enough), into a
# virtual environment: a stock Debian 12 / Ubuntu 24.04 python3 is "externally managed" (PEP 668)
# and refuses pip install outside one.
# Usage: bash scripts/setup.sh && . .venv/bin/activate      (as root, or with sudo available)
#   PYTHON=/path/to/python3  the interpreter to build the environment from (default: python3)
#   VENV=DIR                 where the environment goes (default: .venv in the repository)
# The environment sees the interpreter's own packages (--system-site-packages): a torch or numpy
# already installed there is used, not downloaded again.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
APT_UPDATED=""
apt_install() {
  if [ -z "$APT_UPDATED" ]; then $SUDO apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# open3d needs libusb at import time.
if ! ldconfig -p 2>/dev/null | grep -q libusb-1.0.so.0; then
  apt_install libusb-1.0-0
fi

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  # Debian and Ubuntu ship venv's pip bootstrap (ensurepip) in a separate package.
  if ! "$PY" -c "import ensurepip, venv" 2>/dev/null; then
    apt_install "python3-venv" "python$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv" \
      || apt_install python3-venv
  fi
  "$PY" -m venv --system-site-packages "$VENV"
fi
VPY="$VENV/bin/python"

# The CPU wheel of torch first: an unpinned torch would pull a multi-GB CUDA build.
# (Users with a GPU can install any recent torch instead.)
if ! "$VPY" -c "import torch" 2>/dev/null; then
  "$VPY" -m pip install -q torch==2.13.0
fi
"$VPY" -m pip install -q -e ".[dev]"
"$VPY" -c "import numpy, cv2, open3d, g2opy, zmq, serial, torch, evo; print('setup ok: numpy', numpy.__version__, 'opencv', cv2.__version__, 'open3d', open3d.__version__, 'torch', torch.__version__)"
echo "setup: environment in $VENV; in each new shell: . $VENV/bin/activate"
