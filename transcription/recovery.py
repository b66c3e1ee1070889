"""The loss detector: speech that produced no text, and text stuck in a loop, decoded again.

Whisper can skip a stretch of speech without a trace (a window decoded in the wrong language, a sentence at
a window's end) or repeat one phrase until the window ends. Both are found by comparing the transcript with
the VAD's speech units: a stretch of LOST_MIN_S or more inside speech, with no word near it, is lost; a
segment whose text compresses like a loop is stuck. Each is decoded again on its own (in its own detected
language, without the previous text as a prompt, with Whisper's temperature fallback). What still has no
text is reported, with its times, never dropped silently.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .schema import Segment

LOST_MIN_S = 1.5  # less can be a breath, a laugh, a filler word Whisper leaves out, or a word-timing error
WORD_MARGIN_S = 0.5  # word times are alignments: speech this close to a word counts as covered
JOIN_S = 1.0
RETRY_PAD_S = 0.25
LOOP_RATIO = 2.4  # Whisper's own compression-ratio threshold for a failed decode
LOOP_MIN_CHARS = 40
LOOP_REPEATS = 4  # the same 1-4 word phrase this many times in a row
_WORDS = re.compile(r"\w+", re.UNICODE)

Retry = Callable[[float, float], list[Segment]]
"""Decode [start, end] seconds again; segments in the same time base, each with its language."""


@dataclass
class Recovered:
    segments: list[Segment]
    lost: list[tuple[float, float]] = field(default_factory=list)  # speech that still has no text
    retried: int = 0
    recovered: int = 0


def lost_warning(start: float, end: float) -> str:
    return f"speech without text at {start:.1f}–{end:.1f} s"


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def is_loop(text: str) -> bool:
    """A phrase repeated over and over: Whisper's compression-ratio test, or the same short phrase
    LOOP_REPEATS times in a row (which short texts can show before their ratio climbs)."""
    if len(text) >= LOOP_MIN_CHARS and compression_ratio(text) > LOOP_RATIO:
        return True
    words = [w.lower() for w in _WORDS.findall(text)]
    for n in range(1, 5):
        for i in range(0, max(0, len(words) - n * LOOP_REPEATS) + 1):
            phrase = words[i : i + n]
            if len(phrase) < n:
                break
            if all(words[i + k * n : i + (k + 1) * n] == phrase for k in range(1, LOOP_REPEATS)):
                return True
    return False


def _covered(segments: Sequence[Segment]) -> list[tuple[float, float]]:
    """Where the transcript has text, as disjoint sorted spans: each word (or, without word times, each
    segment), widened by WORD_MARGIN_S."""
    spans: list[tuple[float, float]] = []
    for seg in segments:
        if seg.words:
            spans.extend((w.start - WORD_MARGIN_S, w.end + WORD_MARGIN_S) for w in seg.words)
        elif seg.text.strip():
            spans.append((seg.start - WORD_MARGIN_S, seg.end + WORD_MARGIN_S))
    merged: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def find_lost(
    speech: Sequence[tuple[float, float]], segments: Sequence[Segment]
) -> list[tuple[float, float]]:
    """Stretches with at least LOST_MIN_S of speech and no text near it (seconds, in time order). Pieces of
    uncovered speech closer than JOIN_S count as one stretch: two short sentences of a dropped part."""
    covered = _covered(segments)
    pieces: list[tuple[float, float]] = []
    first = 0  # both lists are sorted: one sweep, linear in their lengths (two-hour files)
    for start, end in sorted(speech):
        while first < len(covered) and covered[first][1] <= start:
            first += 1
        cursor = start
        for a, b in covered[first:]:
            if a >= end:
                break
            if a > cursor:
                pieces.append((cursor, a))
            cursor = max(cursor, b)
        if end > cursor:
            pieces.append((cursor, end))
    out: list[tuple[float, float]] = []
    group: list[tuple[float, float]] = []
    for piece in [*sorted(pieces), (float("inf"), float("inf"))]:
        if group and piece[0] - group[-1][1] > JOIN_S:
            if sum(b - a for a, b in group) >= LOST_MIN_S:
                out.append((group[0][0], group[-1][1]))
            group = []
        group.append(piece)
    return out


def recover(
    speech: Sequence[tuple[float, float]], segments: list[Segment], retry: Retry, duration: float
) -> Recovered:
    """Decode lost speech and looping segments again; keep what the retry gives, report what stays lost."""
    result = Recovered(list(segments))
    loops = [i for i, seg in enumerate(segments) if is_loop(seg.text)]
    for i in loops:
        seg = segments[i]
        result.retried += 1
        again = retry(max(0.0, seg.start - RETRY_PAD_S), min(duration, seg.end + RETRY_PAD_S))
        text = " ".join(s.text for s in again)
        if again and not is_loop(text) and compression_ratio(text) < compression_ratio(seg.text):
            result.recovered += 1
            result.segments = [s for s in result.segments if s is not seg] + again
    for start, end in find_lost(speech, result.segments):
        result.retried += 1
        again = [
            s
            for s in retry(max(0.0, start - RETRY_PAD_S), min(duration, end + RETRY_PAD_S))
            if s.text.strip()
        ]
        again = [s for s in again if not is_loop(s.text)]
        if again:
            result.recovered += 1
            result.segments.extend(again)
        # What the retry left without text (all of it, when it found nothing) stays lost.
        result.lost.extend((round(a, 1), round(b, 1)) for a, b in find_lost([(start, end)], again))
    result.segments.sort(key=lambda s: (s.start, s.end))
    return result
