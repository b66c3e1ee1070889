"""The service's parts, in process: the app on httpx's ASGITransport with the real tiny.en engine, and the
scheduler, job store, upload parser and packing budget on their own. Fast, and needs no ../shared/data:
the audio is a short clip generated here."""

from __future__ import annotations

import asyncio
import json
import threading
import wave
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import tiny_env
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from transcription.asr import Engine
from transcription.config import Settings, load_settings
from transcription.packing import Budget
from transcription.service import create_app
from transcription.service.errors import ApiError
from transcription.service.jobs.store import JobStore, new_id
from transcription.service.params import parse_options
from transcription.service.request import Options, TranscriptionRequest
from transcription.service.scheduler import QueueFull, Scheduler, ShuttingDown
from transcription.service.speaker_options import SpeakerOptions
from transcription.service.state import Service
from transcription.service.uploads import Upload, receive_upload

pytestmark = pytest.mark.timeout(300)

KEY = "in-process-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load(load_settings({}, None, tiny_env()))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1.5 s of a warbling tone at 16 kHz: real audio to decode and transcribe, whatever the words."""
    sr = 16000
    t = np.arange(int(1.5 * sr)) / sr
    signal = 0.3 * np.sin(2 * np.pi * (220 + 80 * np.sin(2 * np.pi * 3 * t)) * t)
    path = tmp_path_factory.mktemp("audio") / "clip.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sr)
        out.writeframes((signal * 32767).astype("<i2").tobytes())
    return path


def settings_for(root: Path, **env: str) -> Settings:
    return load_settings(
        {}, None, tiny_env(root, SLOWER_WHISPER_API_KEY=KEY, SLOWER_WHISPER_WORKERS="1", **env)
    )


@asynccontextmanager
async def running(settings: Settings, engine: Engine) -> AsyncIterator[tuple[httpx.AsyncClient, Service]]:
    """The app with its lifespan entered (ASGITransport does not run it) and a client on it."""
    app = create_app(settings, engine=engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://service.test", timeout=120
        ) as client:
            yield client, app.state.service


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def files(clip: Path, name: str = "clip.wav") -> dict[str, tuple[str, bytes]]:
    return {"file": (name, clip.read_bytes())}


def assert_error(r: httpx.Response, status: int, code: str, param: str | None = None) -> dict[str, Any]:
    """An error in OpenAI's shape, with the status, code and parameter expected."""
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["code"] == code and error["param"] == param
    return error


def uploads_left(svc: Service) -> list[Path]:
    return list(svc.uploads.iterdir()) if svc.uploads.exists() else []


# ------------------------------------------------------------------ the app


def test_probes_auth_and_a_transcription(engine: Engine, clip: Path, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(settings_for(tmp_path), engine) as (client, svc):
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            assert (await client.get("/readyz")).json() == {"status": "ready", "model": "tiny.en"}
            assert "slower_whisper" in (await client.get("/metrics")).text
            assert_error(await client.get("/v1/models"), 401, "invalid_api_key")
            bad = await client.get("/v1/models", headers={"Authorization": "Bearer nope"})
            assert assert_error(bad, 401, "invalid_api_key")["type"] == "authentication_error"
            models = (await client.get("/v1/models", headers=AUTH)).json()
            assert [m["id"] for m in models["data"]] == ["tiny.en", "whisper-1"]

            r = await client.post("/v1/audio/transcriptions", headers=AUTH, files=files(clip))
            assert r.status_code == 200, r.text
            assert set(r.json()) == {"text"}
            r = await client.post(
                "/v1/audio/transcriptions",
                headers=AUTH,
                files=files(clip),
                data={"response_format": "verbose_json", "timestamp_granularities[]": ["word", "segment"]},
            )
            assert r.status_code == 200, r.text
            assert r.json()["duration"] == pytest.approx(1.5, abs=0.05)
            # Every place was given back and every upload removed.
            assert svc.scheduler.admitted == 0 and uploads_left(svc) == []

    run(scenario)


@pytest.mark.parametrize(
    ("fields", "code", "param"),
    [
        ({"language": "xx"}, "invalid_language", "language"),
        ({"temperature": "1.5"}, "invalid_value", "temperature"),
        ({"temperature": "warm"}, "invalid_value", "temperature"),
        ({"response_format": "docx"}, "invalid_value", "response_format"),
        ({"timestamp_granularities[]": "char"}, "invalid_value", "timestamp_granularities"),
        ({"model": "gpt-4o"}, "model_not_found", "model"),
        ({"enrich": "maybe"}, "invalid_value", "enrich"),
    ],
)
def test_bad_options_are_400(
    engine: Engine, clip: Path, tmp_path: Path, fields: dict[str, str], code: str, param: str
) -> None:
    async def scenario() -> None:
        async with running(settings_for(tmp_path), engine) as (client, svc):
            r = await client.post("/v1/audio/transcriptions", headers=AUTH, files=files(clip), data=fields)
            assert assert_error(r, 400, code, param)["type"] == "invalid_request_error"
            if param != "response_format":  # jobs choose the format when the result is read
                r = await client.post("/v1/jobs", headers=AUTH, files=files(clip), data=fields)
                assert_error(r, 400, code, param)
            assert svc.scheduler.admitted == 0 and svc.runner.places == 0 and uploads_left(svc) == []

    run(scenario)


def test_option_parsing() -> None:
    settings = load_settings({}, None, tiny_env())
    opts = parse_options(
        settings,
        Upload(
            fields={
                "model": ["whisper-1"],
                "language": [" EN "],
                "temperature": ["0.2"],
                "enrich": ["1"],
                "prompt": [""],
            }
        ),
    )
    assert opts.to_dict() == {
        "language": "en",
        "prompt": None,
        "temperature": 0.2,
        "enrich": True,
        "word_timestamps": False,
    }
    assert parse_options(settings, Upload(fields={"language": ["auto"]})).language is None
    with pytest.raises(ApiError) as err:
        parse_options(settings, Upload(fields={"temperature": ["-0.1"]}))
    assert err.value.status == 400 and err.value.param == "temperature"


def test_job_options_round_trip_and_older_records_still_read() -> None:
    """A job's record keeps the request as a flat dict; one written by an older version (fewer fields, or
    one this version does not know) is read back with defaults for what it lacks."""
    asked = TranscriptionRequest(
        Options(language="de", temperature=0.2, word_timestamps=True), SpeakerOptions(diarize=True)
    )
    record = asked.to_record()
    assert "task" not in record and record["language"] == "de" and record["diarize"] is True
    assert TranscriptionRequest.from_record(json.loads(json.dumps(record))) == asked
    older = {"language": "en", "prompt": None, "temperature": None, "enrich": None, "retired": 1}
    assert TranscriptionRequest.from_record(older) == TranscriptionRequest(Options(language="en"))
    assert TranscriptionRequest(task="translate").to_record()["task"] == "translate"


def test_queue_full_is_429_until_places_are_released(engine: Engine, clip: Path, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(settings_for(tmp_path, SLOWER_WHISPER_QUEUE_SIZE="1"), engine) as (client, svc):
            held = [svc.scheduler.admit(), svc.scheduler.admit()]  # one worker + one queued: full
            r = await client.post("/v1/audio/transcriptions", headers=AUTH, files=files(clip))
            assert assert_error(r, 429, "queue_full")["type"] == "rate_limit_error"
            assert 1 <= int(r.headers["Retry-After"]) <= 120
            r = await client.post("/v1/jobs", headers=AUTH, files=files(clip))
            assert_error(r, 429, "queue_full")
            assert "Retry-After" in r.headers
            for ticket in held:
                svc.scheduler.release(ticket)
            r = await client.post("/v1/audio/transcriptions", headers=AUTH, files=files(clip))
            assert r.status_code == 200, r.text
            assert svc.scheduler.admitted == 0

            svc.begin_shutdown()  # nothing new starts once stopping
            assert (await client.get("/readyz")).status_code == 503
            r = await client.post("/v1/audio/transcriptions", headers=AUTH, files=files(clip))
            assert_error(r, 503, "shutting_down")

    run(scenario)


def test_job_lifecycle(engine: Engine, clip: Path, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(settings_for(tmp_path), engine) as (client, svc):
            r = await client.post(
                "/v1/jobs", headers=AUTH, files=files(clip, "memo.wav"), data={"language": "en"}
            )
            assert r.status_code == 202, r.text
            job = r.json()
            assert job["status"] == "queued" and job["file"] == "memo.wav"
            assert job["options"]["language"] == "en"
            assert r.headers["Location"] == f"/v1/jobs/{job['id']}"
            for _ in range(600):
                record = (await client.get(f"/v1/jobs/{job['id']}", headers=AUTH)).json()
                if record["status"] in ("succeeded", "failed"):
                    break
                await asyncio.sleep(0.1)
            assert record["status"] == "succeeded", record
            r = await client.get(f"/v1/jobs/{job['id']}/result?format=json", headers=AUTH)
            assert r.status_code == 200 and r.json()["file"] == "memo.wav"
            listed = (await client.get("/v1/jobs?status=succeeded", headers=AUTH)).json()
            assert [j["id"] for j in listed["data"]] == [job["id"]]
            r = await client.delete(f"/v1/jobs/{job['id']}", headers=AUTH)
            assert r.json() == {"id": job["id"], "object": "transcription.job", "deleted": True}
            assert_error(
                await client.get(f"/v1/jobs/{job['id']}", headers=AUTH), 404, "job_not_found", "job_id"
            )
            assert_error(await client.get("/v1/jobs/not-an-id", headers=AUTH), 404, "job_not_found", "job_id")
            r = await client.post(
                "/v1/jobs", headers=AUTH, files=files(clip), data={"callback_url": "ftp://x"}
            )
            assert_error(r, 400, "invalid_value", "callback_url")

    run(scenario)


def test_upload_over_the_limit_is_413(engine: Engine, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(settings_for(tmp_path, SLOWER_WHISPER_MAX_UPLOAD_MB="1"), engine) as (client, svc):
            big = {"file": ("big.wav", b"\0" * (2 << 20))}
            r = await client.post("/v1/audio/transcriptions", headers=AUTH, files=big)
            assert_error(r, 413, "file_too_large", "file")
            assert_error(
                await client.post("/v1/jobs", headers=AUTH, files=big), 413, "file_too_large", "file"
            )
            assert svc.scheduler.admitted == 0 and svc.runner.places == 0 and uploads_left(svc) == []

    run(scenario)


# ------------------------------------------------------------------ the parts on their own


def test_scheduler_admission_line_and_release() -> None:
    async def scenario() -> None:
        scheduler = Scheduler(workers=1, queue_size=1)
        gate = threading.Event()
        try:
            first, second = scheduler.admit(), scheduler.admit()
            with pytest.raises(QueueFull):
                scheduler.admit()
            with pytest.raises(QueueFull):
                scheduler.check()
            third = scheduler.admit(force=True)  # past the bound on purpose
            scheduler.release(third)
            assert scheduler.admitted == 2

            running = asyncio.ensure_future(scheduler.run(first, gate.wait))
            waiting = asyncio.ensure_future(scheduler.run(second, lambda: "never"))
            await asyncio.sleep(0.05)
            assert scheduler.running == 1 and scheduler.waiting == 1
            waiting.cancel()  # a caller that gives up in line leaves without starting
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert scheduler.admitted == 1 and not second.started
            gate.set()
            assert await running is True
            assert scheduler.admitted == 0 and scheduler.running == 0

            scheduler.close()
            with pytest.raises(ShuttingDown):
                scheduler.admit()
        finally:
            gate.set()
            scheduler.shutdown()

    run(scenario)


def test_job_store_publish_read_scan_delete(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs", lease_ttl=120)
    store.ensure()
    job_id = new_id()
    staging = tmp_path / "uploads" / job_id
    staging.mkdir(parents=True)
    (staging / "input").write_bytes(b"audio")
    record = store.new_record(job_id, "talk.wav", TranscriptionRequest(Options(language="en")), None)
    store.publish(staging, record)
    assert not staging.exists() and store.input_path(job_id).read_bytes() == b"audio"
    assert store.read(job_id) == record
    snap = store.scan()
    assert [r["id"] for r in snap.records] == [job_id] and snap.deleted == []
    assert store.counts()["queued"] == 1
    store.remove(job_id)
    assert store.read(job_id) is None and store.scan().records == []
    assert store.counts()["queued"] == 0


def _upload_echo(folder: Path, max_bytes: int) -> FastAPI:
    """A bare app that parses one upload and answers what it found."""
    app = FastAPI()
    app.add_exception_handler(ApiError, lambda _, exc: exc.response())  # type: ignore[arg-type, return-value]

    @app.post("/upload")
    async def upload(request: Request) -> Response:
        dest = folder / "input"
        got = await receive_upload(request, dest, max_bytes)
        return JSONResponse(
            {
                "fields": got.fields,
                "filename": got.filename,
                "size": got.size,
                "stored": dest.read_bytes().decode(),
            }
        )

    return app


def test_upload_parser(tmp_path: Path) -> None:
    async def scenario() -> None:
        transport = httpx.ASGITransport(app=_upload_echo(tmp_path, max_bytes=1000))
        async with httpx.AsyncClient(transport=transport, base_url="http://upload.test") as client:
            r = await client.post(
                "/upload",
                files={"file": ("dir/a b.wav", b"hello")},
                data={"language": "en", "timestamp_granularities[]": ["word", "segment"]},
            )
            assert r.status_code == 200, r.text
            assert r.json() == {
                "fields": {"language": ["en"], "timestamp_granularities[]": ["word", "segment"]},
                "filename": "a b.wav",
                "size": 5,
                "stored": "hello",
            }
            r = await client.post("/upload", files={"file": ("big.wav", b"x" * 1001)})
            assert_error(r, 413, "file_too_large", "file")
            assert not (tmp_path / "input").exists()  # nothing of a rejected upload is kept
            assert_error(
                await client.post("/upload", files={"other": ("a.wav", b"x")}), 400, "invalid_request", "file"
            )
            assert_error(
                await client.post("/upload", files={"file": ("a.wav", b"")}), 400, "invalid_audio", "file"
            )
            assert_error(await client.post("/upload", json={"file": "x"}), 400, "invalid_request")

    run(scenario)


def test_packing_budget() -> None:
    budget = Budget(100)
    budget.acquire(150)  # one request always passes when nothing is held, however large
    budget.release(150)
    budget.acquire(60)
    entered = threading.Event()

    def second() -> None:
        budget.acquire(60)
        entered.set()

    waiter = threading.Thread(target=second, daemon=True)
    waiter.start()
    assert not entered.wait(0.2)  # spent: the second request blocks
    budget.release(60)
    assert entered.wait(5) and budget.used == 60

    failed: list[BaseException] = []

    def third() -> None:
        try:
            budget.acquire(60)
        except RuntimeError as exc:
            failed.append(exc)

    waiter = threading.Thread(target=third, daemon=True)
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive()  # blocked until closed
    budget.close()  # wakes every waiter, which then fails
    waiter.join(5)
    assert not waiter.is_alive() and len(failed) == 1
    with pytest.raises(RuntimeError):
        budget.acquire(1)
