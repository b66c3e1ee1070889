"""`stream=true`: a transcription sent as Server-Sent Events in OpenAI's shape while it is decoded.

The request is admitted, queued and run like any other (work.py): the same document path, the same
document. Its worker reports two things back to the event loop: that the upload decoded (only then does the
200 go out, so undecodable audio is still a plain 400), and each segment as the engine decodes it, sent at
once as a `transcript.text.delta`. The finished document's text ends the stream as `transcript.text.done`;
the deltas join to exactly that text. A failure after the stream started is an `error` event (the official
client raises it as an APIError). A client that goes away stops the transcription at its next segment.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope, Send

from transcription.schema import Segment, sanitize

from . import access, work
from .errors import ApiError
from .scheduler import ShuttingDown, Ticket
from .state import Service

MEDIA_TYPE = "text/event-stream"
KEEPALIVE_S = 15.0  # an SSE comment this often while nothing else is sent, for proxies' idle timeouts
_KEEPALIVE = b": keep-alive\n\n"

# run(on_decoded=..., on_segment=...) -> the finished document; called in a worker thread.
Run = Callable[..., dict[str, Any]]


# ------------------------------------------------------------------ events


def sse(payload: dict[str, Any]) -> bytes:
    """One event: a single `data:` line (JSON never holds a raw newline) and the blank line ending it."""
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n\n"


def delta_event(delta: str) -> bytes:
    return sse({"type": "transcript.text.delta", "delta": delta})


def done_event(doc: dict[str, Any]) -> bytes:
    # Usage as OpenAI bills Whisper: seconds of audio (its token usage is for its token-billed models).
    usage = {"type": "duration", "seconds": doc.get("duration", 0.0)}
    return sse({"type": "transcript.text.done", "text": doc.get("text", ""), "usage": usage})


def error_event(error: ApiError) -> bytes:
    return sse({"type": "error", **error.body()})


def segment_text(seg: Segment) -> str:
    """The text a segment adds to the document's, by the document's own rule (`schema.sanitize`): stripped,
    and nothing for a segment without a letter or digit."""
    kept = sanitize([seg], math.inf)
    return kept[0].text if kept else ""


# ------------------------------------------------------------------ worker thread -> event loop


class Feed:
    """What one streamed request's worker reports to the event loop: decoded, then each delta."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.decoded = asyncio.Event()
        self.deltas: asyncio.Queue[str] = asyncio.Queue()
        self._gone = threading.Event()
        self._sent_text = False

    def on_decoded(self) -> None:
        self._loop.call_soon_threadsafe(self.decoded.set)

    def on_segment(self, seg: Segment) -> None:
        """In the worker: queue the segment's delta; once the client has gone, stop the transcription."""
        if self._gone.is_set():
            raise work.Abandoned("the client of a streamed transcription went away")
        text = segment_text(seg)
        if not text:
            return
        # The document joins segment texts with one space: the deltas add up to exactly its text.
        delta = " " + text if self._sent_text else text
        self._sent_text = True
        self._loop.call_soon_threadsafe(self.deltas.put_nowait, delta)

    def abandon(self) -> None:
        self._gone.set()


# ------------------------------------------------------------------ the response


async def respond(
    request: Request, svc: Service, ticket: Ticket, run: Run, cleanup: Callable[[], None]
) -> StreamingResponse:
    """Start `run` on the ticket and answer with its event stream once the upload has decoded.

    Until then a failure is an ordinary error response and the caller still owns the ticket; from the
    moment this returns, the stream calls `cleanup` when it ends, however it ends."""
    feed = Feed(asyncio.get_running_loop())
    task = asyncio.ensure_future(
        svc.scheduler.run(ticket, lambda: run(on_decoded=feed.on_decoded, on_segment=feed.on_segment))
    )
    task.add_done_callback(_observe)
    decoded = asyncio.ensure_future(feed.decoded.wait())
    gone = asyncio.ensure_future(work.disconnected(request))
    try:
        await asyncio.wait({task, decoded, gone}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        _stop(feed, task)
        raise
    finally:
        decoded.cancel()
        gone.cancel()
    if task.done():
        _raise_failure(task)  # failed before or just after decoding: a plain error response
    elif not feed.decoded.is_set():  # the client left while waiting for a worker or the decode
        _stop(feed, task)
        raise ClientDisconnect

    def end() -> None:
        if not task.done():
            _stop(feed, task)
        cleanup()

    return EventStream(_events(feed, task), end)


class EventStream(StreamingResponse):
    """The SSE response; `on_end` runs once when it ends, however it ends (sent in full, the client gone,
    or cancelled before the first byte, when the body's generator never even started)."""

    def __init__(self, events: AsyncIterator[bytes], on_end: Callable[[], None]) -> None:
        super().__init__(
            events, media_type=MEDIA_TYPE, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        self._on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_end()


async def _events(feed: Feed, task: asyncio.Future[dict[str, Any]]) -> AsyncIterator[bytes]:
    """Deltas as they come, then `done` or `error` (on a disconnect Starlette cancels this generator)."""
    while True:
        get = asyncio.ensure_future(feed.deltas.get())
        try:
            await asyncio.wait({get, task}, timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            get.cancel()
        if get.done() and not get.cancelled():
            yield delta_event(get.result())
        elif task.done():
            break
        else:
            yield _KEEPALIVE
    # The worker queued its deltas before it returned, so they are all here now.
    while not feed.deltas.empty():
        yield delta_event(feed.deltas.get_nowait())
    try:
        doc = _result(task)
    except ApiError as exc:
        yield error_event(exc)
        return
    yield done_event(doc)


def _stop(feed: Feed, task: asyncio.Future[Any]) -> None:
    """Stop the work: a waiting task gives its place back; a running one ends at its next segment."""
    feed.abandon()
    task.cancel()


def _result(task: asyncio.Future[dict[str, Any]]) -> dict[str, Any]:
    """The finished document, or the task's failure as an ApiError."""
    try:
        return task.result()
    except ApiError:
        raise
    except (ShuttingDown, asyncio.CancelledError):
        raise access.shutting_down() from None
    except Exception as exc:  # noqa: BLE001 - mapped to an API error with the cause
        raise work.api_error(exc) from exc


def _raise_failure(task: asyncio.Future[dict[str, Any]]) -> None:
    if task.cancelled() or task.exception() is not None:
        _result(task)


def _observe(task: asyncio.Future[Any]) -> None:
    # An abandoned stream never reads its task's outcome; reading it here keeps asyncio from logging it.
    if not task.cancelled():
        task.exception()
