"""Live transcription on /v1/realtime at real-time pace (issue 13).

Each session plays a stream of real read speech (LJSpeech clips and jfk, one second of silence after each)
as a microphone would: 100 ms PCM16 appends at 24 kHz, each sent when its audio has been "recorded". With
1 session and then N concurrent sessions (each starting at a different clip), it reports:

- end of utterance to `completed`: from the moment the client sent the last speech sample of a turn (the
  speech end found by Silero VAD on the whole stream offline, independently of the server) to the arrival
  of the turn's completed event; median and 95th percentile;
- time to first partial: from the client's send of a turn's first speech sample to its first delta;
- how often shown partial text later changed: turns whose final text does not continue the words already
  shown (case and punctuation ignored), and the share of shown words that changed;
- WER of the final turns and of the same files transcribed offline (POST /v1/audio/transcriptions on the
  same server), both against the human references; and live against offline.

    python benchmarks/bench_realtime.py [--seconds 60] [--sessions 1,4] [--model tiny.en] [--out x.json]
        [--markdown part.md]

It starts its own server (a subprocess) on a free port with a temporary root, CPU by default.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from common import server_env

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SLOWER_WHISPER_BENCH_DATA") or REPO.parent / "shared" / "data")
RATE = 24_000
STEP = RATE // 10  # 100 ms appends
GAP_S = 1.0  # silence after each clip
COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"


# ---------------------------------------------------------------- data and scoring


def clips() -> list[tuple[Path, str]]:
    read = DATA / "en_read"
    out = [(read / "jfk" / "jfk.flac", (read / "jfk" / "jfk.txt").read_text().strip())]
    for line in (read / "ljspeech" / "transcripts.psv").read_text(encoding="utf-8").splitlines():
        if "|" in line:
            key, text = line.split("|", 1)
            out.append((read / "ljspeech" / f"{key}.wav", text.strip()))
    return out


def pcm(path: Path, rate: int = RATE) -> np.ndarray:
    import av  # PyAV, as the service decodes

    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    parts = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts).astype("<i2")


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().replace("i.e.", "ie")
    text = re.sub(r"[^\w\s']", " ", text)
    text = re.sub(r"'(?!\w)|(?<!\w)'", " ", text)
    return " ".join(text.split())


def wer(refs: list[str], hyps: list[str]) -> float:
    import jiwer

    return float(jiwer.wer([normalize(r) for r in refs], [normalize(h) or "<empty>" for h in hyps]))


def speech_spans(stream: np.ndarray) -> list[tuple[float, float]]:
    """Silero's speech spans (s) on the whole stream at 16 kHz: where utterances really start and end."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps
    from scipy.signal import resample_poly

    x = resample_poly(stream.astype(np.float32) / 32768.0, 2, 3).astype(np.float32)
    opts = VadOptions(min_silence_duration_ms=500, speech_pad_ms=0)
    return [(s["start"] / 16000, s["end"] / 16000) for s in get_speech_timestamps(x, vad_options=opts)]


@dataclass
class Stream:
    files: list[tuple[Path, str]]
    audio: np.ndarray
    spans: list[tuple[float, float]] = field(default_factory=list)


def build_stream(all_clips: list[tuple[Path, str]], first: int, seconds: float, cache: dict) -> Stream:
    files, parts, total = [], [], 0.0
    i = first
    while total < seconds:
        path, ref = all_clips[i % len(all_clips)]
        if path not in cache:
            cache[path] = pcm(path)
        parts += [cache[path], np.zeros(int(GAP_S * RATE), dtype="<i2")]
        files.append((path, ref))
        total += cache[path].shape[0] / RATE + GAP_S
        i += 1
    audio = np.concatenate(parts)
    return Stream(files, audio, speech_spans(audio))


# ---------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, port: int, model: str, device: str) -> subprocess.Popen:
    env = server_env(model, device)
    cmd = [sys.executable, "-m", "transcription", "serve", "--root", str(root), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not become ready")


def offline_texts(url: str, paths: list[Path]) -> dict[Path, str]:
    out = {}
    for path in paths:
        with path.open("rb") as fh:
            r = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": (path.name, fh)}, timeout=300)
        r.raise_for_status()
        out[path] = r.json()["text"]
    return out


def metric(url: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    return 0.0


# ---------------------------------------------------------------- one live session


@dataclass
class Turn:
    item: str
    start_s: float = 0.0  # audio_start_ms (prefix padding included)
    end_s: float = 0.0  # audio_end_ms (where the server confirmed the silence)
    committed_at: float | None = None
    completed_at: float | None = None
    transcript: str = ""
    partials: list[tuple[float, str]] = field(default_factory=list)  # deltas before the commit


async def play(url: str, stream: Stream) -> tuple[list[Turn], list[float]]:
    """Stream the audio at real-time pace; returns the turns and each append's send time."""
    import websockets

    turns: dict[str, Turn] = {}
    sent: list[float] = []
    async with websockets.connect(f"{url.replace('http', 'ws', 1)}/v1/realtime?intent=transcription") as ws:
        await ws.recv()  # created

        async def speak() -> None:
            start = time.monotonic()
            for i in range(0, stream.audio.shape[0], STEP):
                await asyncio.sleep(max(0.0, start + (i + STEP) / RATE - time.monotonic()))
                chunk = stream.audio[i : i + STEP]
                event = {
                    "type": "input_audio_buffer.append",
                    "audio": base64.b64encode(chunk.tobytes()).decode(),
                }
                await ws.send(json.dumps(event))
                sent.append(time.monotonic())

        speaking = asyncio.ensure_future(speak())
        while True:
            pending = [t for t in turns.values() if t.completed_at is None]
            if speaking.done() and not pending:
                break
            try:
                message = await asyncio.wait_for(ws.recv(), timeout=30)
            except TimeoutError:
                break
            now = time.monotonic()
            e = json.loads(message)
            kind, item = e["type"], e.get("item_id")
            if kind == "input_audio_buffer.speech_started":
                turns[item] = Turn(item, start_s=e["audio_start_ms"] / 1000)
            elif kind == "input_audio_buffer.speech_stopped":
                turns[item].end_s = e["audio_end_ms"] / 1000
            elif kind == "input_audio_buffer.committed":
                turns[item].committed_at = now
            elif kind == DELTA and turns[item].committed_at is None:
                turns[item].partials.append((now, e["delta"]))
            elif kind == COMPLETED:
                turns[item].completed_at = now
                turns[item].transcript = e["transcript"]
            elif kind == "error":
                print("server error:", e["error"], file=sys.stderr)
        await speaking
    return list(turns.values()), sent


def sent_at(sent: list[float], t: float) -> float:
    """When the client sent the append holding the sample at `t` s."""
    return sent[min(len(sent) - 1, int(t * RATE) // STEP)]


def score(stream: Stream, turns: list[Turn], sent: list[float]) -> dict:
    latencies, first_partials = [], []
    partial_turns = revised_turns = shown_words = changed_words = 0
    for turn in turns:
        if turn.completed_at is None:
            continue
        inside = [s for s in stream.spans if s[1] > turn.start_s and s[0] < turn.end_s]
        if inside:
            latencies.append(turn.completed_at - sent_at(sent, inside[-1][1]))
            if turn.partials:
                first_partials.append(turn.partials[0][0] - sent_at(sent, max(inside[0][0], turn.start_s)))
        if turn.partials:
            shown = normalize("".join(d for _, d in turn.partials)).split()
            final = normalize(turn.transcript).split()
            changed = sum(1 for i, w in enumerate(shown) if i >= len(final) or final[i] != w)
            partial_turns += 1
            revised_turns += changed > 0
            shown_words += len(shown)
            changed_words += changed
    return {
        "turns": sum(t.completed_at is not None for t in turns),
        "latencies": latencies,
        "first_partials": first_partials,
        "turns_with_partials": partial_turns,
        "revised_turns": revised_turns,
        "shown_words": shown_words,
        "changed_words": changed_words,
        "live_text": " ".join(t.transcript for t in sorted(turns, key=lambda t: t.start_s) if t.completed_at),
    }


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_sessions(url: str, streams: list[Stream]) -> list[dict]:
    results = await asyncio.gather(*(play(url, s) for s in streams))
    return [score(s, turns, sent) for s, (turns, sent) in zip(streams, results, strict=True)]


def summarise(n: int, scored: list[dict], streams: list[Stream], offline: dict[Path, str]) -> dict:
    lat = [x for s in scored for x in s["latencies"]]
    first = [x for s in scored for x in s["first_partials"]]
    refs = [" ".join(r for _, r in st.files) for st in streams]
    off = [" ".join(offline[p] for p, _ in st.files) for st in streams]
    hyps = [s["live_text"] for s in scored]
    wer_live, wer_off = wer(refs, hyps), wer(refs, off)
    with_partials = sum(s["turns_with_partials"] for s in scored)
    shown = sum(s["shown_words"] for s in scored)
    return {
        "sessions": n,
        "audio_s_per_session": round(statistics.mean(st.audio.shape[0] / RATE for st in streams), 1),
        "turns": sum(s["turns"] for s in scored),
        "eou_to_final_median_s": pct(lat, 0.5),
        "eou_to_final_p95_s": pct(lat, 0.95),
        "first_partial_median_s": pct(first, 0.5),
        "first_partial_p95_s": pct(first, 0.95),
        "turns_with_partials": with_partials,
        "partial_changed_turns": sum(s["revised_turns"] for s in scored),
        "partial_changed_turn_rate": (sum(s["revised_turns"] for s in scored) / with_partials)
        if with_partials
        else None,
        "partial_changed_word_rate": (sum(s["changed_words"] for s in scored) / shown) if shown else None,
        "wer_live": wer_live,
        "wer_offline": wer_off,
        "wer_relative": (wer_live - wer_off) / wer_off if wer_off else None,
        "wer_live_vs_offline": wer(off, hyps),
    }


def markdown(result: dict) -> str:
    def f(v: float | None, d: int = 2) -> str:
        return "–" if v is None else f"{v:.{d}f}"

    rows = [
        "| sessions | turns | EoU→final median s | p95 s | first partial median s | p95 s | partials changed "
        "(turns, words) | WER live | WER offline | relative | live vs offline |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        changed = (
            f"{r['partial_changed_turns']}/{r['turns_with_partials']}, {f(r['partial_changed_word_rate'], 3)}"
        )
        cells = [
            str(r["sessions"]),
            str(r["turns"]),
            f(r["eou_to_final_median_s"]),
            f(r["eou_to_final_p95_s"]),
            f(r["first_partial_median_s"]),
            f(r["first_partial_p95_s"]),
            changed,
            f(r["wer_live"], 3),
            f(r["wer_offline"], 3),
            f(r["wer_relative"], 3),
            f(r["wer_live_vs_offline"], 3),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    m = result["machine"]
    rows.append("")
    rows.append(
        f"{m['model']} on {m['device']}, {m['cpus']} CPUs ({m['platform']}); "
        f"{result['seconds']} s of audio per session."
    )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="audio per session")
    ap.add_argument("--sessions", default="1,4", help="concurrent sessions, one run each")
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()
    counts = [int(n) for n in args.sessions.split(",")]
    all_clips = clips()
    cache: dict = {}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_server(Path(tmp), port, args.model, args.device)
        try:
            runs = []
            for n in counts:
                streams = [build_stream(all_clips, 5 * i, args.seconds, cache) for i in range(n)]
                scored = asyncio.run(run_sessions(url, streams))
                offline = offline_texts(url, sorted({p for st in streams for p, _ in st.files}))
                runs.append(summarise(n, scored, streams, offline))
                print(json.dumps(runs[-1]), flush=True)
            server = {
                "partial_revisions_total": metric(url, "slower_whisper_realtime_partial_revisions_total"),
                "turns_total": metric(url, "slower_whisper_realtime_turns_total"),
            }
        finally:
            proc.terminate()
            proc.wait(60)
    result = {
        "seconds": args.seconds,
        "runs": runs,
        "server": server,
        "machine": {
            "model": args.model,
            "device": args.device,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }
    table = markdown(result)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
