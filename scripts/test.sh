#!/usr/bin/env bash
# Install the development environment (system packages, Python venv) and run the whole test suite.
# The same command runs in CI (.ci/run). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
NEED=()
command -v ffmpeg >/dev/null || NEED+=(ffmpeg)
python3 -c "import venv, ensurepip" 2>/dev/null || NEED+=(python3-venv)
command -v chromium >/dev/null || NEED+=(chromium)
if [ ${#NEED[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${NEED[@]}" >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
PY=.venv/bin/python
$PY -m pip install -q --upgrade pip
# CPU torch for the emotion tests; a newer torch would pull a multi-GB CUDA build.
$PY -c "import torch" 2>/dev/null || $PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -e ".[dev]"
$PY -m ruff check .
$PY -m ruff format --check .
$PY -m pytest "$@"
