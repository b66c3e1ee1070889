"""Live sessions against clients that break the rules (issue 23): a client that never reads, deeply nested
JSON, a message too large for a WebSocket frame, misspelt session fields, a turn whose text takes longer
than the idle timeout, and requests that fill the threads other work runs on. Real servers on loopback
(tiny.en), real clients: `websockets`, and for the client that never reads a raw socket speaking the
WebSocket framing itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import service_support as support
import uvicorn
import websockets
from conftest import DATA, tiny_env
from service_support import JFK, Server
from test_realtime import COMPLETED, RATE, append, events_until, no_sessions, of, pcm24, wait_metric, ws_url
from test_service_speakers import CALL, _wav_data_url

from transcription.config import load_settings
from transcription.service import create_app
from transcription.service.realtime.transport import LiveWebSocketProtocol

pytestmark = [pytest.mark.timeout(300), pytest.mark.needs_data]

LJ = DATA / "en_read" / "ljspeech"


@pytest.fixture(scope="module")
def hard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = support.make_server(tmp_path_factory.mktemp("hard"), "hard", ENABLE_EMOTION="false")
    yield from support.serve_module(server)


@pytest.fixture(scope="module")
def quick_idle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Sessions idle after 1 s; a whole minute of audio may be sent at once."""
    server = support.make_server(
        tmp_path_factory.mktemp("quick-idle"),
        "quick-idle",
        ENABLE_EMOTION="false",
        SLOWER_WHISPER_REALTIME_IDLE_TIMEOUT="1",
        SLOWER_WHISPER_REALTIME_MAX_BUFFER_S="90",
    )
    yield from support.serve_module(server)


# ------------------------------------------------------------------ a client that never reads


class RawClient:
    """A WebSocket client on a plain socket with a tiny receive buffer, so that what the server sends piles
    up on the server's side as soon as this client stops reading."""

    def __init__(self, server: Server) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", server.port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                "GET /v1/realtime?intent=transcription HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def send_text(self, text: str) -> None:
        data = text.encode()
        n = len(data)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        self.sock.sendall(header + b"\0\0\0\0" + data)  # a zero mask key leaves the payload as it is

    def read_all(self) -> bytes:
        """Everything the server sent, until it closes the connection."""
        self.sock.settimeout(60)
        chunks = []
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each whole unmasked server frame in `data`."""
    out, i = [], 0
    while i + 2 <= len(data):
        opcode, n = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if n == 126:
            (n,) = struct.unpack("!H", data[i : i + 2])
            i += 2
        elif n == 127:
            (n,) = struct.unpack("!Q", data[i : i + 8])
            i += 8
        if i + n > len(data):
            break
        out.append((opcode, data[i : i + n]))
        i += n
    return out


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class PeakRss:
    """The highest resident memory of a process while the block runs (sampled from /proc)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def __enter__(self) -> PeakRss:
        self.peak = rss_bytes(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.pid))


def test_a_client_that_never_reads_is_closed_and_costs_the_server_little(hard: Server) -> None:
    """240 MB of bad messages, each once answered with an error repeating the whole of it, then a flood of
    valid updates, each answered: the client reads nothing. The server repeats at most a short prefix,
    holds at most a bounded queue of events for the client, and closes the session with a reason (a
    close frame written past what the client left unread); its memory grows by far less than the 240 MB
    it was sent (it used to keep every answer: 1.4 GB for 1,500 messages)."""
    assert hard.proc is not None
    no_sessions(hard)
    client = RawClient(hard)
    # Each under the largest message a session reads (an append of 30 s of audio, 1.9 MB of base64).
    bad = json.dumps({"type": "x" * 600_000, "event_id": "e" * 600_000})
    update = json.dumps({"type": "transcription_session.update", "session": {}})
    baseline = rss_bytes(hard.proc.pid)
    with PeakRss(hard.proc.pid) as rss:
        try:
            for _ in range(200):
                client.send_text(bad)
            for _ in range(30_000):
                client.send_text(update)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the server
        # Still not reading: the server ends the session by itself.
        wait_metric(
            hard,
            "slower_whisper_realtime_sessions_ended_total",
            lambda v: v == 1,
            {"reason": "client_not_reading"},
        )
    grown = rss.peak - baseline
    assert grown < 150 << 20, f"the server grew by {grown >> 20} MiB"
    received = frames(client.read_all())  # what the server had sent, up to its close frame
    texts = [json.loads(p) for op, p in received if op == 0x1]
    errors = [e["error"] for e in texts if e["type"] == "error"]
    assert errors and all(len(e["message"]) < 1000 and len(e["event_id"] or "") <= 64 for e in errors)
    close = [p for op, p in received if op == 0x8]
    assert close, f"no close frame after {len(texts)} events"
    code, reason = struct.unpack("!H", close[0][:2])[0], close[0][2:].decode()
    assert code == 1008 and "unread" in reason, (code, reason)
    no_sessions(hard)


# ------------------------------------------------------------------ bad messages


def test_deeply_nested_json_is_an_error_and_the_session_goes_on(hard: Server) -> None:
    async def check() -> list[dict]:
        async with websockets.connect(ws_url(hard), max_size=None) as ws:
            await ws.recv()
            await ws.send("[" * 100_000 + "]" * 100_000)
            await ws.send(json.dumps({"type": "transcription_session.update", "session": {}}))
            return await events_until(ws, lambda ev: bool(of(ev, "transcription_session.updated")))

    events = asyncio.run(check())
    assert [e["error"]["code"] for e in of(events, "error")] == ["invalid_json"]
    assert "deeply" in of(events, "error")[0]["error"]["message"]


def test_a_message_larger_than_a_frame_may_be_gets_message_too_large(hard: Server) -> None:
    """Past the 16 MiB a WebSocket message may carry the frame cannot be skipped: the documented error
    event comes before the 1009 close frame (the close frame used to come alone)."""

    async def check() -> tuple[list[dict], int | None]:
        async with websockets.connect(ws_url(hard), max_size=None) as ws:
            await ws.recv()
            with contextlib.suppress(websockets.ConnectionClosed):  # closed while it was still sending
                await ws.send("x" * (17 << 20))
            events = await events_until(ws, lambda ev: False, timeout=60)
            return events, ws.close_code

    events, code = asyncio.run(check())
    assert [e["error"]["code"] for e in of(events, "error")] == ["message_too_large"], events
    assert "smaller appends" in of(events, "error")[0]["error"]["message"]
    assert code == 1009


# ------------------------------------------------------------------ session fields


BETA_UNKNOWN = [
    ({"turn_detecton": None}, "session.turn_detecton"),
    ({"input_audio_transcription": {"modle": "whisper-1"}}, "session.input_audio_transcription.modle"),
    ({"turn_detection": {"type": "server_vad", "silence_ms": 300}}, "session.turn_detection.silence_ms"),
    ({"slower_whisper": {"enrich": True, "emotion": True}}, "session.slower_whisper.emotion"),
]
GA_UNKNOWN = [
    ({"type": "transcription", "audo": {}}, "session.audo"),
    ({"type": "transcription", "audio": {"output": {}}}, "session.audio.output"),
    ({"type": "transcription", "audio": {"input": {"formt": {}}}}, "session.audio.input.formt"),
    (
        {"type": "transcription", "audio": {"input": {"transcription": {"lang": "en"}}}},
        "session.audio.input.transcription.lang",
    ),
]
# Every field OpenAI's clients may send in a transcription session (the `openai` package's types).
BETA_FULL = {
    "input_audio_format": "pcm16",
    "input_audio_transcription": {"model": "whisper-1", "language": "en", "prompt": "names"},
    "turn_detection": {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "create_response": False,
        "interrupt_response": False,
    },
    "input_audio_noise_reduction": None,
    "include": [],
    "modalities": ["text"],
    "client_secret": {"expires_at": {"anchor": "created_at", "seconds": 600}},
}
GA_FULL = {
    "type": "transcription",
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "transcription": {"model": "whisper-1", "language": "en", "prompt": "names", "delay": "low"},
            "turn_detection": {
                "type": "server_vad",
                "threshold": 0.5,
                "prefix_padding_ms": 300,
                "silence_duration_ms": 500,
                "create_response": False,
                "interrupt_response": False,
                "idle_timeout_ms": None,
            },
            "noise_reduction": None,
        }
    },
    "include": [],
}


def test_unknown_session_fields_are_refused_by_name(hard: Server) -> None:
    """A misspelt field is refused with an error naming it, as OpenAI refuses it (it used to be accepted
    and ignored); every field OpenAI's clients send is still accepted, in both dialects."""

    async def check() -> list[dict]:
        async with websockets.connect(ws_url(hard), max_size=None) as ws:
            await ws.recv()
            events: list[dict] = []
            dialects = (("transcription_session.update", BETA_UNKNOWN), ("session.update", GA_UNKNOWN))
            for kind, cases in dialects:
                for session, _ in cases:
                    await ws.send(json.dumps({"type": kind, "session": session}))
                    events += await events_until(ws, lambda ev: bool(ev))
            for kind, session in (("transcription_session.update", BETA_FULL), ("session.update", GA_FULL)):
                await ws.send(json.dumps({"type": kind, "session": session}))
                events += await events_until(ws, lambda ev: bool(ev))
            return events

    events = asyncio.run(check())
    refused, accepted = events[:-2], events[-2:]
    expected = [param for _, param in BETA_UNKNOWN + GA_UNKNOWN]
    assert [e["type"] for e in refused] == ["error"] * len(expected), refused
    assert [e["error"]["param"] for e in refused] == expected
    assert all(e["error"]["code"] == "unknown_parameter" for e in refused)
    assert all(e["error"]["param"] in e["error"]["message"] for e in refused)
    assert [e["type"] for e in accepted] == ["transcription_session.updated", "session.updated"], accepted
    assert accepted[0]["session"]["input_audio_transcription"]["prompt"] == "names"


# ------------------------------------------------------------------ the idle clock


def test_the_idle_clock_waits_for_a_committed_turns_text(quick_idle: Server) -> None:
    """A minute of speech committed at once on a server whose sessions idle after 1 s: its decode takes
    longer than that, and the client, waiting for the text, sends nothing. The text comes, and only then
    is the session closed for idling (it used to be closed before the text, with the turn lost)."""
    speech = np.concatenate([pcm24(JFK)] + [pcm24(LJ / f"LJ001-000{i}.wav") for i in range(1, 10)])
    speech = speech[: 60 * RATE]

    async def check() -> list[dict]:
        async with websockets.connect(ws_url(quick_idle), max_size=None) as ws:
            await ws.recv()
            await ws.send(
                json.dumps({"type": "transcription_session.update", "session": {"turn_detection": None}})
            )
            for i in range(0, speech.shape[0], 10 * RATE):
                await ws.send(append(speech[i : i + 10 * RATE]))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            return await events_until(ws, lambda ev: False, timeout=120)  # until the server closes

    events = asyncio.run(check())
    kinds = [e["type"] for e in events]
    assert COMPLETED in kinds, kinds
    assert "ask not what your country" in of(events, COMPLETED)[0]["transcript"].lower()
    assert of(events, "error")[-1]["error"]["code"] == "session_idle_timeout"
    assert kinds.index(COMPLETED) < len(kinds) - 1


# ------------------------------------------------------------------ threads of their own


def test_live_sessions_and_references_never_wait_for_asyncio_default_threads(tmp_path: Path) -> None:
    """The server in this process (uvicorn on loopback, as `serve` runs it), with every thread of asyncio's
    default executor held busy, as uploads decoding speaker references used to hold them: a live session
    still gets its turn's text, its audio processed on the live sessions' own threads, and an upload with a
    reference still gets its answer. Both used to wait for those threads (a live turn's latency went from
    0.03 s to 9.5 s with 12 uploads carrying references)."""
    settings = load_settings({}, None, tiny_env(tmp_path, ENABLE_EMOTION="false", SLOWER_WHISPER_WORKERS="1"))
    app = create_app(settings)
    port = support.free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, ws=LiveWebSocketProtocol)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    release = threading.Event()
    try:
        deadline = time.monotonic() + support.READY_TIMEOUT_S
        while not _ready(port):
            assert time.monotonic() < deadline and thread.is_alive(), "the in-process server did not start"
            time.sleep(0.1)
        loop = app.state.service.loop
        held = threading.Semaphore(0)

        def hold() -> None:
            held.release()
            release.wait()

        def fill() -> None:
            for _ in range(64):  # more than the default executor's threads (at most 32)
                loop.run_in_executor(None, hold)

        loop.call_soon_threadsafe(fill)
        assert held.acquire(timeout=30)  # the default threads are busy from now on
        speech = pcm24(JFK)

        async def talk() -> list[dict]:
            async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime", max_size=None) as ws:
                await ws.recv()
                await ws.send(
                    json.dumps({"type": "transcription_session.update", "session": {"turn_detection": None}})
                )
                await ws.send(append(speech))
                await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
                return await events_until(ws, lambda ev: bool(of(ev, COMPLETED)), timeout=90)

        events = asyncio.run(talk())
        completed = of(events, COMPLETED)
        assert completed, [e["type"] for e in events]
        assert "country" in completed[0]["transcript"].lower()
        names = {t.name for t in threading.enumerate()}
        assert any(name.startswith("live-audio") for name in names), names
        with JFK.open("rb") as fh:
            r = httpx.post(
                f"http://127.0.0.1:{port}/v1/audio/transcriptions",
                files={"file": ("jfk.flac", fh)},
                data={
                    "response_format": "diarized_json",
                    "known_speaker_names[]": "Diane",
                    "known_speaker_references[]": _wav_data_url(CALL, 10.6, 14.6),
                },
                timeout=120,
            )
        assert r.status_code == 200, r.text
    finally:
        release.set()
        server.should_exit = True
        thread.join(60)


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
