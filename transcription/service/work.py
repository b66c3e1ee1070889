"""Running transcriptions: admission to the worker pool, the call in a worker thread, and failures mapped
to API errors."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import ClientDisconnect, Request

from . import access, speaker_options
from .errors import ApiError
from .scheduler import QueueFull, ShuttingDown, Ticket
from .speaker_options import Reference
from .state import Service

if TYPE_CHECKING:
    from transcription.asr import AsrOptions, AsrResult
    from transcription.audio import WavReader
    from transcription.per_file import Transcriber
    from transcription.schema import Segment

    from .request import TranscriptionRequest

log = logging.getLogger(__name__)
T = TypeVar("T")


class Abandoned(Exception):
    """Raised by a streamed request's segment hook once its client has gone: the transcription stops there."""


def transcribe(
    svc: Service,
    src: Path,
    wav: Path,
    label: str,
    request: TranscriptionRequest,
    *,
    on_decoded: Callable[[], None] | None = None,
    on_segment: Callable[[Segment], None] | None = None,
    references: Sequence[Reference] = (),
) -> dict[str, Any]:
    """Runs in a worker thread: one upload's Stage 1 (and Stage 2 when asked) into a finished document.

    A streamed request hears when the upload has been decoded (`on_decoded`) and each segment as it is
    decoded (`on_segment`); the document is the same either way. With speakers asked for (the request's
    speaker fields, or the server's ENABLE_DIARIZATION), `references` name them from their clips, decoded
    here first: inside the request's place, like the rest of its audio (a bad clip is its 400)."""
    from transcription import per_file, speakers
    from transcription.asr import AsrOptions

    known_speakers = speaker_options.decode_references(list(references)) if references else None
    settings = request.settings_for(svc.settings)
    opts = request.options
    start = time.perf_counter()
    try:
        decoded = per_file.decode(src, wav)
        if on_decoded is not None:
            on_decoded()
        doc = per_file.transcribe_and_finish(
            svc.engine,
            settings,
            decoded,
            wav,
            file_label=label,
            options=AsrOptions.from_settings(
                settings,
                language=opts.language,
                initial_prompt=opts.prompt,
                temperature=opts.temperature,
                task=request.task,
            ),
            enrich=request.enriches(settings),
            transcriber=_transcriber(svc, on_segment),
            known_speakers=known_speakers,
        )
        if settings.diarize and (error := speakers.failure(doc)) is not None:
            raise error
    except Abandoned:
        svc.metrics.transcriptions.labels("abandoned").inc()
        raise
    except BaseException:
        svc.metrics.transcriptions.labels("failed").inc()
        raise
    took = time.perf_counter() - start
    svc.work_seconds = 0.8 * svc.work_seconds + 0.2 * took
    svc.metrics.transcriptions.labels("ok").inc()
    svc.metrics.audio_seconds.inc(float(doc.get("duration") or 0.0))
    svc.metrics.speech_retried.inc(doc["meta"].get("recovery", {}).get("retried", 0))
    lost = doc["meta"].get("speech_without_text", [])
    svc.metrics.speech_without_text.inc(len(lost))
    svc.metrics.speech_without_text_seconds.inc(sum(span["end"] - span["start"] for span in lost))
    return doc


def _transcriber(svc: Service, on_segment: Callable[[Segment], None] | None) -> Transcriber | None:
    """The engine's per-file path (None: per_file's default), or the shared packer in throughput mode, with
    `on_segment` told of every segment."""
    if svc.packer is not None:
        packer = svc.packer
        if on_segment is None:
            return packer.transcribe

        def packed(reader: WavReader, options: AsrOptions) -> AsrResult:
            # A streamed request's chunks go ahead of other files' (someone is watching the text come). The
            # packer hands a file's segments back when its last chunk is done: they are told then.
            result = packer.transcribe(reader, options, priority=True)
            for seg in result.segments:
                on_segment(seg)
            return result

        return packed
    if on_segment is None:
        return None
    engine = svc.engine
    assert engine is not None
    return lambda reader, options: engine.transcribe(reader, options, on_segment=on_segment)


def describe(exc: BaseException) -> tuple[str, str]:
    """(message, code) for a failed transcription: the upload's fault (audio_too_long, invalid_audio) or
    ours."""
    from transcription.audio import DecodeError, TooLong

    if isinstance(exc, TooLong):
        return str(exc), "audio_too_long"
    if isinstance(exc, DecodeError):
        return f"could not decode the upload as audio: {exc}", "invalid_audio"
    return f"{type(exc).__name__}: {exc}", "transcription_failed"


# The upload's faults, by code: their status.
_UPLOAD_FAULTS = {"audio_too_long": 413, "invalid_audio": 400}


def api_error(exc: BaseException) -> ApiError:
    message, code = describe(exc)
    if code in _UPLOAD_FAULTS:
        return ApiError(_UPLOAD_FAULTS[code], message, code, param="file")
    log.error("transcription failed", exc_info=exc)
    return ApiError(500, message, code)


# ------------------------------------------------------------------ admission


def admit(svc: Service) -> Ticket:
    """A place for a synchronous transcription, or 429 (queue full) / 503 (shutting down)."""
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
        raise access.shutting_down() from None


def check_room(svc: Service) -> None:
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
        raise access.shutting_down() from None


# ------------------------------------------------------------------ waiting for the result


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, giving up (and cancelling it) if the client goes away first."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(disconnected(request))
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
        raise api_error(exc) from exc


async def disconnected(request: Request) -> None:
    # The body has been read, so the next ASGI message for this request can only be the disconnect.
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
