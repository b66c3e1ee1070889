"""Live decodes: their own threads and queue, apart from the file queue, with finals ahead of partials.

Files and jobs wait in the service's scheduler; live sessions never do. Their decodes run here on the
shared engine (in throughput mode through the shared packer, ahead of files: packing.py), on as many
threads as the engine has workers. An item's final decode goes before any waiting partial, and partials
never hold every thread, so a final waits for at most one running decode. On CPU without packing the
engine's workers are shared with file transcriptions: a live decode then waits at most for one model call
of a file (one 30 s window), never for the file queue.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from transcription.asr import AsrOptions, AsrResult
from transcription.audio import SAMPLE_RATE
from transcription.config import Settings
from transcription.schema import Word

from .protocol import SessionConfig
from .turns import ItemAudio

if TYPE_CHECKING:
    from transcription.asr import Engine
    from transcription.packing import SharedPacker

log = logging.getLogger(__name__)
T = TypeVar("T")

FINAL, PARTIAL = 0, 1


@dataclass
class TurnResult:
    text: str
    language: str | None
    duration: float
    words: list[Word] = dataclasses.field(default_factory=list)  # times in seconds from the item's start
    audio_state: dict[str, Any] | None = None  # Stage 2 prosody, when the session asked for it
    segment: dict[str, Any] | None = None  # the turn as one document segment (for the session's levels)

    def without_first(self, n: int) -> TurnResult:
        """The item less its first `n` words (a word the previous item already gave: `repeated_at_seam`).
        Its prosody stays that of the whole item's audio: the dropped word is a fraction of a second."""
        if n <= 0:
            return self
        words = self.words[n:]
        turn = dataclasses.replace(self, text="".join(w.word for w in words).strip(), words=words)
        if self.segment is not None:
            kept = self.segment["words"][n:]
            start = kept[0]["start"] if kept else self.segment["end"]
            turn.segment = {**self.segment, "start": start, "text": turn.text, "words": kept}
        return turn


class LiveDecoder:
    def __init__(self, engine: Engine, packer: SharedPacker | None, settings: Settings, threads: int) -> None:
        self.engine = engine
        self.packer = packer
        self.settings = settings
        self.threads = max(1, threads)
        self.partial_limit = max(1, self.threads - 1)
        self._heap: list[tuple[int, int, Future[Any], Callable[[], Any]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._partials_running = 0
        self._closed = False
        self._workers = [
            threading.Thread(target=self._work, name=f"live-{i}", daemon=True) for i in range(self.threads)
        ]
        for w in self._workers:
            w.start()

    # ---------------------------------------------------------------- what a session asks for

    def final(self, audio: ItemAudio, config: SessionConfig) -> Future[TurnResult]:
        """An item's text from a full decode with the service's options (its neighbours' audio heard, their
        words dropped); prosody too when asked."""
        return self._submit(FINAL, lambda: self._final(audio, config))

    def partial(self, audio: np.ndarray, config: SessionConfig) -> Future[str]:
        """A quicker decode of an item so far."""
        return self._submit(PARTIAL, lambda: text_of(self._transcribe(audio, self._partial_options(config))))

    def _final(self, audio: ItemAudio, config: SessionConfig) -> TurnResult:
        result = own_words(self._transcribe(audio.samples, self._final_options(config)), audio)
        offset = audio.start / SAMPLE_RATE
        words = [
            dataclasses.replace(w, start=w.start - offset, end=w.end - offset)
            for s in result.segments
            for w in s.words
        ]
        turn = TurnResult(text_of(result), result.language, result.duration, words)
        if config.enrich:
            turn.segment = _turn_segment(result)
            turn.audio_state = self._prosody(turn.segment, audio.samples, result.language)
        return turn

    def _final_options(self, config: SessionConfig) -> AsrOptions:
        # As for an upload, but never the batched pipeline (an item is one window: batching one chunk only
        # changes its numerics); and the endpoint names the task, as /v1/audio/transcriptions does. Word
        # times tell the item's words from its neighbours'.
        options = AsrOptions.from_settings(
            self.settings, language=config.language, initial_prompt=config.prompt, task="transcribe"
        )
        return dataclasses.replace(options, batch_size=None, word_timestamps=True)

    def _partial_options(self, config: SessionConfig) -> AsrOptions:
        # The final's options (so partials agree with the final text as often as they can), less what only
        # costs time here: word alignment and the temperature fallback's retries.
        return dataclasses.replace(
            self._final_options(config),
            temperature=0.0,
            word_timestamps=False,
            hallucination_silence_threshold=None,
            recover=False,  # the final decodes the whole turn again anyway
        )

    def _transcribe(self, audio: np.ndarray, options: AsrOptions) -> AsrResult:
        if self.packer is not None:
            return self.packer.transcribe_samples(audio, options, priority=True)
        return self.engine.transcribe(audio, options)

    def _prosody(self, segment: dict[str, Any], audio: np.ndarray, language: str | None) -> dict[str, Any]:
        from transcription.enrich import enrich_or_mark_failed

        # Prosody only: emotion would cost a second model's inference on every turn.
        settings = dataclasses.replace(self.settings, prosody=True, emotion=False)
        doc = {"segments": [segment], "language": language, "meta": {}}
        enrich_or_mark_failed(doc, audio, settings)
        return segment["audio_state"]

    # ---------------------------------------------------------------- the threads

    def _submit(self, priority: int, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._cond:
            if self._closed:
                future.set_exception(RuntimeError("the server is shutting down"))
                return future
            heapq.heappush(self._heap, (priority, next(self._seq), future, fn))
            self._cond.notify()
        return future

    def _next(self) -> tuple[int, Future[Any], Callable[[], Any]] | None:
        with self._cond:
            while True:
                if self._closed:
                    return None
                if self._heap and (self._heap[0][0] == FINAL or self._partials_running < self.partial_limit):
                    priority, _, future, fn = heapq.heappop(self._heap)
                    if not future.set_running_or_notify_cancel():
                        continue  # cancelled while waiting (a resumed turn, a gone session)
                    if priority == PARTIAL:
                        self._partials_running += 1
                    return priority, future, fn
                self._cond.wait()

    def _work(self) -> None:
        while (job := self._next()) is not None:
            priority, future, fn = job
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the session, which reports it
                future.set_exception(exc)
            finally:
                if priority == PARTIAL:
                    with self._cond:
                        self._partials_running -= 1
                        self._cond.notify_all()

    def close(self, timeout: float) -> bool:
        """Stop taking decodes, cancel those waiting, and join the threads (a running decode finishes
        first). False when one is still running after `timeout` seconds."""
        with self._cond:
            self._closed = True
            waiting = [item[2] for item in self._heap]
            self._heap.clear()
            self._cond.notify_all()
        for future in waiting:
            future.cancel()
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        return not self.alive

    @property
    def alive(self) -> bool:
        return any(w.is_alive() for w in self._workers)


def own_words(result: AsrResult, audio: ItemAudio) -> AsrResult:
    """The decode less the words of the neighbouring items: those ending before the item's own audio, or
    centred after its end. Whisper often stretches the first word after a pause back over it, so a centre
    rule dropped jfk's soft "ask" at a pause cut. A word across a mid-turn cut can so be kept by both items;
    the session drops the second copy (`repeated_at_seam`)."""
    if audio.start == 0 and audio.end is None:
        return result
    start = audio.start / SAMPLE_RATE
    end = math.inf if audio.end is None else audio.end / SAMPLE_RATE
    kept = []
    for seg in result.segments:
        words = [w for w in seg.words if w.end > start and (w.start + w.end) / 2 < end]
        if words:
            text = "".join(w.word for w in words)
            kept.append(
                dataclasses.replace(seg, start=words[0].start, end=words[-1].end, text=text, words=words)
            )
    return dataclasses.replace(result, segments=kept)


SEAM_WORDS = 3  # the longest run of words looked for at the seam


def repeated_at_seam(before: list[Word], after: list[Word]) -> int:
    """How many of `after`'s first words repeat `before`'s last ones: the same words (case and punctuation
    aside), each pair overlapping for at least half the shorter word. Both in the stream's time. A word said
    twice is two stretches of audio one after the other, so the overlap tells a real "the the" from one word
    decoded in both items at a cut."""
    for n in range(min(SEAM_WORDS, len(before), len(after)), 0, -1):
        pairs = zip(before[-n:], after[:n], strict=True)
        if all(_norm(a.word) == _norm(b.word) and _overlaps(a, b) for a, b in pairs):
            return n
    return 0


def _norm(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


def _overlaps(a: Word, b: Word) -> bool:
    shared = min(a.end, b.end) - max(a.start, b.start)
    return shared > 0 and shared >= 0.5 * min(a.end - a.start, b.end - b.start)


def text_of(result: AsrResult) -> str:
    return " ".join(s.text.strip() for s in result.segments if s.text.strip())


def _turn_segment(result: AsrResult) -> dict[str, Any]:
    """The turn as one segment (its words and times), for Stage 2."""
    segs = result.segments
    start = segs[0].start if segs else 0.0
    end = segs[-1].end if segs else result.duration
    return {
        "id": 0,
        "start": round(start, 3),
        "end": round(end, 3),
        "text": text_of(result),
        "words": [w.to_dict() for s in segs for w in s.words],
    }
