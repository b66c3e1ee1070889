"""The FastAPI application: routes, start-up (background model load, the job runner) and shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import math
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from transcription.config import WHISPER_LANGUAGES, Settings
from transcription.layout import Layout

from . import formats
from .errors import ApiError
from .jobs import JobStore, new_id, valid_id
from .metrics import Metrics, MetricsMiddleware
from .runner import JobRunner
from .scheduler import QueueFull, Scheduler, ShuttingDown
from .uploads import Upload, UploadSpace, receive_upload

log = logging.getLogger(__name__)
T = TypeVar("T")

STATIC = Path(__file__).with_name("static")
GRACE_S = 25.0  # SIGTERM to exit, all work included (Kubernetes waits 30 s by default before SIGKILL)
OPENAI_MODEL_ALIAS = "whisper-1"
UPLOAD_SWEEP_S = 30.0  # how often upload folders of dead replicas are looked for


@dataclass
class Service:
    """Everything the routes share; one per app."""

    settings: Settings
    layout: Layout
    scheduler: Scheduler
    store: JobStore
    runner: JobRunner
    space: UploadSpace
    metrics: Metrics
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    engine: Any = None
    packer: Any = None  # packing.SharedPacker in throughput mode on a GPU (or with a batch size)
    load_error: str | None = None
    loaded_at: int = 0
    shutdown_deadline: float | None = None  # monotonic; set when a stop signal arrives
    on_fatal: Callable[[int], None] | None = None
    work_seconds: float = 5.0  # moving average of one transcription's run time, for Retry-After
    exit_code: int = 0
    loop: asyncio.AbstractEventLoop | None = None

    @property
    def uploads(self) -> Path:
        return self.space.folder

    @property
    def max_bytes(self) -> int:
        return self.settings.max_upload_mb * 1024 * 1024

    def begin_shutdown(self) -> None:
        """On the stop signal: readiness turns 503, the job grace clock starts, nothing new starts."""
        if self.shutdown_deadline is None:
            self.shutdown_deadline = time.monotonic() + GRACE_S
        self.scheduler.close()

    def retry_after(self) -> int:
        """Seconds until a place in the queue is likely free."""
        waits = (self.scheduler.waiting + self.runner.places + 1) / self.scheduler.workers
        return max(1, min(120, math.ceil(self.work_seconds * waits)))


@dataclass
class Options:
    """Per-request transcription options (also stored in a job's record)."""

    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    enrich: bool | None = None
    word_timestamps: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def create_app(
    settings: Settings, engine: Any = None, on_fatal: Callable[[int], None] | None = None
) -> FastAPI:
    """Build the app. With `engine` given it is used as is; otherwise the model loads in the background."""
    layout = Layout(settings.root)
    metrics = Metrics()
    scheduler = Scheduler(in_flight(settings), settings.queue_size)
    store = JobStore(layout.jobs, settings.lease_ttl)
    space = UploadSpace(layout.state / "uploads", settings.lease_ttl)
    sweep = _Every(UPLOAD_SWEEP_S, space.sweep)
    # `svc` is bound below; the runner only calls these once the app runs.
    runner = JobRunner(
        store, scheduler, lambda *a: _transcribe(svc, *a), _describe, lambda: svc.ready.is_set(), sweep
    )
    svc = Service(
        settings=settings,
        layout=layout,
        scheduler=scheduler,
        store=store,
        runner=runner,
        space=space,
        metrics=metrics,
        on_fatal=on_fatal,
    )
    metrics.bind(lambda: scheduler.waiting + runner.places, lambda: scheduler.running)
    metrics.add_jobs(store.counts)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc.ready = asyncio.Event()
        svc.loop = asyncio.get_running_loop()
        await asyncio.to_thread(space.open)
        # Queued jobs (this root's, whoever accepted them) and jobs whose runner died are found by the
        # runner's scans; it claims them once the model is ready.
        runner.start()
        loader = None
        if engine is not None:
            _set_ready(svc, engine, 0.0)
        else:
            loader = asyncio.get_running_loop().create_task(_load(svc))
        try:
            yield
        finally:
            scheduler.close()
            if loader is not None and not loader.done():
                loader.cancel()
            deadline = svc.shutdown_deadline or (time.monotonic() + GRACE_S)
            await runner.stop(max(0.0, deadline - time.monotonic()))
            if svc.packer is not None:
                await asyncio.to_thread(svc.packer.close)
            await asyncio.to_thread(space.close)
            scheduler.shutdown()

    app = FastAPI(
        title="slower-whisper", version=_version(), lifespan=lifespan, docs_url="/docs", redoc_url=None
    )
    app.state.service = svc
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _install_error_handlers(app)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if svc.shutdown_deadline is not None:
            return JSONResponse({"status": "stopping"}, status_code=503)
        if svc.load_error is not None:
            return JSONResponse({"status": "failed", "error": svc.load_error}, status_code=503)
        if not svc.ready.is_set():
            return JSONResponse({"status": "loading", "model": settings.model}, status_code=503)
        return JSONResponse({"status": "ready", "model": settings.model})

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(_authorize(settings))])

    @v1.get("/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(svc, name) for name in _model_names(settings)]}

    @v1.get("/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        if model_id not in _model_names(settings):
            raise ApiError(404, f"The model '{model_id}' does not exist", "model_not_found", param="model")
        return _model_card(svc, model_id)

    @v1.post("/audio/transcriptions")
    async def create_transcription(request: Request) -> Response:
        _require_ready(svc)
        ticket = _admit(svc)
        try:
            return await _transcription(request, ticket)
        finally:
            runner.worker_freed()

    async def _transcription(request: Request, ticket: Any) -> Response:
        tmp = svc.uploads / uuid.uuid4().hex
        handed_over = False
        try:
            tmp.mkdir(parents=True)
            upload = await receive_upload(request, tmp / "input", svc.max_bytes)
            opts = _options(svc, upload)
            response_format = upload.get("response_format") or "json"
            if response_format not in formats.RESPONSE_FORMATS:
                raise ApiError(
                    400,
                    f"response_format must be one of {', '.join(formats.RESPONSE_FORMATS)}",
                    "invalid_value",
                    param="response_format",
                )
            granularities = _granularities(upload)
            opts.word_timestamps = "word" in granularities
            label = upload.filename or "upload"

            def work() -> dict[str, Any]:
                try:
                    return _transcribe(svc, tmp / "input", tmp / "audio.wav", label, opts.to_dict())
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)

            handed_over = True  # from here the worker (or the release below) owns `tmp`
            try:
                doc = await _unless_disconnected(request, svc.scheduler.run(ticket, work))
            except ShuttingDown:
                raise ApiError(503, "the server is shutting down", "shutting_down", retry_after=5) from None
            finally:
                if not ticket.started:
                    shutil.rmtree(tmp, ignore_errors=True)
            return formats.transcription_response(doc, response_format, granularities)
        finally:
            svc.scheduler.release(ticket)
            if not handed_over:
                shutil.rmtree(tmp, ignore_errors=True)

    @v1.post("/jobs", status_code=202)
    async def create_job(request: Request) -> JSONResponse:
        if svc.load_error is not None:
            _require_ready(svc)
        _check_room(svc)
        job_id = new_id()
        staging = svc.uploads / job_id
        runner.reserve()
        accepted = False
        try:
            staging.mkdir(parents=True)
            upload = await receive_upload(request, staging / "input", svc.max_bytes)
            opts = _options(svc, upload)
            opts.word_timestamps = "word" in _granularities(upload) or settings.word_timestamps
            callback = upload.get("callback_url") or None
            if callback is not None:
                _check_callback(callback)
            record = store.new_record(job_id, upload.filename or "upload", opts.to_dict(), callback)
            # From here the job is on the shared disk: this replica or any other may run it.
            await asyncio.to_thread(store.publish, staging, record)
            accepted = True
            runner.accepted(job_id)
            return JSONResponse(record, status_code=202, headers={"Location": f"/v1/jobs/{job_id}"})
        finally:
            runner.unreserve()
            if not accepted:
                shutil.rmtree(staging, ignore_errors=True)

    @v1.get("/jobs")
    async def list_jobs(status: str | None = None, limit: int = 100) -> dict[str, Any]:
        snap = await asyncio.to_thread(store.scan)
        records = [r for r in reversed(snap.records) if status is None or r["status"] == status]
        return {"object": "list", "data": records[: max(1, min(limit, 1000))]}

    @v1.get("/jobs/{job_id}")
    async def get_job(job_id: str) -> dict[str, Any]:
        return await _job(store, job_id)

    @v1.get("/jobs/{job_id}/result")
    async def get_job_result(job_id: str, format: str = "json") -> Response:  # noqa: A002 - API name
        record = await _job(store, job_id)
        if record["status"] != "succeeded":
            raise ApiError(
                409, f"job {job_id} is {record['status']}, no result", "job_not_finished", param="job_id"
            )
        try:
            doc = await asyncio.to_thread(store.read_result, job_id)
        except FileNotFoundError:  # deleted between the two reads
            raise ApiError(404, f"no job {job_id!r}", "job_not_found", param="job_id") from None
        return formats.result_response(doc, format)

    @v1.delete("/jobs/{job_id}")
    async def delete_job(job_id: str) -> dict[str, Any]:
        await _job(store, job_id)
        await runner.delete(job_id)
        return {"id": job_id, "object": "transcription.job", "deleted": True}

    app.include_router(v1)
    return app


# ------------------------------------------------------------------ start-up


def packs(settings: Settings) -> bool:
    """Whether the service packs concurrent requests into shared batches (see packing.SharedPacker)."""
    from transcription.throughput import packs as packs_on

    return settings.throughput and packs_on(settings.resolved_device(), settings.batch_size)


def in_flight(settings: Settings) -> int:
    """Requests transcribed at once. Packing needs many in flight to fill a batch: while some wait for the
    model, as many again are decoding and preparing, so twice the batch size (16 when it is automatic)."""
    if not packs(settings):
        return settings.workers
    return max(settings.workers, 2 * (settings.batch_size if settings.batch_size > 1 else 16))


async def _load(svc: Service) -> None:
    from transcription.asr import Engine

    start = time.perf_counter()
    try:
        # With packing, one model thread runs every batch; otherwise each worker runs its own requests.
        workers = 1 if packs(svc.settings) else svc.settings.workers
        engine = await asyncio.to_thread(Engine.load, svc.settings, workers)
    except Exception as exc:  # noqa: BLE001 - any load failure is fatal and reported as such
        svc.load_error = f"{type(exc).__name__}: {exc}"
        log.error("model %s failed to load: %s", svc.settings.model, svc.load_error)
        svc.exit_code = 2
        if svc.on_fatal is not None:
            svc.on_fatal(2)
        return
    _set_ready(svc, engine, time.perf_counter() - start)


def _set_ready(svc: Service, engine: Any, seconds: float) -> None:
    svc.engine = engine
    if packs(svc.settings):
        from transcription.packing import SharedPacker, choose_batch_size

        size = choose_batch_size(engine, svc.settings.batch_size)
        svc.packer = SharedPacker(engine, size, on_batch=svc.metrics.observe_batch)
        log.info("throughput mode: requests packed into shared batches of up to %d chunks", size)
    svc.loaded_at = int(time.time())
    svc.metrics.model_load.set(seconds)
    svc.metrics.ready.set(1)
    if svc.settings.resolved_device() == "cuda":
        svc.metrics.add_gpu()
    svc.ready.set()
    svc.runner.kick()  # queued jobs can start now
    log.info("model %s ready (loaded in %.1f s)", svc.settings.model, seconds)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("slower-whisper")
    except PackageNotFoundError:
        return "0"


# ------------------------------------------------------------------ the work


def _transcribe(svc: Service, src: Path, wav: Path, label: str, opts: dict[str, Any]) -> dict[str, Any]:
    """Runs in a worker thread: one transcription through the pipeline."""
    from transcription.pipeline import transcribe_media

    settings = svc.settings
    if opts.get("word_timestamps") and not settings.word_timestamps:
        settings = dataclasses.replace(settings, word_timestamps=True)
    start = time.perf_counter()
    try:
        doc = transcribe_media(
            svc.engine,
            settings,
            src,
            wav,
            file_label=label,
            language=opts.get("language"),
            initial_prompt=opts.get("prompt"),
            temperature=opts.get("temperature"),
            enrich_doc=opts.get("enrich"),
            transcriber=svc.packer.transcribe if svc.packer is not None else None,
        )
    except BaseException:
        svc.metrics.transcriptions.labels("failed").inc()
        raise
    took = time.perf_counter() - start
    svc.work_seconds = 0.8 * svc.work_seconds + 0.2 * took
    svc.metrics.transcriptions.labels("ok").inc()
    svc.metrics.audio_seconds.inc(float(doc.get("duration") or 0.0))
    return doc


def _describe(exc: BaseException) -> tuple[str, str]:
    from transcription.audio import DecodeError

    if isinstance(exc, DecodeError):
        return f"could not decode the upload as audio: {exc}", "invalid_audio"
    return f"{type(exc).__name__}: {exc}", "transcription_failed"


def _api_error(exc: BaseException) -> ApiError:
    message, code = _describe(exc)
    if code == "invalid_audio":
        return ApiError(400, message, code, param="file")
    log.error("transcription failed", exc_info=exc)
    return ApiError(500, message, code)


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, giving up (and cancelling it) if the client goes away first."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        gone.cancel()
    if not task.done():
        task.cancel()
        raise ClientDisconnect
    try:
        return task.result()
    except (ApiError, ShuttingDown, asyncio.CancelledError):
        raise
    except Exception as exc:  # noqa: BLE001 - mapped to an API error with the cause
        raise _api_error(exc) from exc


async def _disconnected(request: Request) -> None:
    # The body has been read, so the next ASGI message for this request can only be the disconnect.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


# ------------------------------------------------------------------ request helpers


def _authorize(settings: Settings) -> Callable[[Request], None]:
    keys = [k.encode("utf-8") for k in settings.api_keys]

    def check(request: Request) -> None:
        if not keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        given = token.strip().encode("utf-8")
        # Compare against every key (no early exit) so timing says nothing about which key is close.
        matched = False
        for key in keys:
            matched |= hmac.compare_digest(given, key)
        if scheme.lower() != "bearer" or not matched:
            raise ApiError(
                401, "missing or invalid API key: send 'Authorization: Bearer <key>'", "invalid_api_key"
            )

    return check


def _require_ready(svc: Service) -> None:
    if svc.load_error is not None:
        raise ApiError(503, f"the model failed to load: {svc.load_error}", "model_unavailable")
    if not svc.ready.is_set():
        raise ApiError(503, "the model is still loading; retry shortly", "model_loading", retry_after=5)


def _admit(svc: Service):
    try:
        return svc.scheduler.admit(extra=svc.runner.places)
    except QueueFull:
        raise ApiError(
            429,
            f"the server is busy ({svc.scheduler.running} running, {svc.scheduler.waiting} "
            "waiting); retry later",
            "queue_full",
            retry_after=svc.retry_after(),
        ) from None
    except ShuttingDown:
        raise ApiError(503, "the server is shutting down", "shutting_down", retry_after=5) from None


def _check_room(svc: Service) -> None:
    """Refuse a job (429/503) when this replica's queue is full, as for a transcription request."""
    try:
        svc.scheduler.check(extra=svc.runner.places)
    except QueueFull:
        raise ApiError(
            429,
            f"the server is busy ({svc.scheduler.running} running, "
            f"{svc.scheduler.waiting + svc.runner.places} waiting); retry later",
            "queue_full",
            retry_after=svc.retry_after(),
        ) from None
    except ShuttingDown:
        raise ApiError(503, "the server is shutting down", "shutting_down", retry_after=5) from None


class _Every:
    """Call `fn` at most once per `interval` seconds (housekeeping run from the job scan)."""

    def __init__(self, interval: float, fn: Callable[[], None]) -> None:
        self.interval = interval
        self.fn = fn
        self.last = -math.inf

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.fn()


def _model_names(settings: Settings) -> list[str]:
    names = [settings.model, Path(settings.model).name, OPENAI_MODEL_ALIAS]
    return list(dict.fromkeys(names))


def _model_card(svc: Service, name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": svc.loaded_at, "owned_by": "slower-whisper"}


def _options(svc: Service, upload: Upload) -> Options:
    model = upload.get("model")
    if model and model not in _model_names(svc.settings):
        raise ApiError(
            400,
            f"The model '{model}' does not exist; this server serves "
            f"'{svc.settings.model}' (also as '{OPENAI_MODEL_ALIAS}')",
            "model_not_found",
            param="model",
        )
    language = (upload.get("language") or "").strip().lower() or None
    if language == "auto":
        language = None
    if language is not None and language not in WHISPER_LANGUAGES:
        raise ApiError(400, f"unknown language code {language!r}", "invalid_language", param="language")
    temperature = None
    raw = upload.get("temperature")
    if raw not in (None, ""):
        try:
            temperature = float(raw)
        except ValueError:
            temperature = math.nan
        if not 0.0 <= temperature <= 1.0:
            raise ApiError(
                400, "temperature must be a number between 0 and 1", "invalid_value", param="temperature"
            )
    enrich = None
    raw = upload.get("enrich")
    if raw not in (None, ""):
        lowered = raw.strip().lower()
        if lowered not in ("true", "false", "1", "0"):
            raise ApiError(400, "enrich must be true or false", "invalid_value", param="enrich")
        enrich = lowered in ("true", "1")
    return Options(
        language=language, prompt=upload.get("prompt") or None, temperature=temperature, enrich=enrich
    )


def _granularities(upload: Upload) -> list[str]:
    values = upload.get_all("timestamp_granularities[]") + upload.get_all("timestamp_granularities")
    for value in values:
        if value not in ("word", "segment"):
            raise ApiError(
                400,
                "timestamp_granularities[] takes 'word' and/or 'segment'",
                "invalid_value",
                param="timestamp_granularities",
            )
    return values


def _check_callback(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ApiError(
            400, "callback_url must be an absolute http(s) URL", "invalid_value", param="callback_url"
        )


async def _job(store: JobStore, job_id: str) -> dict[str, Any]:
    """The record from disk (any replica may have changed it), or 404."""
    record = await asyncio.to_thread(store.read, job_id) if valid_id(job_id) else None
    if record is None:
        raise ApiError(404, f"no job {job_id!r}", "job_not_found", param="job_id")
    return record


# ------------------------------------------------------------------ errors


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> Response:
        return exc.response()

    @app.exception_handler(ClientDisconnect)
    async def client_gone(_: Request, __: ClientDisconnect) -> Response:
        return Response(status_code=499)  # nobody reads it; the label shows in metrics and logs

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return ApiError(exc.status_code, str(exc.detail), code).response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return ApiError(400, first.get("msg", "invalid request"), "invalid_value", param=param).response()

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        return ApiError(500, "internal server error", "internal_error").response()
