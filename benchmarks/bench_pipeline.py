"""Stage 1 overhead: the whole CLI against a bare faster-whisper loop, same files, model and settings.

    python benchmarks/bench_pipeline.py [--repeats 5] [--out bench-out/pipeline.json] [--markdown part.md]

(1) `python -m transcription transcribe --root R --model tiny.en --device cpu --force` over the 22 clips of
../shared/data/en_read (142 s): decode, normalise, transcribe, write JSON/TXT/SRT/VTT, leases, run report.
(2) A bare loop: `WhisperModel(<the same model directory>, int8, cpu)`, then for each file
`decode_audio` + `transcribe` (beam 5, vad_filter, word_timestamps, condition_on_previous_text off,
hallucination_silence_threshold 2.0), consuming the segments and writing nothing.

Both run as separate processes, alternating, and are timed from start to exit: process start, imports and
model load are included in both. Each also reports its model-load time, so the ratio without load is shown
too. Peak RAM is each process's maximum RSS (/usr/bin/time). Target: ratio <= 1.10.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_throughput import (  # noqa: E402 - the shared helpers of this folder
    audio_seconds,
    clean_env,
    corpus_wer,
    machine,
    model_path,
    references,
    report,
    timed,
)


def bare(folder: Path, model: str) -> dict[str, object]:
    out = folder.parent / "bare.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve().parent / "bench_throughput.py"),
        "--worker", "bare", "--folder", str(folder), "--model-path", model_path(model),
        "--device", "cpu", "--compute-type", "int8", "--worker-out", str(out),
    ]  # fmt: skip
    r = timed(cmd, clean_env())
    res = json.loads(out.read_text())
    return {**r, "load_s": res["load_s"], "texts": res["texts"]}


def cli(folder: Path, model: str) -> dict[str, object]:
    cmd = [sys.executable, "-m", "transcription", "transcribe", "--root", str(folder), "--model", model,
           "--device", "cpu", "--force"]  # fmt: skip
    r = timed(cmd, clean_env(LOG_FORMAT="json", LOG_LEVEL="INFO"))
    if r["rc"] != 0:
        raise RuntimeError(f"slower-whisper failed:\n{str(r['stderr'])[-3000:]}")
    load_s = next(
        (json.loads(ln)["seconds"] for ln in str(r["stderr"]).splitlines() if '"model loaded"' in ln), 0.0
    )
    texts = {}
    for path in (folder / "whisper_json").glob("*.json"):
        doc = json.loads(path.read_text(encoding="utf-8"))
        texts[doc["file"]] = doc["text"]
    return {**r, "load_s": load_s, "texts": texts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        root = work / "root"
        raw = root / "raw_audio"
        raw.mkdir(parents=True)
        refs = {}
        for src, ref in references().items():
            shutil.copyfile(src, raw / src.name)
            refs[src.name] = ref
        seconds = audio_seconds(root)
        runs: dict[str, list[dict[str, object]]] = {"cli": [], "bare": []}
        for rep in range(args.repeats):
            order = ("cli", "bare") if rep % 2 == 0 else ("bare", "cli")
            for name in order:
                r = cli(root, args.model) if name == "cli" else bare(root, args.model)
                runs[name].append(r)
                print(
                    f"repeat {rep + 1} {name}: {r['wall_s']:.2f} s, {r['rss_mib']:.0f} MiB", file=sys.stderr
                )
        names = sorted(refs)
        summary: dict[str, dict[str, object]] = {}
        for name, rs in runs.items():
            wall = statistics.median(float(r["wall_s"]) for r in rs)
            load = statistics.median(float(r["load_s"]) for r in rs)
            summary[name] = {
                "wall_s_median": round(wall, 2),
                "wall_s_all": [round(float(r["wall_s"]), 2) for r in rs],
                "model_load_s": round(load, 2),
                "rtf": round(wall / seconds, 4),
                "peak_rss_mib": round(max(float(r["rss_mib"]) for r in rs)),
                "wer": round(
                    corpus_wer([refs[n] for n in names], [rs[-1]["texts"].get(n, "") for n in names]), 4
                ),
            }
        # Pairwise ratios (each CLI run against the bare run of the same repeat), then their median.
        pairs = [
            float(c["wall_s"]) / float(b["wall_s"]) for c, b in zip(runs["cli"], runs["bare"], strict=True)
        ]
        pairs_nl = [
            (float(c["wall_s"]) - float(c["load_s"])) / (float(b["wall_s"]) - float(b["load_s"]))
            for c, b in zip(runs["cli"], runs["bare"], strict=True)
        ]
        result = {
            "machine": machine(),
            "files": len(refs),
            "audio_s": round(seconds, 1),
            "model": args.model,
            "repeats": args.repeats,
            "ratio_median": round(statistics.median(pairs), 3),
            "ratio_all": [round(x, 3) for x in pairs],
            "ratio_without_load_median": round(statistics.median(pairs_nl), 3),
            "systems": summary,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(result, markdown(result), args.out, args.markdown)


def markdown(result: dict[str, object]) -> str:
    s = result["systems"]
    m = result["machine"]
    rows = [
        f"{result['files']} files, {result['audio_s']} s of audio, {result['model']} int8 on CPU, "
        f"{result['repeats']} alternating repeats (medians); {m.get('cpu')}, {m.get('cores')} cores, "
        f"{m.get('memory_gib')} GiB.",
        "",
        "| | wall s, median (all) | model load s | real-time factor | peak RSS MiB | WER |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in (("cli", "`slower-whisper transcribe`"), ("bare", "bare faster-whisper loop")):
        x = s[name]
        rows.append(
            f"| {label} | {x['wall_s_median']} ({', '.join(map(str, x['wall_s_all']))}) "
            f"| {x['model_load_s']} | {x['rtf']} | {x['peak_rss_mib']} | {x['wer']} |"
        )
    rows += [
        "",
        f"Wall-time ratio CLI / bare (median of per-repeat pairs): **{result['ratio_median']}** "
        f"(pairs: {', '.join(map(str, result['ratio_all']))}); without model load: "
        f"{result['ratio_without_load_median']}.",
    ]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()
