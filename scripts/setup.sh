#!/usr/bin/env bash
# Install everything the project needs on a fresh Debian/Ubuntu machine (CPU is enough).
# Usage: bash scripts/setup.sh        (as root, or with sudo available)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

# open3d needs libusb at import time.
if ! ldconfig -p 2>/dev/null | grep -q libusb-1.0.so.0; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libusb-1.0-0 >/dev/null
fi

PY=${PYTHON:-python3}
# The CPU wheel of torch first: an unpinned torch would pull a multi-GB CUDA build.
# (Users with a GPU can install any recent torch instead.)
if ! $PY -c "import torch" 2>/dev/null; then
  $PY -m pip install -q torch==2.13.0
fi
$PY -m pip install -q -e ".[dev]"
$PY -c "import numpy, cv2, open3d, g2opy, zmq, serial, torch, evo; print('setup ok: numpy', numpy.__version__, 'opencv', cv2.__version__, 'open3d', open3d.__version__, 'torch', torch.__version__)"
