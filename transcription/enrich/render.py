"""A short plain-words rendering of a segment's audio state, for an LLM reading the transcript.

Only what stands out is said: a segment that is typical in every measured respect renders as ``""``.
A segment where nothing could be measured renders as ``None`` (silence here would claim "typical").
Words never echo stored enum names: ``very_high`` pitch reads "much higher pitch".
"""

from __future__ import annotations

from typing import Any

_PITCH = {
    "very_low": "much lower pitch",
    "low": "lower pitch",
    "high": "higher pitch",
    "very_high": "much higher pitch",
}
_ENERGY = {"very_low": "very quiet", "low": "quiet", "high": "loud", "very_high": "very loud"}
_RATE = {"very_low": "very slow", "low": "slow", "high": "fast", "very_high": "very fast"}

RISING_ST_PER_S = 3.0  # a rise this steep over a whole segment is heard as rising intonation
FALLING_ST_PER_S = -5.0  # steeper than the ordinary declination of a statement
LONG_PAUSE_S = 1.0
PAUSE_SHARE = 0.25  # pauses taking this share of the speech span make it halting
# Emotion dimensions are absolute model scores in 0..1; only clear ends of the scale are mentioned.
HIGH, LOW = 0.66, 0.33


def render(
    state: dict[str, Any], segment_span_s: float | None = None, speaker: str | None = None
) -> str | None:
    """With a `speaker`, levels are against that speaker's own usual voice, and the words say whose:
    "[audio: higher pitch, fast for SPEAKER_01]"; without one they are against the whole file."""
    status = state.get("status", {})
    prosody = state.get("prosody") if status.get("prosody") == "ok" else None
    emotion = state.get("emotion") if status.get("emotion") == "ok" else None
    if prosody is None and emotion is None:
        return None
    parts: list[str] = []
    if prosody is not None:
        levels = _level_words(prosody)
        if levels and speaker:
            levels[-1] += f" for {speaker}"
        parts += levels + _shape_words(prosody, segment_span_s)
    if emotion is not None:
        parts += _emotion_words(emotion)
    return f"[audio: {', '.join(parts)}]" if parts else ""


def _level_words(prosody: dict[str, Any]) -> list[str]:
    words: list[str] = []
    for table, key in ((_PITCH, "pitch"), (_RATE, "rate"), (_ENERGY, "energy")):
        level = (prosody.get(key) or {}).get("level")
        if level in table:
            words.append(table[level])
    return words


def _shape_words(prosody: dict[str, Any], span_s: float | None) -> list[str]:
    words: list[str] = []
    pitch = prosody.get("pitch") or {}
    slope = pitch.get("slope_st_per_s")
    if slope is not None and slope >= RISING_ST_PER_S:
        words.append("rising pitch")
    elif slope is not None and slope <= FALLING_ST_PER_S:
        words.append("falling pitch")
    pauses = prosody.get("pauses") or {}
    longest, total, count = pauses.get("longest_s"), pauses.get("total_s"), pauses.get("count")
    if longest is not None and longest >= LONG_PAUSE_S:
        words.append("long pause")
    elif total and span_s and count and count >= 2 and total / span_s >= PAUSE_SHARE:
        words.append("halting")
    return words


def _emotion_words(emotion: dict[str, Any]) -> list[str]:
    words: list[str] = []
    for key, high, low in (
        ("arousal", "intense", "calm"),
        ("valence", "positive", "negative"),
        ("dominance", "assertive", "tentative"),
    ):
        value = emotion.get(key)
        if value is None:
            continue
        if value >= HIGH:
            words.append(high)
        elif value <= LOW:
            words.append(low)
    return words
