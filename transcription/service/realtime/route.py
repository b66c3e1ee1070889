"""`/v1/realtime`: live transcription over a WebSocket, in OpenAI's Realtime transcription protocol.

The handshake is checked before the socket is accepted (access.py's rules, as for the HTTP routes): the API
key (the `Authorization: Bearer` header, or, for browsers, which cannot set headers on a WebSocket,
OpenAI's subprotocol form `realtime, openai-insecure-api-key.<key>`), `?intent=transcription` when given,
the model when named, readiness, and a place among `SLOWER_WHISPER_REALTIME_MAX_SESSIONS`. A refusal is an
HTTP answer to the handshake (401, 400, 429, 503) with the usual JSON error body. Live sessions have their
own admission and decode threads (hub.py, decode.py), so they never wait behind the file queue. The session
itself is session.py.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse

from .. import access
from ..errors import ApiError
from ..state import Service
from .hub import LiveHub
from .protocol import SessionConfig
from .session import Limits, LiveSession

log = logging.getLogger(__name__)

router = APIRouter()

SUBPROTOCOL = "realtime"


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    svc: Service = websocket.app.state.service
    live: LiveHub = websocket.app.state.live
    offered = list(websocket.scope.get("subprotocols") or [])
    try:
        _check_handshake(svc, websocket, offered)
        live.admit()
    except ApiError as exc:
        svc.metrics.realtime_refused.labels(exc.code).inc()
        await _refuse(websocket, exc)
        return
    reason = "error"
    try:
        await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        reason = await _session(svc, live, websocket).run()
    finally:
        live.closed()
        svc.metrics.realtime_session_ends.labels(reason).inc()


def _session(svc: Service, live: LiveHub, websocket: WebSocket) -> LiveSession:
    settings = svc.settings
    assert live.decoder is not None  # started with the model, which the handshake found ready
    return LiveSession(
        websocket,
        live.decoder,
        svc.metrics,
        SessionConfig(model=settings.model, language=settings.language, enrich=settings.enrich),
        access.ServedModel.of(settings),
        svc.multilingual,
        Limits(
            settings.realtime_max_session_s, settings.realtime_idle_timeout, settings.realtime_max_buffer_s
        ),
        live.stopping,
        live.executor,
    )


@router.get("/v1/realtime", include_in_schema=False)
async def realtime_over_http() -> JSONResponse:
    return ApiError(
        426, "/v1/realtime is a WebSocket endpoint: connect with ws:// or wss://", "upgrade_required"
    ).response()


def _check_handshake(svc: Service, websocket: WebSocket, offered: list[str]) -> None:
    token = access.bearer_token(websocket.headers.get("authorization", ""))
    if token is None:
        token = access.protocol_token(offered)
    access.require_key(svc.settings, token, access.WEBSOCKET_KEY_HOW)
    intent = websocket.query_params.get("intent")
    if intent not in (None, "transcription"):
        raise ApiError(
            400,
            f"intent {intent!r} is not served here: only 'transcription'",
            "invalid_value",
            param="intent",
        )
    model = websocket.query_params.get("model")
    if model is not None:
        access.ServedModel.of(svc.settings).check(model)
    access.require_ready(svc)


async def _refuse(websocket: WebSocket, exc: ApiError) -> None:
    """Answer the handshake with the error as HTTP, where the server supports it; else close the socket
    before accepting it (the client sees 403)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(exc.response())
    else:
        await websocket.close(code=1008, reason=exc.message[:120])
