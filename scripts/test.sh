#!/usr/bin/env bash
# Install the development environment (system packages, Python venv) and run the whole test suite.
# The same command runs in CI (.ci/run). Extra arguments go to pytest.
# System packages (Debian/Ubuntu): ffmpeg, python3-venv, chromium (the web page tests), libatomic1
# (Playwright's bundled node needs it; Debian's chromium does not pull it in), iproute2 and util-linux
# (`ip` and `unshare`: the callback tests run in a network namespace with only loopback). Installing them
# needs root or sudo; once they are present the script runs as any user.
set -euo pipefail
cd "$(dirname "$0")/.."

have_lib() {  # a shared library the dynamic linker knows (ldconfig is in /sbin, off a user's PATH)
  local cache
  cache="$({ command -v ldconfig >/dev/null && ldconfig -p; } 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true)"
  [[ "$cache" == *"$1"* ]]
}

NEED=()
command -v ffmpeg >/dev/null || NEED+=(ffmpeg)
python3 -c "import venv, ensurepip" 2>/dev/null || NEED+=(python3-venv)
command -v chromium >/dev/null || NEED+=(chromium)
have_lib libatomic.so.1 || NEED+=(libatomic1)
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || NEED+=(iproute2)
command -v unshare >/dev/null || NEED+=(util-linux)
if [ ${#NEED[@]} -gt 0 ]; then
  INSTALL="apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${NEED[*]}"
  if [ "$(id -u)" -eq 0 ]; then
    sh -c "$INSTALL" >/dev/null
  elif command -v sudo >/dev/null; then
    sudo sh -c "$INSTALL" >/dev/null
  else
    echo "scripts/test.sh: missing system packages: ${NEED[*]}" >&2
    echo "This user is not root and sudo is not installed. Run this as root, then run the script again:" >&2
    echo "  su -c '$INSTALL'" >&2
    exit 1
  fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
PY=.venv/bin/python
$PY -m pip install -q --upgrade pip
# torch for the emotion tests, pinned. From PyPI on Linux x86_64 this is the CUDA build (the torch wheel
# plus NVIDIA library wheels, several GB); where the CPU index (download.pytorch.org/whl/cpu) is reachable,
# installing torch from it first is much smaller, and this line then finds it installed.
$PY -c "import torch" 2>/dev/null || $PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -e ".[dev]"
$PY -m ruff check .
$PY -m ruff format --check .
$PY -m pytest "$@"
