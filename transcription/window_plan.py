"""One recording's way through transcription, whichever decoder runs the model (`asr.Engine` one file at a
time, `packing.Packer` many files in shared batches):

windows -> speech units -> language spans -> (the decoder decodes each span) -> the loss detector -> the end.

`FileRun` holds a recording's state across its windows: `plan(index)` reads one window and plans it (its
speech units and language spans, the language carried from the window before); the decoder adds what it
decoded (`add`); `conclude` runs the loss detector once over the whole recording and gives the result with
its main language and warnings. A decoding rule written here reaches every path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import languages, recovery
from .audio import SAMPLE_RATE, WavReader
from .schema import Segment, sanitize

if TYPE_CHECKING:
    from .asr import AsrOptions

# Audio longer than this is transcribed window by window, so feature extraction and VAD never hold a whole
# two-hour file: memory stays flat with length. Cuts go at the quietest moment near the window's end.
WINDOW_S = 600.0
CUT_SEARCH_S = 60.0
_CUT_FRAME_S = 0.2
FIXED_CHUNK_S = 30.0  # without VAD, a span is decoded in consecutive pieces of Whisper's window

Retry = Callable[[Callable[[float, float], np.ndarray], "AsrOptions"], recovery.Retry]
"""Makes the loss detector's second decode from a reader of seconds [start, end) and the options."""


@dataclass
class AsrResult:
    language: str | None
    language_probability: float | None
    duration: float
    segments: list[Segment]
    warnings: list[str] = field(default_factory=list)
    lost: list[tuple[float, float]] = field(default_factory=list)  # speech without text, after a retry
    retried: int = 0  # stretches decoded again by the loss detector
    recovered: int = 0  # ... of which gave text

    def count(self, rec: recovery.Recovered) -> None:
        """Add one run of the loss detector."""
        self.retried += rec.retried
        self.recovered += rec.recovered
        self.lost.extend(rec.lost)


class Source:
    """16 kHz mono audio read by sample ranges: a normalised WAV (read window by window) or an array."""

    def __init__(self, audio: np.ndarray | WavReader) -> None:
        self.audio = audio
        self.frames = audio.frames if isinstance(audio, WavReader) else int(audio.shape[0])

    def samples(self, first: int, last: int) -> np.ndarray:
        if isinstance(self.audio, WavReader):
            return self.audio.read(first / SAMPLE_RATE, last / SAMPLE_RATE)
        return np.asarray(self.audio[first:last], dtype=np.float32)

    def seconds(self, start: float, end: float) -> np.ndarray:
        return self.samples(int(round(start * SAMPLE_RATE)), int(round(end * SAMPLE_RATE)))

    def pcm(self, first: int, last: int) -> np.ndarray:
        """Raw samples for the cut search (int16 from a WAV: no float copy of the search region)."""
        if isinstance(self.audio, WavReader):
            return self.audio.pcm(first, last)
        return self.audio[first:last]


def windows(source: Source) -> list[tuple[int, int]]:
    """Sample ranges of at most WINDOW_S each, cut at the quietest short frame near each window's end."""
    total = source.frames
    window = int(WINDOW_S * SAMPLE_RATE)
    if total <= window:
        return [(0, total)] if total else []
    frame = int(_CUT_FRAME_S * SAMPLE_RATE)
    ranges = []
    start = 0
    while total - start > window:
        lo = start + window - int(CUT_SEARCH_S * SAMPLE_RATE)
        region = source.pcm(lo, start + window).astype(np.float32)
        n = region.shape[0] // frame
        energy = (region[: n * frame].reshape(n, frame) ** 2).mean(axis=1)
        cut = lo + int(np.argmin(energy)) * frame + frame // 2
        ranges.append((start, cut))
        start = cut
    ranges.append((start, total))
    return ranges


def fixed_chunks(n_samples: int) -> list[tuple[int, int]]:
    """Consecutive FIXED_CHUNK_S sample ranges covering a span decoded without VAD."""
    step = int(FIXED_CHUNK_S * SAMPLE_RATE)
    return [(t, min(t + step, n_samples)) for t in range(0, n_samples, step)]


@dataclass
class Window:
    """One planned window: its samples, speech units and language spans (sample indices of the window)."""

    index: int
    start: int
    samples: np.ndarray
    units: list[languages.Unit]
    spans: list[languages.Span]

    @property
    def offset(self) -> float:
        return self.start / SAMPLE_RATE

    def span_samples(self, span: languages.Span) -> np.ndarray:
        return self.samples[span.start : span.end]


class FileRun:
    """A recording's transcription across its windows: plan each, collect what is decoded, conclude once."""

    def __init__(self, source: Source, options: AsrOptions, model: Any, multilingual: bool) -> None:
        self.source = source
        self.options = options
        self.model = model
        self.multilingual = multilingual
        self.duration = source.frames / SAMPLE_RATE
        self.windows = windows(source)
        self.segments: list[Segment] = []
        self.speech: list[tuple[float, float]] = []  # VAD units in file seconds, for the loss detector
        self.spans: list[tuple[str, float | None, float]] = []  # (language, probability, seconds of speech)
        self._previous: str | None = None  # the language at the end of the last planned window

    def plan(self, index: int) -> Window:
        """Read window `index` and plan it; windows are planned in order (each starts from the language the
        one before ended in)."""
        start, end = self.windows[index]
        samples = self.source.samples(start, end)
        units = languages.speech_units(samples)
        o = self.options
        spans = languages.plan(
            self.model,
            samples,
            units,
            language=o.language,
            detection=o.language_detection,
            allowed=o.languages,
            multilingual=self.multilingual,
            previous=self._previous,
        )
        self._previous = languages.carried(spans, self._previous)
        offset = start / SAMPLE_RATE
        self.speech.extend((offset + u.start / SAMPLE_RATE, offset + u.end / SAMPLE_RATE) for u in units)
        self.spans.extend((s.language, s.probability, s.speech) for s in spans)
        return Window(index, start, samples, units, spans)

    def add(self, segments: Sequence[Segment]) -> None:
        """Decoded segments, in file time."""
        self.segments.extend(segments)

    def fixed_language(self) -> str | None:
        """The language every window is decoded in, when none is detected."""
        return self.options.language if self.multilingual else "en"

    def conclude(self, retry: Retry, on_new: Callable[[Segment], None] | None = None) -> AsrResult:
        """The transcription: the loss detector over the whole recording (new segments told to `on_new`),
        segments cleaned, the main language, and warnings."""
        if not self.source.frames:
            return AsrResult(self.fixed_language(), None, 0.0, [], ["no audio samples"])
        out = AsrResult(None, None, self.duration, sorted(self.segments, key=lambda s: (s.start, s.end)))
        if self.options.recover:
            again = retry(self.source.seconds, self.options)
            rec = recovery.recover(self.speech, out.segments, again, self.duration)
            if on_new is not None:
                kept = {id(s) for s in out.segments}
                for seg in rec.segments:
                    if id(seg) not in kept:
                        on_new(seg)
            out.segments = rec.segments
            out.count(rec)
        out.segments = sanitize(out.segments, out.duration)
        fixed = self.fixed_language()
        out.language, out.language_probability = main_language(out.segments, self.spans, fixed)
        if not out.segments:
            out.warnings.append("no speech detected")
        out.warnings.extend(recovery.lost_warning(a, b) for a, b in out.lost)
        return out


def main_language(
    segments: list[Segment], spans: list[tuple[str, float | None, float]], fixed: str | None
) -> tuple[str | None, float | None]:
    """A transcription's language and its probability: the language with the most transcribed speech; without
    any text, the most speech detected surely (at `languages.SWITCH_P` or above: Whisper names a language for
    noise too, unsurely); None when nothing was heard and nothing fixed. The probability is its spans' mean,
    weighted by speech (1.0 when fixed). `spans` are (language, probability, seconds of speech)."""
    if fixed is not None:
        return fixed, 1.0
    ranked = languages.summary(segments)
    seconds: dict[str, float] = {}
    for code, p, length in spans:
        if length > 0 and (ranked or (p is not None and p >= languages.SWITCH_P)):
            seconds[code] = seconds.get(code, 0.0) + length
    if ranked:
        main = ranked[0]["language"]
    elif seconds:
        main = max(seconds, key=lambda c: seconds[c])
    else:
        return None, None
    known = [(p, length) for code, p, length in spans if code == main and p is not None and length > 0]
    total = sum(length for _, length in known)
    return main, (sum(p * length for p, length in known) / total if known else None)
