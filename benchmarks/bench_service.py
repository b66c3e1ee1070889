"""Load test for `slower-whisper serve` on loopback.

Measures, for concurrency 1, 4 and 16: throughput (audio seconds transcribed per wall second) and p50/p95
request latency; the same files through the CLI (`slower-whisper transcribe`, model load included and
excluded); and the server's resident memory over a soak of many requests (it must stay flat).

With `--packed N`, the same load runs in the same process on two more servers: one transcribing each request
with batch size N on its own (`BATCH_SIZE=N`), and one in throughput mode, packing the chunks of concurrent
requests into shared batches of N (`SLOWER_WHISPER_THROUGHPUT=true`), with its batch mix read from /metrics
and a soak of its own.

    python benchmarks/bench_service.py --out bench-out/service.json [--soak 500] [--model tiny.en] \
        [--packed 8]

It starts its own server (a subprocess, like production) on a free port with a temporary root.

With `--compare`, it measures instead, in one run and on the same 17 real clips (jfk and LJSpeech): a bare
faster-whisper loop (the yardstick: the same model directory, beam 5, VAD, all cores), our server, and any
other OpenAI-compatible server given by URL. For each concurrency: audio seconds per second, p50/p95 latency,
the worst health probe during the load, and peak memory (ours always; another server's when its process id
is given). Servers are measured in alternating order over the repeats.

    python benchmarks/bench_service.py --compare --concurrency 1,4,8,16 --repeats 2 \
        [--url speaches=http://127.0.0.1:8001 --health speaches=/health --pid speaches=12345] \
        [--server-env SLOWER_WHISPER_THROUGHPUT=true]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from common import server_env

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
FILES = [DATA / "en_read/jfk/jfk.flac"] + sorted((DATA / "en_read/ljspeech").glob("LJ001-000[1-5].wav"))
SOAK_FILE = DATA / "multilingual/en_digits/english.wav"


def _env(model: str, device: str) -> dict[str, str]:
    return server_env(model, device)


def _duration(path: Path) -> float:
    import av  # PyAV, as the service decodes: no ffprobe needed (the GPU machine has none)

    with av.open(str(path)) as container:
        return float(container.duration / av.time_base)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _batch_mix(url: str) -> dict:
    """The packed server's batch histograms: batches, chunks per batch and requests per batch (means)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=5).text
    # (sample name, histogram bucket or None) -> value
    values = {
        (sample.name, sample.labels.get("le")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    batches = values.get(("slower_whisper_batch_chunks_count", None), 0.0)
    if not batches:
        return {"batches": 0}
    return {
        "batches": int(batches),
        "mean_chunks": round(values[("slower_whisper_batch_chunks_sum", None)] / batches, 2),
        "mean_requests": round(values[("slower_whisper_batch_requests_sum", None)] / batches, 2),
        "single_request_batches": int(values[("slower_whisper_batch_requests_bucket", "1.0")]),
    }


class Server:
    def __init__(self, root: Path, env: dict[str, str], workers: int, queue: int) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = dict(env, SLOWER_WHISPER_WORKERS=str(workers), SLOWER_WHISPER_QUEUE_SIZE=str(queue))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "transcription", "serve", "--root", str(root), "--port", str(self.port)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}")
        raise SystemExit("server not ready")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def _load(
    url: str, files: list[tuple[str, bytes, float]], concurrency: int, requests: int, model: str = "whisper-1"
) -> dict:
    latencies: list[float] = []
    audio = 0.0
    with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=concurrency)) as client:

        def one(i: int) -> tuple[float, float]:
            name, data, seconds = files[i % len(files)]
            t0 = time.perf_counter()
            r = client.post(
                f"{url}/v1/audio/transcriptions",
                files={"file": (name, data)},
                data={"response_format": "json", "model": model},
            )
            r.raise_for_status()
            return time.perf_counter() - t0, seconds

        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            for latency, seconds in pool.map(one, range(requests)):
                latencies.append(latency)
                audio += seconds
        wall = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "requests": requests,
        "audio_s": round(audio, 1),
        "wall_s": round(wall, 2),
        "audio_s_per_s": round(audio / wall, 2),
        "p50_s": round(statistics.median(latencies), 3),
        "p95_s": round(_pct(latencies, 0.95), 3),
    }


def _cli(env: dict[str, str], files: list[Path], audio_s: float) -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    try:
        (root / "raw_audio").mkdir()
        for f in files:
            shutil.copyfile(f, root / "raw_audio" / f.name)
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "transcription", "transcribe", "--root", str(root)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"CLI failed: {done.stderr[-2000:]}")
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from transcription.config import load_settings;"
                "from transcription.asr import Engine; Engine.load(load_settings())",
            ],
            cwd=REPO,
            env=env,
            check=True,
        )
        startup = time.perf_counter() - t0
        return {
            "files": len(files),
            "audio_s": round(audio_s, 1),
            "wall_s": round(wall, 2),
            "audio_s_per_s": round(audio_s / wall, 2),
            "startup_s": round(startup, 2),
            "audio_s_per_s_excluding_startup": round(audio_s / max(wall - startup, 1e-3), 2),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _soak(url: str, pid: int, n: int, concurrency: int) -> dict:
    data = SOAK_FILE.read_bytes()
    samples: list[tuple[int, float]] = [(0, _rss_mb(pid))]
    done = {"n": 0}
    stop = threading.Event()

    def sampler() -> None:
        while not stop.wait(0.5):
            samples.append((done["n"], _rss_mb(pid)))

    threading.Thread(target=sampler, daemon=True).start()
    t0 = time.perf_counter()
    with httpx.Client(timeout=600) as client:

        def one(_: int) -> None:
            r = client.post(
                f"{url}/v1/audio/transcriptions",
                files={"file": ("english.wav", data)},
                data={"response_format": "text"},
            )
            r.raise_for_status()
            done["n"] += 1

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(n)))
    stop.set()
    samples.append((n, _rss_mb(pid)))
    rss = [mb for _, mb in samples]
    # "Flat": the last fifth of the run holds no more memory than the first fifth's peak, within 10 %.
    early = max(mb for k, mb in samples if k <= n // 5)
    late = max(mb for k, mb in samples if k >= 4 * n // 5)
    return {
        "requests": n,
        "concurrency": concurrency,
        "wall_s": round(time.perf_counter() - t0, 1),
        "rss_start_mb": round(rss[0], 1),
        "rss_peak_mb": round(max(rss), 1),
        "rss_end_mb": round(rss[-1], 1),
        "rss_peak_first_fifth_mb": round(early, 1),
        "rss_peak_last_fifth_mb": round(late, 1),
        "flat": late <= early * 1.10,
    }


def _serve(env: dict[str, str], workers: int, files: list[tuple[str, bytes, float]], soak: int) -> dict:
    """One server: the load at concurrency 1, 4 and 16, then a soak of `soak` requests (0: none)."""
    shown = ("BATCH_SIZE", "SLOWER_WHISPER_THROUGHPUT")
    out: dict = {"settings": {k: v for k, v in env.items() if k in shown}}
    root = Path(tempfile.mkdtemp(prefix="bench-service-"))
    try:
        t0 = time.perf_counter()
        server = Server(root, env, workers, queue=64)
        out["server_ready_s"] = round(time.perf_counter() - t0, 2)
        try:
            _load(server.url, files[:1], 1, 2)  # warm-up
            out["load"] = [_load(server.url, files, c, max(len(files), 2 * c)) for c in (1, 4, 16)]
            for row in out["load"]:
                print(json.dumps(dict(row, **out["settings"])))
            out["batch_mix"] = _batch_mix(server.url)
            if soak:
                out["soak"] = _soak(server.url, server.proc.pid, soak, 4)
                print(json.dumps(out["soak"]))
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


# ---------------------------------------------------------------- --compare: servers by URL beside ours

COMPARE_FILES = [DATA / "en_read/jfk/jfk.flac"] + sorted((DATA / "en_read/ljspeech").glob("LJ001-00*.wav"))


def _bare_loop(model: str, device: str, files: list[Path]) -> dict:
    """The yardstick: faster-whisper itself over the files, one after another, in a fresh process."""
    code = (
        "import json, sys, time\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from faster_whisper import WhisperModel\n"
        "from transcription import hardware, models\n"
        "from transcription.config import load_settings\n"
        f"s = load_settings({{}}, None, {{'WHISPER_MODEL': {model!r}, 'WHISPER_DEVICE': {device!r}}})\n"
        "m = WhisperModel(str(models.resolve(s.model, s)), device=s.resolved_device(),\n"
        "                 compute_type=s.resolved_compute_type(), cpu_threads=hardware.usable_cpus())\n"
        f"files = {[str(f) for f in files]!r}\n"
        "list(m.transcribe(files[0], beam_size=5, vad_filter=True)[0])\n"
        "t0 = time.perf_counter()\n"
        "for f in files:\n"
        "    list(m.transcribe(f, beam_size=5, vad_filter=True)[0])\n"
        "print(json.dumps({'wall_s': time.perf_counter() - t0}))\n"
    )
    env = server_env(model, device)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _probe(url: str, stop: threading.Event, worst: list[float]) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.wait(0.25):
            t0 = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                client.get(url)
            worst[0] = max(worst[0], time.perf_counter() - t0)


def _measure(
    url: str,
    health: str,
    pid: int | None,
    files: list[tuple[str, bytes, float]],
    concurrency: int,
    model: str,
) -> dict:
    """One load at one concurrency with the health probe and memory sampled alongside."""
    stop, worst, peak = threading.Event(), [0.0], [0.0]
    threads = [threading.Thread(target=_probe, args=(url + health, stop, worst), daemon=True)]
    if pid is not None:

        def sample() -> None:
            while not stop.wait(0.2):
                peak[0] = max(peak[0], _rss_mb(pid))

        threads.append(threading.Thread(target=sample, daemon=True))
    for t in threads:
        t.start()
    try:
        row = _load(url, files, concurrency, max(len(files), 2 * concurrency), model=model)
    finally:
        stop.set()
        for t in threads:
            t.join()
    row["worst_health_s"] = round(worst[0], 3)
    row["peak_rss_mb"] = round(peak[0], 1) if pid is not None else None
    return row


def _compare(args: argparse.Namespace) -> dict:
    files = [(f.name, f.read_bytes(), _duration(f)) for f in COMPARE_FILES]
    audio_s = sum(d for _, _, d in files)
    levels = [int(c) for c in args.concurrency.split(",")]
    bare = _bare_loop(args.model, args.device, COMPARE_FILES)
    bare_rate = audio_s / bare["wall_s"]
    print(json.dumps({"bare_loop_audio_s_per_s": round(bare_rate, 2)}))
    env = dict(_env(args.model, args.device), **dict(kv.split("=", 1) for kv in args.server_env))
    root = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    ours = Server(root, env, args.workers, queue=256)
    servers = {"slower-whisper": (ours.url, "/healthz", ours.proc.pid)}
    pids = dict(kv.split("=", 1) for kv in args.pid)
    healths = dict(kv.split("=", 1) for kv in args.health)
    for kv in args.url:
        name, url = kv.split("=", 1)
        servers[name] = (
            url.rstrip("/"),
            healths.get(name, "/health"),
            int(pids[name]) if name in pids else None,
        )
    rows: dict[str, dict[int, list[dict]]] = {name: {c: [] for c in levels} for name in servers}
    try:
        for url, _, _ in servers.values():
            _load(url, files[:1], 1, 2, model=args.request_model)  # warm-up
        for rep in range(args.repeats):
            order = list(servers) if rep % 2 == 0 else list(reversed(servers))
            for name in order:
                url, health, pid = servers[name]
                for c in levels:
                    row = _measure(url, health, pid, files, c, args.request_model)
                    rows[name][c].append(row)
                    print(json.dumps({"server": name, **row}))
    finally:
        ours.stop()
        shutil.rmtree(root, ignore_errors=True)
    table = {}
    for name, by_c in rows.items():
        table[name] = []
        for c, runs in by_c.items():
            rate = statistics.median(r["audio_s_per_s"] for r in runs)
            peaks = [r["peak_rss_mb"] for r in runs if r["peak_rss_mb"] is not None]
            table[name].append(
                {
                    "concurrency": c,
                    "audio_s_per_s": round(rate, 2),
                    "x_bare": round(rate / bare_rate, 2),
                    "p50_s": round(statistics.median(r["p50_s"] for r in runs), 3),
                    "p95_s": round(statistics.median(r["p95_s"] for r in runs), 3),
                    "worst_health_s": round(max(r["worst_health_s"] for r in runs), 3),
                    "peak_rss_mb": max(peaks) if peaks else None,
                }
            )
    return {
        "bare_loop": {"audio_s": round(audio_s, 1), **bare, "audio_s_per_s": round(bare_rate, 2)},
        "servers": table,
    }


def _markdown(result: dict) -> str:
    lines = [
        f"bare faster-whisper loop: {result['bare_loop']['audio_s_per_s']} audio-s/s",
        "",
        "| server | concurrency | audio-s/s | x bare | p50 | p95 | worst health probe | peak RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in result["servers"].items():
        for r in rows:
            rss = f"{r['peak_rss_mb']:.0f} MiB" if r["peak_rss_mb"] else "n/a"
            lines.append(
                f"| {name} | {r['concurrency']} | {r['audio_s_per_s']} | {r['x_bare']} | {r['p50_s']} s "
                f"| {r['p95_s']} s | {r['worst_health_s']} s | {rss} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--compare", action="store_true", help="bare loop, ours and --url servers side by side"
    )
    parser.add_argument(
        "--url", action="append", default=[], help="NAME=URL of another OpenAI-compatible server"
    )
    parser.add_argument("--health", action="append", default=[], help="NAME=PATH of its health probe")
    parser.add_argument("--pid", action="append", default=[], help="NAME=PID, to sample its memory")
    parser.add_argument("--server-env", action="append", default=[], help="KEY=VALUE for our server")
    parser.add_argument("--concurrency", default="1,4,8,16")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--request-model", default="whisper-1", help="the `model` field sent")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--soak", type=int, default=500)
    parser.add_argument("--packed", type=int, default=0, help="also measure batch size N, alone and packed")
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "service.json")
    args = parser.parse_args()
    if args.compare:
        result = _compare(args)
        result["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
        result["model"] = args.model
        print(_markdown(result))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        return 0
    env = _env(args.model, args.device)
    files = [(f.name, f.read_bytes(), _duration(f)) for f in FILES]
    audio_s = sum(d for _, _, d in files)
    results: dict = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "model": args.model,
        "device": args.device,
        "workers": args.workers,
        "files": [{"name": n, "seconds": round(d, 2)} for n, _, d in files],
    }
    results.update(_serve(env, args.workers, files, args.soak))
    if args.packed > 1:
        batched = dict(env, BATCH_SIZE=str(args.packed))
        results["batched"] = _serve(batched, args.workers, files, 0)
        packed = dict(batched, SLOWER_WHISPER_THROUGHPUT="true")
        results["packed"] = _serve(packed, args.workers, files, args.soak // 2)
    results["cli"] = _cli(dict(env, LOG_LEVEL="WARNING"), FILES, audio_s)
    print(json.dumps(results["cli"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
