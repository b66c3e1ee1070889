"""Levels: where a segment's pitch, loudness and rate sit against the same voice's other segments.

A level is a z-score band against the speaker's baseline in this file (the segments carrying the same
``speaker`` value; without a ``speaker`` field, all segments of the file). The centre is the median of
the baseline segments and the spread their median absolute deviation, with a floor so that a very even
reader is not told "very high" for a barely audible difference. With fewer than
``MIN_BASELINE_SEGMENTS`` measured segments there is no baseline, and the level is ``None`` with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

LEVELS = ("very_low", "low", "normal", "high", "very_high")
MIN_BASELINE_SEGMENTS = 3
# Smallest spread used for a z-score, in the unit of each feature's scale (semitones, dB, ln of rate).
SPREAD_FLOOR = {"pitch": 1.0, "energy": 2.0, "rate": 0.08}


def _pitch_value(prosody: dict[str, Any]) -> float | None:
    hz = prosody["pitch"]["mean_hz"]
    return 12.0 * math.log2(hz) if hz else None  # semitones: equal steps sound equal for any voice


def _energy_value(prosody: dict[str, Any]) -> float | None:
    return prosody["energy"]["rms_db"]


def _rate_value(prosody: dict[str, Any]) -> float | None:
    rate = prosody["rate"]["articulation_rate"]
    return math.log(rate) if rate else None  # ratios: 20% faster is the same step at any tempo


FEATURES: dict[str, Callable[[dict[str, Any]], float | None]] = {
    "pitch": _pitch_value,
    "energy": _energy_value,
    "rate": _rate_value,
}


def band(z: float) -> str:
    if z <= -2.0:
        return "very_low"
    if z <= -1.0:
        return "low"
    if z < 1.0:
        return "normal"
    if z < 2.0:
        return "high"
    return "very_high"


def assign_levels(segments: Sequence[dict[str, Any]]) -> None:
    """Set ``level`` in every measured prosody of ``segments`` in place; reasons go to status.errors.

    Segments whose prosody is not ``ok`` are ignored. Earlier level errors are replaced.
    """
    measured = [s for s in segments if _prosody_ok(s)]
    for seg in measured:
        errors = seg["audio_state"]["status"]["errors"]
        errors[:] = [e for e in errors if not _is_level_error(e)]
    file_group = measured
    groups: dict[Any, list[dict[str, Any]]] = {}
    for seg in measured:
        speaker = seg.get("speaker")
        if speaker is not None:
            groups.setdefault(speaker, []).append(seg)
    for feature, value_of in FEATURES.items():
        baselines: dict[Any, tuple[float, float] | str] = {}
        for seg in measured:
            speaker = seg.get("speaker")
            key = ("speaker", speaker) if speaker is not None else ("file",)
            if key not in baselines:
                members = groups[speaker] if speaker is not None else file_group
                baselines[key] = _baseline([value_of(m["audio_state"]["prosody"]) for m in members], feature)
            prosody = seg["audio_state"]["prosody"]
            value = value_of(prosody)
            baseline = baselines[key]
            errors = seg["audio_state"]["status"]["errors"]
            if value is None:
                prosody[feature]["level"] = None  # the value's own error already says why
            elif isinstance(baseline, str):
                prosody[feature]["level"] = None
                who = f"speaker {speaker!r}" if speaker is not None else "the file"
                errors.append(f"prosody.{feature}.level: {baseline} for {who}")
            else:
                centre, spread = baseline
                prosody[feature]["level"] = band((value - centre) / spread)


def _baseline(values: list[float | None], feature: str) -> tuple[float, float] | str:
    known = np.array([v for v in values if v is not None], dtype=np.float64)
    if known.size < MIN_BASELINE_SEGMENTS:
        return f"no baseline: {known.size} measured segments, at least {MIN_BASELINE_SEGMENTS} needed"
    centre = float(np.median(known))
    mad = float(np.median(np.abs(known - centre))) * 1.4826  # MAD scaled to a normal distribution's sigma
    return centre, max(mad, SPREAD_FLOOR[feature])


def _prosody_ok(seg: dict[str, Any]) -> bool:
    state = seg.get("audio_state") or {}
    return state.get("status", {}).get("prosody") == "ok" and isinstance(state.get("prosody"), dict)


def _is_level_error(error: str) -> bool:
    return error.startswith(tuple(f"prosody.{f}.level:" for f in FEATURES))
