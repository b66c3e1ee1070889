"""Upload limit (2 MiB here: jfk.flac is 1.1 MB), queue bound and client disconnects on a deliberately
small server."""

from __future__ import annotations

import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from service_support import JFK, Server, make_server, openai_client, serve_module

pytestmark = [pytest.mark.timeout(300), pytest.mark.needs_data]


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory):
    server = make_server(
        tmp_path_factory.mktemp("service-small"),
        "root",
        SLOWER_WHISPER_MAX_UPLOAD_MB="2",
        SLOWER_WHISPER_QUEUE_SIZE="1",
        SLOWER_WHISPER_WORKERS="1",
    )
    yield from serve_module(server)


def test_upload_over_limit_is_413(small_server: Server, tmp_path: Path) -> None:
    big = tmp_path / "big.wav"
    big.write_bytes(os.urandom(3 * 1024 * 1024))
    with big.open("rb") as fh, pytest.raises(openai.APIStatusError) as err:
        openai_client(small_server).audio.transcriptions.create(model="whisper-1", file=fh)
    assert err.value.status_code == 413
    assert err.value.response.json()["error"]["code"] == "file_too_large"

    # Without a Content-Length (chunked upload) the limit is enforced while streaming.
    def chunks():
        yield (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n"
        )
        for _ in range(40):
            yield b"\0" * (128 * 1024)
        yield b"\r\n--b--\r\n"

    r = httpx.post(
        f"{small_server.url}/v1/audio/transcriptions",
        content=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=b"},
        timeout=30,
    )
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"
    assert small_server.uploads_left() == []
    # Under the limit still works on the same server.
    with JFK.open("rb") as fh:
        assert (
            "country"
            in openai_client(small_server)
            .audio.transcriptions.create(model="whisper-1", file=fh)
            .text.lower()
        )


def test_queue_full_answers_429_with_retry_after(small_server: Server) -> None:
    audio = JFK.read_bytes()

    def one(_: int) -> httpx.Response:
        return httpx.post(
            f"{small_server.url}/v1/audio/transcriptions",
            files={"file": ("jfk.flac", audio)},
            data={"response_format": "text"},
            timeout=120,
        )

    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(one, range(10)))
    codes = sorted(r.status_code for r in responses)
    busy = [r for r in responses if r.status_code == 429]
    done = [r for r in responses if r.status_code == 200]
    assert busy and done and len(busy) + len(done) == 10, codes
    for r in busy:
        assert int(r.headers["Retry-After"]) >= 1 and r.json()["error"]["code"] == "queue_full"
    assert all("country" in r.text.lower() for r in done)
    assert small_server.metric("slower_whisper_queue_depth") == 0
    assert small_server.uploads_left() == []


def _raw_request(server: Server, payload: bytes) -> socket.socket:
    """Send a complete transcription request on a raw socket and leave it open, unread."""
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="jfk.flac"\r\n\r\n'
        + payload
        + b"\r\n--b--\r\n"
    )
    head = (
        f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(head + body)
    return sock


def test_client_disconnect_frees_its_place(small_server: Server) -> None:
    audio = JFK.read_bytes()
    running = _raw_request(small_server, audio)
    deadline = time.monotonic() + 10
    while small_server.metric("slower_whisper_inference_running") != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    waiting = _raw_request(small_server, audio)
    deadline = time.monotonic() + 10
    while small_server.metric("slower_whisper_queue_depth") != 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert small_server.metric("slower_whisper_queue_depth") == 1
    waiting.close()  # the waiting client gives up: its place and its upload go at once
    deadline = time.monotonic() + 5
    while small_server.metric("slower_whisper_queue_depth") != 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert small_server.metric("slower_whisper_queue_depth") == 0
    running.close()  # the running one finishes in its thread, then its files go too
    deadline = time.monotonic() + 30
    while (
        small_server.uploads_left() or small_server.metric("slower_whisper_inference_running")
    ) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert small_server.uploads_left() == []
    assert small_server.metric("slower_whisper_http_requests_total", {"status": "499"}) == 2
