"""F0 tracking: synthetic signals with known answers, and real speech against Praat as the reference.

Praat (through parselmouth, GPL-3) is used here only as a measuring instrument; the product never imports it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA
from faster_whisper import decode_audio

from transcription.enrich import prosody
from transcription.enrich.pitch import track_pitch

parselmouth = pytest.importorskip("parselmouth")

SR = 16000


def tone(freqs_hz: np.ndarray, amplitude: float = 0.3) -> np.ndarray:
    """A voice-like harmonic signal following an instantaneous F0 contour (one value per sample)."""
    phase = 2 * np.pi * np.cumsum(freqs_hz) / SR
    signal = sum(amplitude / k * np.sin(k * phase) for k in range(1, 6))
    return signal.astype(np.float32)


def test_steady_200_hz_tone() -> None:
    x = tone(np.full(SR, 200.0))
    track = track_pitch(x, SR)
    voiced = track.f0_hz[np.isfinite(track.f0_hz)]
    assert voiced.size >= 0.9 * track.f0_hz.size  # the whole second is voiced (edges aside)
    assert np.median(voiced) == pytest.approx(200.0, rel=0.005)
    assert np.all(np.abs(voiced - 200.0) < 4.0)  # no octave errors anywhere


def test_pure_sine_and_low_voice() -> None:
    t = np.arange(SR) / SR
    sine = (0.5 * np.sin(2 * np.pi * 120.0 * t)).astype(np.float32)
    f0 = track_pitch(sine, SR).f0_hz
    assert np.nanmedian(f0) == pytest.approx(120.0, rel=0.005)
    low = track_pitch(tone(np.full(SR, 85.0)), SR).f0_hz
    assert np.nanmedian(low) == pytest.approx(85.0, rel=0.01)


def test_glide_slope_sign_and_size() -> None:
    """150 -> 300 Hz over 1 s is a rise of exactly 12 semitones per second."""
    f = 150.0 * 2.0 ** (np.arange(SR) / SR)  # exponential glide: constant semitones per second
    analysis = prosody.analyse_file(tone(f))
    stats, errors = prosody.segment_prosody(analysis, 0.05, 0.95, [], "", None)
    assert errors == ["prosody.rate: no word timings; rates use the segment text over its non-silent span"]
    assert stats["pitch"]["slope_st_per_s"] == pytest.approx(12.0, abs=0.3)
    assert stats["pitch"]["min_hz"] == pytest.approx(150 * 2**0.1, rel=0.05)
    assert stats["pitch"]["max_hz"] == pytest.approx(150 * 2**0.9, rel=0.05)
    falling = prosody.analyse_file(tone(f[::-1].copy()))
    down, _ = prosody.segment_prosody(falling, 0.05, 0.95, [], "", None)
    assert down["pitch"]["slope_st_per_s"] == pytest.approx(-12.0, abs=0.3)


def test_silence_and_noise_are_unvoiced() -> None:
    rng = np.random.default_rng(0)
    silent = np.zeros(SR, dtype=np.float32)
    assert not np.isfinite(track_pitch(silent, SR).f0_hz).any()
    noise = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    assert np.isfinite(track_pitch(noise, SR).f0_hz).mean() < 0.05


def _praat_mean(snd, start: float, end: float) -> float | None:
    pitch = snd.to_pitch(time_step=0.01, pitch_floor=75.0, pitch_ceiling=600.0)
    f = pitch.selected_array["frequency"]
    t = pitch.xs()
    sel = f[(t >= start) & (t < end) & (f > 0)]
    return float(sel.mean()) if sel.size >= 10 else None


def _librivox_spans():
    """Word-aligned spans from the LibriVox forced alignment: each stretch between two <sil> marks."""
    for wav in sorted((DATA / "en_read" / "librivox_sense_and_sensibility").glob("*.wav")):
        words = json.loads(wav.with_suffix(".json").read_text())["w"]
        current: list[dict] = []
        for w in words + [{"t": "<sil>", "b": 1e9, "d": 0}]:
            if w["t"] == "<sil>":
                if current:
                    yield wav, current[0]["b"], current[-1]["b"] + current[-1]["d"]
                current = []
            else:
                current.append(w)


def _fixed_spans(folder: str, pattern: str, span_s: float = 2.0, limit: int | None = None):
    for wav in sorted((DATA / folder).glob(pattern))[:limit]:
        duration = decode_audio(str(wav), sampling_rate=SR).size / SR
        start = 0.0
        while start + span_s / 2 <= duration:
            yield wav, start, min(start + span_s, duration)
            start += span_s


@pytest.mark.needs_data
def test_mean_f0_matches_praat_on_real_speech() -> None:
    """Median over segments of |mean F0 - Praat's mean F0| / Praat's mean must stay under 5%."""
    spans = list(_librivox_spans())
    spans += list(_fixed_spans("en_read/ljspeech", "LJ001-00*.wav", limit=10))
    spans += list(_fixed_spans("emotion/emodb_de", "*.wav", span_s=4.0))
    by_file: dict[Path, list[tuple[float, float]]] = {}
    for wav, a, b in spans:
        by_file.setdefault(wav, []).append((a, b))
    errors = []
    for wav, file_spans in by_file.items():
        audio = decode_audio(str(wav), sampling_rate=SR)
        analysis = prosody.analyse_file(audio)
        snd = parselmouth.Sound(audio.astype(np.float64), sampling_frequency=SR)
        for a, b in file_spans:
            ours, _ = prosody.segment_prosody(analysis, a, b, [], "", None)
            ref = _praat_mean(snd, a, b)
            if ref is None or ours["pitch"]["mean_hz"] is None:
                continue
            errors.append(abs(ours["pitch"]["mean_hz"] - ref) / ref)
    assert len(errors) >= 40, f"only {len(errors)} comparable segments"
    assert float(np.median(errors)) < 0.05, f"median relative error {np.median(errors):.3f}"
    # Most segments agree closely, not just the median one.
    assert float(np.mean(np.array(errors) < 0.10)) >= 0.8
