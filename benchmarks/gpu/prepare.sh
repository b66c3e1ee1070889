#!/usr/bin/env bash
# Run HERE (a machine with PyPI access), once: fills the git-ignored /.whl/ folder with what the GPU machine
# lacks, in pieces that each fit one device call (the working tree that travels is limited to 64 MiB):
#   .whl/a/      the CTranslate2 wheel (~41 MiB)
#   .whl/b/      PyAV, faster-whisper, jsonschema, jiwer and their small dependencies, plus the en_read clips
#   .whl/c/      matplotlib (for the plot) and the service's dependencies (FastAPI, uvicorn, httpx, ...)
#   .whl/m1..m3/ the real tiny.en model: config and tokenizer, and model.bin in ~26 MB parts
# See benchmarks/gpu/README.md for the calls that carry them.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
W=.whl
rm -rf "$W" && mkdir -p "$W"/a "$W"/b "$W"/c "$W"/m1 "$W"/m2 "$W"/m3
pdl() {  # binary wheels for the GPU machine's Python 3.12 on manylinux x86_64, no dependency resolution
  local dest=$1; shift
  "$PY" -m pip download --quiet --only-binary=:all: --no-deps --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --implementation cp -d "$dest" "$@"
}
pdl "$W"/a "ctranslate2==$("$PY" -c 'import ctranslate2; print(ctranslate2.__version__)')"
pdl "$W"/b "faster-whisper==1.2.1" "av==$("$PY" -c 'import av; print(av.__version__)')" \
  jsonschema jsonschema-specifications referencing rpds-py attrs typing-extensions jiwer rapidfuzz click
pdl "$W"/c matplotlib contourpy cycler fonttools kiwisolver pyparsing python-dateutil six pillow
# The service, for bench_service.py's packed-vs-alone comparison on the GPU.
pins() {  # the versions installed here, which the tests ran with
  "$PY" -c 'import sys, importlib.metadata as m; print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' "$@"
}
# shellcheck disable=SC2046
pdl "$W"/c $(pins fastapi starlette uvicorn h11 anyio sniffio pydantic pydantic-core annotated-types \
  typing-inspection python-multipart prometheus-client httpx httpcore certifi idna)
mkdir -p "$W"/b/data
cp -r ../shared/data/en_read "$W"/b/data/
model=$("$PY" -c 'from transcription import models, config; print(models.resolve("tiny.en", config.load_settings({}), allow_download=False))')
cp "$model"/config.json "$model"/tokenizer.json "$model"/vocabulary.* "$W"/m1/
split -b 26M -d "$model"/model.bin "$W"/tmp-part.
mv "$W"/tmp-part.00 "$W"/m1/model.bin.part00
mv "$W"/tmp-part.01 "$W"/m2/model.bin.part01
mv "$W"/tmp-part.02 "$W"/m3/model.bin.part02
ls "$W"/tmp-part.* 2>/dev/null && { echo "model.bin needs more than 3 parts" >&2; exit 1; }
du -sh "$W"/*
