#!/usr/bin/env bash
# Run ON the GPU machine, from the repository root, in consecutive device calls (files under /tmp survive only
# while the machine stays warm, ~30 s between calls):
#   benchmarks/gpu/run.sh install     carry .whl/a, then .whl/b, then .whl/c      -> /tmp/site
#   benchmarks/gpu/run.sh model       carry .whl/m1, then .whl/m2, then .whl/m3  -> /tmp/tiny.en
#   benchmarks/gpu/run.sh bench       nothing carried; writes its figures to $OUT
# `bench` alone also works on a fresh machine for the random-weight model if `install` ran in the same call.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/site /tmp/tiny.en /tmp/data

# The PyPI CTranslate2 wheel links libcublas.so.12; this machine has cuBLAS 13, which serves its calls.
cublas() {
  local f g
  f=$(find / -xdev -name 'libcublas.so.13*' 2>/dev/null | head -1)
  g=$(find / -xdev -name 'libcublasLt.so.13*' 2>/dev/null | head -1)
  if [ -n "$f" ] && [ -n "$g" ]; then
    mkdir -p /tmp/lib && ln -sf "$f" /tmp/lib/libcublas.so.12 && ln -sf "$g" /tmp/lib/libcublasLt.so.12
    export LD_LIBRARY_PATH=/tmp/lib:$(dirname "$f"):${LD_LIBRARY_PATH:-}
  fi
}

case "${1:-}" in
  install)
    for d in .whl/a .whl/b .whl/c; do
      [ -d "$d" ] || continue
      ls "$d"/*.whl >/dev/null 2>&1 && python3 -m pip install --quiet --no-index --no-deps --target /tmp/site "$d"/*.whl
      [ -d "$d/data" ] && cp -r "$d"/data/. /tmp/data/
    done
    ls /tmp/site
    ;;
  model)
    for d in .whl/m1 .whl/m2 .whl/m3; do [ -d "$d" ] && cp "$d"/* /tmp/tiny.en/; done
    if ls /tmp/tiny.en/model.bin.part0{0,1,2} >/dev/null 2>&1; then
      cat /tmp/tiny.en/model.bin.part0{0,1,2} >/tmp/tiny.en/model.bin && rm /tmp/tiny.en/model.bin.part*
    fi
    ls -la /tmp/tiny.en
    ;;
  bench)
    cublas
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
    export SLOWER_WHISPER_BENCH_DATA=/tmp/data HF_HUB_OFFLINE=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
    python3 -c 'import ctranslate2; print("cuda devices:", ctranslate2.get_cuda_device_count())'
    exec python3 benchmarks/gpu/bench_gpu.py --out "$OUT"
    ;;
  *)
    echo "usage: $0 install|model|bench" >&2
    exit 2
    ;;
esac
