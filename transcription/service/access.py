"""Who and what a request may ask for, the same for the HTTP routes and the `/v1/realtime` WebSocket: the
API key, readiness, the model's names and language codes. Each check raises `ApiError`; the WebSocket
answers a handshake with it as HTTP, and turns it into an `error` event inside a session.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path

from transcription.config import Settings, language_code

from .errors import ApiError
from .state import Service

OPENAI_MODEL_ALIAS = "whisper-1"
# Browsers cannot set headers on a WebSocket: OpenAI's clients send the key as this subprotocol instead.
KEY_PROTOCOL_PREFIX = "openai-insecure-api-key."


# ------------------------------------------------------------------ the API key


def bearer_token(authorization: str) -> str | None:
    """The key of an `Authorization: Bearer <key>` header; None for another scheme or no header."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def protocol_token(offered: list[str]) -> str | None:
    """The key offered as the subprotocol `openai-insecure-api-key.<key>`, if any."""
    return next((p[len(KEY_PROTOCOL_PREFIX) :] for p in offered if p.startswith(KEY_PROTOCOL_PREFIX)), None)


def require_key(settings: Settings, token: str | None, how: str) -> None:
    """401 unless no key is configured or `token` is one of them; `how` tells the client how to send it."""
    keys = [k.encode("utf-8") for k in settings.api_keys]
    if not keys:
        return
    given = (token or "").encode("utf-8")
    # Compare against every key (no early exit) so timing says nothing about which key is close.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key)
    if token is None or not matched:
        raise ApiError(401, f"missing or invalid API key: send {how}", "invalid_api_key")


HTTP_KEY_HOW = "'Authorization: Bearer <key>'"
WEBSOCKET_KEY_HOW = f"'Authorization: Bearer <key>' or the subprotocol '{KEY_PROTOCOL_PREFIX}<key>'"


# ------------------------------------------------------------------ readiness


def readiness(svc: Service) -> str:
    """stopping, failed (the model did not load), loading or ready."""
    if svc.shutdown_deadline is not None:
        return "stopping"
    if svc.load_error is not None:
        return "failed"
    if not svc.ready.is_set() or svc.engine is None:
        return "loading"
    return "ready"


def require_ready(svc: Service) -> None:
    """503 unless the model is loaded and the server is not stopping."""
    state = readiness(svc)
    if state == "stopping":
        raise shutting_down()
    if state == "failed":
        raise ApiError(503, f"the model failed to load: {svc.load_error}", "model_unavailable")
    if state == "loading":
        raise ApiError(503, "the model is still loading; retry shortly", "model_loading", retry_after=5)


def shutting_down() -> ApiError:
    return ApiError(503, "the server is shutting down", "shutting_down", retry_after=5)


# ------------------------------------------------------------------ the model and languages


@dataclass(frozen=True)
class ServedModel:
    """The one loaded model and the names it answers to: as configured, its folder's name, OpenAI's alias."""

    configured: str
    names: tuple[str, ...]

    @classmethod
    def of(cls, settings: Settings) -> ServedModel:
        names = (settings.model, Path(settings.model).name, OPENAI_MODEL_ALIAS)
        return cls(settings.model, tuple(dict.fromkeys(names)))

    def check(self, name: str, param: str = "model", status: int = 400) -> str:
        """`name` when the model answers to it; else `status` (400, or 404 for a model's own URL)."""
        if name not in self.names:
            raise ApiError(
                status,
                f"The model '{name}' does not exist; this server serves '{self.configured}' "
                f"(also as '{OPENAI_MODEL_ALIAS}')",
                "model_not_found",
                param=param,
            )
        return name


def language(raw: object, param: str = "language") -> str | None:
    """A language field: an ISO code (any case), or empty/'auto'/absent to detect (None)."""
    if raw is None:
        return None
    try:
        if not isinstance(raw, str):
            raise ValueError(raw)
        return language_code(raw)
    except ValueError:
        raise ApiError(400, f"unknown language code {raw!r}", "invalid_language", param=param) from None
