"""`stream=true` latency: time to the first `transcript.text.delta` against the whole request.

Real read speech (LJSpeech clips joined, cycling through them for longer lengths) is sent to a real server on
loopback (`slower-whisper serve`, a subprocess with a temporary root) once with `stream=true` and once
without, alternating, after one warm-up request. For each length it reports medians of: time to the first
delta, time to `transcript.text.done`, the first delta as a share of the whole streamed request (issue 13's
target: within 25 % for a 60 s file), the same file without streaming, and how many bursts the deltas came
in (deltas closer than 50 ms together count as one burst: one Whisper window's segments arrive together).

    python benchmarks/bench_stream.py [--seconds 60 180] [--repeats 3] [--model tiny.en] [--device cpu] \
        [--markdown] [--out bench-out/stream.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import server_env

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CLIPS = sorted((DATA / "en_read" / "ljspeech").glob("LJ*.wav"))
BURST_GAP_S = 0.05


def _env(model: str, device: str) -> dict[str, str]:
    return server_env(model, device)


def _duration(path: Path) -> float:
    import av

    with av.open(str(path)) as container:
        return float(container.duration / av.time_base)


def build_input(seconds: float, folder: Path) -> tuple[Path, float]:
    """Whole LJSpeech clips joined (cycling), as many as bring the length closest to `seconds`, as one
    16 kHz FLAC."""
    picked: list[Path] = []
    total = 0.0
    while True:
        clip = CLIPS[len(picked) % len(CLIPS)]
        longer = total + _duration(clip)
        if picked and abs(longer - seconds) >= abs(total - seconds):
            break
        picked.append(clip)
        total = longer
    listing = folder / f"clips_{seconds:g}.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in picked))
    out = folder / f"ljspeech_{seconds:g}s.flac"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing)]
        + ["-ar", "16000", "-ac", "1", str(out)],
        check=True,
    )
    return out, _duration(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, model: str, device: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "transcription", "serve", "--root", str(root), "--port", str(port)],
        cwd=REPO,
        env=_env(model, device),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((root / "server.log").read_text()[-3000:])
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server not ready")


def streamed(url: str, audio: Path) -> dict:
    """One stream=true request: when the first delta and the done event arrived, and the delta bursts."""
    arrivals: list[float] = []
    text = None
    t0 = time.perf_counter()
    with (
        audio.open("rb") as fh,
        httpx.stream(
            "POST",
            f"{url}/v1/audio/transcriptions",
            files={"file": (audio.name, fh)},
            data={"stream": "true"},
            timeout=600,
        ) as r,
    ):
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[len("data: ") :])
            now = time.perf_counter() - t0
            if event["type"] == "transcript.text.delta":
                arrivals.append(now)
            elif event["type"] == "transcript.text.done":
                text = event["text"]
                done = now
            else:
                raise RuntimeError(f"stream failed: {event}")
    if text is None or not arrivals:
        raise RuntimeError("the stream ended without deltas and a done event")
    bursts = 1 + sum(1 for a, b in zip(arrivals, arrivals[1:], strict=False) if b - a > BURST_GAP_S)
    return {
        "first_delta_s": arrivals[0],
        "done_s": done,
        "deltas": len(arrivals),
        "bursts": bursts,
        "text": text,
    }


def plain(url: str, audio: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    with audio.open("rb") as fh:
        r = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": (audio.name, fh)}, timeout=600)
    r.raise_for_status()
    return time.perf_counter() - t0, r.json()["text"]


def measure(url: str, audio: Path, seconds: float, repeats: int) -> dict:
    runs, plains, same = [], [], True
    for _ in range(repeats):
        run = streamed(url, audio)
        took, text = plain(url, audio)
        same &= run["text"] == text
        runs.append(run)
        plains.append(took)
    first = statistics.median(r["first_delta_s"] for r in runs)
    whole = statistics.median(r["done_s"] for r in runs)
    return {
        "audio_s": round(seconds, 2),
        "repeats": repeats,
        "first_delta_s": round(first, 3),
        "stream_whole_s": round(whole, 3),
        "first_share": round(statistics.median(r["first_delta_s"] / r["done_s"] for r in runs), 3),
        "plain_whole_s": round(statistics.median(plains), 3),
        "deltas": runs[0]["deltas"],
        "bursts": runs[0]["bursts"],
        "text_equal": same,
        "runs": [{k: v for k, v in r.items() if k != "text"} for r in runs],
    }


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        f"stream=true, {meta['model']} on {meta['device']}, {meta['cpus']} CPUs ({meta['platform']}); "
        f"medians of {results[0]['repeats'] if results else 0} runs",
        "",
        "| audio | first delta | whole (stream) | first/whole | whole (no stream) | deltas | bursts "
        "| same text |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['audio_s']:.1f} s | {r['first_delta_s']:.2f} s | {r['stream_whole_s']:.2f} s | "
            f"{100 * r['first_share']:.0f} % | {r['plain_whole_s']:.2f} s | {r['deltas']} | {r['bursts']} | "
            f"{'yes' if r['text_equal'] else 'NO'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, nargs="+", default=[60.0], help="input lengths (speech)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not CLIPS:
        sys.exit(f"no LJSpeech clips under {DATA}")
    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    proc = None
    try:
        inputs = [build_input(s, work) for s in args.seconds]
        proc, url = start_server(work, args.model, args.device)
        plain(url, inputs[0][0])  # warm-up: first-call costs are not what is measured
        results = [measure(url, path, seconds, args.repeats) for path, seconds in inputs]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
        shutil.rmtree(work, ignore_errors=True)
    meta = {
        "model": args.model,
        "device": args.device,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    report = json.dumps({"meta": meta, "results": results}, indent=2)
    print(markdown(results, meta) if args.markdown else report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


if __name__ == "__main__":
    main()
