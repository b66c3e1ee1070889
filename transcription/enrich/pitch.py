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


def track_pitch(
    audio: np.ndarray,
    sample_rate: int,
    *,
    floor_hz: float = FLOOR_HZ,
    ceiling_hz: float = CEILING_HZ,
    hop_s: float = HOP_S,
) -> PitchTrack:
    """Track F0 over a whole mono signal."""
    if floor_hz <= 0 or ceiling_hz <= floor_hz:
        raise ValueError(f"pitch range must satisfy 0 < floor < ceiling, got {floor_hz}..{ceiling_hz}")
    x = np.asarray(audio, dtype=np.float64)
    n_frames = int(math.floor(x.size / (sample_rate * hop_s))) + 1 if x.size else 0
    if n_frames == 0:
        return PitchTrack(hop_s, np.empty(0), np.empty(0))

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

    # Frame i covers [c - span/2, c + span/2) around its centre c = i*hop (zero-padded at both ends).
    half = span // 2
    padded = np.concatenate([np.zeros(half), x, np.zeros(span)])
    starts = np.round(np.arange(n_frames) * rate * hop_s).astype(np.int64)
    # Running sum of squares over the whole signal gives the energy of any lagged copy by two look-ups.
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

    unvoiced = _unvoiced_strength(level)
    f0, strength = _viterbi(cands_f, cands_s, unvoiced)
    _drop_octave_outliers(f0, hop_s)
    strength[np.isnan(f0)] = 0.0
    return PitchTrack(hop_s, f0, strength)


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


def _unvoiced_strength(level: np.ndarray) -> np.ndarray:
    """Strength of the unvoiced hypothesis: the voicing threshold, raised steeply in quiet frames."""
    loud = float(np.percentile(level, 99)) if level.size else 0.0
    if loud <= 0.0:
        return np.full(level.shape, 10.0)  # digital silence: nothing can be voiced
    relative = level / (SILENCE_RATIO * loud)
    return VOICING_THRESHOLD + np.maximum(0.0, 2.0 - 2.0 * np.minimum(relative, 1.0))


def _viterbi(cands_f: np.ndarray, cands_s: np.ndarray, unvoiced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best path through K voiced candidates + 1 unvoiced state per frame."""
    n, k = cands_f.shape
    log_f = np.log2(np.where(np.isfinite(cands_f), cands_f, 1.0))
    strength = np.concatenate([cands_s, unvoiced[:, None]], axis=1)  # state k is unvoiced
    # Transition costs for every frame pair at once; the loop below then does two reductions per frame.
    trans = np.full((n, k + 1, k + 1), VOICING_SWITCH_COST)
    trans[:, k, k] = 0.0
    trans[1:, :k, :k] = OCTAVE_JUMP_COST * np.abs(log_f[:-1, :, None] - log_f[1:, None, :])
    back = np.empty((n, k + 1), dtype=np.int8)
    score = strength[0].copy()
    for t in range(1, n):
        total = score[:, None] - trans[t]
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
