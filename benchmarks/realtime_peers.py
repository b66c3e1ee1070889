"""The two peer live servers for bench_realtime.py: start each in its own virtual environment on 127.0.0.1,
and play a recording to it at real-time pace as its own client would, recording what is on screen.

- WhisperLive (collabora `whisper-live`): benchmarks/peer_whisperlive.py starts its TranscriptionServer
  (faster_whisper backend, the local model folder, one shared model). Client protocol: a JSON options
  message, then int16 PCM frames, `END_OF_AUDIO` at the end; the server answers with its last segments,
  each `completed` or not (the one not completed is the revisable tail).
- WhisperLiveKit (`whisperlivekit`): its own `whisperlivekit-server` with `--backend faster-whisper
  --backend-policy localagreement --model_dir <folder> --pcm-input`; the client sends s16le PCM on /asr and
  an empty message at the end; `lines` are committed text, `buffer_transcription` the tail.

Both pick int8 on a CPU by themselves (WhisperLive: int8 whenever CUDA is absent; WhisperLiveKit: CTranslate2
`auto`, which is int8_float32 here), as our server runs tiny.en int8.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np
from live_conversations import RATE, Recording
from live_metrics import SessionLog

HERE = Path(__file__).resolve().parent
WL_VENV = Path(os.environ.get("BENCH_WHISPERLIVE_VENV", "/work/peers-wl"))
WLK_VENV = Path(os.environ.get("BENCH_WHISPERLIVEKIT_VENV", "/work/peers"))
CHUNK_S = 0.1
DRAIN_S = 20.0  # how long a client waits for the last finals after its audio ended
QUIET_S = 4.0  # no new text for this long after the audio: nothing more is coming


def _offline_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WHISPER_", "SLOWER_WHISPER_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def _wait_port(proc: subprocess.Popen, port: int, what: str, http: bool) -> None:
    import socket

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        try:
            if http:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    return
            else:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
        except (OSError, httpx.TransportError):
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{what} did not start listening on {port}")


def start_whisperlive(port: int, model_dir: Path, log: Path) -> subprocess.Popen:
    cmd = [str(WL_VENV / "bin" / "python"), str(HERE / "peer_whisperlive.py"), str(port), str(model_dir)]
    proc = subprocess.Popen(cmd, env=_offline_env(), stdout=log.open("wb"), stderr=subprocess.STDOUT)
    _wait_port(proc, port, "WhisperLive", http=False)
    return proc


def start_whisperlivekit(port: int, model_dir: Path, log: Path) -> subprocess.Popen:
    cmd = [
        str(WLK_VENV / "bin" / "whisperlivekit-server"),
        *("--host", "127.0.0.1", "--port", str(port), "--backend", "faster-whisper"),
        *("--backend-policy", "localagreement", "--model_dir", str(model_dir), "--lan", "en"),
        *("--pcm-input", "--warmup-file", "", "-l", "WARNING"),
    ]
    proc = subprocess.Popen(cmd, env=_offline_env(), stdout=log.open("wb"), stderr=subprocess.STDOUT)
    _wait_port(proc, port, "WhisperLiveKit", http=True)
    return proc


async def send_paced(
    send: Callable[[np.ndarray], Awaitable[None]], audio: np.ndarray, log: SessionLog
) -> None:
    """Each 100 ms chunk goes out when a microphone would have finished recording it."""
    step = int(CHUNK_S * RATE)
    start = time.monotonic()
    for i in range(0, audio.shape[0], step):
        await asyncio.sleep(max(0.0, start + (i + step) / RATE - time.monotonic()))
        await send(audio[i : i + step])
        log.sent.append(time.monotonic())


async def play_whisperlive(url: str, rec: Recording) -> SessionLog:
    import websockets

    log = SessionLog("WhisperLive", rec.name, CHUNK_S)
    options = {"uid": str(uuid.uuid4()), "language": "en", "task": "transcribe", "model": "tiny.en"}
    options |= {"use_vad": True, "audio_format": "int16", "send_last_n_segments": 10}
    done: dict[float, str] = {}
    async with websockets.connect(url.replace("http", "ws", 1), max_size=None) as ws:
        await ws.send(json.dumps(options))
        ready = json.loads(await asyncio.wait_for(ws.recv(), 120))
        if ready.get("message") != "SERVER_READY":
            log.error = f"WhisperLive refused the session: {ready}"
            return log

        async def receive() -> None:
            async for message in ws:
                e = json.loads(message)
                tail = ""
                for seg in e.get("segments", []):
                    if seg.get("completed"):
                        done[float(seg["start"])] = seg["text"]
                    else:
                        tail = seg["text"]
                final = " ".join(done[k].strip() for k in sorted(done))
                log.observe(time.monotonic(), final, f"{final} {tail.strip()}".strip())

        receiving = asyncio.ensure_future(receive())
        await send_paced(lambda c: ws.send(c.tobytes()), rec.audio, log)
        await ws.send(b"END_OF_AUDIO")
        # until the last segment is completed (a tail left then is what a WhisperLive client keeps)
        await drain(
            receiving,
            log,
            lambda: not log.observations or log.observations[-1].final == log.observations[-1].shown,
        )
    return log


async def play_whisperlivekit(url: str, rec: Recording) -> SessionLog:
    import websockets

    log = SessionLog("WhisperLiveKit", rec.name, CHUNK_S)
    async with websockets.connect(f"{url.replace('http', 'ws', 1)}/asr", max_size=None) as ws:

        async def receive() -> None:
            async for message in ws:
                e = json.loads(message)
                if e.get("type") == "ready_to_stop":
                    return
                if "lines" not in e:
                    continue
                final = " ".join((line.get("text") or "").strip() for line in e["lines"]).strip()
                final = " ".join(final.split())
                tail = (e.get("buffer_transcription") or "").strip()
                log.observe(time.monotonic(), final, f"{final} {tail}".strip())

        receiving = asyncio.ensure_future(receive())
        await send_paced(lambda c: ws.send(c.astype("<i2").tobytes()), rec.audio, log)
        await ws.send(b"")
        await drain(receiving, log, lambda: False)  # until its ready_to_stop
    return log


async def drain(receiving: asyncio.Future, log: SessionLog, settled: Callable[[], bool]) -> None:
    """Wait for the server's last words: until the client's stream ends, or `settled()` holds and the text
    has not changed for QUIET_S, or DRAIN_S at most; then stop listening."""
    end = time.monotonic() + DRAIN_S
    while not receiving.done() and time.monotonic() < end:
        last = log.observations[-1].t if log.observations else log.sent[-1]
        if settled() and time.monotonic() - max(last, log.sent[-1]) > QUIET_S:
            break
        await asyncio.sleep(0.1)
    receiving.cancel()
    try:
        await receiving
    except (asyncio.CancelledError, Exception) as e:  # noqa: BLE001 - a closed socket ends the session too
        if not isinstance(e, asyncio.CancelledError) and log.error is None and not _closed(e):
            log.error = repr(e)


def _closed(e: BaseException) -> bool:
    import websockets

    return isinstance(e, websockets.ConnectionClosed)
