"""Prosody: pitch, energy, speaking rate and pauses per segment.

The signal is analysed once per file (an F0 track and a frame energy track on one 10 ms grid); each
segment then reads its slice of those tracks and its word timings. Values that cannot be measured are
``None`` and the reason goes to the returned error list; nothing is filled in with a neutral guess.
Levels (``level`` keys) are left ``None`` here: they need every segment of the speaker and are assigned
afterwards by :mod:`transcription.enrich.levels`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from transcription.audio import SAMPLE_RATE

from . import pitch as pitch_mod
from .source import AudioInput, AudioSource, as_source
from .syllables import UnsupportedScript, count_words

PROSODY_VERSION = "1"
HOP_S = pitch_mod.HOP_S
ENERGY_WINDOW_S = 0.025
PAUSE_MIN_S = 0.2  # shorter silences are stop closures and breath-less joins, not pauses
MIN_SEGMENT_S = 0.05
MIN_VOICED_FRAMES = 5  # 50 ms of voicing before a pitch statistic means anything
MIN_SLOPE_FRAMES = 10
MIN_SLOPE_SPAN_S = 0.2
MIN_SPEECH_SPAN_S = 0.1
FLOOR_DB = -100.0  # digital silence reads as this instead of -inf
# Long files are read in blocks of BLOCK_S of frames; each block's samples reach MARGIN_S further either side
# (frame context and the high-pass filter's edge transients), and only the block's own frames are kept.
BLOCK_S = 60.0
BLOCK_FRAMES = int(round(BLOCK_S / HOP_S)) + 1  # both ends: a 60 s file is one block
MARGIN_S = 1.0
# Regions analysed in a long file: each segment +- REGION_PAD_S (context for the tracker's octave check and
# some non-speech for the pause threshold), merged when they are less than REGION_JOIN_S apart.
REGION_PAD_S = 0.5
REGION_JOIN_S = 1.0
# The contour: pitch and energy within a segment, one value per CONTOUR_STEP_S (ten 10 ms frames), so a
# viewer can draw how a sentence moved; a step needs CONTOUR_MIN_VOICED voiced frames for a pitch.
CONTOUR_STEP_S = 0.1
CONTOUR_MIN_VOICED = 3


@dataclass(frozen=True)
class FileAnalysis:
    """Frame tracks of a file on one grid: frame ``i`` is centred at ``i * hop_s`` seconds; NaN in both
    tracks where the frame was not analysed (outside every region of a long file)."""

    hop_s: float
    duration: float
    f0_hz: np.ndarray  # NaN where unvoiced
    energy_db: np.ndarray  # dBFS of a 25 ms window
    silence_db: float  # frames below this are pauses
    analysed_s: float  # seconds of the file the tracks cover (all of it, or the regions of a long file)

    def frames(self, start: float, end: float) -> slice:
        """Frames whose centre lies in [start, end)."""
        first = max(0, math.ceil(start / self.hop_s - 1e-9))
        stop = min(self.f0_hz.size, math.ceil(end / self.hop_s - 1e-9))
        return slice(first, max(first, stop))


def analyse_file(
    audio: AudioInput,
    sample_rate: int = SAMPLE_RATE,
    spans: Sequence[tuple[float, float]] | None = None,
) -> FileAnalysis:
    """F0 and energy tracks of a file on its 10 ms grid, plus the file's pause threshold.

    ``audio`` is an array or a :class:`~transcription.audio.WavReader`; it is read in blocks of at most
    ``BLOCK_S`` (plus a margin either side), so memory does not grow with the file. A file longer than one
    block is analysed only in regions around ``spans`` (the segments to measure, padded by ``REGION_PAD_S``
    and merged when close): the cost follows the speech, not the silence between. Frames outside the
    regions are NaN in both tracks (not measured). A file that fits in one block, or ``spans=None``, is
    analysed whole.
    """
    source = as_source(audio, sample_rate)
    n_frames = pitch_mod.frame_count(source.n_samples, sample_rate, HOP_S)
    f0 = np.full(n_frames, np.nan)
    energy = np.full(n_frames, np.nan)
    regions = analysis_regions(spans, n_frames, source.duration)
    per_region: list[pitch_mod.Candidates] = []
    for first, stop in regions:
        parts: list[pitch_mod.Candidates] = []
        for a in range(first, stop, BLOCK_FRAMES):
            b = min(stop, a + BLOCK_FRAMES)
            x, offset = _block(source, a, b)
            parts.append(pitch_mod.frame_candidates(x, offset, a, b, source.n_samples, sample_rate))
            energy[a:b] = _frame_energy_db(x, offset, a, b, source.n_samples, sample_rate)
            del x
        per_region.append(parts[0] if len(parts) == 1 else pitch_mod.Candidates.join(parts))
    # One loudness reference for every region, so a quiet stretch is judged against the file's speech.
    loud = pitch_mod.reference_level(np.concatenate([c.level for c in per_region] or [np.empty(0)]))
    analysed = np.zeros(n_frames, dtype=bool)
    for (first, stop), cands in zip(regions, per_region, strict=True):
        f0[first:stop] = pitch_mod.decode(cands, loud, HOP_S)[0]
        analysed[first:stop] = True
    return FileAnalysis(
        hop_s=HOP_S,
        duration=source.duration,
        f0_hz=f0,
        energy_db=energy,
        silence_db=_silence_threshold(energy[analysed]),
        analysed_s=round(sum(stop - first for first, stop in regions) * HOP_S, 2),
    )


def analysis_regions(
    spans: Sequence[tuple[float, float]] | None, n_frames: int, duration: float
) -> list[tuple[int, int]]:
    """Frame ranges [first, stop) to analyse: the whole file, or the padded spans merged when close."""
    if n_frames == 0:
        return []
    if spans is None or duration <= BLOCK_S:
        return [(0, n_frames)]
    padded = sorted(
        (max(0.0, s - REGION_PAD_S), min(duration, e + REGION_PAD_S))
        for s, e in spans
        if math.isfinite(s) and math.isfinite(e) and e > s and s < duration
    )
    regions: list[tuple[int, int]] = []
    for s, e in padded:
        first = max(0, math.floor(s / HOP_S))
        stop = min(n_frames, math.ceil(e / HOP_S) + 1)
        if regions and first - regions[-1][1] <= round(REGION_JOIN_S / HOP_S):
            regions[-1] = (regions[-1][0], max(regions[-1][1], stop))
        elif stop > first:
            regions.append((first, stop))
    return regions


def _block(source: AudioSource, first: int, stop: int) -> tuple[np.ndarray, int]:
    """Samples around frames [first, stop) with MARGIN_S either side (clipped to the file) as float64, and
    the index of the first one. A block spanning the whole file is the whole file: no margin to clip."""
    rate = source.sample_rate
    margin = int(round(MARGIN_S * rate))
    lo = max(0, int(round(first * HOP_S * rate)) - margin)
    hi = min(source.n_samples, int(round((stop - 1) * HOP_S * rate)) + margin)
    return np.asarray(source.samples(lo, hi), dtype=np.float64), lo


def _frame_energy_db(
    x: np.ndarray, offset: int, first: int, stop: int, total: int, sample_rate: int
) -> np.ndarray:
    """Energy of frames [first, stop) from samples [offset, offset + x.size) of a ``total``-sample file."""
    half = int(round(ENERGY_WINDOW_S * sample_rate / 2))
    csum = np.concatenate([[0.0], np.cumsum(x**2)])
    centres = np.round(np.arange(first, stop) * HOP_S * sample_rate).astype(np.int64)
    lo = np.clip(centres - half, 0, total) - offset
    hi = np.clip(centres + half, 0, total) - offset
    power = (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)
    return np.maximum(10.0 * np.log10(np.maximum(power, 1e-30)), FLOOR_DB)


def _silence_threshold(energy_db: np.ndarray) -> float:
    """Pause threshold: 35 dB under loud speech, raised towards the noise floor in noisy recordings.

    The threshold never comes within 15 dB of loud speech, so a recording that is speech throughout
    (no floor to measure) does not turn its quieter syllables into pauses.
    """
    if energy_db.size == 0:
        return FLOOR_DB
    loud = float(np.percentile(energy_db, 95))
    noise = float(np.percentile(energy_db, 5))
    return max(loud - 35.0, min(noise + 6.0, loud - 15.0))


def segment_prosody(
    analysis: FileAnalysis,
    start: float,
    end: float,
    words: Sequence[dict[str, Any]],
    text: str,
    language: str | None,
) -> tuple[dict[str, Any], list[str]]:
    """Prosody of one segment: ({pitch, energy, rate, pauses, contour}, errors)."""
    errors: list[str] = []
    end = min(end, analysis.duration)
    result: dict[str, Any] = {
        "pitch": _null_pitch(),
        "energy": {"rms_db": None, "std_db": None, "level": None},
        "rate": {"words_per_s": None, "syllables_per_s": None, "articulation_rate": None, "level": None},
        "pauses": {"count": None, "total_s": None, "longest_s": None},
        "contour": None,
    }
    if end - start < MIN_SEGMENT_S:
        errors.append(f"prosody: segment is {max(end - start, 0.0):.3f} s long, too short to measure")
        return result, errors
    frames = analysis.frames(start, end)
    result["contour"] = contour(analysis, start, end)
    result["pitch"] = _pitch_stats(analysis, frames, errors)
    result["energy"] = _energy_stats(analysis, frames, errors)
    timed = [w for w in words if _is_timed(w)]
    span = _speech_span(analysis, frames, timed, start, end)
    if span is None:
        errors.append(
            "prosody.pauses: no speech in the segment (no words and no frame above the silence level)"
        )
        errors.append("prosody.rate: no speech in the segment")
        return result, errors
    pauses = _pauses(analysis, timed, span)
    result["pauses"] = {
        "count": len(pauses),
        "total_s": round(float(sum(b - a for a, b in pauses)), 3),
        "longest_s": round(float(max((b - a for a, b in pauses), default=0.0)), 3),
    }
    result["rate"] = _rate(timed, text, language, span, result["pauses"]["total_s"], errors)
    return result, errors


def contour(analysis: FileAnalysis, start: float, end: float) -> dict[str, Any]:
    """Pitch (median of the voiced frames, Hz) and energy (mean power, dBFS) of each CONTOUR_STEP_S step
    from ``start``; ``None`` where a step has too little voicing or was not analysed. Rounded to whole Hz
    and dB: finer than a viewer draws, and each value costs bytes in every document."""
    n = max(1, math.ceil((end - start) / CONTOUR_STEP_S - 1e-9))
    pitch_hz: list[int | None] = []
    energy_db: list[int | None] = []
    for i in range(n):
        frames = analysis.frames(start + i * CONTOUR_STEP_S, min(end, start + (i + 1) * CONTOUR_STEP_S))
        f0 = analysis.f0_hz[frames]
        voiced = f0[np.isfinite(f0)]
        pitch_hz.append(int(round(float(np.median(voiced)))) if voiced.size >= CONTOUR_MIN_VOICED else None)
        db = analysis.energy_db[frames]
        db = db[np.isfinite(db)]
        power = float(np.mean(10.0 ** (db / 10.0))) if db.size else 0.0
        energy_db.append(int(round(max(10.0 * math.log10(power), FLOOR_DB))) if db.size else None)
    return {"step_s": CONTOUR_STEP_S, "pitch_hz": pitch_hz, "energy_db": energy_db}


def _null_pitch() -> dict[str, Any]:
    keys = ("mean_hz", "std_hz", "min_hz", "max_hz", "slope_st_per_s", "level")
    return dict.fromkeys(keys)


def _pitch_stats(analysis: FileAnalysis, frames: slice, errors: list[str]) -> dict[str, Any]:
    out = _null_pitch()
    f0 = analysis.f0_hz[frames]
    times = np.arange(frames.start, frames.stop) * analysis.hop_s
    voiced = np.isfinite(f0)
    n = int(voiced.sum())
    if n < MIN_VOICED_FRAMES:
        errors.append(f"prosody.pitch: {n} voiced frames, at least {MIN_VOICED_FRAMES} needed")
        return out
    hz = f0[voiced]
    t = times[voiced]
    # min/max are the 5th/95th percentiles: one mistracked frame must not define the range.
    lo, hi = np.percentile(hz, [5, 95])
    out.update(
        mean_hz=round(float(hz.mean()), 2),
        std_hz=round(float(hz.std()), 2),
        min_hz=round(float(lo), 2),
        max_hz=round(float(hi), 2),
    )
    if n < MIN_SLOPE_FRAMES or t[-1] - t[0] < MIN_SLOPE_SPAN_S:
        errors.append(
            f"prosody.pitch.slope_st_per_s: voiced frames span {t[-1] - t[0]:.2f} s, "
            f"at least {MIN_SLOPE_SPAN_S} s and {MIN_SLOPE_FRAMES} frames needed"
        )
    else:
        out["slope_st_per_s"] = round(theil_sen_slope(t, 12.0 * np.log2(hz)), 3)
    return out


def theil_sen_slope(t: np.ndarray, y: np.ndarray, max_points: int = 160) -> float:
    """Median of pairwise slopes: robust to the odd octave jump, unlike least squares."""
    if t.size > max_points:
        pick = np.linspace(0, t.size - 1, max_points).round().astype(np.int64)
        t, y = t[pick], y[pick]
    i, j = np.triu_indices(t.size, k=1)
    dt = t[j] - t[i]
    keep = dt > 0
    return float(np.median((y[j] - y[i])[keep] / dt[keep]))


def _energy_stats(analysis: FileAnalysis, frames: slice, errors: list[str]) -> dict[str, Any]:
    db = analysis.energy_db[frames]
    active = db[db >= analysis.silence_db]
    if active.size == 0:
        errors.append(
            f"prosody.energy: no frame above the silence level ({analysis.silence_db:.1f} dBFS) "
            "in the segment"
        )
        return {"rms_db": None, "std_db": None, "level": None}
    # Level while speaking: the mean power of the non-silent frames, so pauses do not pull it down.
    power = 10.0 ** (active / 10.0)
    return {
        "rms_db": round(float(10.0 * np.log10(power.mean())), 2),
        "std_db": round(float(active.std()), 2),
        "level": None,
    }


def _is_timed(word: dict[str, Any]) -> bool:
    s, e = word.get("start"), word.get("end")
    return isinstance(s, (int, float)) and isinstance(e, (int, float)) and e >= s


def _speech_span(
    analysis: FileAnalysis, frames: slice, timed: list[dict[str, Any]], start: float, end: float
) -> tuple[float, float] | None:
    """Where speech starts and ends inside the segment: word timings, else the non-silent frames."""
    if timed:
        return max(start, float(timed[0]["start"])), min(end, float(timed[-1]["end"]))
    loud = np.flatnonzero(analysis.energy_db[frames] >= analysis.silence_db)
    if loud.size == 0:
        return None
    first = float((frames.start + loud[0]) * analysis.hop_s)
    last = float((frames.start + loud[-1] + 1) * analysis.hop_s)
    return max(start, first), min(end, last)


def _pauses(
    analysis: FileAnalysis, timed: list[dict[str, Any]], span: tuple[float, float]
) -> list[tuple[float, float]]:
    """Pauses inside the speech span: word gaps and low-energy stretches, merged, each >= PAUSE_MIN_S."""
    intervals: list[tuple[float, float]] = []
    for prev, nxt in zip(timed, timed[1:], strict=False):
        gap_start, gap_end = float(prev["end"]), float(nxt["start"])
        if gap_end > gap_start:
            intervals.append((gap_start, gap_end))
    frames = analysis.frames(*span)
    quiet = analysis.energy_db[frames] < analysis.silence_db
    if quiet.any():
        edges = np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]]))
        for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
            # A quiet frame means its whole window is quiet: the stretch runs from the first quiet window's
            # start to the last one's end.
            lo = (frames.start + a) * analysis.hop_s - ENERGY_WINDOW_S / 2
            hi = (frames.start + b - 1) * analysis.hop_s + ENERGY_WINDOW_S / 2
            intervals.append((max(lo, span[0]), min(hi, span[1])))
    merged: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return [(a, b) for a, b in merged if b - a >= PAUSE_MIN_S - 1e-9]


def _rate(
    timed: list[dict[str, Any]],
    text: str,
    language: str | None,
    span: tuple[float, float],
    pause_total: float,
    errors: list[str],
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "words_per_s": None,
        "syllables_per_s": None,
        "articulation_rate": None,
        "level": None,
    }
    duration = span[1] - span[0]
    if duration < MIN_SPEECH_SPAN_S:
        errors.append(f"prosody.rate: speech lasts {duration:.3f} s, too short for a rate")
        return out
    if timed:
        tokens = [str(w.get("word", "")) for w in timed]
    else:
        errors.append("prosody.rate: no word timings; rates use the segment text over its non-silent span")
        tokens = text.split()
    tokens = [t.strip() for t in tokens if t.strip()]
    out["words_per_s"] = round(len(tokens) / duration, 3)
    try:
        syllables = count_words(tokens, language)
    except UnsupportedScript as exc:
        errors.append(f"prosody.rate.syllables_per_s: {exc}")
        return out
    out["syllables_per_s"] = round(syllables / duration, 3)
    speaking = duration - pause_total
    if speaking < MIN_SPEECH_SPAN_S:
        errors.append("prosody.rate.articulation_rate: almost all of the segment is pause")
    else:
        out["articulation_rate"] = round(syllables / speaking, 3)
    return out
