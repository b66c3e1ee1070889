"""Which language each stretch of speech is in, so a recording that changes language is decoded part by part.

Whisper decodes a 30 s window in the one language its prompt names; told English, it drops German speech or
translates it. Detecting once per file therefore loses every part that is not in the first one's language.
Here a window's speech is cut into units at pauses (Silero VAD), and the language is detected cheaply:

- each unit is detected on a 5 s feature window (DETECT_FRAMES; a 30 s window costs several times more, and
  the first seconds of a unit tell its language); consecutive short units are grouped up to GROUP_S of speech
  and detected together, as a short "yes" alone says little;
- a group whose top language is below GROUP_SURE may mix languages: each of its units is detected alone
  (groups stay short because a group's detection follows its first language; docs/languages.md has the
  measurements behind these thresholds);
- a unit (or sure group) switches the language only at SWITCH_P or above; an unsure one takes whichever of its
  neighbours' languages it rates higher, so a short "mm" or a name does not flap the language.

Consecutive units of one language form a `Span`; the decoders decode each span in its language. A recording
in one language gives one span covering the window: decoded exactly as with detection once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import fw_internals as fw
from .audio import SAMPLE_RATE

CHUNK = "chunk"  # WHISPER_LANGUAGE_DETECTION values
FILE = "file"

UNIT_MIN_SILENCE_MS = 300  # a pause this long may separate two languages
UNIT_PAD_MS = 100
UNIT_MAX_S = 30.0
DETECT_FRAMES = 500  # 5 s of features per detection (padded with the detection filler when shorter)
GROUP_S = 3.0
GROUP_SURE = 0.99  # below it, a short group may mix languages (docs/languages.md)
SWITCH_P = 0.8
ONCE_FRAMES = 3000  # detection once per file looks at the first 30 s of speech, as faster-whisper does
_BATCH = 16


@dataclass
class Unit:
    """A stretch of speech between pauses, in samples of the window, and the language assigned to it."""

    start: int
    end: int
    language: str | None = None
    probability: float | None = None

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


@dataclass(frozen=True)
class Span:
    """A part of a window decoded in one language; spans cover the window, cut in the pauses. `speech` is
    the seconds of VAD speech in it: a language "detected" on a window without speech is noise, not a fact."""

    start: int
    end: int
    language: str
    probability: float | None
    speech: float = 0.0


def speech_units(samples: np.ndarray) -> list[Unit]:
    """The window's speech, cut at pauses of UNIT_MIN_SILENCE_MS or more."""
    if samples.shape[0] == 0:
        return []
    ranges = fw.speech_ranges(samples, UNIT_MIN_SILENCE_MS, UNIT_PAD_MS, UNIT_MAX_S)
    return [Unit(int(r["start"]), int(r["end"])) for r in ranges if r["end"] > r["start"]]


def choose(probs: dict[str, float], allowed: Sequence[str] | None) -> tuple[str, float]:
    """The most likely language, among `allowed` when given (their probabilities renormalised)."""
    if allowed:
        sub = {code: probs.get(code, 0.0) for code in allowed}
        total = sum(sub.values())
        best = max(sub, key=lambda c: sub[c])
        return best, (sub[best] / total if total > 0 else 0.0)
    best = max(probs, key=lambda c: probs[c])
    return best, probs[best]


def detect_once(
    model: Any, samples: np.ndarray, units: list[Unit], allowed: Sequence[str] | None
) -> tuple[str, float]:
    """One language for the window, from its first 30 s of speech (all of it when VAD found none)."""
    speech = [samples[u.start : u.end] for u in units] or [samples]
    joined = np.concatenate(speech)[: ONCE_FRAMES * 160 + 160]
    feats = fw.fit_frames(fw.features(model, joined), ONCE_FRAMES)
    return choose(fw.language_probabilities(model, feats[None])[0], allowed)


def _detect(model: Any, pieces: list[np.ndarray]) -> list[dict[str, float]]:
    """Language probabilities of each piece of audio, DETECT_FRAMES of features each, in batches."""
    out: list[dict[str, float]] = []
    for i in range(0, len(pieces), _BATCH):
        feats = [
            fw.fit_frames(fw.features(model, p[: DETECT_FRAMES * 160 + 160]), DETECT_FRAMES)
            for p in pieces[i : i + _BATCH]
        ]
        out.extend(fw.language_probabilities(model, np.stack(feats)))
    return out


def _groups(units: list[Unit]) -> list[list[int]]:
    """Consecutive unit indices, up to GROUP_S of speech each (a longer unit is a group alone)."""
    groups: list[list[int]] = []
    speech = 0.0
    for i, u in enumerate(units):
        if groups and speech + u.seconds <= GROUP_S:
            groups[-1].append(i)
            speech += u.seconds
        else:
            groups.append([i])
            speech = u.seconds
    return groups


def assign(
    items: list[tuple[list[int], dict[str, float]]],
    units: list[Unit],
    allowed: Sequence[str] | None,
    previous: str | None,
) -> None:
    """Set each unit's language from its item's detection, with the confidence gate and the neighbours' rule.

    `items` are (unit indices, probabilities) in time order; `previous` is the language before this window.
    """
    tops = [choose(probs, allowed) for _, probs in items]
    sure = [p >= SWITCH_P for _, p in tops]
    if not any(sure) and previous is None:
        # Nothing is clear on its own: the language most likely over all the speech, weighted by length.
        weight: dict[str, float] = {}
        for idx, probs in items:
            seconds = sum(units[i].seconds for i in idx)
            for code, p in probs.items():
                weight[code] = weight.get(code, 0.0) + p * seconds
        fallback = choose(weight, allowed)[0]
        for idx, probs in items:
            for i in idx:
                units[i].language, units[i].probability = fallback, _prob(probs, fallback, allowed)
        return
    for n, (idx, probs) in enumerate(items):
        if sure[n]:
            language = tops[n][0]
        else:
            before = next((tops[k][0] for k in range(n - 1, -1, -1) if sure[k]), previous)
            after = next((tops[k][0] for k in range(n + 1, len(items)) if sure[k]), None)
            candidates = [c for c in (before, after) if c is not None]
            language = max(candidates, key=lambda c: probs.get(c, 0.0))  # ties keep `before`
        for i in idx:
            units[i].language, units[i].probability = language, _prob(probs, language, allowed)


def _prob(probs: dict[str, float], language: str, allowed: Sequence[str] | None) -> float:
    if allowed:
        total = sum(probs.get(c, 0.0) for c in allowed)
        return probs.get(language, 0.0) / total if total > 0 else 0.0
    return probs.get(language, 0.0)


def detect_units(
    model: Any,
    samples: np.ndarray,
    units: list[Unit],
    allowed: Sequence[str] | None,
    previous: str | None = None,
) -> None:
    """Give every unit a language: groups first, then the units of unsure groups one by one."""
    if not units:
        return
    groups = _groups(units)
    group_probs = _detect(
        model, [np.concatenate([samples[units[i].start : units[i].end] for i in g]) for g in groups]
    )
    items: list[tuple[list[int], dict[str, float]]] = []
    unsure: list[int] = []  # indices into `items` to detect unit by unit
    for g, probs in zip(groups, group_probs, strict=True):
        if len(g) > 1 and choose(probs, allowed)[1] < GROUP_SURE:
            for i in g:
                unsure.append(len(items))
                items.append(([i], {}))
        else:
            items.append((g, probs))
    if unsure:
        found = _detect(
            model, [samples[units[items[k][0][0]].start : units[items[k][0][0]].end] for k in unsure]
        )
        for k, probs in zip(unsure, found, strict=True):
            items[k] = (items[k][0], probs)
    assign(items, units, allowed, previous)


def spans(units: list[Unit], total: int) -> list[Span]:
    """The window cut into runs of one language, each cut in the middle of the pause between two runs."""
    out: list[Span] = []
    run: list[Unit] = [units[0]]
    start = 0
    for u in units[1:]:
        if u.language == run[0].language:
            run.append(u)
            continue
        cut = (run[-1].end + u.start) // 2
        out.append(_span(start, cut, run))
        start, run = cut, [u]
    out.append(_span(start, total, run))
    return out


def _span(start: int, end: int, run: list[Unit]) -> Span:
    seconds = sum(u.seconds for u in run)
    known = [(u.probability, u.seconds) for u in run if u.probability is not None]
    probability = sum(p * s for p, s in known) / seconds if known and seconds > 0 else None
    assert run[0].language is not None
    return Span(start, end, run[0].language, probability, seconds)


def plan(
    model: Any,
    samples: np.ndarray,
    units: list[Unit],
    *,
    language: str | None,
    detection: str,
    allowed: Sequence[str] | None,
    multilingual: bool,
    previous: str | None = None,
) -> list[Span]:
    """How to decode one window: its spans, each with a language.

    A fixed language (or an English-only model) is one span; `detection` FILE detects once, on the first
    window with speech, and later windows keep `previous`; CHUNK detects per unit (`detect_units`). A window
    without speech keeps `previous`, or is detected on whatever it holds (Whisper still decodes it when VAD
    is off); its span has no speech, so callers neither report nor carry that language (`carried`)."""
    total = int(samples.shape[0])
    speech = sum(u.seconds for u in units)
    if not multilingual:
        language = "en"
    if language is not None:
        for u in units:
            u.language = language
        return [Span(0, total, language, 1.0, speech)]
    if detection == FILE or not units:
        if previous is not None:
            found, probability = previous, None
        else:
            found, probability = detect_once(model, samples, units, allowed)
        for u in units:
            u.language, u.probability = found, probability
        return [Span(0, total, found, probability, speech)]
    detect_units(model, samples, units, allowed, previous)
    return spans(units, total)


def carried(spans: Sequence[Span], previous: str | None) -> str | None:
    """The language the next window starts from: this window's last, if it had speech at all."""
    return spans[-1].language if any(s.speech > 0 for s in spans) else previous


def summary(segments: Sequence[Any]) -> list[dict[str, Any]]:
    """`languages` of a document: seconds of transcribed speech per segment language, most first."""
    seconds: dict[str, float] = {}
    for seg in segments:
        code = seg.get("language") if isinstance(seg, dict) else seg.language
        if code is None:
            continue
        start, end = (seg["start"], seg["end"]) if isinstance(seg, dict) else (seg.start, seg.end)
        seconds[code] = seconds.get(code, 0.0) + max(0.0, end - start)
    ranked = sorted(seconds.items(), key=lambda item: (-item[1], item[0]))
    return [{"language": code, "seconds": round(s, 3)} for code, s in ranked]
