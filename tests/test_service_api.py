"""The HTTP service's API against a real server on loopback, with the official openai client."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import service_support as support
from prometheus_client.parser import text_string_to_metric_families
from service_support import API_KEYS, JFK, CallbackReceiver, Server, openai_client

pytestmark = pytest.mark.timeout(300)
main_server = support.main_server  # the shared server fixture


@pytest.mark.needs_data
def test_json_text_srt_vtt_with_openai_client(main_server: Server) -> None:
    client = openai_client(main_server)
    with JFK.open("rb") as fh:
        result = client.audio.transcriptions.create(model="whisper-1", file=fh)
    assert "country" in result.text.lower()
    with JFK.open("rb") as fh:
        text = client.audio.transcriptions.create(
            model="tiny.en", file=fh, response_format="text", language="en", temperature=0.0
        )
    assert isinstance(text, str) and "country" in text.lower()
    assert text.strip() == result.text.strip() and "-->" not in text  # the bare transcript, as OpenAI's
    with JFK.open("rb") as fh:
        srt = client.audio.transcriptions.create(model="whisper-1", file=fh, response_format="srt")
    assert srt.startswith("1\n") and " --> " in srt and "country" in srt.lower()
    with JFK.open("rb") as fh:
        vtt = client.audio.transcriptions.create(model="whisper-1", file=fh, response_format="vtt")
    assert vtt.startswith("WEBVTT") and "country" in vtt.lower()


@pytest.mark.needs_data
def test_verbose_json_with_words(main_server: Server) -> None:
    client = openai_client(main_server)
    with JFK.open("rb") as fh:
        result = client.audio.transcriptions.create(
            model="whisper-1",
            file=fh,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
            prompt="Inaugural address.",
        )
    assert result.language == "english"
    assert result.duration == pytest.approx(11.0, abs=0.1)
    assert result.segments and result.words
    assert "country" in " ".join(w.word for w in result.words).lower()
    for seg in result.segments:
        assert 0 <= seg.start < seg.end <= result.duration + 1e-3
        assert seg.avg_logprob < 0 and 0 <= seg.no_speech_prob <= 1 and seg.compression_ratio > 0
    starts = [w.start for w in result.words]
    assert starts == sorted(starts) and all(w.end <= result.duration + 1e-3 for w in result.words)
    # Only words asked for: OpenAI leaves the segments out.
    with JFK.open("rb") as fh:
        words_only = client.audio.transcriptions.create(
            model="whisper-1", file=fh, response_format="verbose_json", timestamp_granularities=["word"]
        )
    assert words_only.words and words_only.segments is None


@pytest.mark.needs_data
def test_slower_whisper_json_is_the_full_document(main_server: Server) -> None:
    with JFK.open("rb") as fh:
        r = httpx.post(
            f"{main_server.url}/v1/audio/transcriptions",
            headers=main_server.headers(),
            files={"file": ("speech.flac", fh)},
            data={"response_format": "slower_whisper_json"},
            timeout=120,
        )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["file"] == "speech.flac" and doc["schema_version"] >= 1
    assert doc["meta"]["model"] == "tiny.en" and "country" in doc["text"].lower()
    assert doc["segments"][0]["words"]


@pytest.mark.needs_data
def test_models_and_unknown_model(main_server: Server) -> None:
    client = openai_client(main_server)
    ids = {m.id for m in client.models.list()}
    assert {"tiny.en", "whisper-1"} <= ids
    with JFK.open("rb") as fh, pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(model="large-v3", file=fh)
    assert err.value.code == "model_not_found"


@pytest.mark.needs_data
def test_auth(main_server: Server) -> None:
    url = f"{main_server.url}/v1/models"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_KEYS[0]}"}):
        r = httpx.get(url, headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key" and r.json()["error"]["type"]
    for key in API_KEYS:  # a comma-separated SLOWER_WHISPER_API_KEY holds several keys
        assert httpx.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    with JFK.open("rb") as fh, pytest.raises(openai.AuthenticationError):
        openai_client(main_server, key="nope").audio.transcriptions.create(model="whisper-1", file=fh)
    # Probes and metrics stay open.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(main_server.url + path).status_code == 200


@pytest.mark.needs_data
def test_concurrent_requests_all_succeed(main_server: Server) -> None:
    client = openai_client(main_server)

    def one(_: int) -> str:
        with JFK.open("rb") as fh:
            return client.audio.transcriptions.create(model="whisper-1", file=fh, response_format="text")

    with ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(one, range(8)))
    assert len(texts) == 8 and all("country" in t.lower() for t in texts)
    assert main_server.uploads_left() == []


def test_undecodable_upload_is_400(main_server: Server, tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp3"
    fake.write_text("this is a text file, not audio\n" * 50)
    with fake.open("rb") as fh, pytest.raises(openai.BadRequestError) as err:
        openai_client(main_server).audio.transcriptions.create(model="whisper-1", file=fh)
    assert err.value.code == "invalid_audio"
    body = err.value.response.json()["error"]
    assert body["type"] == "invalid_request_error" and "decode" in body["message"]
    assert main_server.uploads_left() == []


@pytest.mark.needs_data
def test_bad_requests_are_json_errors(main_server: Server) -> None:
    h = main_server.headers()
    r = httpx.post(f"{main_server.url}/v1/audio/transcriptions", headers=h, data={"model": "whisper-1"})
    assert r.status_code == 400 and r.json()["error"]["message"]
    with JFK.open("rb") as fh:
        r = httpx.post(
            f"{main_server.url}/v1/audio/transcriptions",
            headers=h,
            files={"file": fh},
            data={"response_format": "docx"},
        )
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format"
    r = httpx.get(f"{main_server.url}/v1/nothing-here", headers=h)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


_wait_job = support.wait_job


@pytest.mark.needs_data
def test_job_lifecycle_with_callback(main_server: Server) -> None:
    hook = CallbackReceiver()
    try:
        url, h = main_server.url, main_server.headers()
        with JFK.open("rb") as fh:
            r = httpx.post(
                f"{url}/v1/jobs",
                headers=h,
                files={"file": ("jfk.flac", fh)},
                data={"callback_url": hook.url, "language": "en"},
            )
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["status"] in ("queued", "running") and r.headers["location"] == f"/v1/jobs/{job['id']}"
        record = _wait_job(main_server, job["id"])
        assert record["status"] == "succeeded" and record["error"] is None
        assert record["duration"] == pytest.approx(11.0, abs=0.1)
        doc = httpx.get(f"{url}/v1/jobs/{job['id']}/result", headers=h).json()
        assert "country" in doc["text"].lower() and doc["file"] == "jfk.flac"
        for fmt, marker in (("txt", "country"), ("srt", " --> "), ("vtt", "WEBVTT")):
            r = httpx.get(f"{url}/v1/jobs/{job['id']}/result", params={"format": fmt}, headers=h)
            assert r.status_code == 200 and marker in r.text
        assert (
            httpx.get(f"{url}/v1/jobs/{job['id']}/result", params={"format": "pdf"}, headers=h).status_code
            == 400
        )
        deadline = time.monotonic() + 15
        while not hook.received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hook.received and hook.received[0]["id"] == job["id"]
        assert hook.received[0]["status"] == "succeeded"
        listed = httpx.get(f"{url}/v1/jobs", headers=h).json()["data"]
        assert job["id"] in {j["id"] for j in listed}
        folder = main_server.root / ".slower-whisper" / "jobs" / job["id"]
        assert sorted(p.name for p in folder.iterdir()) == ["job.json", "result.json"]
        assert httpx.delete(f"{url}/v1/jobs/{job['id']}", headers=h).json()["deleted"] is True
        assert not folder.exists()
        r = httpx.get(f"{url}/v1/jobs/{job['id']}", headers=h)
        assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
    finally:
        hook.close()


def test_failed_job_records_the_error(main_server: Server) -> None:
    h = main_server.headers()
    r = httpx.post(f"{main_server.url}/v1/jobs", headers=h, files={"file": ("x.mp3", b"not audio at all")})
    assert r.status_code == 202
    record = _wait_job(main_server, r.json()["id"])
    assert record["status"] == "failed" and record["error"]["code"] == "invalid_audio"
    r = httpx.get(f"{main_server.url}/v1/jobs/{record['id']}/result", headers=h)
    assert r.status_code == 409


@pytest.mark.needs_data
def test_metrics_parse(main_server: Server) -> None:
    with JFK.open("rb") as fh:
        openai_client(main_server).audio.transcriptions.create(model="whisper-1", file=fh)
    text = httpx.get(f"{main_server.url}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "slower_whisper_http_requests",
        "slower_whisper_http_request_duration_seconds",
        "slower_whisper_audio_seconds_processed",
        "slower_whisper_queue_depth",
        "slower_whisper_jobs",
        "slower_whisper_model_load_seconds",
        "process_resident_memory_bytes",
    ):
        assert name in families, name
    ok = [
        s
        for s in families["slower_whisper_http_requests"].samples
        if s.labels.get("route") == "/v1/audio/transcriptions" and s.labels.get("status") == "200"
    ]
    assert ok and ok[0].value >= 1
    audio = [
        s.value
        for s in families["slower_whisper_audio_seconds_processed"].samples
        if s.name.endswith("_total")
    ]
    assert audio and audio[0] >= 11.0
    assert main_server.metric("slower_whisper_model_load_seconds") > 0
    assert {s.labels["state"] for s in families["slower_whisper_jobs"].samples} >= {"queued", "succeeded"}
