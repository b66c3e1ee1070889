"""`/v1/realtime`: live transcription over a WebSocket, in OpenAI's Realtime transcription protocol.

The handshake is checked before the socket is accepted: the API key (the `Authorization: Bearer` header,
or, for browsers, which cannot set headers on a WebSocket, OpenAI's subprotocol form `realtime,
openai-insecure-api-key.<key>`), `?intent=transcription` when given, the model when named, readiness, and
a place among `SLOWER_WHISPER_REALTIME_MAX_SESSIONS`. A refusal is an HTTP answer to the handshake (401,
400, 429, 503) with the usual JSON error body. Live sessions have their own admission and decode threads
(realtime_decode.py), so they never wait behind the file queue. The session itself is
realtime_session.py.
"""

from __future__ import annotations

import hmac
import logging

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse

from transcription import hardware

from . import params
from .errors import ApiError
from .realtime_decode import LiveDecoder
from .realtime_protocol import SessionConfig
from .realtime_session import Limits, LiveSession
from .state import Service

log = logging.getLogger(__name__)

router = APIRouter()

SUBPROTOCOL = "realtime"
KEY_PROTOCOL_PREFIX = "openai-insecure-api-key."


class LiveHub:
    """The service's live sessions: how many are open, and the decoder they share (made once the model is
    loaded)."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.open = 0
        self._decoder: LiveDecoder | None = None

    @property
    def decoder(self) -> LiveDecoder:
        if self._decoder is None:
            svc = self.svc
            assert svc.engine is not None
            packing, sessions = svc.packer is not None, svc.settings.realtime_max_sessions
            threads = hardware.live_decode_threads(packing, sessions, svc.engine.workers)
            self._decoder = LiveDecoder(svc.engine, svc.packer, svc.settings, threads)
        return self._decoder

    def try_open(self) -> bool:
        if self.open >= self.svc.settings.realtime_max_sessions:
            return False
        self.open += 1
        self.svc.metrics.realtime_sessions.set(self.open)
        return True

    def closed(self) -> None:
        self.open -= 1
        self.svc.metrics.realtime_sessions.set(self.open)


def hub(svc: Service) -> LiveHub:
    if svc.realtime is None:
        svc.realtime = LiveHub(svc)
    return svc.realtime


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    svc: Service = websocket.app.state.service
    live = hub(svc)
    offered = list(websocket.scope.get("subprotocols") or [])
    try:
        _check_key(svc, websocket, offered)
        _check_query(svc, websocket)
        _check_ready(svc)
    except ApiError as exc:
        svc.metrics.realtime_refused.labels(exc.code).inc()
        await _refuse(websocket, exc)
        return
    if not live.try_open():
        limit = svc.settings.realtime_max_sessions
        svc.metrics.realtime_refused.labels("too_many_sessions").inc()
        await _refuse(
            websocket,
            ApiError(
                429, f"all {limit} live sessions are in use; retry later", "too_many_sessions", retry_after=5
            ),
        )
        return
    reason = "error"
    try:
        await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        settings = svc.settings
        session = LiveSession(
            websocket,
            live.decoder,
            svc.metrics,
            SessionConfig(model=settings.model, language=settings.language, enrich=settings.enrich),
            params.model_names(settings),
            svc.multilingual,
            Limits(
                settings.realtime_max_session_s,
                settings.realtime_idle_timeout,
                settings.realtime_max_buffer_s,
            ),
        )
        reason = await session.run()
    finally:
        live.closed()
        svc.metrics.realtime_session_ends.labels(reason).inc()


@router.get("/v1/realtime", include_in_schema=False)
async def realtime_over_http() -> JSONResponse:
    return ApiError(
        426, "/v1/realtime is a WebSocket endpoint: connect with ws:// or wss://", "upgrade_required"
    ).response()


def _check_key(svc: Service, websocket: WebSocket, offered: list[str]) -> None:
    """The service's key rule (params.authorize), with the key also accepted as OpenAI's browser
    subprotocol."""
    keys = [k.encode("utf-8") for k in svc.settings.api_keys]
    if not keys:
        return
    scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        token = next(
            (p[len(KEY_PROTOCOL_PREFIX) :] for p in offered if p.startswith(KEY_PROTOCOL_PREFIX)), ""
        )
    given = token.strip().encode("utf-8")
    matched = False
    for key in keys:  # every key compared, no early exit (see params.authorize)
        matched |= hmac.compare_digest(given, key)
    if not matched:
        raise ApiError(
            401,
            "missing or invalid API key: send 'Authorization: Bearer <key>' or the subprotocol "
            f"'{KEY_PROTOCOL_PREFIX}<key>'",
            "invalid_api_key",
        )


def _check_query(svc: Service, websocket: WebSocket) -> None:
    intent = websocket.query_params.get("intent")
    if intent not in (None, "transcription"):
        raise ApiError(
            400,
            f"intent {intent!r} is not served here: only 'transcription'",
            "invalid_value",
            param="intent",
        )
    model = websocket.query_params.get("model")
    names = params.model_names(svc.settings)
    if model is not None and model not in names:
        raise ApiError(
            400,
            f"The model '{model}' does not exist; this server serves '{svc.settings.model}' "
            f"(also as '{params.OPENAI_MODEL_ALIAS}')",
            "model_not_found",
            param="model",
        )


def _check_ready(svc: Service) -> None:
    if svc.shutdown_deadline is not None:
        raise ApiError(503, "the server is shutting down", "shutting_down", retry_after=5)
    if svc.load_error is not None:
        raise ApiError(503, f"the model failed to load: {svc.load_error}", "model_unavailable")
    if not svc.ready.is_set() or svc.engine is None:
        raise ApiError(503, "the model is still loading; retry shortly", "model_loading", retry_after=5)


async def _refuse(websocket: WebSocket, exc: ApiError) -> None:
    """Answer the handshake with the error as HTTP, where the server supports it; else close the socket
    before accepting it (the client sees 403)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(exc.response())
    else:
        await websocket.close(code=1008, reason=exc.message[:120])
