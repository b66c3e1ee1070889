"""F0 tracking: normalised cross-correlation candidates plus a Viterbi path through them.

Every frame gets a handful of period candidates (local maxima of the normalised cross-correlation between
the frame and its lagged copy) and one "unvoiced" candidate whose strength grows as the frame gets quieter.
A dynamic-programming pass then picks one candidate per frame, trading candidate strength against the cost
of octave jumps and of voiced/unvoiced switches. That path-level choice is what removes most octave errors
and isolated voicing flickers; a per-frame argmax would keep them.

The correlation is computed for whole blocks of frames at once with FFTs, so a file costs a few FFTs per
10 ms frame; the only Python loop is the Viterbi pass over frames with a (K+1)x(K+1) step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.fft import irfft, next_fast_len, rfft
from scipy.signal import butter, sosfiltfilt

# The defaults follow the ranges conversational speech needs: a 70 Hz floor keeps low male voices, a 600 Hz
# ceiling keeps children and raised voices. Costs are in units of correlation strength.
FLOOR_HZ = 75.0
CEILING_HZ = 600.0
HOP_S = 0.01
VOICING_THRESHOLD = 0.5  # a candidate must correlate better than this to beat "unvoiced" in a loud frame
SILENCE_RATIO = 0.03  # frames this much quieter than the file's loud frames count as silence
OCTAVE_COST = 0.01  # per octave, favours the higher of two equally strong candidates (sub-harmonics)
OCTAVE_JUMP_COST = 0.35  # per octave jumped between consecutive voiced frames
VOICING_SWITCH_COST = 0.14  # per voiced<->unvoiced transition
MAX_CANDIDATES = 4
BLOCK_FRAMES = 2048  # frames per FFT block: bounds memory on long files
WINDOW_PERIODS = 1.5
OUTLIER_ST = 9.0  # three quarters of an octave: intonation inside a run rarely moves this far
SHORT_RUN_FRAMES = 8
OUTLIER_CONTEXT_S = 1.0
HIGHPASS_HZ = 50.0


@dataclass(frozen=True)
class PitchTrack:
    """Per-frame F0; frame ``i`` is centred at ``i * hop_s`` seconds."""

    hop_s: float
    f0_hz: np.ndarray  # float64, NaN where unvoiced
    strength: np.ndarray  # correlation of the chosen candidate; 0 where unvoiced

    @property
    def times(self) -> np.ndarray:
        return np.arange(self.f0_hz.size) * self.hop_s


@dataclass(frozen=True)
class Candidates:
    """Per-frame period candidates of a run of consecutive frames, before the path is chosen."""

    freq: np.ndarray  # (n, MAX_CANDIDATES) Hz, NaN where a slot is empty
    score: np.ndarray  # (n, MAX_CANDIDATES), -inf where a slot is empty
    level: np.ndarray  # (n,) RMS of the frame's high-passed head, for the unvoiced hypothesis

    @staticmethod
    def join(parts: list[Candidates]) -> Candidates:
        return Candidates(
            np.concatenate([p.freq for p in parts]),
            np.concatenate([p.score for p in parts]),
            np.concatenate([p.level for p in parts]),
        )


def track_pitch(
    audio: np.ndarray,
    sample_rate: int,
    *,
    floor_hz: float = FLOOR_HZ,
    ceiling_hz: float = CEILING_HZ,
    hop_s: float = HOP_S,
) -> PitchTrack:
    """Track F0 over a whole mono signal held in memory (long files go through ``prosody.analyse_file``)."""
    _check_range(floor_hz, ceiling_hz)
    x = np.asarray(audio, dtype=np.float64)
    n_frames = frame_count(x.size, sample_rate, hop_s)
    if n_frames == 0:
        return PitchTrack(hop_s, np.empty(0), np.empty(0))
    cands = frame_candidates(
        x, 0, 0, n_frames, x.size, sample_rate, floor_hz=floor_hz, ceiling_hz=ceiling_hz, hop_s=hop_s
    )
    f0, strength = decode(cands, reference_level(cands.level), hop_s)
    return PitchTrack(hop_s, f0, strength)


def frame_count(n_samples: int, sample_rate: int, hop_s: float = HOP_S) -> int:
    """Frames on the grid of a signal of ``n_samples``: centres 0, hop, ... up to its end."""
    return int(math.floor(n_samples / (sample_rate * hop_s))) + 1 if n_samples else 0


def _check_range(floor_hz: float, ceiling_hz: float) -> None:
    if floor_hz <= 0 or ceiling_hz <= floor_hz:
        raise ValueError(f"pitch range must satisfy 0 < floor < ceiling, got {floor_hz}..{ceiling_hz}")


def context_samples(sample_rate: int, floor_hz: float = FLOOR_HZ) -> int:
    """Samples a frame reaches on either side of its centre (a frame's span)."""
    lag_max = int(math.ceil(sample_rate / floor_hz))
    return int(WINDOW_PERIODS * lag_max) + lag_max + 2


def frame_candidates(
    x: np.ndarray,
    offset: int,
    first: int,
    stop: int,
    total: int,
    sample_rate: int,
    *,
    floor_hz: float = FLOOR_HZ,
    ceiling_hz: float = CEILING_HZ,
    hop_s: float = HOP_S,
) -> Candidates:
    """Candidates of frames [first, stop) from ``x``, the samples [offset, offset + x.size) of a signal of
    ``total`` samples.

    ``x`` must reach ``context_samples`` beyond the outer frames' centres wherever the signal does; past
    the signal's ends the frames see zeros, as for a whole-signal track. The high-pass runs over ``x``, so
    a window cut from a longer signal needs a margin (a second is plenty) for its edge transients to fade.
    """
    _check_range(floor_hz, ceiling_hz)
    # Rumble and DC drift below the pitch floor correlate at every short lag and would pass for voicing in
    # background noise; a zero-phase high-pass removes them without shifting anything in time.
    x = sosfiltfilt(butter(4, HIGHPASS_HZ, btype="highpass", fs=sample_rate, output="sos"), x)
    rate = sample_rate
    lag_min = max(2, int(math.floor(rate / ceiling_hz)))
    lag_max = int(math.ceil(rate / floor_hz))
    window = int(WINDOW_PERIODS * lag_max)
    lags = np.arange(lag_max + 2)
    span = window + lags.size  # a frame holds the head plus every lagged copy of it
    # Circular correlation is exact here for any length >= span: head is zero beyond `window`, so no
    # product j + tau < span ever wraps around.
    nfft = next_fast_len(span, real=True)

    # Frame i covers [c - span/2, c + span/2) around its centre c = i*hop; zeros stand in beyond x, which
    # the caller guarantees is only beyond the signal's ends.
    half = span // 2
    centres = np.round(np.arange(first, stop) * rate * hop_s).astype(np.int64)
    if stop > first and (
        (offset > 0 and centres[0] - half < offset)
        or (offset + x.size < total and centres[-1] - half + span > offset + x.size)
    ):
        raise ValueError("the audio window does not cover the frames' context")
    padded = np.concatenate([np.zeros(half), x, np.zeros(span)])
    starts = centres - offset
    n_frames = stop - first
    # Running sum of squares over the window gives the energy of any lagged copy by two look-ups.
    energy_csum = np.concatenate([[0.0], np.cumsum(padded**2)])
    padded32 = padded.astype(np.float32)

    cands_f = np.full((n_frames, MAX_CANDIDATES), np.nan)
    cands_s = np.full((n_frames, MAX_CANDIDATES), -np.inf)
    level = np.empty(n_frames)
    for b0 in range(0, n_frames, BLOCK_FRAMES):
        idx = starts[b0 : b0 + BLOCK_FRAMES]
        frames = padded32[idx[:, None] + np.arange(span)[None, :]]
        spec = np.conj(rfft(frames[:, :window], nfft, axis=1, workers=-1))
        spec *= rfft(frames, nfft, axis=1, workers=-1)
        r = irfft(spec, nfft, axis=1, workers=-1)[:, : lags.size].astype(np.float64)
        at = idx[:, None] + lags[None, :]
        e_lag = energy_csum[at + window] - energy_csum[at]
        level[b0 : b0 + idx.size] = np.sqrt(np.maximum(e_lag[:, 0], 0.0) / window)
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = r / np.sqrt(e_lag[:, :1] * e_lag)
        rho[~np.isfinite(rho)] = 0.0
        _pick_candidates(
            rho, lag_min, lag_max, rate, floor_hz, cands_f[b0 : b0 + idx.size], cands_s[b0 : b0 + idx.size]
        )
    return Candidates(cands_f, cands_s, level)


def reference_level(levels: np.ndarray) -> float:
    """The loud-frame level the unvoiced hypothesis is measured against (99th percentile)."""
    return float(np.percentile(levels, 99)) if levels.size else 0.0


def decode(cands: Candidates, loud: float, hop_s: float = HOP_S) -> tuple[np.ndarray, np.ndarray]:
    """(f0, strength) of a run of consecutive frames: the Viterbi path, then the octave-outlier pass."""
    unvoiced = _unvoiced_strength(cands.level, loud)
    f0, strength = _viterbi(cands.freq, cands.score, unvoiced)
    _drop_octave_outliers(f0, hop_s)
    strength[np.isnan(f0)] = 0.0
    return f0, strength


def _pick_candidates(
    rho: np.ndarray,
    lag_min: int,
    lag_max: int,
    rate: int,
    floor_hz: float,
    out_f: np.ndarray,
    out_s: np.ndarray,
) -> None:
    """Write the strongest local maxima of rho (per row) as (frequency, strength) candidates."""
    centre = rho[:, lag_min : lag_max + 1]
    left = rho[:, lag_min - 1 : lag_max]
    right = rho[:, lag_min + 1 : lag_max + 2]
    is_peak = (centre > left) & (centre >= right) & (centre > 0.0)
    # Parabolic interpolation refines the lag and the peak height between samples.
    denom = left - 2.0 * centre + right
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.where(denom < 0, 0.5 * (left - right) / denom, 0.0)
    shift = np.clip(shift, -0.5, 0.5)
    height = centre - 0.25 * (left - right) * shift
    lag = np.arange(lag_min, lag_max + 1)[None, :] + shift
    freq = rate / lag
    score = np.minimum(height, 1.0) + OCTAVE_COST * np.log2(freq / floor_hz)
    score = np.where(is_peak & (freq >= floor_hz), score, -np.inf)
    k = min(MAX_CANDIDATES, score.shape[1])
    top = np.argpartition(-score, k - 1, axis=1)[:, :k]
    rows = np.arange(score.shape[0])[:, None]
    best = score[rows, top]
    out_s[: score.shape[0], :k] = best
    out_f[:, :k] = np.where(np.isfinite(best), freq[rows, top], np.nan)


def _drop_octave_outliers(f0: np.ndarray, hop_s: float) -> None:
    """Unvoice (in place) what the path still gets an octave wrong.

    Two leftovers survive the Viterbi pass: single frames that jump away inside a voiced run, and short
    runs (a fricative or a creaky onset tracked at a harmonic) far from the voice around them. Both are
    measured in semitones against a median: of the run, and of the voiced frames within ``OUTLIER_CONTEXT_S``.
    """
    voiced = np.isfinite(f0)
    if not voiced.any():
        return
    st = np.where(voiced, 12.0 * np.log2(np.where(voiced, f0, 1.0)), np.nan)
    edges = np.diff(np.concatenate([[0], voiced.astype(np.int8), [0]]))
    runs = list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))
    context = int(round(OUTLIER_CONTEXT_S / hop_s))
    for a, b in runs:
        run = st[a:b]
        run_median = float(np.median(run))
        far = np.abs(run - run_median) > OUTLIER_ST
        if b - a <= SHORT_RUN_FRAMES:
            around = np.concatenate([st[max(0, a - context) : a], st[b : b + context]])
            around = around[np.isfinite(around)]
            if around.size >= SHORT_RUN_FRAMES and abs(run_median - float(np.median(around))) > OUTLIER_ST:
                far[:] = True
        f0[a:b][far] = np.nan


def _unvoiced_strength(level: np.ndarray, loud: float) -> np.ndarray:
    """Strength of the unvoiced hypothesis: the voicing threshold, raised steeply in quiet frames."""
    if loud <= 0.0:
        return np.full(level.shape, 10.0)  # digital silence: nothing can be voiced
    relative = level / (SILENCE_RATIO * loud)
    return VOICING_THRESHOLD + np.maximum(0.0, 2.0 - 2.0 * np.minimum(relative, 1.0))


def _viterbi(cands_f: np.ndarray, cands_s: np.ndarray, unvoiced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best path through K voiced candidates + 1 unvoiced state per frame."""
    n, k = cands_f.shape
    log_f = np.log2(np.where(np.isfinite(cands_f), cands_f, 1.0))
    strength = np.concatenate([cands_s, unvoiced[:, None]], axis=1)  # state k is unvoiced
    back = np.empty((n, k + 1), dtype=np.int8)
    score = strength[0].copy()
    # Transition costs for a block of frame pairs at once (bounded memory on long runs); the inner loop
    # then does two reductions per frame.
    for c0 in range(1, n, BLOCK_FRAMES):
        c1 = min(n, c0 + BLOCK_FRAMES)
        trans = np.full((c1 - c0, k + 1, k + 1), VOICING_SWITCH_COST)
        trans[:, k, k] = 0.0
        trans[:, :k, :k] = OCTAVE_JUMP_COST * np.abs(log_f[c0 - 1 : c1 - 1, :, None] - log_f[c0:c1, None, :])
        for t in range(c0, c1):
            total = score[:, None] - trans[t - c0]
            back[t] = total.argmax(axis=0)
            score = total.max(axis=0) + strength[t]
    path = np.empty(n, dtype=np.int64)
    path[-1] = int(np.argmax(score))
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    rows = np.arange(n)
    is_voiced = path < k
    safe = np.minimum(path, k - 1)
    f0 = np.where(is_voiced, cands_f[rows, safe], np.nan)
    chosen = np.where(is_voiced, cands_s[rows, safe], 0.0)
    return f0, chosen
