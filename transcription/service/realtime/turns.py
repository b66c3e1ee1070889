"""A live session's audio at 16 kHz and where its turns begin and end.

With server VAD a turn starts at the first frame whose speech probability reaches the threshold and stops
once the probability has stayed below `threshold - 0.15` (Silero's own hysteresis) for the silence
duration. The start uses the same hysteresis backwards: speech above `threshold - 0.15` just before the
trigger, with no silence as long as the silence duration in between, belongs to the turn (at most
SOFT_ONSET_S of it). A soft first word ("ask" in jfk's "ask not" scores 0.4-0.6) otherwise fell outside
the prefix padding when a louder word triggered the turn, and was lost.

A turn is committed as one or more items. Mid-turn, the item so far is committed as its own (`Cut`) at a
natural boundary, so its words become final without waiting for the end of a long turn: when speech resumes
after a pause of at least CUT_PAUSE_S once the item holds MIN_ITEM_S, or, with no such pause, once it
reaches MAX_ITEM_S, at the quietest frame of its last DIP_WINDOW_S (never during a pause: the pause decides
first). The next item starts where the cut is, and a turn has no length limit of its own. The item after a
cut is decoded with CONTEXT_S of the item before it in front (`ItemAudio`). A pause's cut is the pause's
speculative decode (below) kept as the item's final: the item ends SPECULATE_AFTER_S into the pause, as a
turn does, and is final about when speech resumes (hearing the next speech was tried and cost latency for
no accuracy on held-out data: docs/service.md). A length cut, inside speech, also hears up to CONTEXT_S of
the next item (what has arrived when it is cut), so that a word the cut goes through is heard whole.

Sooner, after `SPECULATE_AFTER_S` of a pause, the item's audio is handed out (`Paused`) so its final
decode can start while the server is still waiting to see whether the speaker goes on: when the silence
holds, the text is ready about when the turn is committed; when speech resumes, it is the final of the
item the pause cuts, or else dropped (`Resumed`). The audio of an item is from `prefix_padding_ms` before
the speech (or from the cut before it) to `SPECULATE_AFTER_S` into the pause (or to the cut). The
constants, and the data they were chosen on, are in docs/service.md ("Live sessions").

Without turn detection (manual mode) the audio accumulates until the client commits or clears it.

One object per session, used from one thread at a time (the session's processing step); positions are
sample indices of the session's whole 16 kHz stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transcription.audio import SAMPLE_RATE

from .protocol import TurnDetection
from .vad import FRAME, StreamingVad

SPECULATE_AFTER_S = 0.16  # silence before the final decode starts (faster-whisper's own VAD gap: 160 ms)
PARTIAL_STEP_S = 0.5  # new speech between two partial decodes
FIRST_PARTIAL_S = 0.3  # speech before a turn's first partial decode (its first text)
MIN_ITEM_S = 2.0  # an item is long enough to be cut at a pause
CUT_PAUSE_S = 0.2  # the pause that cuts it (from the first quiet frame to speech again)
MAX_ITEM_S = 7.0  # an item is cut here without a pause (always well inside one Whisper window)
DIP_WINDOW_S = 1.5  # ... at its quietest frame of this last stretch
# Audio of the neighbouring item decoded with an item (the words there dropped by their times): the item
# after a cut starts with the end of the one before, the one before a length cut ends with the start of the
# next (a word the cut went through is heard whole by both).
CONTEXT_S = 1.0
SOFT_ONSET_S = 1.0  # how far back before the trigger a soft onset may start a turn
_HYSTERESIS = 0.15


@dataclass
class Started:
    start: int  # first sample of the turn's audio (prefix padding included)


@dataclass
class Partial:
    audio: np.ndarray  # the turn so far


@dataclass
class ItemAudio:
    """An item's audio for its final decode, with the neighbours' audio around it: its own words are those
    from `start` to `end` (sample offsets in `samples`; `end` None: to the end)."""

    samples: np.ndarray
    start: int = 0
    end: int | None = None

    @property
    def seconds(self) -> float:
        stop = self.samples.shape[0] if self.end is None else self.end
        return (stop - self.start) / SAMPLE_RATE


@dataclass
class Paused:
    audio: ItemAudio  # the item's audio if the silence holds


@dataclass
class Resumed:
    pass


@dataclass
class Cut:
    at: int  # where the item ends and the next one of the same turn starts
    audio: ItemAudio
    speculated: bool = False  # a pause's cut: the same audio went out in `Paused` (its decode is under way)


@dataclass
class Stopped:
    end: int  # where the silence was confirmed (OpenAI's audio_end_ms)
    audio: ItemAudio
    speculated: bool  # the same audio went out in `Paused` (its decode is under way)


Action = Started | Partial | Paused | Resumed | Cut | Stopped


class LiveAudio:
    def __init__(self, detection: TurnDetection | None) -> None:
        self.total = 0  # samples received
        self._chunks: list[np.ndarray] = []
        self._start = 0  # stream position of the first held sample
        self._vad: StreamingVad | None = None
        self._vad_at = 0  # stream position of the VAD's first frame
        self.detection = detection
        self._reset_turn()
        self.set_detection(detection)

    # ---------------------------------------------------------------- configuration

    def set_detection(self, detection: TurnDetection | None) -> None:
        """A new turn-detection set-up takes effect from the next frame. Turning detection off keeps the held
        audio (the next commit takes it) but forgets a turn in progress."""
        self.detection = detection
        if detection is not None and self._vad is None:
            self._vad = StreamingVad()
            self._vad_at = self.total
        elif detection is None:
            self._vad = None
            self._reset_turn()

    def _reset_turn(self) -> None:
        self.in_speech = False
        self._item_start = 0  # audio start of the turn's current item (the first: padding included)
        self._lead = 0  # samples before it of the item before (CONTEXT_S after a cut, else none)
        self._dip_at: int | None = None  # the quietest frame near MAX_ITEM_S (a length cut's place)
        self._dip_p = 2.0
        self._silence_at: int | None = None  # first frame below the hysteresis threshold
        self._paused: ItemAudio | None = None  # the audio `Paused` gave in this pause (its decode under way)
        self._partial_at = 0
        self._soft_from: int | None = None  # between turns: start of the speech-like frames (`_soft_frame`)
        self._soft_quiet_at: int | None = None

    # ---------------------------------------------------------------- audio in

    @property
    def held_s(self) -> float:
        return (self.total - self._start) / SAMPLE_RATE

    def feed(self, samples: np.ndarray) -> list[Action]:
        if samples.shape[0]:
            self._chunks.append(samples)
            self.total += samples.shape[0]
        if self._vad is None or self.detection is None:
            return []
        actions: list[Action] = []
        probs = self._vad.push(samples)
        first = self.total - (self.total - self._vad_at) % FRAME - probs.shape[0] * FRAME
        for i, p in enumerate(probs):
            self._frame(float(p), first + i * FRAME, actions)
        if not self.in_speech:
            # Audio a turn starting in the next frames may need: a soft onset, its padding, a frame back.
            self._trim(self.total - self._padding() - FRAME - int(SOFT_ONSET_S * SAMPLE_RATE))
        return actions

    def _frame(self, p: float, at: int, actions: list[Action]) -> None:
        td = self.detection
        assert td is not None
        end = at + FRAME
        low = max(td.threshold - _HYSTERESIS, 0.01)
        if not self.in_speech:
            self._soft_frame(p >= low, at, end)
            if p >= td.threshold:
                assert self._soft_from is not None
                onset = max(self._soft_from, at - int(SOFT_ONSET_S * SAMPLE_RATE))
                self.in_speech = True
                self._item_start = max(self._start, onset - self._padding())
                self._lead = 0
                self._first_partial_after(end)
                actions.append(Started(self._item_start))
            return
        if p >= td.threshold:
            if self._silence_at is not None:
                self._speech_again(at, actions)
            self._silence_at = None
        elif p < low and self._silence_at is None:
            self._silence_at = at
        if self._silence_at is not None:
            silent = end - self._silence_at
            cut = self._silence_at + int(SPECULATE_AFTER_S * SAMPLE_RATE)
            if silent >= td.silence_duration_ms * SAMPLE_RATE // 1000:
                audio = self._paused if self._paused is not None else self._item_audio(min(cut, end))
                actions.append(Stopped(end, audio, speculated=self._paused is not None))
                self._end_turn(end)
                return
            if self._paused is None and end >= cut:
                self._paused = self._item_audio(cut)
                actions.append(Paused(self._paused))
        elif end - self._partial_at >= int(PARTIAL_STEP_S * SAMPLE_RATE):
            self._partial_at = end
            actions.append(Partial(self._slice(self._item_start, end)))
        self._length_bound(p, at, end, actions)

    def _speech_again(self, at: int, actions: list[Action]) -> None:
        """Speech after a pause: a long enough item is cut at the pause, its speculative decode kept as its
        final; otherwise that decode is dropped."""
        assert self._silence_at is not None
        cut = self._silence_at + int(SPECULATE_AFTER_S * SAMPLE_RATE)
        long_pause = at - self._silence_at >= int(CUT_PAUSE_S * SAMPLE_RATE)
        long_item = cut - self._item_start >= int(MIN_ITEM_S * SAMPLE_RATE)
        if self._paused is not None:
            if long_pause and long_item:
                actions.append(Cut(cut, self._paused, speculated=True))
                self._next_item(cut)
            else:
                actions.append(Resumed())
            # Speech after a pause is often the other speaker: its first partial comes as a turn's first
            # does, not when the cadence falls (which may be a few frames in).
            self._first_partial_after(at + FRAME)
        self._paused = None

    def _first_partial_after(self, end: int) -> None:
        """The next partial FIRST_PARTIAL_S after `end` (speech starting there), not a full step."""
        self._partial_at = end - int((PARTIAL_STEP_S - FIRST_PARTIAL_S) * SAMPLE_RATE)

    def _length_bound(self, p: float, at: int, end: int, actions: list[Action]) -> None:
        """An item without a pause to cut it at is cut at MAX_ITEM_S, at the quietest of its last frames."""
        length = end - self._item_start
        if length < int((MAX_ITEM_S - DIP_WINDOW_S) * SAMPLE_RATE):
            return
        if p < self._dip_p:
            self._dip_p, self._dip_at = p, at + FRAME // 2
        # During a pause the pause decides: the turn ends, or speech resumes (a cut there, or here after).
        if length >= int(MAX_ITEM_S * SAMPLE_RATE) and self._silence_at is None:
            assert self._dip_at is not None
            actions.append(self._cut(self._dip_at, end))

    def _cut(self, at: int, now: int) -> Cut:
        """The current item, ending at `at` and heard to CONTEXT_S after it (what there is by `now`); the
        next item starts there."""
        cut = Cut(at, self._item_audio(at, min(now, at + int(CONTEXT_S * SAMPLE_RATE))))
        self._next_item(at)
        return cut

    def _item_audio(self, stop: int, heard_to: int | None = None) -> ItemAudio:
        """The current item's audio up to `stop`, after the CONTEXT_S of the item before it, and up to
        `heard_to` (when later) of the next."""
        first = self._item_start - self._lead
        samples = self._slice(first, stop if heard_to is None else heard_to)
        return ItemAudio(samples, self._lead, None if heard_to is None else stop - first)

    def _next_item(self, at: int) -> None:
        self._lead = min(int(CONTEXT_S * SAMPLE_RATE), at - self._start)
        self._item_start = at
        self._partial_at = max(self._partial_at, at)
        self._dip_at, self._dip_p = None, 2.0
        self._trim(at - self._lead)  # nothing before the current item's context is needed again

    def _soft_frame(self, speechlike: bool, at: int, end: int) -> None:
        """Between turns: where the current run of speech-like frames began (None after a full silence)."""
        td = self.detection
        assert td is not None
        if speechlike:
            if self._soft_from is None:
                self._soft_from = at
            self._soft_quiet_at = None
        elif self._soft_from is not None:
            if self._soft_quiet_at is None:
                self._soft_quiet_at = at
            if end - self._soft_quiet_at >= td.silence_duration_ms * SAMPLE_RATE // 1000:
                self._soft_from = self._soft_quiet_at = None

    def _end_turn(self, end: int) -> None:
        self._reset_turn()
        self._trim(end)

    def _padding(self) -> int:
        td = self.detection
        return td.prefix_padding_ms * SAMPLE_RATE // 1000 if td is not None else 0

    # ---------------------------------------------------------------- commit and clear

    def take(self) -> tuple[int, ItemAudio]:
        """Everything held (a commit): (its start position, its audio). A turn in progress ends here."""
        start = self._item_start if self.in_speech else self._start
        audio = self._item_audio(self.total) if self.in_speech else ItemAudio(self._slice(start, self.total))
        self._reset_turn()
        self._trim(self.total)
        return start, audio

    def clear(self) -> None:
        self._reset_turn()
        self._trim(self.total)

    # ---------------------------------------------------------------- the held audio

    def _slice(self, a: int, b: int) -> np.ndarray:
        a, b = max(a, self._start), min(b, self.total)
        if b <= a:
            return np.zeros(0, dtype=np.float32)
        whole = np.concatenate(self._chunks) if len(self._chunks) != 1 else self._chunks[0]
        self._chunks = [whole]
        return whole[a - self._start : b - self._start].copy()

    def _trim(self, keep_from: int) -> None:
        """Drop held audio before `keep_from` (nothing a turn could still need)."""
        keep_from = min(max(keep_from, self._start), self.total)
        if keep_from == self._start:
            return
        whole = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.float32)
        self._chunks = [whole[keep_from - self._start :]]
        self._start = keep_from
