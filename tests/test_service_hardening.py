"""What a careless or hostile client finds on the service: slow uploads, the API description, the page's
headers, languages an English-only model cannot transcribe, speaker references too many or too long, uploads
longer than a WAV can hold."""

from __future__ import annotations

import base64
import re
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from service_support import API_KEYS, JFK, Server, make_server, post_audio, serve_module, wait_job

pytestmark = [pytest.mark.timeout(300), pytest.mark.needs_data]

IDLE_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = make_server(
        tmp_path_factory.mktemp("service-hardening"),
        "root",
        SLOWER_WHISPER_QUEUE_SIZE="2",
        SLOWER_WHISPER_WORKERS="1",
        SLOWER_WHISPER_UPLOAD_IDLE_TIMEOUT=str(IDLE_TIMEOUT_S),
        SLOWER_WHISPER_API_KEY=",".join(API_KEYS),
    )
    yield from serve_module(srv)


def _slow_upload(server: Server, path: str = "/v1/audio/transcriptions") -> socket.socket:
    """Headers and the start of a body that never comes: a client that stalls (or means to)."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000\r\n"
        f"Authorization: Bearer {API_KEYS[0]}\r\nContent-Type: multipart/form-data; boundary=b\r\n\r\n"
        '--b\r\nContent-Disposition: form-data; name="file"; filename="slow.wav"\r\n\r\n'
    ).encode()
    sock.sendall(head + b"RIFF")
    return sock


def test_clients_that_do_not_send_hold_no_queue_places_and_time_out(server: Server) -> None:
    """34 stalled uploads used to take every place (429 for everyone); places are taken once a body is in."""
    stalled = [_slow_upload(server, "/v1/audio/transcriptions") for _ in range(17)]
    stalled += [_slow_upload(server, "/v1/jobs") for _ in range(17)]
    try:
        time.sleep(0.5)
        with JFK.open("rb") as fh:
            r = httpx.post(
                f"{server.url}/v1/audio/transcriptions",
                files={"file": ("jfk.flac", fh)},
                data={"response_format": "text"},
                headers=server.headers(),
                timeout=120,
            )
        assert r.status_code == 200, r.text
        assert "country" in r.text.lower()
        # Idle uploads are abandoned with 408 and leave nothing behind.
        for sock in stalled[:3]:
            sock.settimeout(IDLE_TIMEOUT_S + 20)
            answer = ""
            while "upload_timeout" not in answer and (chunk := sock.recv(4096)):
                answer += chunk.decode("latin-1")
            assert answer.startswith("HTTP/1.1 408"), answer[:200]
            assert "upload_timeout" in answer
    finally:
        for sock in stalled:
            sock.close()
    deadline = time.monotonic() + 2 * IDLE_TIMEOUT_S + 10
    while server.uploads_left() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.uploads_left() == []
    assert server.metric("slower_whisper_queue_depth") == 0


def test_no_interactive_docs_and_the_api_description_only_with_a_key(server: Server) -> None:
    assert httpx.get(f"{server.url}/docs").status_code == 404
    assert httpx.get(f"{server.url}/redoc").status_code == 404
    assert httpx.get(f"{server.url}/openapi.json").status_code == 401
    spec = httpx.get(f"{server.url}/openapi.json", headers=server.headers())
    assert spec.status_code == 200
    assert "/v1/audio/transcriptions" in spec.json()["paths"]


def test_the_page_loads_nothing_from_elsewhere_and_carries_security_headers(server: Server) -> None:
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    for asset in ["/", *re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)]:
        text = httpx.get(f"{server.url}{asset}").text
        assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", text), asset
        assert "style=" not in text or asset.endswith(".css"), f"inline style in {asset} breaks the policy"
    api = httpx.get(f"{server.url}/v1/models", headers=server.headers())
    assert api.headers["x-content-type-options"] == "nosniff"


def test_an_english_only_model_refuses_another_language_per_request(server: Server) -> None:
    with JFK.open("rb") as fh:
        r = httpx.post(
            f"{server.url}/v1/audio/transcriptions",
            files={"file": ("jfk.flac", fh)},
            data={"language": "ru"},
            headers=server.headers(),
            timeout=120,
        )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "language"
    assert "English-only" in r.json()["error"]["message"]


# ------------------------------------------------------------------ speaker references


def _reference_part(name: str, value: str) -> bytes:
    return f'--b\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()


def test_reference_fields_past_the_limit_are_refused_as_they_arrive(server: Server) -> None:
    """A fifth reference field is refused when it begins, while the client is still sending: no more than
    four are ever held (62 fields of 4 MiB used to be read whole before the count was checked). The body
    stops after the fifth field's headers and never ends; the answer comes all the same (it used to be
    the 408 of an upload that stalls)."""
    clip = "data:audio/wav;base64," + "A" * 1000
    body = _reference_part("diarize", "true")
    for i in range(4):
        body += _reference_part("known_speaker_names[]", f"Speaker {i}")
        body += _reference_part("known_speaker_references[]", clip)
    body += b'--b\r\nContent-Disposition: form-data; name="known_speaker_references[]"\r\n\r\ndata:'
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            (
                "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 300000000\r\n"
                f"Authorization: Bearer {API_KEYS[0]}\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\n\r\n"
            ).encode()
            + body
        )
        sock.settimeout(IDLE_TIMEOUT_S + 30)
        answer = ""
        while "}}" not in answer and (chunk := sock.recv(4096)):
            answer += chunk.decode("latin-1")
    assert answer.startswith("HTTP/1.1 400"), answer[:300]
    assert "at most 4 known speakers" in answer and "known_speaker_references" in answer


@pytest.fixture(scope="module")
def long_silence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """39 hours of silence as FLAC in 260 KB (long blocks of a constant): a tiny upload, a huge decode."""
    path = tmp_path_factory.mktemp("silence") / "39h.flac"
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=4000:cl=mono",
            "-t", str(39 * 3600), "-c:a", "flac", "-sample_fmt", "s16", "-frame_size", "65535", str(path),
        ],
        check=True,
        timeout=120,
    )  # fmt: skip
    return path


def test_a_long_reference_is_refused_after_ten_seconds_of_decoding(
    server: Server, long_silence: Path
) -> None:
    """A reference clip is decoded only as far as its 10 s limit, in the request's worker: 39 hours of
    silence used to be decoded whole (4.5 GB written to the upload folder) and ended in a 500 (`wave`
    cannot write a file that long)."""
    clip = "data:audio/flac;base64," + base64.b64encode(long_silence.read_bytes()).decode()
    with JFK.open("rb") as fh:
        r = httpx.post(
            f"{server.url}/v1/audio/transcriptions",
            files={"file": ("jfk.flac", fh)},
            data={
                "response_format": "diarized_json",
                "known_speaker_names[]": "Silent",
                "known_speaker_references[]": clip,
            },
            headers=server.headers(),
            timeout=120,
        )
    assert r.status_code == 400, r.text[:500]
    error = r.json()["error"]
    assert error["code"] == "invalid_speaker_reference" and "more than 10 s" in error["message"], error
    assert "Silent" in error["message"]
    assert server.uploads_left() == []


def test_an_upload_longer_than_a_wav_can_hold_is_a_413_that_says_to_split_it(
    server: Server, long_silence: Path
) -> None:
    """39 hours decode to more than the 4 GiB a WAV can hold: this used to be decoded for minutes and end in
    a 500 (`struct.error` from `wave`). The file states its length, so nothing is decoded or written."""
    for fields in ({}, {"stream": "true"}):
        r = post_audio(server, long_silence, fields)
        assert r.status_code == 413, r.text[:500]
        error = r.json()["error"]
        assert error["code"] == "audio_too_long" and error["param"] == "file", error
        assert "39.00 h" in error["message"] and "37.28 h" in error["message"], error
        assert "split" in error["message"] and "4 GiB" in error["message"], error
    assert server.uploads_left() == []
    assert "Traceback" not in server.log()

    r = post_audio(server, JFK, {})  # the server goes on
    assert r.status_code == 200 and "country" in r.json()["text"], r.text[:300]


def test_a_job_longer_than_a_wav_can_hold_fails_with_the_reason(server: Server, long_silence: Path) -> None:
    with long_silence.open("rb") as fh:
        r = httpx.post(
            f"{server.url}/v1/jobs", files={"file": ("39h.flac", fh)}, headers=server.headers(), timeout=60
        )
    assert r.status_code == 202, r.text[:300]
    record = wait_job(server, r.json()["id"])
    assert record["status"] == "failed", record
    assert record["error"]["code"] == "audio_too_long", record
    assert "37.28 h" in record["error"]["message"] and "split" in record["error"]["message"], record
    assert not list((server.root / ".slower-whisper").rglob("*audio.wav*"))  # nor a temporary one
