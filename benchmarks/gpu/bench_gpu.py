"""The throughput comparison on a GPU: real tiny.en, and a random-weight model of large-v3's shape.

Run through benchmarks/gpu/run.sh (which installs the carried wheels and sets the library path). Writes to
--out: tiny.json/.md (real audio, real model: throughput and WER), large-shape.json/.md (throughput only:
random weights decode noise, so its WER means nothing), throughput-gpu.png, and summary.md.

The random model has large-v3's encoder/decoder shape (32 + 32 layers, width 1280, 20 heads, 128 mel bins)
with tiny.en's English vocabulary, so faster-whisper needs no multilingual tokenizer download.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BENCH = REPO / "benchmarks" / "bench_throughput.py"


def build_large_shape(tiny: Path, dest: Path) -> Path:
    """Random weights, large-v3 shape, converted to CTranslate2 float16."""
    if (dest / "model.bin").is_file():
        return dest
    import ctranslate2
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    t0 = time.perf_counter()
    tiny_cfg = json.loads((tiny / "config.json").read_text())
    vocab_file = tiny / "vocabulary.txt"
    vocab = sum(1 for _ in vocab_file.open(encoding="utf-8")) if vocab_file.is_file() else 51864
    cfg = WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=128,
        d_model=1280,
        encoder_layers=32,
        decoder_layers=32,
        encoder_attention_heads=20,
        decoder_attention_heads=20,
        encoder_ffn_dim=5120,
        decoder_ffn_dim=5120,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=50257,
        eos_token_id=50256,
        pad_token_id=50256,
        bos_token_id=50256,
        suppress_tokens=tiny_cfg.get("suppress_ids", []),
        begin_suppress_tokens=tiny_cfg.get("suppress_ids_begin", [220, 50256]),
    )
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = WhisperForConditionalGeneration(cfg).half()
    hf = dest.with_name(dest.name + "-hf")
    model.save_pretrained(hf)
    del model
    conv = ctranslate2.converters.TransformersConverter(str(hf), load_as_float16=True)
    conv.convert(str(dest), quantization="float16", force=True)
    for name in ("tokenizer.json",):
        (dest / name).write_bytes((tiny / name).read_bytes())
    pre = {"feature_size": 128, "sampling_rate": 16000, "hop_length": 160, "chunk_length": 30, "n_fft": 400}
    (dest / "preprocessor_config.json").write_text(json.dumps(pre))
    print(f"built {dest} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return dest


def bench(model: Path, tag: str, out: Path, batch: int, copies: int, long: int, repeats: int) -> dict:
    cmd = [sys.executable, str(BENCH), "--model", str(model), "--device", "cuda",
           "--compute-type", "float16", "--batch-size", str(batch), "--copies", str(copies),
           "--long", str(long), "--repeats", str(repeats),
           "--out", str(out / f"{tag}.json"), "--markdown", str(out / f"{tag}.md")]  # fmt: skip
    print(" ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, cwd=REPO)
    return json.loads((out / f"{tag}.json").read_text())


def bench_service(model: Path, out: Path, batch: int) -> None:
    """The service on CUDA with real tiny.en: per-request workers, each request batched alone, and requests
    packed into shared batches (throughput mode), at concurrency 1, 4 and 16, plus a soak."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_service.py"), "--model", str(model),
           "--device", "cuda", "--packed", str(batch), "--soak", "200",
           "--out", str(out / "service.json")]  # fmt: skip
    print(" ".join(cmd), file=sys.stderr)
    done = subprocess.run(cmd, cwd=REPO)
    if done.returncode != 0:  # the throughput tables above still stand
        print(f"service benchmark failed with {done.returncode}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiny", type=Path, default=Path("/tmp/tiny.en"))
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--skip-service", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    if not (args.tiny / "model.bin").is_file():
        raise SystemExit(f"{args.tiny}/model.bin missing: run `run.sh model` with the carried parts first")
    results.append(bench(args.tiny, "tiny", args.out, args.batch_size, copies=4, long=4, repeats=2))
    if not args.skip_large:
        large = build_large_shape(args.tiny, Path("/tmp/large-shape"))
        # Random weights rarely emit end-of-text, so every window decodes to the length limit: one repeat,
        # fewer files; the figure is the engine-bound ceiling of each system, not a real-audio speed.
        results.append(bench(large, "large-shape", args.out, args.batch_size, copies=1, long=1, repeats=1))
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_throughput import plot

    try:
        plot(results, args.out / "throughput-gpu.png")
    except ImportError as exc:  # matplotlib not carried: the tables still hold every figure
        print(f"no plot: {exc}", file=sys.stderr)
    if not args.skip_service:
        bench_service(args.tiny, args.out, args.batch_size)
    parts = [args.out / f"{t}.md" for t in ("tiny", "large-shape")]
    summary = "\n".join(p.read_text() for p in parts if p.is_file())
    (args.out / "summary.md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
