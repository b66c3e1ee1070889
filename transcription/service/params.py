"""Reading an HTTP request: the API key (access.py's rule), and the transcription options of an upload's
form fields.

Every check answers 400 in OpenAI's error shape (`ApiError`) with the offending field as `param`.
"""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, Request

from transcription.config import Settings, english_only_refusal

from . import access, formats
from .errors import ApiError
from .jobs.callbacks import CallbackRefused, check_callback_url
from .request import Options
from .state import Service, get_service
from .uploads import Upload

GRANULARITIES = ("word", "segment")
STREAM_FORMATS = ("json", "text")  # the response formats stream=true applies to


async def authorize(request: Request, svc: Annotated[Service, Depends(get_service)]) -> None:
    """The `/v1` dependency: 401 unless a key is configured and sent as `Authorization: Bearer <key>`."""
    token = access.bearer_token(request.headers.get("authorization", ""))
    access.require_key(svc.settings, token, access.HTTP_KEY_HOW)


def parse_options(settings: Settings, upload: Upload) -> Options:
    """Options from the form fields `model`, `language`, `prompt`, `temperature` and `enrich`."""
    model = upload.get("model")
    if model:
        access.ServedModel.of(settings).check(model)
    return Options(
        language=access.language(upload.get("language")),
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
