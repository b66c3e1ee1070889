"""The HTTP routes: `probes` (page, health, readiness, metrics; no key) and `v1` (the API, behind the key).

Routes reach the app's state through the `get_service` dependency, so they are plain module-level
functions that `create_app` includes.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import access, formats, params, speaker_options, streaming, work
from .errors import ApiError
from .jobs.store import JobStore, new_id, valid_id
from .request import Options, TranscriptionRequest
from .scheduler import ShuttingDown, Ticket
from .state import Service, get_service
from .uploads import Upload, receive_upload

STATIC = Path(__file__).with_name("static")

ServiceDep = Annotated[Service, Depends(get_service)]

probes = APIRouter()
v1 = APIRouter(prefix="/v1", dependencies=[Depends(params.authorize)])


# ------------------------------------------------------------------ probes


@probes.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@probes.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@probes.get("/readyz")
async def readyz(svc: ServiceDep) -> JSONResponse:
    state = access.readiness(svc)
    if state == "stopping":
        return JSONResponse({"status": state}, status_code=503)
    if state == "failed":
        return JSONResponse({"status": state, "error": svc.load_error}, status_code=503)
    body = {"status": state, "model": svc.settings.model}
    return JSONResponse(body, status_code=200 if state == "ready" else 503)


@probes.get("/openapi.json", include_in_schema=False, dependencies=[Depends(params.authorize)])
async def openapi_document(request: Request) -> JSONResponse:
    """The API's OpenAPI document, for key holders only (it maps the whole attack surface)."""
    return JSONResponse(request.app.openapi())


@probes.get("/metrics")
async def metrics_endpoint(svc: ServiceDep) -> Response:
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


# ------------------------------------------------------------------ models


@v1.get("/models")
async def list_models(svc: ServiceDep) -> dict[str, Any]:
    names = access.ServedModel.of(svc.settings).names
    return {"object": "list", "data": [_model_card(svc, name) for name in names]}


@v1.get("/models/{model_id:path}")
async def get_model(model_id: str, svc: ServiceDep) -> dict[str, Any]:
    return _model_card(svc, access.ServedModel.of(svc.settings).check(model_id, status=404))


def _model_card(svc: Service, name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": svc.loaded_at, "owned_by": "slower-whisper"}


# ------------------------------------------------------------------ synchronous transcription


@v1.post("/audio/transcriptions")
async def create_transcription(request: Request, svc: ServiceDep) -> Response:
    return await _audio(request, svc, "transcribe")


@v1.post("/audio/translations")
async def create_translation(request: Request, svc: ServiceDep) -> Response:
    """OpenAI's translations: the speech as English text. The endpoint names the task, whatever the
    server's WHISPER_TASK (which only sets the jobs' and the CLI's default)."""
    return await _audio(request, svc, "translate")


async def _audio(request: Request, svc: Service, task: str) -> Response:
    access.require_ready(svc)
    # A full queue is refused before the body is read; a place is taken only once it has arrived, so
    # clients that send slowly (or not at all) never hold places that others could use.
    work.check_room(svc)
    tmp = svc.uploads / uuid.uuid4().hex
    ticket: Ticket | None = None

    def cleanup() -> None:
        if ticket is not None:
            svc.scheduler.release(ticket)
            svc.runner.worker_freed()
        # A started worker removes `tmp` when it ends (it may outlive a client that left); else it goes here.
        if ticket is None or not ticket.started:
            shutil.rmtree(tmp, ignore_errors=True)

    streaming_owns_cleanup = False
    try:
        upload, parsed = await _received(request, svc, tmp)
        params.check_task(task, svc.multilingual, svc.settings.model)
        response_format = params.response_format(upload)
        # OpenAI's translations take no timestamp granularities: their verbose_json has segments only.
        granularities = params.granularities(upload) if task == "transcribe" else []
        # Words only when this response shows them (the full document always does).
        words = "word" in granularities or response_format == "slower_whisper_json"
        stream = params.stream(upload, response_format)
        # The endpoint's task, not the server's WHISPER_TASK (jobs, whose options hold none, follow that).
        asked = _asked(svc, upload, parsed, words=words, response_format=response_format, task=task)
        # Reference fields are checked now; their clips are decoded in the worker, inside admission.
        references = speaker_options.references(upload)
        label = upload.filename or "upload"
        ticket = work.admit(svc)

        def run(**hooks: Any) -> dict[str, Any]:
            try:
                return work.transcribe(
                    svc, tmp / "input", tmp / "audio.wav", label, asked, references=references, **hooks
                )
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

        if stream:
            response = await streaming.respond(request, svc, ticket, run, cleanup)
            streaming_owns_cleanup = True
            return response
        try:
            doc = await work.unless_disconnected(request, svc.scheduler.run(ticket, run))
        except ShuttingDown:
            raise access.shutting_down() from None
        return formats.transcription_response(doc, response_format, granularities)
    finally:
        if not streaming_owns_cleanup:
            cleanup()


async def _received(request: Request, svc: Service, folder: Path) -> tuple[Upload, Options]:
    """The upload, stored as `folder`/input, and its decoding options checked against the loaded model: what a
    transcription and a job both read first."""
    folder.mkdir(parents=True)
    upload = await receive_upload(
        request, folder / "input", svc.max_bytes, idle_timeout_s=svc.settings.upload_idle_timeout
    )
    parsed = params.parse_options(svc.settings, upload)
    params.check_language(parsed.language, svc.multilingual, svc.settings.model)
    return upload, parsed


def _asked(
    svc: Service,
    upload: Upload,
    parsed: Options,
    *,
    words: bool,
    response_format: str,
    task: str | None = None,
) -> TranscriptionRequest:
    """What the request asks for: its decoding options (word times as `words` says), its speaker fields
    (checked against `response_format`) and the endpoint's task (None: the server's)."""
    return TranscriptionRequest(
        replace(parsed, word_timestamps=words),
        speaker_options.parse(upload, svc.settings, response_format),
        task,
    )


# ------------------------------------------------------------------ jobs


@v1.post("/jobs", status_code=202)
async def create_job(request: Request, svc: ServiceDep) -> JSONResponse:
    if svc.load_error is not None:
        access.require_ready(svc)
    work.check_room(svc)
    job_id = new_id()
    staging = svc.uploads / job_id
    accepted = False
    try:
        upload, parsed = await _received(request, svc, staging)
        words = "word" in params.granularities(upload) or svc.settings.word_timestamps
        job = _asked(svc, upload, parsed, words=words, response_format="json")
        if speaker_options.has_references(upload):
            raise ApiError(
                400,
                "known speaker references are taken by /v1/audio/transcriptions, not by jobs",
                "invalid_value",
                param="known_speaker_references",
            )
        callback = params.callback_url(upload, svc.settings)
        # The place is taken once the upload is complete (see create_transcription): checked again now.
        work.check_room(svc)
        svc.runner.reserve()
        try:
            record = svc.store.new_record(job_id, upload.filename or "upload", job, callback)
            # From here the job is on the shared disk: this replica or any other may run it.
            await asyncio.to_thread(svc.store.publish, staging, record)
            accepted = True
            svc.runner.accepted(job_id)
        finally:
            svc.runner.unreserve()
        return JSONResponse(record, status_code=202, headers={"Location": f"/v1/jobs/{job_id}"})
    finally:
        if not accepted:
            shutil.rmtree(staging, ignore_errors=True)


@v1.get("/jobs")
async def list_jobs(svc: ServiceDep, status: str | None = None, limit: int = 100) -> dict[str, Any]:
    snap = await asyncio.to_thread(svc.store.scan)
    records = [r for r in reversed(snap.records) if status is None or r["status"] == status]
    return {"object": "list", "data": records[: max(1, min(limit, 1000))]}


@v1.get("/jobs/{job_id}")
async def get_job(job_id: str, svc: ServiceDep) -> dict[str, Any]:
    return await _job(svc.store, job_id)


@v1.get("/jobs/{job_id}/result")
async def get_job_result(job_id: str, svc: ServiceDep, format: str = "json") -> Response:  # noqa: A002 - API name
    record = await _job(svc.store, job_id)
    if record["status"] != "succeeded":
        raise ApiError(
            409, f"job {job_id} is {record['status']}, no result", "job_not_finished", param="job_id"
        )
    try:
        doc = await asyncio.to_thread(svc.store.read_result, job_id)
    except FileNotFoundError:  # deleted between the two reads
        raise ApiError(404, f"no job {job_id!r}", "job_not_found", param="job_id") from None
    return formats.result_response(doc, format)


@v1.delete("/jobs/{job_id}")
async def delete_job(job_id: str, svc: ServiceDep) -> dict[str, Any]:
    await _job(svc.store, job_id)
    await svc.runner.delete(job_id)
    return {"id": job_id, "object": "transcription.job", "deleted": True}


async def _job(store: JobStore, job_id: str) -> dict[str, Any]:
    """The record from disk (any replica may have changed it), or 404."""
    record = await asyncio.to_thread(store.read, job_id) if valid_id(job_id) else None
    if record is None:
        raise ApiError(404, f"no job {job_id!r}", "job_not_found", param="job_id")
    return record
