"""`stream=true` on POST /v1/audio/transcriptions: Server-Sent Events from a real server, read by the official
openai client and by raw HTTP.

The long input is real speech (LJSpeech clips joined, about 58 s, three Whisper windows), so a first delta
comes while the rest is still being decoded; the tests check that order with the server's own counters,
never with timers.
"""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import service_support as support
from conftest import DATA, ffmpeg
from service_support import JFK, Server, make_server, openai_client, serve_module, sse_events, stream_all

pytestmark = [pytest.mark.timeout(300), pytest.mark.needs_data]
main_server = support.main_server  # the shared server fixture

LJSPEECH = sorted((DATA / "en_read" / "ljspeech").glob("LJ*.wav"))[:9]
OK = {"outcome": "ok"}


@pytest.fixture(scope="module")
def long_speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 58 s of real read speech in one FLAC file."""
    folder = tmp_path_factory.mktemp("stream-audio")
    listing = folder / "clips.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in LJSPEECH))
    out = folder / "ljspeech_58s.flac"
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-ar", "16000", "-ac", "1", str(out))
    return out


def _wait_for(check, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _post(server: Server, audio: bytes, key: bool = True, **data: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/audio/transcriptions",
        headers=server.headers() if key else {},
        files={"file": ("a.flac", audio)},
        data=data,
        timeout=60,
    )


def test_openai_client_streams_deltas_then_done_equal_to_json(main_server: Server, long_speech: Path) -> None:
    client = openai_client(main_server)
    finished_before = main_server.metric("slower_whisper_transcriptions_total", OK) or 0.0
    deltas: list[str] = []
    finished_at_first_delta = None
    done = None
    with long_speech.open("rb") as fh:
        stream = client.audio.transcriptions.create(model="whisper-1", file=fh, stream=True)
        for event in stream:
            if event.type == "transcript.text.delta":
                if not deltas:
                    finished_at_first_delta = main_server.metric("slower_whisper_transcriptions_total", OK)
                deltas.append(event.delta)
            else:
                assert event.type == "transcript.text.done" and done is None
                done = event
    assert done is not None and len(deltas) > 3
    # The first delta came while the file was still being transcribed, not after it.
    assert (finished_at_first_delta or 0.0) == finished_before
    assert "".join(deltas) == done.text
    assert done.usage is not None and done.usage.type == "duration"
    assert done.usage.seconds == pytest.approx(58.0, abs=2.0)
    assert "printing" in done.text.lower()
    with long_speech.open("rb") as fh:
        plain = client.audio.transcriptions.create(model="whisper-1", file=fh)
    assert done.text == plain.text
    assert main_server.metric("slower_whisper_transcriptions_total", OK) == finished_before + 2


def test_text_format_streams_too_and_matches(main_server: Server) -> None:
    client = openai_client(main_server)
    with JFK.open("rb") as fh:
        events = list(
            client.audio.transcriptions.create(
                model="whisper-1", file=fh, response_format="text", stream=True, language="en"
            )
        )
    with JFK.open("rb") as fh:
        text = client.audio.transcriptions.create(
            model="whisper-1", file=fh, response_format="text", language="en"
        )
    assert [e.type for e in events][-1] == "transcript.text.done"
    assert all(e.type == "transcript.text.delta" for e in events[:-1]) and len(events) > 1
    assert events[-1].text == text.strip() and "country" in text.lower()


def test_raw_sse_shape(main_server: Server) -> None:
    with (
        JFK.open("rb") as fh,
        httpx.stream(
            "POST",
            f"{main_server.url}/v1/audio/transcriptions",
            headers=main_server.headers(),
            files={"file": ("jfk.flac", fh)},
            data={"model": "whisper-1", "stream": "true"},
            timeout=120,
        ) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        body = r.read().decode("utf-8")
    blocks = [b for b in body.split("\n\n") if b.strip()]
    payloads = [json.loads(b.removeprefix("data: ")) for b in blocks]
    assert all(b.startswith("data: {") and "\n" not in b for b in blocks)  # one data line per event
    assert payloads[-1]["type"] == "transcript.text.done"
    assert set(payloads[-1]) == {"type", "text", "usage"}
    assert all(set(p) == {"type", "delta"} for p in payloads[:-1])
    assert "".join(p["delta"] for p in payloads[:-1]) == payloads[-1]["text"]


@pytest.mark.parametrize("fmt", ["srt", "vtt", "verbose_json", "slower_whisper_json"])
def test_stream_with_a_whole_file_format_is_400(main_server: Server, fmt: str) -> None:
    r = _post(main_server, JFK.read_bytes(), stream="true", response_format=fmt)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "unsupported_value" and error["param"] == "stream" and fmt in error["message"]
    assert error["type"] == "invalid_request_error"


def test_bad_stream_value_bad_audio_and_no_key_are_plain_errors(main_server: Server) -> None:
    r = _post(main_server, JFK.read_bytes(), stream="maybe")
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream"
    # Undecodable audio is found before the stream starts: an ordinary 400, not an event.
    r = _post(main_server, b"not audio at all", stream="true")
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["code"] == "invalid_audio"
    r = _post(main_server, JFK.read_bytes(), key=False, stream="true")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    # stream=false is the ordinary response.
    r = _post(main_server, JFK.read_bytes(), stream="false")
    assert r.status_code == 200 and "country" in r.json()["text"].lower()
    assert main_server.uploads_left() == []


def test_failure_after_the_stream_started_is_an_error_event(
    main_server: Server, long_speech: Path, tmp_path: Path
) -> None:
    """A file over one engine window (600 s): real speech, then silence. Once the first delta is in, the
    stored audio is removed under the server (a volume gone bad), so reading its second window fails: the
    client gets an `error` event, which the openai client raises, and the stream ends."""
    padded = tmp_path / "speech_then_silence.flac"
    ffmpeg("-i", str(long_speech), "-af", "apad=whole_dur=620", "-ar", "16000", "-ac", "1", str(padded))
    client = openai_client(main_server)
    deltas: list[str] = []
    with padded.open("rb") as fh:
        stream = client.audio.transcriptions.create(model="whisper-1", file=fh, stream=True)
        with pytest.raises(openai.APIError) as err:
            for event in stream:
                assert event.type == "transcript.text.delta"
                if not deltas:
                    stored = list((main_server.root / ".slower-whisper" / "uploads").rglob("audio.wav"))
                    assert len(stored) == 1
                    stored[0].unlink()
                deltas.append(event.delta)
    assert deltas
    assert err.value.code == "transcription_failed" and "audio.wav" in err.value.message
    assert err.value.type == "server_error"
    _wait_for(lambda: main_server.uploads_left() == [], "the upload folder to go")


# ------------------------------------------------------------------ admission and disconnects


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory: pytest.TempPathFactory):
    """One worker and one place in line: two requests fill it."""
    server = make_server(
        tmp_path_factory.mktemp("service-stream-small"),
        "root",
        SLOWER_WHISPER_WORKERS="1",
        SLOWER_WHISPER_QUEUE_SIZE="1",
        ENABLE_EMOTION="false",
    )
    yield from serve_module(server)


def test_streams_are_admitted_like_any_request_and_a_client_that_leaves_frees_the_worker(
    one_worker: Server, long_speech: Path
) -> None:
    url = f"{one_worker.url}/v1/audio/transcriptions"
    with ThreadPoolExecutor(1) as pool:
        with (
            long_speech.open("rb") as fh,
            httpx.stream(
                "POST", url, files={"file": (long_speech.name, fh)}, data={"stream": "true"}, timeout=120
            ) as first,
        ):
            assert first.status_code == 200
            assert next(sse_events(first))["type"] == "transcript.text.delta"
            # A second stream waits in line behind the first; a third finds no place.
            second = pool.submit(stream_all, one_worker, JFK)
            _wait_for(lambda: one_worker.metric("slower_whisper_queue_depth") == 1, "the second in line")
            r = httpx.post(url, files={"file": ("jfk.flac", JFK.read_bytes())}, data={"stream": "true"})
            assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
            assert r.json()["error"]["code"] == "queue_full"
            # Leaving this block closes the first stream half-way through its file.
        events = second.result(timeout=120)
    assert events[-1]["type"] == "transcript.text.done" and "country" in events[-1]["text"].lower()
    # The first transcription stopped at its next segment rather than decoding the rest for nobody.
    _wait_for(
        lambda: one_worker.metric("slower_whisper_transcriptions_total", {"outcome": "abandoned"}) == 1,
        "the abandoned transcription to be counted",
    )
    assert one_worker.metric("slower_whisper_transcriptions_total", OK) == 1
    _wait_for(lambda: one_worker.metric("slower_whisper_inference_running") == 0, "the worker to be free")
    assert one_worker.uploads_left() == []


def _raw_stream_request(server: Server, audio: bytes) -> socket.socket:
    """A complete stream=true request on a raw socket, left open and unread."""
    body = (
        b'--b\r\nContent-Disposition: form-data; name="stream"\r\n\r\ntrue\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="jfk.flac"\r\n\r\n'
        + audio
        + b"\r\n--b--\r\n"
    )
    head = (
        f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(head + body)
    return sock


def test_a_stream_leaving_while_in_line_gives_its_place_back(one_worker: Server, long_speech: Path) -> None:
    abandoned = one_worker.metric("slower_whisper_transcriptions_total", {"outcome": "abandoned"}) or 0.0
    url = f"{one_worker.url}/v1/audio/transcriptions"
    with (
        long_speech.open("rb") as fh,
        httpx.stream(
            "POST", url, files={"file": (long_speech.name, fh)}, data={"stream": "true"}, timeout=120
        ) as running,
    ):
        assert next(sse_events(running))["type"] == "transcript.text.delta"
        waiting = _raw_stream_request(one_worker, JFK.read_bytes())
        _wait_for(lambda: one_worker.metric("slower_whisper_queue_depth") == 1, "the second in line")
        waiting.close()  # gives up before its turn: no worker ever runs it
        _wait_for(lambda: one_worker.metric("slower_whisper_queue_depth") == 0, "its place to be free")
        # Its upload went with it: only the running request's folder is left.
        _wait_for(lambda: len({p.parent for p in one_worker.uploads_left()}) == 1, "its upload to go")
    _wait_for(
        lambda: (
            one_worker.metric("slower_whisper_transcriptions_total", {"outcome": "abandoned"})
            == abandoned + 1
        ),
        "the running one to stop",
    )
    _wait_for(lambda: one_worker.uploads_left() == [], "the uploads to go")


# ------------------------------------------------------------------ throughput mode


@pytest.fixture(scope="module")
def packed_server(tmp_path_factory: pytest.TempPathFactory):
    """Throughput mode on CPU: requests' chunks are packed into shared batches (SharedPacker)."""
    server = make_server(
        tmp_path_factory.mktemp("service-stream-packed"),
        "root",
        SLOWER_WHISPER_THROUGHPUT="true",
        BATCH_SIZE="4",
        ENABLE_EMOTION="false",
    )
    yield from serve_module(server)


def test_stream_in_throughput_mode_ends_with_the_packed_text(
    packed_server: Server, long_speech: Path
) -> None:
    """The packer hands a file's segments back together once its last chunk is decoded, so the deltas come
    then; they still join to the text of the same request without stream."""
    events = stream_all(packed_server, long_speech)
    with long_speech.open("rb") as fh:
        plain = openai_client(packed_server).audio.transcriptions.create(model="whisper-1", file=fh)
    assert events[-1]["type"] == "transcript.text.done" and events[-1]["text"] == plain.text
    assert len(events) > 2 and "".join(e["delta"] for e in events[:-1]) == plain.text
    assert (packed_server.metric("slower_whisper_batch_chunks_count") or 0) > 0  # it really packed
