"""Live transcription on /v1/realtime (OpenAI's Realtime transcription protocol), against real servers on
loopback ports with tiny.en, real WebSocket clients (`websockets`, and the official `openai` client) and real
speech (jfk, LJSpeech) sent as 24 kHz PCM16.

Two servers: `live` (API keys, defaults) for the protocol, turns and text; `tight` (no key, one session,
2 s idle timeout, 2 s ahead of real time, 10 s sessions, throughput mode packing batches of 2) for the
limits and for live turns going through the shared packer. Also, without a server: the streaming resampler
and VAD against their whole-signal results, LocalAgreement, and the packer's priority.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import service_support as support
import websockets
from conftest import DATA, tiny_env, wer
from service_support import JFK, Server

pytestmark = [pytest.mark.timeout(300), pytest.mark.needs_data]

LJ = DATA / "en_read" / "ljspeech"
KEY = "live-key"
RATE = 24_000
COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"


# ------------------------------------------------------------------ servers and clients


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = support.make_server(
        tmp_path_factory.mktemp("live"), "live", SLOWER_WHISPER_API_KEY=KEY, ENABLE_EMOTION="false"
    )
    yield from support.serve_module(server)


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = support.make_server(
        tmp_path_factory.mktemp("tight"),
        "tight",
        SLOWER_WHISPER_REALTIME_MAX_SESSIONS="1",
        SLOWER_WHISPER_REALTIME_IDLE_TIMEOUT="2",
        SLOWER_WHISPER_REALTIME_MAX_BUFFER_S="2",
        SLOWER_WHISPER_REALTIME_MAX_SESSION_S="10",
        SLOWER_WHISPER_THROUGHPUT="true",
        BATCH_SIZE="2",
    )
    yield from support.serve_module(server)


def pcm24(path: Path, rate: int = RATE) -> np.ndarray:
    """A recording as 24 kHz mono PCM16, as a realtime client sends it (or at another rate)."""
    raw = subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-i",
            str(path),
            "-ac",
            "1",
            "-ar",
            str(rate),
            "-f",
            "s16le",
            "-",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    return np.frombuffer(raw, dtype="<i2")


def silence(s: float) -> np.ndarray:
    return np.zeros(int(s * RATE), dtype="<i2")


def append(pcm: np.ndarray) -> str:
    return json.dumps(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm.tobytes()).decode()}
    )


def ws_url(server: Server, query: str = "?intent=transcription") -> str:
    return f"ws://127.0.0.1:{server.port}/v1/realtime{query}"


def connect(server: Server, key: str | None = KEY, **kwargs: Any):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return websockets.connect(ws_url(server), additional_headers=headers, max_size=None, **kwargs)


async def events_until(ws, done: Callable[[list[dict]], bool], timeout: float = 120) -> list[dict]:
    """Server events until `done(events)` holds (or the socket closes); fails after `timeout`."""
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    while not done(events):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; events so far: {[e['type'] for e in events]}"
        try:
            message = await asyncio.wait_for(ws.recv(), timeout=left)
        except websockets.ConnectionClosed:
            break
        events.append(json.loads(message))
    return events


def of(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]


def offline_text(server: Server, path: Path) -> str:
    with path.open("rb") as fh:
        r = httpx.post(
            f"{server.url}/v1/audio/transcriptions",
            files={"file": (path.name, fh)},
            data={"model": "whisper-1"},
            headers=server.headers(),
            timeout=120,
        )
    assert r.status_code == 200, r.text
    return r.json()["text"]


def wait_metric(
    server: Server, name: str, ok: Callable[[float], bool], labels: dict[str, str] | None = None
) -> None:
    deadline = time.monotonic() + 20
    while not ok(got := server.metric(name, labels) or 0.0):
        assert time.monotonic() < deadline, f"{name} is {got}"
        time.sleep(0.1)


def no_sessions(server: Server) -> None:
    wait_metric(server, "slower_whisper_realtime_sessions", lambda v: v == 0)


# ------------------------------------------------------------------ turns, partials, final text


async def send_at_real_time(ws: Any, speech: np.ndarray, step: int = RATE // 10) -> None:
    """`speech` in appends of `step` samples at real-time pace, as a microphone client sends it."""
    start = time.monotonic()
    for i in range(0, speech.shape[0], step):
        await ws.send(append(speech[i : i + step]))
        await asyncio.sleep(max(0.0, start + (i + step) / RATE - time.monotonic()))


async def _speak_at_real_time(server: Server, speech: np.ndarray) -> list[dict]:
    """One server-VAD session with enrichment: `speech` sent in 100 ms appends at real-time pace, as a
    microphone client sends it; the events until every turn has completed."""
    async with connect(server) as ws:
        created = json.loads(await ws.recv())
        assert created["type"] == "transcription_session.created"
        assert created["session"]["turn_detection"]["type"] == "server_vad"
        await ws.send(
            json.dumps(
                {
                    "type": "transcription_session.update",
                    "session": {
                        "input_audio_format": "pcm16",
                        "input_audio_transcription": {"model": "whisper-1", "language": "en"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                        "slower_whisper": {"enrich": True},
                    },
                }
            )
        )

        speaking = asyncio.ensure_future(send_at_real_time(ws, speech))

        def finished(ev: list[dict]) -> bool:
            counts = {
                len(of(ev, k))
                for k in ("input_audio_buffer.speech_started", "input_audio_buffer.committed", COMPLETED)
            }
            return speaking.done() and bool(of(ev, COMPLETED)) and len(counts) == 1

        events = await events_until(ws, finished, timeout=150)
        await speaking
        return events


def test_server_vad_turns_partials_and_final_text(live: Server) -> None:
    """jfk at real-time pace: server VAD finds its turns, partial text appears while it is still spoken,
    each turn completes with a full decode, and the turns together read as the offline transcript."""
    speech = np.concatenate([pcm24(JFK), silence(1.5)])
    events = asyncio.run(_speak_at_real_time(live, speech))
    assert of(events, "transcription_session.updated")[0]["session"]["slower_whisper"] == {"enrich": True}
    started = of(events, "input_audio_buffer.speech_started")
    completed = of(events, COMPLETED)
    assert 2 <= len(started) <= 8  # jfk's phrases, not one turn and not word by word
    # Per item, OpenAI's order of events; committed items chain through previous_item_id.
    previous = None
    for item in [e["item_id"] for e in started]:
        kinds = [e["type"] for e in events if e.get("item_id") == item and e["type"] != DELTA]
        assert kinds == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            COMPLETED,
        ], kinds
        committed = next(
            e for e in events if e["type"] == "input_audio_buffer.committed" and e["item_id"] == item
        )
        assert committed["previous_item_id"] == previous
        previous = item
    # Partial text came while the person was still speaking, and the deltas add up to the final text
    # unless a shown partial was revised (rare; counted by the benchmark).
    position = {id(e): i for i, e in enumerate(events)}
    early = [
        d
        for d in of(events, DELTA)
        if position[id(d)]
        < position[
            id(
                next(
                    e
                    for e in events
                    if e["type"] == "input_audio_buffer.speech_stopped" and e["item_id"] == d["item_id"]
                )
            )
        ]
    ]
    assert early, "no partial text before any turn ended"
    agreeing = sum(
        "".join(d["delta"] for d in of(events, DELTA) if d["item_id"] == c["item_id"]) == c["transcript"]
        for c in completed
    )
    assert agreeing >= len(completed) - 1
    # Each completed turn carries its prosody (enrichment was asked for), OpenAI's fields unchanged.
    for c in completed:
        assert c["usage"]["type"] == "duration" and c["usage"]["seconds"] > 0
        state = c["slower_whisper"]["audio_state"]
        assert state["status"]["prosody"] == "ok"
        assert 60 < state["prosody"]["pitch"]["mean_hz"] < 400
    live_text = " ".join(c["transcript"] for c in completed)
    assert "country" in live_text.lower()
    assert wer([offline_text(live, JFK)], [live_text]) <= 0.2, live_text
    assert live.metric("slower_whisper_realtime_turns_total") >= len(completed)


def test_manual_commit_turns(live: Server) -> None:
    """turn_detection null: nothing happens until the client commits; each commit is one turn, decoded
    whole; an empty commit and clear behave as OpenAI's."""
    clips = [LJ / "LJ001-0002.wav", LJ / "LJ001-0008.wav"]

    async def session() -> list[dict]:
        async with connect(live) as ws:
            await ws.recv()  # created
            await ws.send(
                json.dumps({"type": "transcription_session.update", "session": {"turn_detection": None}})
            )
            updated = await events_until(ws, lambda ev: bool(of(ev, "transcription_session.updated")))
            assert updated[-1]["session"]["turn_detection"] is None
            await ws.send(json.dumps({"type": "input_audio_buffer.commit", "event_id": "evt_empty"}))
            empty = await events_until(ws, lambda ev: bool(of(ev, "error")))
            assert empty[-1]["error"]["code"] == "input_audio_buffer_commit_empty"
            assert empty[-1]["error"]["event_id"] == "evt_empty"
            await ws.send(append(pcm24(LJ / "LJ001-0001.wav")))  # cleared: never transcribed
            await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
            events = await events_until(ws, lambda ev: bool(of(ev, "input_audio_buffer.cleared")))
            for clip in clips:
                await ws.send(append(pcm24(clip)))
                await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            events += await events_until(ws, lambda ev: len(of(ev, COMPLETED)) == len(clips))
            return events

    events = asyncio.run(session())
    assert not of(events, "input_audio_buffer.speech_started")
    committed = of(events, "input_audio_buffer.committed")
    completed = of(events, COMPLETED)
    assert [c["item_id"] for c in committed] == [c["item_id"] for c in completed]
    assert committed[1]["previous_item_id"] == committed[0]["item_id"]
    for clip, c in zip(clips, completed, strict=True):
        assert wer([offline_text(live, clip)], [c["transcript"]]) <= 0.15, c["transcript"]
        assert "audio_state" not in c["slower_whisper"]  # enrichment is off on this server by default
    assert "printing" not in " ".join(c["transcript"].lower() for c in completed)  # the cleared clip


def test_official_openai_client_ga_session(live: Server) -> None:
    """The official `openai` client's realtime connection (GA `session.update`, key in the header)."""
    client = support.openai_client(live, key=KEY)
    speech = pcm24(JFK)
    with client.realtime.connect(model="whisper-1", extra_query={"intent": "transcription"}) as conn:
        conn.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": "whisper-1", "language": "en"},
                        "turn_detection": None,
                    }
                },
            }
        )
        conn.input_audio_buffer.append(audio=base64.b64encode(speech.tobytes()).decode())
        conn.input_audio_buffer.commit()
        kinds, transcript = [], None
        deadline = time.monotonic() + 120
        while transcript is None and time.monotonic() < deadline:
            event = conn.recv()
            kinds.append(event.type)
            if event.type == COMPLETED:
                transcript = event.transcript
    assert "session.updated" in kinds and "input_audio_buffer.committed" in kinds
    assert transcript is not None and "ask not what your country" in transcript.lower()


# ------------------------------------------------------------------ the handshake


def test_auth_by_header_and_by_browser_subprotocol(live: Server) -> None:
    async def check() -> None:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(ws_url(live), additional_headers=headers):
                    pass
            assert refused.value.response.status_code == 401
            assert json.loads(refused.value.response.body)["error"]["code"] == "invalid_api_key"
        with pytest.raises(websockets.InvalidStatus) as wrong_sub:
            async with websockets.connect(
                ws_url(live), subprotocols=["realtime", "openai-insecure-api-key.nope"]
            ):
                pass
        assert wrong_sub.value.response.status_code == 401
        async with websockets.connect(
            ws_url(live),
            subprotocols=["realtime", f"openai-insecure-api-key.{KEY}", "openai-beta.realtime-v1"],
        ) as ws:
            assert ws.subprotocol == "realtime"
            assert json.loads(await ws.recv())["type"] == "transcription_session.created"
        async with connect(live) as ws:
            assert json.loads(await ws.recv())["type"] == "transcription_session.created"
        for query, code in (
            ("?intent=conversation", "invalid_value"),
            ("?model=gpt-4o-realtime", "model_not_found"),
        ):
            with pytest.raises(websockets.InvalidStatus) as bad:
                async with websockets.connect(
                    ws_url(live, query), additional_headers={"Authorization": f"Bearer {KEY}"}
                ):
                    pass
            assert bad.value.response.status_code == 400
            assert json.loads(bad.value.response.body)["error"]["code"] == code

    asyncio.run(check())
    assert httpx.get(f"{live.url}/v1/realtime", timeout=5).status_code == 426


# ------------------------------------------------------------------ bad input


def _update(session: dict) -> str:
    return json.dumps({"type": "transcription_session.update", "session": session})


def _append_raw(audio: object) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": audio})


# Client messages this server refuses, each with the error code it answers.
MALFORMED: list[tuple[str | bytes, str]] = [
    ("{not json", "invalid_json"),
    ("[1, 2]", "invalid_event"),
    (json.dumps({"event_id": "e1"}), "invalid_event"),
    (json.dumps({"type": "response.create", "event_id": "e2"}), "unknown_event"),
    (_append_raw("***not base64***"), "invalid_audio"),
    (_append_raw(base64.b64encode(b"abc").decode()), "invalid_audio"),
    (_append_raw(42), "invalid_value"),
    (b"\x00\x01binary", "invalid_event"),
    ("x" * (3 << 20), "message_too_large"),
    (_update({"input_audio_format": "g711_ulaw"}), "unsupported_audio_format"),
    (_update({"turn_detection": {"type": "semantic_vad"}}), "unsupported_turn_detection"),
    (_update({"input_audio_transcription": {"model": "gpt-4o-transcribe"}}), "model_not_found"),
    (_update({"input_audio_transcription": {"language": "fr"}}), "unsupported_language"),
    (_update({"input_audio_transcription": {"language": "xx"}}), "invalid_language"),
    (_update({"turn_detection": {"threshold": 3}}), "invalid_value"),
    (_update({"input_audio_noise_reduction": {"type": "near_field"}}), "unsupported_parameter"),
    (json.dumps({"type": "session.update", "session": {"type": "realtime"}}), "unsupported_session_type"),
]


def test_malformed_events_get_errors_and_the_session_goes_on(live: Server) -> None:
    async def check() -> list[dict]:
        async with connect(live) as ws:
            await ws.recv()
            errors = []
            for message, _ in MALFORMED:
                await ws.send(message)
                errors += await events_until(ws, lambda ev: bool(of(ev, "error")), timeout=30)
            # Still alive, and no update was half-applied: a valid update now reports the defaults.
            await ws.send(
                json.dumps({"type": "transcription_session.update", "session": {}, "event_id": "ok"})
            )
            updated = await events_until(ws, lambda ev: bool(of(ev, "transcription_session.updated")))
            session = updated[-1]["session"]
            assert session["input_audio_format"] == "pcm16"
            assert session["turn_detection"]["threshold"] == 0.5
            assert session["input_audio_transcription"]["language"] in (None, "en")
            return errors

    errors = asyncio.run(check())
    assert [e["error"]["code"] for e in errors] == [code for _, code in MALFORMED]
    assert errors[3]["error"]["event_id"] == "e2"
    assert all(e["error"]["message"] and e["error"]["type"] == "invalid_request_error" for e in errors)
    assert live.metric("slower_whisper_realtime_errors_total", {"code": "invalid_json"}) >= 1


# ------------------------------------------------------------------ limits (the tight server)


def test_audio_ahead_of_real_time_is_refused_beyond_the_bound(tight: Server) -> None:
    """2 s ahead allowed: of 5 s sent at once, appends past 2 s are refused with an error; once real time
    has caught up, appends are accepted again. The committed turn holds exactly the accepted audio."""
    speech = pcm24(LJ / "LJ001-0001.wav")
    half = RATE // 2

    no_sessions(tight)

    async def check() -> list[dict]:
        async with websockets.connect(ws_url(tight)) as ws:
            await ws.recv()
            await ws.send(
                json.dumps({"type": "transcription_session.update", "session": {"turn_detection": None}})
            )
            events = await events_until(ws, lambda ev: bool(of(ev, "transcription_session.updated")))
            for i in range(10):
                await ws.send(append(speech[i * half : (i + 1) * half]))
            events += await events_until(ws, lambda ev: len(of(ev, "error")) >= 6, timeout=10)
            await asyncio.sleep(1.0)  # real time catches up by 1 s: one more 0.5 s append fits
            await ws.send(append(speech[10 * half : 11 * half]))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            events += await events_until(ws, lambda ev: bool(of(ev, COMPLETED)))
            return events

    events = asyncio.run(check())
    errors = of(events, "error")
    assert len(errors) == 6 and {e["error"]["code"] for e in errors} == {"buffer_full"}
    assert "faster than real time" in errors[0]["error"]["message"]
    completed = of(events, COMPLETED)[0]
    assert completed["usage"]["seconds"] == pytest.approx(2.5, abs=0.01)
    assert "printing" in completed["transcript"].lower()
    # In throughput mode the turn went through the shared packer's batches.
    assert (tight.metric("slower_whisper_batch_chunks_count") or 0) >= 1


def test_idle_session_is_closed_with_a_reason(tight: Server) -> None:
    no_sessions(tight)

    async def check() -> tuple[list[dict], int | None, str | None]:
        async with websockets.connect(ws_url(tight)) as ws:
            events = await events_until(ws, lambda ev: False, timeout=15)  # until the server closes
            return events, ws.close_code, ws.close_reason

    events, code, reason = asyncio.run(check())
    assert of(events, "error")[-1]["error"]["code"] == "session_idle_timeout"
    assert code == 1000 and reason and "no message for 2 s" in reason
    wait_metric(
        tight,
        "slower_whisper_realtime_sessions_ended_total",
        lambda v: v >= 1,
        {"reason": "session_idle_timeout"},
    )


def test_session_limit_and_duration(tight: Server) -> None:
    """One session at a time on this server: a second is refused (429) while the first lasts; the first
    ends at the 10 s limit however busy it is, and its place is free again."""

    no_sessions(tight)

    async def check() -> tuple[list[dict], int | None]:
        async with websockets.connect(ws_url(tight)) as first:
            await first.recv()
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(ws_url(tight)):
                    pass
            assert refused.value.response.status_code == 429
            assert refused.value.response.headers["Retry-After"]
            assert json.loads(refused.value.response.body)["error"]["code"] == "too_many_sessions"
            events: list[dict] = []
            while first.close_code is None:  # silence every 0.5 s: never idle, only long
                try:
                    await first.send(append(silence(0.5)))
                except websockets.ConnectionClosed:
                    break
                try:
                    events.append(json.loads(await asyncio.wait_for(first.recv(), timeout=0.5)))
                except TimeoutError:
                    pass
                except websockets.ConnectionClosed:
                    break
            return events, first.close_code

    events, code = asyncio.run(check())
    assert of(events, "error")[-1]["error"]["code"] == "session_expired"
    assert code == 1000
    no_sessions(tight)

    async def again() -> str:
        async with websockets.connect(ws_url(tight)) as ws:
            return json.loads(await ws.recv())["type"]

    assert asyncio.run(again()) == "transcription_session.created"


def test_client_that_disconnects_frees_everything(live: Server) -> None:
    """Two sessions mid-speech (decodes running) drop their connections: the gauge goes back to 0 and
    new sessions open."""
    speech = pcm24(JFK)

    async def drop() -> None:
        sockets = [await connect(live) for _ in range(2)]
        for ws in sockets:
            await ws.recv()
            await ws.send(append(speech[: 6 * RATE]))
        await asyncio.sleep(1.0)  # turns started, decodes under way
        for ws in sockets:
            ws.transport.abort()  # no close handshake: the client just vanishes

    asyncio.run(drop())
    no_sessions(live)
    assert live.metric("slower_whisper_realtime_sessions_ended_total", {"reason": "disconnected"}) >= 2

    async def again() -> str:
        async with connect(live) as ws:
            return json.loads(await ws.recv())["type"]

    assert asyncio.run(again()) == "transcription_session.created"


# ------------------------------------------------------------------ a server that stops


def test_sigterm_finishes_the_committed_turn_and_closes_every_session(tmp_path: Path) -> None:
    """SIGTERM while one session's committed turn is being decoded and another sits idle: the turn still
    completes, then each session gets an `error` event saying why and a 1012 close frame, the decode
    threads are joined and the server exits 0 (it used to abort with -6, a thread torn down inside the
    model)."""
    server = support.make_server(tmp_path, "stopping", ENABLE_EMOTION="false").start()
    try:
        speech = pcm24(JFK)

        async def scenario() -> tuple[list[dict], int | None, list[dict], int | None]:
            talking = await connect(server, key=None)
            idle = await connect(server, key=None)
            await events_until(talking, lambda e: len(e) == 1)
            await events_until(idle, lambda e: len(e) == 1)
            await talking.send(
                json.dumps({"type": "transcription_session.update", "session": {"turn_detection": None}})
            )
            await talking.send(append(speech))
            await talking.send(json.dumps({"type": "input_audio_buffer.commit"}))
            before = await events_until(talking, lambda e: bool(of(e, "input_audio_buffer.committed")))
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)  # the turn's decode is queued or running now
            after = await events_until(talking, lambda e: False)
            rest = await events_until(idle, lambda e: False)
            return before + after, talking.close_code, rest, idle.close_code

        talked, talked_code, idled, idled_code = asyncio.run(scenario())
        assert server.proc.wait(60) == 0, server.log()
    finally:
        support.kill_on_exit(server)
    completed = of(talked, COMPLETED)
    assert len(completed) == 1 and "country" in completed[0]["transcript"].lower()
    for events, code in ((talked, talked_code), (idled, idled_code)):
        assert events[-1]["type"] == "error", [e["type"] for e in events]
        assert events[-1]["error"]["code"] == "server_shutting_down"
        assert code == 1012
    assert [e["type"] for e in talked].index(COMPLETED) < len(talked) - 1  # the text came before the close
    assert "terminate called" not in server.log()


# ------------------------------------------------------------------ the parts, without a server


def test_streaming_resampler_equals_whole_signal_resampling() -> None:
    from scipy.signal import resample_poly

    from transcription.service.realtime.audio import Resampler

    pcm = pcm24(JFK)
    whole = resample_poly(pcm.astype(np.float32) / 32768.0, 2, 3)
    resampler, out, i = Resampler(), [], 0
    rng = np.random.default_rng(0)
    while i < pcm.shape[0]:
        n = int(rng.integers(1, 5000))
        out.append(resampler.push(pcm[i : i + n]))
        i += n
    streamed = np.concatenate(out)
    # A live stream has no end: the last input samples wait for context that would follow them.
    held = whole.shape[0] - streamed.shape[0]
    assert 0 <= held <= 20  # at most _PAD (30) input samples, 20 at 16 kHz
    assert np.abs(streamed - whole[: streamed.shape[0]]).max() < 1e-6


def test_streaming_vad_equals_silero_on_the_whole_signal() -> None:
    from faster_whisper.vad import get_vad_model

    from transcription.service.realtime.vad import FRAME, StreamingVad

    samples = pcm24(JFK, 16_000).astype(np.float32) / 32768.0
    n = samples.shape[0] // FRAME * FRAME
    whole = get_vad_model()(samples[:n]).reshape(-1)
    vad, probs, i = StreamingVad(), [], 0
    sizes = iter([100, 512, 3000, 7, 20000] * 1000)
    while i < n:
        size = min(next(sizes), n - i)
        probs.append(vad.push(samples[i : i + size]))
        i += size
    assert np.abs(np.concatenate(probs) - whole).max() < 1e-5


def test_a_soft_first_word_belongs_to_its_turn() -> None:
    """In jfk's "ask not", "ask" scores below a 0.65 threshold and "not" above it: the turn that "not"
    triggers starts at "ask" (speech above threshold - 0.15, no full silence in between), so the turn's
    text has it; starting only `prefix_padding_ms` before "not" lost it."""
    from transcription.asr import AsrOptions, Engine
    from transcription.config import load_settings
    from transcription.service.realtime.protocol import TurnDetection
    from transcription.service.realtime.turns import LiveAudio, Started, Stopped

    samples = pcm24(JFK, 16_000).astype(np.float32) / 32768.0
    samples = np.concatenate([samples, np.zeros(16_000, np.float32)])
    live = LiveAudio(TurnDetection(0.65, 300, 500))
    actions = [a for i in range(0, samples.shape[0], 1600) for a in live.feed(samples[i : i + 1600])]
    starts = [a.start / 16_000 for a in actions if isinstance(a, Started)]
    turns = [a.audio.samples for a in actions if isinstance(a, Stopped)]
    assert len(starts) == len(turns) >= 2, starts
    # "ask" is spoken from 3.26 s; "not" from 3.97 s, the first frame at 0.65 being at 4.03 s.
    assert any(2.9 < s <= 3.26 for s in starts), starts
    settings = load_settings({"model": "tiny.en", "device": "cpu"}, environ=tiny_env())
    engine = Engine.load(settings)
    texts = [" ".join(seg.text for seg in engine.transcribe(t, AsrOptions()).segments).lower() for t in turns]
    assert any("ask not" in t for t in texts), texts


def test_item_text_is_stable_words_then_a_tail_that_keeps_moving() -> None:
    """Two decodes in a row agreeing make words stable (less the newest decode's last two); a decode
    that hears a stable word differently still moves the tail on (it used to freeze the text)."""
    from transcription.service.realtime.agreement import ItemText

    item = ItemText()
    assert item.update("And so") == [] and item.tail == ["And", "so"]
    assert item.update("And so my fellow") == ["And", "so"]  # agreed, and not the newest decode's last two
    assert item.tail == ["my", "fellow"]
    assert item.update("and so, my fellow Americans") == ["my"]
    # "my" is now heard as "am I": the stable words stay, the tail is what follows them.
    assert item.update("And so am I fellow Americans ask not") == []
    assert item.stable == ["And", "so", "my"] and item.tail == ["I", "fellow", "Americans", "ask", "not"]
    assert item.update("And so my fellow Americans ask not what") == []
    assert item.tail == ["fellow", "Americans", "ask", "not", "what"]
    assert item.update("And so my fellow Americans, ask not what your country") == [
        "fellow",
        "Americans,",
        "ask",
        "not",
        "what",
    ]
    assert item.shown == "And so my fellow Americans, ask not what your country"
    assert item.remainder("And so my fellow Americans, ask not what your country.") == ["your", "country."]
    assert item.remainder("And so am I fellow Americans") is None  # a stable word was revised


def test_packer_puts_live_turns_ahead_of_queued_files() -> None:
    from transcription.asr import AsrOptions, Engine
    from transcription.config import load_settings
    from transcription.packing import Packer

    engine = Engine.load(load_settings({}, None, tiny_env()))
    finished: list = []
    packer = Packer(engine, 2, finished.append, lambda f, e: None)
    options = AsrOptions(language="en")
    clip = pcm24(LJ / "LJ001-0002.wav", 16_000).astype(np.float32) / 32768.0
    files = []
    for _ in range(3):  # a batch job's files, queued first
        f = packer.open_samples(clip, options)
        prep = packer.prepare(f, 0)
        packer.accept(prep)
        files.append(f)
    live_turn = packer.open_samples(clip, options, priority=True)
    packer.accept(packer.prepare(live_turn, 0))
    key, items = packer.take()
    assert items[0].file is live_turn  # first, though queued last
    assert len(items) == 2 and items[1].file is files[0]  # the batch topped up with a file's chunk
    packer.run(key, items)
    assert live_turn in finished and not packer.urgent
    while packer.run_next():
        pass
    assert len(finished) == 4
    assert "modern" in " ".join(s.text for s in packer.conclude(live_turn).segments).lower()
