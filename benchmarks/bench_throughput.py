"""Throughput mode against plain faster-whisper, on many short real clips and a few long ones.

Compares, in one run and alternating, with the same model files and settings (beam 5, VAD, word timestamps,
condition_on_previous_text off, hallucination_silence_threshold 2.0):

  (a) bare:    `WhisperModel.transcribe` file by file (faster-whisper's sequential decoder)
  (b) batched: `BatchedInferencePipeline.transcribe` file by file, batch N
  (c) ours:    `slower-whisper transcribe --throughput` (its own choice: files in parallel on CPU, packed
               batches of an automatic size on CUDA)
  (d) packed:  `slower-whisper transcribe --throughput --batch-size N` (chunks of many files per batch)

Every system runs as its own process, timed from start to exit (process start, imports and model load
included in all); the model-load time each one reports is shown too, so throughput without it can be
read off. Peak RAM is each process's maximum RSS (/usr/bin/time); on CUDA, peak VRAM is polled with
nvidia-smi. WER uses the clips' human references.

    python benchmarks/bench_throughput.py --out bench-out/throughput.json [--repeats 2] [--batch-size 8]
        [--model tiny.en] [--device cpu] [--copies 2] [--long 2] [--markdown docs/part.md] [--plot x.png]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout; elsewhere (the GPU machine) a copy named by SLOWER_WHISPER_BENCH_DATA.
DATA = Path(os.environ.get("SLOWER_WHISPER_BENCH_DATA") or REPO.parent / "shared" / "data")
SETTINGS = dict(
    beam_size=5,
    vad_filter=True,
    word_timestamps=True,
    condition_on_previous_text=False,
    hallucination_silence_threshold=2.0,
)


# ---------------------------------------------------------------- data and scoring


def references() -> dict[Path, str]:
    """Every en_read clip with its human transcript."""
    read = DATA / "en_read"
    refs: dict[Path, str] = {read / "jfk" / "jfk.flac": (read / "jfk" / "jfk.txt").read_text().strip()}
    for line in (read / "ljspeech" / "transcripts.psv").read_text(encoding="utf-8").splitlines():
        if "|" in line:
            key, text = line.split("|", 1)
            refs[read / "ljspeech" / f"{key}.wav"] = text.strip()
    for wav in sorted((read / "librivox_sense_and_sensibility").glob("*.wav")):
        refs[wav] = wav.with_suffix(".txt").read_text(encoding="utf-8").strip()
    return {k: v for k, v in refs.items() if k.is_file()}


def normalize(text: str) -> str:
    """Lower case, no punctuation, single digits as words: the scoring every WER here uses."""
    text = unicodedata.normalize("NFKC", text).lower().replace("i.e.", "ie")
    text = re.sub(r"[^\w\s']", " ", text)
    text = re.sub(r"'(?!\w)|(?<!\w)'", " ", text)
    ones = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    text = re.sub(r"\b(\d)\b", lambda m: ones[int(m.group(1))], text)
    return " ".join(text.split())


def corpus_wer(refs: list[str], hyps: list[str]) -> float:
    import jiwer

    return float(jiwer.wer([normalize(r) for r in refs], [normalize(h) or "<empty>" for h in hyps]))


def build_folder(folder: Path, copies: int, long_files: int) -> dict[str, str]:
    """`copies` renamed copies of each clip, plus `long_files` joins of all clips; name -> reference."""
    refs = references()
    raw = folder / "raw_audio"
    raw.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}
    for n in range(copies):
        for src, ref in refs.items():
            name = f"c{n}_{src.stem}{src.suffix}"
            shutil.copyfile(src, raw / name)
            out[name] = ref
    ordered = sorted(refs)
    for n in range(long_files):
        # Each long file joins all clips in a different rotation: ~142 s of read speech with short gaps.
        rot = ordered[n % len(ordered) :] + ordered[: n % len(ordered)]
        name = f"long{n}.wav"
        inputs: list[str] = []
        for src in rot:
            inputs += ["-i", str(src)]
        graph = "".join(
            f"[{i}:a]aresample=16000,aformat=channel_layouts=mono[a{i}];" for i in range(len(rot))
        )
        graph += "".join(f"[a{i}]" for i in range(len(rot))) + f"concat=n={len(rot)}:v=0:a=1[out]"
        subprocess.run(
            [
                "ffmpeg",
                "-nostdin",
                "-loglevel",
                "error",
                "-y",
                *inputs,
                "-filter_complex",
                graph,
                "-map",
                "[out]",
                str(raw / name),
            ],
            check=True,
            timeout=300,
        )
        out[name] = " ".join(refs[s] for s in rot)
    return out


def audio_seconds(folder: Path) -> float:
    import av

    total = 0.0
    for path in sorted((folder / "raw_audio").iterdir()):
        with av.open(str(path)) as c:
            s = c.streams.audio[0]
            total += float(s.duration * s.time_base) if s.duration else float(c.duration) / 1e6
    return total


# ---------------------------------------------------------------- machine


def machine() -> dict[str, object]:
    info: dict[str, object] = {"python": platform.python_version(), "cores": os.cpu_count()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        info["cpu"] = next(
            (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), None
        )
    except OSError:
        info["cpu"] = platform.processor()
    try:
        with open("/proc/meminfo") as fh:
            kb = int(next(ln for ln in fh if ln.startswith("MemTotal")).split()[1])
        info["memory_gib"] = round(kb / 2**20, 1)
    except (OSError, StopIteration):
        pass
    if shutil.which("nvidia-smi"):
        q = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        info["gpu"] = q.stdout.strip()
    from importlib.metadata import version

    for dist in ("faster-whisper", "ctranslate2"):
        info[dist] = version(dist)
    return info


class VramPoller:
    """Peak GPU memory in use while a process runs (nvidia-smi, every 0.2 s); None without a GPU."""

    def __init__(self) -> None:
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> VramPoller:
        if shutil.which("nvidia-smi"):
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                capture_output=True,
                text=True,
            ).stdout.strip()
            if out:
                self.peak = max(self.peak or 0, int(out.splitlines()[0]))
            self._stop.wait(0.2)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()


# ---------------------------------------------------------------- one timed process


def timed(cmd: list[str], env: dict[str, str]) -> dict[str, object]:
    """Run `cmd` under /usr/bin/time: wall seconds, peak RSS (MiB), peak VRAM (MiB), stdout, stderr."""
    with tempfile.NamedTemporaryFile(suffix=".time") as tf:
        with VramPoller() as vram:
            t0 = time.perf_counter()
            proc = subprocess.run(
                ["/usr/bin/time", "-f", "%M", "-o", tf.name, *cmd],
                capture_output=True,
                text=True,
                env=env,
                cwd=REPO,
            )
            wall = time.perf_counter() - t0
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"{cmd[:4]} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        rss_kb = int(Path(tf.name).read_text().strip().splitlines()[-1])
    return {
        "wall_s": wall,
        "rss_mib": rss_kb / 1024,
        "vram_mib": vram.peak,
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        "rc": proc.returncode,
    }


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("WHISPER_", "ENABLE_", "SLOWER_WHISPER_"))
    }
    env.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **extra)
    return env


def model_path(name: str) -> str:
    sys.path.insert(0, str(REPO))
    from transcription import config, models

    return str(models.resolve(name, config.load_settings({"model": name}), allow_download=False))


def run_worker(kind: str, folder: Path, args: argparse.Namespace) -> dict[str, object]:
    """(a) or (b): this script in worker mode, in its own process."""
    out = folder / f".{kind}.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        kind,
        "--folder",
        str(folder),
        "--model-path",
        model_path(args.model),
        "--device",
        args.device,
        "--compute-type",
        args.compute_type,
        "--batch-size",
        str(args.batch_size),
        "--worker-out",
        str(out),
    ]
    r = timed(cmd, clean_env())
    res = json.loads(out.read_text())
    return {**r, "load_s": res["load_s"], "texts": res["texts"]}


def run_ours(folder: Path, args: argparse.Namespace, extra: list[str]) -> dict[str, object]:
    """(c): the CLI, as a user runs it, with --force so every repeat redoes every file."""
    cmd = [
        sys.executable,
        "-m",
        "transcription",
        "transcribe",
        "--root",
        str(folder),
        "--model",
        args.model,
        "--device",
        args.device,
        "--compute-type",
        args.compute_type,
        "--force",
        *extra,
    ]
    r = timed(cmd, clean_env(LOG_FORMAT="json", LOG_LEVEL="INFO"))
    if r["rc"] != 0:
        raise RuntimeError(f"slower-whisper failed:\n{str(r['stderr'])[-3000:]}")
    load_s = None
    for line in str(r["stderr"]).splitlines():
        if '"model loaded"' in line:
            load_s = json.loads(line).get("seconds")
    texts = {}
    for path in (folder / "whisper_json").glob("*.json"):
        doc = json.loads(path.read_text(encoding="utf-8"))
        texts[doc["file"]] = doc["text"]
    return {**r, "load_s": load_s, "texts": texts}


def worker(args: argparse.Namespace) -> None:
    from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio

    t0 = time.perf_counter()
    model = WhisperModel(args.model_path, device=args.device, compute_type=args.compute_type)
    load_s = time.perf_counter() - t0
    runner = BatchedInferencePipeline(model) if args.worker == "batched" else model
    extra = {"batch_size": args.batch_size} if args.worker == "batched" else {}
    texts = {}
    for path in sorted((Path(args.folder) / "raw_audio").iterdir()):
        segments, _ = runner.transcribe(decode_audio(str(path)), **SETTINGS, **extra)
        texts[path.name] = " ".join(s.text.strip() for s in segments)
    Path(args.worker_out).write_text(json.dumps({"load_s": load_s, "texts": texts}))


# ---------------------------------------------------------------- the comparison


def compare(args: argparse.Namespace) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    try:
        refs = build_folder(work, args.copies, args.long)
        seconds = audio_seconds(work)
        systems = {
            "bare": lambda: run_worker("bare", work, args),
            "batched": lambda: run_worker("batched", work, args),
            "ours": lambda: run_ours(work, args, ["--throughput"]),
            "packed": lambda: run_ours(work, args, ["--throughput", "--batch-size", str(args.batch_size)]),
        }
        runs: dict[str, list[dict[str, object]]] = {k: [] for k in systems}
        for rep in range(args.repeats):
            order = list(systems) if rep % 2 == 0 else list(reversed(systems))  # alternate the order
            for name in order:
                r = systems[name]()
                runs[name].append(r)
                print(
                    f"repeat {rep + 1} {name}: {r['wall_s']:.1f} s, {r['rss_mib']:.0f} MiB", file=sys.stderr
                )
        names = sorted(refs)
        result: dict[str, object] = {
            "machine": machine(),
            "files": len(refs),
            "long_files": args.long,
            "audio_s": round(seconds, 1),
            "model": args.model,
            "device": args.device,
            "compute_type": args.compute_type,
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "systems": {},
        }
        for name, rs in runs.items():
            wall = statistics.median(float(r["wall_s"]) for r in rs)
            loads = [float(r["load_s"]) for r in rs if r["load_s"] is not None]
            load = statistics.median(loads) if loads else 0.0
            texts = rs[-1]["texts"]
            vram = [r["vram_mib"] for r in rs if r["vram_mib"] is not None]
            result["systems"][name] = {
                "wall_s_median": round(wall, 2),
                "wall_s_all": [round(float(r["wall_s"]), 2) for r in rs],
                "model_load_s": round(load, 2),
                "audio_s_per_s": round(seconds / wall, 2),
                "audio_s_per_s_without_load": round(seconds / max(1e-9, wall - load), 2),
                "peak_rss_mib": round(max(float(r["rss_mib"]) for r in rs)),
                "peak_vram_mib": max(vram) if vram else None,
                "wer": round(corpus_wer([refs[n] for n in names], [texts.get(n, "") for n in names]), 4),
            }
        base = result["systems"]
        for name in base:
            base[name]["x_bare"] = round(base["bare"]["wall_s_median"] / base[name]["wall_s_median"], 2)
            base[name]["x_batched"] = round(base["batched"]["wall_s_median"] / base[name]["wall_s_median"], 2)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


LABELS = {
    "bare": "(a) faster-whisper `WhisperModel.transcribe`, file by file",
    "batched": "(b) faster-whisper `BatchedInferencePipeline`, file by file",
    "ours": "(c) `slower-whisper transcribe --throughput`",
    "packed": "(d) `slower-whisper transcribe --throughput --batch-size N`",
}


def report(result: dict[str, object], table: str, out: Path | None, table_path: Path | None) -> None:
    """Print the table; write the JSON results and the table where asked."""
    print(table)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    if table_path:
        table_path.write_text(table)


def markdown(result: dict[str, object]) -> str:
    m = result["machine"]
    lines = [
        f"{result['files']} files ({result['long_files']} long), {result['audio_s']} s of audio; "
        f"{result['model']} on {result['device']} ({result['compute_type']}), batch {result['batch_size']}, "
        f"median of {result['repeats']} alternating repeats; machine: {m.get('cpu')}, "
        f"{m.get('cores')} cores, {m.get('memory_gib')} GiB"
        + (f", GPU {m['gpu']}" if m.get("gpu") else "")
        + ".",
        "",
        "| system | wall s (all) | audio s / s | without load | x (a) | x (b) | WER | peak RSS MiB "
        "| peak VRAM MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in result["systems"].items():
        lines.append(
            f"| {LABELS[name]} | {s['wall_s_median']} ({', '.join(map(str, s['wall_s_all']))}) | "
            f"{s['audio_s_per_s']} | {s['audio_s_per_s_without_load']} | {s['x_bare']} | {s['x_batched']} | "
            f"{s['wer']} | {s['peak_rss_mib']} | {s['peak_vram_mib'] if s['peak_vram_mib'] else '-'} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: list[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / max(1, len(results))
    names = list(LABELS)
    for i, res in enumerate(results):
        vals = [res["systems"][n]["audio_s_per_s"] for n in names]
        xs = [k + i * width for k in range(len(names))]
        bars = ax.bar(xs, vals, width, label=f"{res['model']} {res['device']} batch {res['batch_size']}")
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks([k + width * (len(results) - 1) / 2 for k in range(len(names))])
    ax.set_xticklabels(["(a) bare loop", "(b) batched, per file", "(c) --throughput", "(d) packed, batch N"])
    ax.set_ylabel("audio seconds per second")
    ax.set_title("Throughput, whole process (model load included)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny.en", help="model name or CTranslate2 directory")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compute-type", default=None, help="default: int8 on cpu, float16 on cuda")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--copies", type=int, default=2, help="renamed copies of each of the 22 clips")
    ap.add_argument("--long", type=int, default=2, help="long files (all clips joined, ~142 s each)")
    ap.add_argument("--out", type=Path, default=None, help="JSON results")
    ap.add_argument("--markdown", type=Path, default=None, help="write the table here")
    ap.add_argument("--plot", type=Path, default=None, help="PNG bar chart (needs matplotlib)")
    ap.add_argument("--worker", choices=("bare", "batched"), help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--model-path", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.compute_type = args.compute_type or ("float16" if args.device == "cuda" else "int8")
    if args.worker:
        worker(args)
        return
    result = compare(args)
    report(result, markdown(result), args.out, args.markdown)
    if args.plot:
        plot([result], args.plot)


if __name__ == "__main__":
    main()
