"""Reading a request: the API key, and the transcription options of an upload's form fields.

Every check answers 400 in OpenAI's error shape (`ApiError`) with the offending field as `param`.
"""

from __future__ import annotations

import dataclasses
import hmac
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request

from transcription.config import WHISPER_LANGUAGES, Settings, english_only_refusal

from . import formats
from .callbacks import CallbackRefused, check_callback_url
from .errors import ApiError
from .state import Service, get_service
from .uploads import Upload

OPENAI_MODEL_ALIAS = "whisper-1"
GRANULARITIES = ("word", "segment")
STREAM_FORMATS = ("json", "text")  # the response formats stream=true applies to


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


async def authorize(request: Request, svc: Annotated[Service, Depends(get_service)]) -> None:
    """The `/v1` dependency: 401 unless a key is configured and sent as `Authorization: Bearer <key>`."""
    keys = [k.encode("utf-8") for k in svc.settings.api_keys]
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    given = token.strip().encode("utf-8")
    # Compare against every key (no early exit) so timing says nothing about which key is close.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key)
    if scheme.lower() != "bearer" or not matched:
        raise ApiError(
            401, "missing or invalid API key: send 'Authorization: Bearer <key>'", "invalid_api_key"
        )


def model_names(settings: Settings) -> list[str]:
    """The names the one loaded model answers to: as configured, its folder's name, and OpenAI's alias."""
    names = [settings.model, Path(settings.model).name, OPENAI_MODEL_ALIAS]
    return list(dict.fromkeys(names))


def parse_options(settings: Settings, upload: Upload) -> Options:
    """Options from the form fields `model`, `language`, `prompt`, `temperature` and `enrich`."""
    model = upload.get("model")
    if model and model not in model_names(settings):
        raise ApiError(
            400,
            f"The model '{model}' does not exist; this server serves "
            f"'{settings.model}' (also as '{OPENAI_MODEL_ALIAS}')",
            "model_not_found",
            param="model",
        )
    return Options(
        language=_language(upload.get("language")),
        prompt=upload.get("prompt") or None,
        temperature=_temperature(upload.get("temperature")),
        enrich=upload.get_bool("enrich"),
    )


def check_language(language: str | None, multilingual: bool, model: str) -> None:
    """An English-only model would transcribe any other language as English: refused, not guessed at."""
    refused = english_only_refusal(model, multilingual, language=language)
    if refused is not None:
        raise ApiError(400, refused[1], "unsupported_language", param="language")


def check_task(task: str, multilingual: bool, model: str) -> None:
    """Translation needs a multilingual model: an English-only one has no translate task."""
    refused = english_only_refusal(model, multilingual, task=task)
    if refused is not None:
        raise ApiError(400, refused[1], "unsupported_task", param="model")


def stream(upload: Upload, response_format: str) -> bool:
    """The `stream` field: Server-Sent Events of the text as it is decoded, for the text formats only
    (json, text), as OpenAI streams them; the timed and whole-document formats need the whole file."""
    if not upload.get_bool("stream"):
        return False
    if response_format not in STREAM_FORMATS:
        raise ApiError(
            400,
            "stream=true sends the text as it is decoded and is available with response_format "
            f"{' or '.join(STREAM_FORMATS)}; {response_format!r} needs the whole file: send it without "
            "stream",
            "unsupported_value",
            param="stream",
        )
    return True


def _language(raw: str | None) -> str | None:
    language = (raw or "").strip().lower() or None
    if language == "auto":
        return None
    if language is not None and language not in WHISPER_LANGUAGES:
        raise ApiError(400, f"unknown language code {language!r}", "invalid_language", param="language")
    return language


def _temperature(raw: str | None) -> float | None:
    if raw in (None, ""):
        return None
    try:
        temperature = float(raw)
    except ValueError:
        temperature = math.nan  # fails the range check below, with the same message
    if not 0.0 <= temperature <= 1.0:
        raise ApiError(
            400, "temperature must be a number between 0 and 1", "invalid_value", param="temperature"
        )
    return temperature


def response_format(upload: Upload) -> str:
    """The `response_format` field (default json), one of `formats.RESPONSE_FORMATS`."""
    value = upload.get("response_format") or "json"
    if value not in formats.RESPONSE_FORMATS:
        raise ApiError(
            400,
            f"response_format must be one of {', '.join(formats.RESPONSE_FORMATS)}",
            "invalid_value",
            param="response_format",
        )
    return value


def granularities(upload: Upload) -> list[str]:
    """`timestamp_granularities[]` (also accepted without the brackets), each 'word' or 'segment'."""
    values = upload.get_all("timestamp_granularities[]") + upload.get_all("timestamp_granularities")
    for value in values:
        if value not in GRANULARITIES:
            raise ApiError(
                400,
                "timestamp_granularities[] takes 'word' and/or 'segment'",
                "invalid_value",
                param="timestamp_granularities",
            )
    return values


def callback_url(upload: Upload, settings: Settings) -> str | None:
    """The job's `callback_url`, when given: a well-formed http(s) URL that, unless
    SLOWER_WHISPER_CALLBACK_ALLOW_INTERNAL is on, names no internal address (checked again when sending)."""
    url = upload.get("callback_url") or None
    if url is not None:
        try:
            check_callback_url(url, settings.callback_allow_internal)
        except CallbackRefused as exc:
            raise ApiError(400, str(exc), "invalid_value", param="callback_url") from None
    return url
