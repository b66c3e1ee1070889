"""Building the app: start-up (the background model load, the job runner, the live sessions' hub), shutdown
and error handlers.

The routes are in routes.py (and realtime/route.py), the checks both share in access.py, request parsing in
params.py (into request.py's `TranscriptionRequest`), running a transcription in work.py, and the state
they share (`Service`) in state.py.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from transcription import sizing
from transcription.config import Settings
from transcription.layout import Layout

from . import routes, work
from .errors import ApiError
from .headers import SecurityHeaders
from .jobs.runner import JobRunner
from .jobs.store import JobStore
from .metrics import Metrics, MetricsMiddleware
from .realtime import route as realtime
from .realtime.hub import LiveHub
from .scheduler import Scheduler
from .state import GRACE_S, Service
from .uploads import UploadSpace

if TYPE_CHECKING:
    from transcription.asr import Engine

__all__ = ["GRACE_S", "Service", "create_app"]

log = logging.getLogger(__name__)

UPLOAD_SWEEP_S = 30.0  # how often upload folders of dead replicas are looked for


def create_app(
    settings: Settings, engine: Engine | None = None, on_fatal: Callable[[int], None] | None = None
) -> FastAPI:
    """Build the app. With `engine` given it is used as is; otherwise the model loads in the background."""
    svc = _service(settings, on_fatal)
    live = LiveHub(settings, svc.metrics)
    app = FastAPI(
        title="slower-whisper",
        version=_version(),
        lifespan=_lifespan(svc, live, engine),
        # No interactive docs (they load scripts from a public CDN); the OpenAPI document is served behind
        # the API key by routes.openapi_document.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.service = svc
    app.state.live = live
    app.add_middleware(MetricsMiddleware, metrics=svc.metrics)
    app.add_middleware(SecurityHeaders)
    _install_error_handlers(app)
    # The probes (no prefix, no key) go on the app's own table, where tools and the manifests' contract test
    # find them: FastAPI lists an included router as one opaque entry.
    app.router.routes.extend(routes.probes.routes)
    app.mount("/static", StaticFiles(directory=routes.STATIC), name="static")
    app.include_router(routes.v1)
    app.include_router(realtime.router)  # /v1/realtime (WebSocket), with its own key check
    return app


def _service(settings: Settings, on_fatal: Callable[[int], None] | None) -> Service:
    layout = Layout(settings.root)
    metrics = Metrics()
    scheduler = Scheduler(sizing.service_in_flight(settings), settings.queue_size)
    store = JobStore(layout.jobs, settings.lease_ttl)
    space = UploadSpace(layout.state / "uploads", settings.lease_ttl)
    sweep = _Every(UPLOAD_SWEEP_S, space.sweep)
    # `svc` is bound below; the runner only calls these once the app runs.
    runner = JobRunner(
        store,
        scheduler,
        lambda *a: work.transcribe(svc, *a),
        work.describe,
        lambda: svc.ready.is_set(),
        sweep,
        callback_allow_internal=settings.callback_allow_internal,
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
    return svc


def _lifespan(
    svc: Service, live: LiveHub, engine: Engine | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc.ready = asyncio.Event()
        svc.loop = asyncio.get_running_loop()
        await asyncio.to_thread(svc.space.open)
        # Queued jobs (this root's, whoever accepted them) and jobs whose runner died are found by the
        # runner's scans; it claims them once the model is ready.
        svc.runner.start()
        loader = None
        if engine is not None:
            _set_ready(svc, live, engine, 0.0)
        else:
            loader = asyncio.get_running_loop().create_task(_load(svc, live))
        try:
            yield
        finally:
            svc.scheduler.close()
            if loader is not None and not loader.done():
                loader.cancel()
            deadline = svc.shutdown_deadline or (time.monotonic() + GRACE_S)
            await live.stop(deadline)  # `serve` stopped the sessions already, before uvicorn's own shutdown
            await svc.runner.stop(max(0.0, deadline - time.monotonic()))
            if svc.packer is not None:
                await asyncio.to_thread(svc.packer.close)
            await asyncio.to_thread(svc.space.close)
            svc.scheduler.shutdown()

    return lifespan


# ------------------------------------------------------------------ start-up


async def _load(svc: Service, live: LiveHub) -> None:
    from transcription.asr import Engine

    start = time.perf_counter()
    try:
        workers = sizing.service_engine_workers(svc.settings)
        # Each request worker may use every core: a lone request gets the whole machine.
        engine = await asyncio.to_thread(
            functools.partial(Engine.load, svc.settings, workers, whole_machine_each=True)
        )
        if svc.settings.diarize:  # speakers by default: their model is ready before /readyz says so
            from transcription import speakers

            await asyncio.to_thread(speakers.diarizer, svc.settings)
    except Exception as exc:  # noqa: BLE001 - any load failure is fatal and reported as such
        svc.load_error = f"{type(exc).__name__}: {exc}"
        log.error("model %s failed to load: %s", svc.settings.model, svc.load_error)
        svc.exit_code = 2
        if svc.on_fatal is not None:
            svc.on_fatal(2)
        return
    _set_ready(svc, live, engine, time.perf_counter() - start)


def _set_ready(svc: Service, live: LiveHub, engine: Engine, seconds: float) -> None:
    svc.engine = engine
    if sizing.packs(svc.settings):
        from transcription.packing import SharedPacker

        size = sizing.choose_batch_size(engine, svc.settings.batch_size)
        svc.packer = SharedPacker(engine, size, on_batch=svc.metrics.observe_batch)
        log.info("throughput mode: requests packed into shared batches of up to %d chunks", size)
    live.start(engine, svc.packer)
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
