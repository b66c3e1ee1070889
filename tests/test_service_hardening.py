"""What a careless or hostile client finds on the service: slow uploads, the API description, the page's
headers, languages an English-only model cannot transcribe."""

from __future__ import annotations

import re
import socket
import time

import httpx
import pytest
from service_support import API_KEYS, JFK, Server, make_server, serve_module

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
