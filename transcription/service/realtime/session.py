"""One live transcription session over a WebSocket: client events in, server events out.

Three tasks per session, all on the event loop: the receiver (reads and checks client events, enforces the
idle and duration limits and the real-time bound), the processor (resamples and runs turn detection in the
live sessions' own threads (hub.py), in arrival order, and starts decodes) and the writer (sends server
events in the order they were queued). What waits to be sent is bounded (MAX_QUEUED_CHARS): a client that
does not read its events is closed, and nothing it sent is held on its behalf. Decodes run in the live
decoder's threads (decode.py); their results come back to the loop. Whatever ends the session (the client
leaving, a limit), everything it started is cancelled and its audio dropped; a stopping server lets the
turns already committed complete first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from transcription.audio import SAMPLE_RATE
from transcription.enrich import levels, render
from transcription.schema import Word

from ..access import ServedModel
from ..metrics import Metrics
from .agreement import ItemText
from .audio import Resampler, decode_pcm16, seconds
from .decode import LiveDecoder, TurnResult, repeated_at_seam
from .protocol import (
    WIRE_SAMPLE_RATE,
    ClientError,
    SessionConfig,
    apply_beta_update,
    apply_ga_update,
    beta_session,
    client_event_id,
    error_event,
    expires_at,
    ga_session,
    new_id,
    parse_event,
    quoted,
    server_event,
)
from .turns import Cut, ItemAudio, LiveAudio, Partial, Paused, Resumed, Started, Stopped

log = logging.getLogger(__name__)

MAX_MANUAL_S = 120.0  # uncommitted audio without turn detection
MIN_COMMIT_S = 0.1  # as OpenAI: a commit needs at least 100 ms of audio
PROSODY_HISTORY = 200  # earlier turns kept as the session's baseline for prosody levels
CLOSE_NORMAL = 1000
CLOSE_ERROR = 1011  # "internal error"
CLOSE_POLICY = 1008  # "policy violation": a client that does not read its events
CLOSE_RESTART = 1012  # "service restart": a client may reconnect (to another replica)
CLOSE_FLUSH_S = 2.0  # time given to send the queued events before a close, and the close frame
# Server events (as JSON text) a session may have waiting for its client: far more than a reading client
# ever lets pile up (a turn's events are a few KiB), far less than a client that never reads could make the
# server hold.
MAX_QUEUED_CHARS = 1 << 20
# A stopping server lets committed turns finish (their text is worth having) within its grace period.
STOP_FINISH_S = 10.0


@dataclass
class Limits:
    max_session_s: float
    idle_timeout_s: float
    max_buffer_s: float  # seconds of audio a client may be ahead of real time

    @property
    def max_message_chars(self) -> int:
        """The largest client message: an append of `max_buffer_s` of audio (base64), 1 MiB at least."""
        return max(1 << 20, int(self.max_buffer_s * WIRE_SAMPLE_RATE * 2 * 4 / 3) + (64 << 10))


@dataclass
class _Item:
    """A stretch of speech committed as one conversation item (a turn has one or more)."""

    item_id: str
    start: int  # stream position of its audio's first sample
    text: ItemText = field(default_factory=ItemText)
    final: Future[TurnResult] | None = None  # started early (speculatively) when the speech paused
    partial_audio: np.ndarray | None = None  # the newest audio waiting for a partial decode
    appended: bool = False  # a delta appended words
    sent_tail: str = ""


@dataclass(frozen=True)
class _Span:
    """Where a committed item's audio lies in the session, for its `completed` event."""

    start_ms: int
    end_ms: int
    seconds: float
    end_of_turn: bool


class LiveSession:
    def __init__(
        self,
        ws: WebSocket,
        decoder: LiveDecoder,
        metrics: Metrics,
        config: SessionConfig,
        served: ServedModel,
        multilingual: bool,
        limits: Limits,
        stopping: asyncio.Event,
        executor: Executor,
    ) -> None:
        self.ws = ws
        self.executor = executor  # the live sessions' own threads: never behind other work (hub.py)
        self.stopping = stopping  # set when the server stops (hub.py)
        self.decoder = decoder
        self.metrics = metrics
        self.config = config
        self.served = served
        self.multilingual = multilingual
        self.limits = limits
        self.id = new_id("sess")
        self.expires_at = expires_at(limits.max_session_s)
        self.audio = LiveAudio(config.turn_detection)
        self.resampler = Resampler()
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.queued_chars = 0
        self.unread = asyncio.Event()  # set when the client left MAX_QUEUED_CHARS of events unread
        self.inbox: deque[tuple[str, Any]] = deque()
        self.inbox_ready = asyncio.Event()
        self.item: _Item | None = None  # the item being spoken
        self.previous_item: str | None = None
        self.partial: Future[str] | None = None
        self.last_completion: asyncio.Task[None] | None = None
        self.seam: list[Word] = []  # the last completed item's words (stream time) when a cut ended it
        self.tasks: set[asyncio.Task[Any]] = set()
        self.writer: asyncio.Task[None] | None = None
        self.processor: asyncio.Task[None] | None = None
        self.failure: str | None = None  # set when processing failed: the session then ends
        self.failed = asyncio.Event()
        self.ahead_s = 0.0  # leaky bucket: audio received minus real time elapsed, never below 0
        self.ahead_at = time.monotonic()
        self.manual_s = 0.0  # uncommitted audio in manual mode
        self.prosody_history: deque[dict[str, Any]] = deque(maxlen=PROSODY_HISTORY)

    # ---------------------------------------------------------------- the session's life

    async def run(self) -> str:
        """Serve the session until it ends; returns why it ended."""
        self.send(server_event("transcription_session.created", session=self._beta_session()))
        self.writer = self._spawn(self._write())
        self.processor = self._spawn(self._process())
        try:
            return await self._receive()
        finally:
            self._drop_work()
            for task in list(self.tasks):
                task.cancel()

    def _spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def _drop_work(self) -> None:
        for future in (self.partial, self.item.final if self.item else None):
            if future is not None:
                future.cancel()
        self.item = None
        self.inbox.clear()

    async def _receive(self) -> str:
        started = time.monotonic()
        idle_since = started
        receiving: asyncio.Task[dict[str, Any]] | None = None
        woken = [asyncio.ensure_future(flag.wait()) for flag in (self.stopping, self.failed, self.unread)]
        try:
            while True:
                now = time.monotonic()
                # The idle clock does not run while the server owes the client a committed turn's text.
                owed = self._owed()
                if owed is not None:
                    idle_since = now
                idle_left = idle_since + self.limits.idle_timeout_s - now
                life_left = started + self.limits.max_session_s - now
                if (ended := await self._ended(idle_left, life_left)) is not None:
                    return ended
                if receiving is None:
                    receiving = asyncio.ensure_future(self.ws.receive())
                # A pending receive is kept across these checks (no message is lost to a timeout).
                done, _ = await asyncio.wait(
                    {receiving, *woken, *([owed] if owed is not None else [])},
                    timeout=min(idle_left, life_left),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if owed is not None and owed in done:
                    idle_since = time.monotonic()  # the owed text went out now: idle from here
                if receiving not in done:
                    continue
                message, receiving = receiving.result(), None
                if message["type"] == "websocket.disconnect":
                    return "disconnected"
                idle_since = time.monotonic()
                self._handle_message(message)
        finally:
            for task in (receiving, *woken):
                if task is not None:
                    task.cancel()

    def _owed(self) -> asyncio.Task[None] | None:
        """The completion of the last committed turn while its text is still to be sent (completions go
        out in turn order, so that one is the last to finish)."""
        last = self.last_completion
        return last if last is not None and not last.done() else None

    async def _ended(self, idle_left: float, life_left: float) -> str | None:
        """Why the session ends now (after closing it), or None while it goes on."""
        if self.unread.is_set():
            return await self._close(
                "client_not_reading",
                f"the client left {MAX_QUEUED_CHARS // 1024} KiB of events unread: the session was closed",
                CLOSE_POLICY,
            )
        if self.failure is not None:
            return await self._close("server_error", f"the session failed: {self.failure}", CLOSE_ERROR)
        if self.stopping.is_set():
            await self._finish_committed()
            return await self._close("server_shutting_down", "the server is shutting down", CLOSE_RESTART)
        if life_left <= 0:
            return await self._close(
                "session_expired",
                f"the session reached its maximum duration of {self.limits.max_session_s:g} s",
            )
        if idle_left <= 0:
            return await self._close(
                "session_idle_timeout",
                f"no message for {self.limits.idle_timeout_s:g} s: the session was closed",
            )
        return None

    async def _finish_committed(self) -> None:
        """The server is stopping: no new audio is processed and the turn being spoken is dropped, but the
        turns already committed get their text, in order, within STOP_FINISH_S."""
        if self.processor is not None:
            self.processor.cancel()
        self._drop_work()
        if self.last_completion is not None:
            await asyncio.wait({self.last_completion}, timeout=STOP_FINISH_S)

    async def _close(self, code: str, message: str, close_code: int = CLOSE_NORMAL) -> str:
        """End the session from this side: the reason as an `error` event after what is queued, then the
        close frame with it. A client that does not read gets the close frame alone, at once (transport.py
        writes it past what the client left unread, and drops the connection if it never answers)."""
        self._drop_work()
        if self.unread.is_set():
            self._drop_queued()
        else:
            self._error(
                ClientError(code, message),
                "server_error" if close_code == CLOSE_ERROR else "invalid_request_error",
            )
        self.outbox.put_nowait(None)
        assert self.writer is not None
        try:
            await asyncio.wait_for(asyncio.shield(self.writer), timeout=CLOSE_FLUSH_S)
        except TimeoutError:
            self.writer.cancel()  # not reading: what it left unread is not waited for
        # The client may be gone already: nothing more to tell it then.
        with contextlib.suppress(TimeoutError, RuntimeError, WebSocketDisconnect, OSError):
            await asyncio.wait_for(self.ws.close(code=close_code, reason=message[:120]), CLOSE_FLUSH_S)
        return code

    def _drop_queued(self) -> None:
        while not self.outbox.empty():
            self.outbox.get_nowait()
        self.queued_chars = 0

    # ---------------------------------------------------------------- client events

    def _handle_message(self, message: dict[str, Any]) -> None:
        text = message.get("text")
        if text is None:
            self._error(
                ClientError("invalid_event", "binary messages are not supported: send JSON text events")
            )
            return
        if len(text) > self.limits.max_message_chars:
            self._error(
                ClientError(
                    "message_too_large",
                    f"the message has {len(text)} characters, more than {self.limits.max_message_chars}: "
                    "send audio in smaller appends",
                )
            )
            return
        event_id: str | None = None
        try:
            event = parse_event(text)
            event_id = client_event_id(event)
            self._handle(event, event_id)
        except ClientError as exc:
            exc.event_id = exc.event_id or event_id
            self._error(exc)
        except Exception as exc:  # noqa: BLE001 - a bug here must end the session with a reason, not drop it
            log.exception("live session event handling failed")
            self.failure = f"{type(exc).__name__}: {exc}"
            self.failed.set()

    def _handle(self, event: dict[str, Any], event_id: str | None) -> None:
        kind = event["type"]
        if kind == "input_audio_buffer.append":
            self._append(decode_pcm16(event.get("audio")))
        elif kind == "input_audio_buffer.commit":
            self.manual_s = 0.0
            self._queue("commit", event_id)
        elif kind == "input_audio_buffer.clear":
            self.manual_s = 0.0
            self._queue("clear", event_id)
        elif kind == "transcription_session.update":
            self._configure(
                apply_beta_update(self.config, event.get("session"), self.served, self.multilingual)
            )
            self.send(server_event("transcription_session.updated", session=self._beta_session()))
        elif kind == "session.update":
            self._configure(
                apply_ga_update(self.config, event.get("session"), self.served, self.multilingual)
            )
            self.send(
                server_event("session.updated", session=ga_session(self.id, self.config, self.expires_at))
            )
        else:
            raise ClientError(
                "unknown_event",
                f"unknown or unsupported event type {quoted(kind)} on a transcription session",
                "type",
            )

    def _append(self, pcm: np.ndarray) -> None:
        duration = seconds(pcm)
        now = time.monotonic()
        self.ahead_s = max(0.0, self.ahead_s - (now - self.ahead_at))
        self.ahead_at = now
        if self.ahead_s + duration > self.limits.max_buffer_s:
            raise ClientError(
                "buffer_full",
                f"audio is arriving faster than real time: more than {self.limits.max_buffer_s:g} s ahead; "
                "this append was dropped (send audio at real-time pace)",
                "audio",
            )
        if self.config.turn_detection is None and self.manual_s + duration > MAX_MANUAL_S:
            raise ClientError(
                "turn_too_long",
                f"the uncommitted audio would exceed {MAX_MANUAL_S:g} s; this append was dropped "
                "(send input_audio_buffer.commit first)",
                "audio",
            )
        self.ahead_s += duration
        self.manual_s += duration
        self.metrics.realtime_audio_seconds.inc(duration)
        if pcm.shape[0]:
            self._queue("audio", pcm)

    def _configure(self, config: SessionConfig) -> None:
        self.config = config
        self._queue("detection", config.turn_detection)

    def _queue(self, op: str, value: Any) -> None:
        self.inbox.append((op, value))
        self.inbox_ready.set()

    def _error(self, exc: ClientError, kind: str = "invalid_request_error") -> None:
        self.metrics.realtime_errors.labels(exc.code).inc()
        self.send(error_event(exc.code, exc.message, exc.param, exc.event_id, kind))

    # ---------------------------------------------------------------- processing, in arrival order

    async def _process(self) -> None:
        try:
            await self._process_inbox()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug here must end the session, not leave it deaf
            log.exception("live session processing failed")
            self.failure = f"{type(exc).__name__}: {exc}"
            self.failed.set()

    async def _process_inbox(self) -> None:
        while True:
            await self.inbox_ready.wait()
            self.inbox_ready.clear()
            while self.inbox:
                op, value = self.inbox.popleft()
                if op == "audio":
                    pcm = [value]
                    while self.inbox and self.inbox[0][0] == "audio":
                        pcm.append(self.inbox.popleft()[1])
                    actions = await self.loop.run_in_executor(self.executor, self._feed, np.concatenate(pcm))
                    for action in actions:
                        self._act(action)
                elif op == "commit":
                    self._commit(value)
                elif op == "clear":
                    self._clear(value)
                elif op == "detection":
                    await self.loop.run_in_executor(self.executor, self.audio.set_detection, value)
                    if value is None:
                        self._abandon_turn()

    def _feed(self, pcm: np.ndarray) -> list[Any]:
        return self.audio.feed(self.resampler.push(pcm))

    def _act(self, action: Any) -> None:
        if isinstance(action, Started):
            self.item = _Item(new_id("item"), action.start)
            self.send(
                server_event(
                    "input_audio_buffer.speech_started",
                    audio_start_ms=_ms(action.start),
                    item_id=self.item.item_id,
                )
            )
        elif self.item is None:
            return
        elif isinstance(action, Partial):
            self.item.partial_audio = action.audio
            self._start_partial()
        elif isinstance(action, Paused):
            self.item.final = self.decoder.final(action.audio, self.config)
        elif isinstance(action, Resumed):
            if self.item.final is not None:
                self.item.final.cancel()
                self.item.final = None
        elif isinstance(action, Cut):
            # Mid-turn: no speech_stopped; the turn goes on in a new item.
            self._final_of(self.item, action.audio, action.speculated)
            self._committed(self.item, action.audio, end_of_turn=False)
            self.item = _Item(new_id("item"), action.at)
        elif isinstance(action, Stopped):
            item = self.item
            self.send(
                server_event(
                    "input_audio_buffer.speech_stopped", audio_end_ms=_ms(action.end), item_id=item.item_id
                )
            )
            self._final_of(item, action.audio, action.speculated)
            self._committed(item, action.audio, end_of_turn=True)

    def _final_of(self, item: _Item, audio: ItemAudio, speculated: bool) -> None:
        """The item's final decode: the speculative one when it had this audio, else a new one."""
        if speculated and item.final is not None:
            return
        if item.final is not None:
            item.final.cancel()
        item.final = self.decoder.final(audio, self.config)

    def _commit(self, event_id: str | None) -> None:
        if self.audio.held_s < MIN_COMMIT_S:
            self._error(
                ClientError(
                    "input_audio_buffer_commit_empty",
                    f"the buffer holds {self.audio.held_s * 1000:.0f} ms of audio; a commit needs at least "
                    f"{MIN_COMMIT_S * 1000:.0f} ms",
                    event_id=event_id,
                )
            )
            return
        start, audio = self.audio.take()
        item = self.item or _Item(new_id("item"), start)
        self._final_of(item, audio, speculated=False)
        self._committed(item, audio, end_of_turn=True)

    def _committed(self, item: _Item, audio: ItemAudio, end_of_turn: bool) -> None:
        self.send(
            server_event(
                "input_audio_buffer.committed", previous_item_id=self.previous_item, item_id=item.item_id
            )
        )
        self.previous_item = item.item_id
        self.item = None
        assert item.final is not None
        end = item.start + int(round(audio.seconds * SAMPLE_RATE))
        span = _Span(_ms(item.start), _ms(end), audio.seconds, end_of_turn)
        self.last_completion = self._spawn(self._complete(item, item.final, span, self.last_completion))

    def _clear(self, event_id: str | None) -> None:
        self.audio.clear()
        self._abandon_turn()
        self.send(server_event("input_audio_buffer.cleared"))

    def _abandon_turn(self) -> None:
        if self.item is not None and self.item.final is not None:
            self.item.final.cancel()
        self.item = None

    # ---------------------------------------------------------------- partials and finals

    def _start_partial(self) -> None:
        item = self.item
        if self.partial is not None or item is None or item.partial_audio is None or item.final is not None:
            return
        audio, item.partial_audio = item.partial_audio, None
        self.partial = self.decoder.partial(audio, self.config)
        self.partial.add_done_callback(lambda f: self.loop.call_soon_threadsafe(self._partial_done, item, f))

    def _partial_done(self, item: _Item, future: Future[str]) -> None:
        if self.partial is future:
            self.partial = None
        # Text that arrives during a pause (the speculative final under way) is still shown.
        if future.cancelled() or item is not self.item:
            self._start_partial()
            return
        if future.exception() is not None:
            log.warning("partial decode failed: %r", future.exception())
        else:
            new = item.text.update(future.result())
            tail = " ".join(item.text.tail)
            if new or tail != item.sent_tail:
                self.metrics.realtime_partials.inc()
                self._delta(item, new, tail)
        self._start_partial()

    def _delta(self, item: _Item, new: list[str], tail: str) -> None:
        """Stable words appended (`delta`) and the tail after them (`slower_whisper.tail`), each written to
        follow what came before it as is: a client shows the deltas so far, then the newest tail."""
        text = (" " if item.appended and new else "") + " ".join(new)
        item.appended = item.appended or bool(new)
        item.sent_tail = tail
        self.send(
            server_event(
                "conversation.item.input_audio_transcription.delta",
                item_id=item.item_id,
                content_index=0,
                delta=text,
                slower_whisper={"tail": (" " if item.appended and tail else "") + tail},
            )
        )

    async def _complete(
        self, item: _Item, final: Future[TurnResult], span: _Span, before: asyncio.Task[None] | None
    ) -> None:
        committed_at = time.perf_counter()
        try:
            result: TurnResult | None = await asyncio.wrap_future(final)
            failure = None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported to the client as OpenAI reports a failed item
            log.error("live turn transcription failed", exc_info=exc)
            result, failure = None, f"{type(exc).__name__}: {exc}"
        if before is not None:
            await asyncio.shield(before)  # completions go out in commit order
        if result is None:
            self.seam = []
            self._failed(item, failure)
            return
        result = self._past_seam(result, span)
        rest = item.text.remainder(result.text)
        if rest is None:
            self.metrics.realtime_partial_revisions.inc()
        elif rest:
            self._delta(item, rest, "")  # the deltas of an item add up to its final text, as OpenAI's do
        extra: dict[str, Any] = {"language": result.language}
        if result.audio_state is not None and result.segment is not None:
            extra["audio_state"] = self._with_session_levels(result.segment)
        extra.update(start_ms=span.start_ms, end_ms=span.end_ms, end_of_turn=span.end_of_turn)
        self.send(
            server_event(
                "conversation.item.input_audio_transcription.completed",
                item_id=item.item_id,
                content_index=0,
                transcript=result.text,
                usage={"type": "duration", "seconds": round(span.seconds, 3)},
                slower_whisper=extra,
            )
        )
        self.metrics.realtime_turns.inc()
        self.metrics.realtime_turn_seconds.observe(time.perf_counter() - committed_at)

    def _past_seam(self, result: TurnResult, span: _Span) -> TurnResult:
        """The item less a word the item before it (cut mid-turn) already gave; runs in commit order."""
        at = span.start_ms / 1000
        words = [dataclasses.replace(w, start=w.start + at, end=w.end + at) for w in result.words]
        repeated = repeated_at_seam(self.seam, words)
        self.seam = [] if span.end_of_turn else words[repeated:]
        return result.without_first(repeated)

    def _failed(self, item: _Item, failure: str | None) -> None:
        self.metrics.realtime_errors.labels("transcription_failed").inc()
        self.send(
            server_event(
                "conversation.item.input_audio_transcription.failed",
                item_id=item.item_id,
                content_index=0,
                error={
                    "type": "server_error",
                    "code": "transcription_failed",
                    "message": failure,
                    "param": None,
                },
            )
        )

    def _with_session_levels(self, segment: dict[str, Any]) -> dict[str, Any]:
        """Levels against the session's earlier turns (one voice's usual range), then the words for them."""
        self.prosody_history.append(segment)
        history = list(self.prosody_history)
        levels.assign_levels(history)
        state = segment["audio_state"]
        state["rendering"] = render.render(state, max(0.0, segment["end"] - segment["start"]))
        return state

    # ---------------------------------------------------------------- server events out

    def send(self, event: dict[str, Any]) -> None:
        """Queue a server event; past MAX_QUEUED_CHARS unsent the client is not reading: the session ends
        (the receiver closes it) and nothing more is queued."""
        if self.unread.is_set():
            return
        text = json.dumps(event, separators=(",", ":"))
        if self.queued_chars + len(text) > MAX_QUEUED_CHARS:
            self.metrics.realtime_errors.labels("client_not_reading").inc()
            self.unread.set()
            self._drop_queued()
            return
        self.queued_chars += len(text)
        self.outbox.put_nowait(text)

    async def _write(self) -> None:
        while (text := await self.outbox.get()) is not None:
            self.queued_chars -= len(text)
            try:
                await self.ws.send_text(text)
            except (RuntimeError, WebSocketDisconnect, OSError):
                return  # the client is gone; the receiver sees it and ends the session

    def _beta_session(self) -> dict[str, Any]:
        return beta_session(self.id, self.config, self.expires_at)


def _ms(sample: int) -> int:
    return int(round(sample * 1000 / SAMPLE_RATE))
