"""Energy, pauses, rate, syllables, levels and rendering, on synthetic signals with known answers and on
real recordings (EmoDB acted emotions, LibriVox read speech)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA
from faster_whisper import decode_audio

from transcription.config import Settings
from transcription.enrich import enrich_document, levels, prosody, render
from transcription.enrich.syllables import UnsupportedScript, count_word

SR = 16000
NO_EMOTION = Settings(emotion=False)


def tone(seconds: float, hz: float = 200.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    return sum(amplitude / k * np.sin(2 * np.pi * k * hz * t) for k in range(1, 5)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SR)), dtype=np.float32)


def burst_train() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Bursts of 0.5 s, gaps of 0.3, 0.1 (too short to count), 0.6 and 1.2 s; returns audio, burst spans."""
    gaps = [0.3, 0.1, 0.6, 1.2]
    parts, spans, t = [silence(0.2)], [], 0.2
    for gap in gaps + [None]:
        parts.append(tone(0.5))
        spans.append((t, t + 0.5))
        t += 0.5
        if gap is not None:
            parts.append(silence(gap))
            t += gap
    parts.append(silence(0.3))
    return np.concatenate(parts), spans


def test_pauses_from_low_energy_stretches() -> None:
    audio, spans = burst_train()
    analysis = prosody.analyse_file(audio)
    stats, _ = prosody.segment_prosody(analysis, 0.0, audio.size / SR, [], "", None)
    pauses = stats["pauses"]
    assert pauses["count"] == 3  # the 0.1 s gap is below the pause minimum
    assert pauses["longest_s"] == pytest.approx(1.2, abs=0.04)
    assert pauses["total_s"] == pytest.approx(2.1, abs=0.08)


def test_pauses_from_word_gaps_and_rate() -> None:
    audio, spans = burst_train()
    words = [
        {"word": w, "start": a, "end": b, "probability": 0.9}
        for w, (a, b) in zip(["one", "hello", "table", "banana", "go"], spans, strict=True)
    ]
    analysis = prosody.analyse_file(audio)
    stats, errors = prosody.segment_prosody(analysis, 0.0, audio.size / SR, words, "", "en")
    assert errors == []
    assert stats["pauses"]["count"] == 3
    span = spans[-1][1] - spans[0][0]
    assert stats["rate"]["words_per_s"] == pytest.approx(5 / span, rel=1e-3)
    syllables = 1 + 2 + 2 + 3 + 1
    assert stats["rate"]["syllables_per_s"] == pytest.approx(syllables / span, rel=1e-3)
    speaking = span - stats["pauses"]["total_s"]
    assert stats["rate"]["articulation_rate"] == pytest.approx(syllables / speaking, rel=1e-3)
    # Energy is the level while sounding: the tone's RMS, not diluted by the pauses.
    expected_db = 10 * np.log10(np.mean(tone(0.5) ** 2))
    assert stats["energy"]["rms_db"] == pytest.approx(expected_db, abs=0.5)


def test_short_and_silent_segments_are_null_with_reasons() -> None:
    audio = np.concatenate([silence(1.0), tone(1.0)])
    analysis = prosody.analyse_file(audio)
    stats, errors = prosody.segment_prosody(analysis, 0.1, 0.9, [], "", None)
    assert stats["pitch"]["mean_hz"] is None and stats["energy"]["rms_db"] is None
    assert stats["rate"]["words_per_s"] is None and stats["pauses"]["count"] is None
    assert any(e.startswith("prosody.pitch: 0 voiced frames") for e in errors)
    assert any(e.startswith("prosody.energy: no frame above the silence level") for e in errors)
    tiny, errors = prosody.segment_prosody(analysis, 1.5, 1.52, [], "", None)
    assert all(v is None for v in tiny["pitch"].values())
    assert errors == ["prosody: segment is 0.020 s long, too short to measure"]


@pytest.mark.parametrize(
    ("word", "language", "expected"),
    [
        ("made", "en", 1),
        ("table", "en", 2),
        ("syllable", "en", 3),
        ("the", "en", 1),
        ("Bürgermeister", "de", 4),
        ("здравствуйте", "ru", 3),
        ("καλημέρα", "el", 4),
        ("你好", "zh", 2),
        ("こんにちは", "ja", 5),
        ("きょう", "ja", 2),
        ("안녕하세요", "ko", 5),
        ("नमस्ते", "hi", 3),
        ("कमल", "hi", 2),
        ("1961", "en", 4),
        ("—", None, 0),
    ],
)
def test_syllables_across_scripts(word: str, language: str | None, expected: int) -> None:
    assert count_word(word, language) == expected


def test_unsupported_script_gives_null_rate_with_reason() -> None:
    with pytest.raises(UnsupportedScript, match="Arabic"):
        count_word("مرحبا", "ar")
    audio = tone(1.0)
    analysis = prosody.analyse_file(audio)
    words = [{"word": "مرحبا", "start": 0.1, "end": 0.9, "probability": 1.0}]
    stats, errors = prosody.segment_prosody(analysis, 0.0, 1.0, words, "", "ar")
    assert stats["rate"]["words_per_s"] == pytest.approx(1 / 0.8, rel=1e-3)
    assert stats["rate"]["syllables_per_s"] is None and stats["rate"]["articulation_rate"] is None
    assert errors == ["prosody.rate.syllables_per_s: syllables cannot be counted from Arabic script letters"]


def _doc_of_tones(freqs: list[float], speakers: list[str | None] | None = None) -> tuple[dict, np.ndarray]:
    parts, segments, t = [], [], 0.0
    for i, hz in enumerate(freqs):
        parts += [silence(0.3), tone(1.0, hz)]
        seg = {"id": i, "start": t + 0.3, "end": t + 1.3, "text": "la la", "words": []}
        if speakers and speakers[i] is not None:
            seg["speaker"] = speakers[i]
        segments.append(seg)
        t += 1.3
    return {"language": "en", "segments": segments}, np.concatenate(parts)


def _levels(doc: dict, feature: str = "pitch") -> list[str | None]:
    return [s["audio_state"]["prosody"][feature]["level"] for s in doc["segments"]]


def test_levels_are_relative_to_the_file() -> None:
    doc, audio = _doc_of_tones([200, 200, 200, 200, 300])
    enrich_document(doc, audio, NO_EMOTION)
    assert _levels(doc) == ["normal"] * 4 + ["very_high"]
    assert doc["segments"][4]["audio_state"]["rendering"] == "[audio: much higher pitch]"
    assert doc["segments"][0]["audio_state"]["rendering"] == ""


def test_levels_are_relative_to_each_speaker() -> None:
    """A low voice and a high voice are each normal for themselves; pooled, they would not be."""
    freqs = [100, 105, 100, 102, 98, 200, 210, 200]
    doc, audio = _doc_of_tones(freqs, ["a"] * 5 + ["b"] * 3)
    enrich_document(doc, audio, NO_EMOTION)
    assert _levels(doc) == ["normal"] * 8
    pooled, audio = _doc_of_tones(freqs)
    enrich_document(pooled, audio, NO_EMOTION)
    assert _levels(pooled) == ["normal"] * 5 + ["very_high"] * 3


def test_too_few_segments_for_a_baseline() -> None:
    doc, audio = _doc_of_tones([200, 220])
    enrich_document(doc, audio, NO_EMOTION)
    assert _levels(doc) == [None, None]
    errors = doc["segments"][0]["audio_state"]["status"]["errors"]
    assert "prosody.pitch.level: no baseline: 2 measured segments, at least 3 needed for the file" in errors


def test_band_edges() -> None:
    assert [levels.band(z) for z in (-2.5, -1.5, 0.0, 1.5, 2.5)] == list(levels.LEVELS)


def test_rendering_uses_plain_words_only() -> None:
    every_level = []
    for pitch_level in levels.LEVELS:
        for energy_level in levels.LEVELS:
            state = {
                "prosody": {
                    "pitch": {"level": pitch_level, "slope_st_per_s": 4.0},
                    "energy": {"level": energy_level},
                    "rate": {"level": "very_high"},
                    "pauses": {"count": 2, "total_s": 1.5, "longest_s": 1.2},
                },
                "emotion": {"arousal": 0.9, "valence": 0.1, "dominance": 0.5, "model": "m"},
                "status": {"prosody": "ok", "emotion": "ok", "errors": []},
            }
            text = render.render(state, 4.0)
            every_level.append(text)
            assert text.startswith("[audio: ") and text.endswith("]")
            assert "_" not in text and "normal" not in text  # no enum names leak into the words
    assert (
        "[audio: much higher pitch, very fast, very loud, rising pitch, long pause, intense, negative]"
        in every_level
    )
    typical = {
        "prosody": {
            "pitch": {"level": "normal", "slope_st_per_s": -1.0},
            "energy": {"level": "normal"},
            "rate": {"level": "normal"},
            "pauses": {"count": 0, "total_s": 0.0, "longest_s": 0.0},
        },
        "emotion": None,
        "status": {"prosody": "ok", "emotion": "failed", "errors": ["emotion: x"]},
    }
    assert render.render(typical, 3.0) == ""
    nothing = {
        "prosody": None,
        "emotion": None,
        "status": {"prosody": "failed", "emotion": "skipped", "errors": []},
    }
    assert render.render(nothing, 3.0) is None


def _emodb_doc() -> tuple[dict, np.ndarray, list[str]]:
    folder = DATA / "emotion" / "emodb_de"
    rows = list(csv.DictReader((folder / "labels.csv").open(encoding="utf-8")))
    parts, segments, t = [silence(0.4)], [], 0.4
    for i, row in enumerate(rows):
        clip = decode_audio(str(folder / row["file"]), sampling_rate=SR)
        segments.append(
            {
                "id": i,
                "start": t,
                "end": t + clip.size / SR,
                "text": row["transcription_de"],
                "words": [],
                "speaker": row["speaker"],
            }
        )
        parts += [clip, silence(0.4)]
        t += clip.size / SR + 0.4
    return {"language": "de", "segments": segments}, np.concatenate(parts), [r["emotion"] for r in rows]


@pytest.mark.needs_data
def test_emodb_aroused_emotions_have_higher_pitch_than_neutral_and_sad() -> None:
    """One speaker, four acted emotions: anger and happiness are spoken higher than neutral and sadness.

    Energy is not asserted: the EmoDB files are each peak-normalised to full scale, which removes the
    loudness difference between emotions (the happy clip measures quietest of the four).
    """
    doc, audio, emotions = _emodb_doc()
    enrich_document(doc, audio, NO_EMOTION)
    by_emotion = {e: s["audio_state"] for e, s in zip(emotions, doc["segments"], strict=True)}
    mean = {e: st["prosody"]["pitch"]["mean_hz"] for e, st in by_emotion.items()}
    for aroused in ("anger", "happiness"):
        for calm in ("neutral", "sadness"):
            assert mean[aroused] > 1.25 * mean[calm], mean  # at least ~4 semitones higher
    order = [levels.LEVELS.index(by_emotion[e]["prosody"]["pitch"]["level"]) for e in emotions]
    rank = dict(zip(emotions, order, strict=True))
    assert min(rank["anger"], rank["happiness"]) >= max(rank["neutral"], rank["sadness"])
    assert all(st["status"]["prosody"] == "ok" for st in by_emotion.values())


@pytest.mark.needs_data
def test_librivox_read_speech_with_aligned_words() -> None:
    folder = DATA / "en_read" / "librivox_sense_and_sensibility"
    parts, segments, t = [], [], 0.0
    for i, wav in enumerate(sorted(folder.glob("*.wav"))):
        clip = decode_audio(str(wav), sampling_rate=SR)
        aligned = json.loads(wav.with_suffix(".json").read_text())
        words = [
            {
                "word": w["t"].split("(")[0],
                "start": t + w["b"],
                "end": t + w["b"] + w["d"],
                "probability": w["p"],
            }
            for w in aligned["w"]
            if w["t"] != "<sil>"
        ]
        segments.append(
            {"id": i, "start": t, "end": t + clip.size / SR, "text": aligned["t"], "words": words}
        )
        parts.append(clip)
        t += clip.size / SR
    doc = {"language": "en", "segments": segments}
    enrich_document(doc, np.concatenate(parts), NO_EMOTION)
    for seg in doc["segments"]:
        p = seg["audio_state"]["prosody"]
        assert 80 < p["pitch"]["mean_hz"] < 160  # one male reader
        assert 3.0 < p["rate"]["syllables_per_s"] < 7.0  # ordinary read-aloud pace
        assert p["rate"]["articulation_rate"] >= p["rate"]["syllables_per_s"]
        assert p["energy"]["rms_db"] is not None and p["pauses"]["count"] is not None
        assert all(
            level is not None for level in (p["pitch"]["level"], p["energy"]["level"], p["rate"]["level"])
        )
    json.dumps(doc)  # plain JSON types only


def test_prosody_runs_without_importing_torch() -> None:
    """Prosody needs only numpy and scipy: torch/transformers (the emotion extra) stay unimported."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from transcription.config import Settings\n"
        "from transcription.enrich import enrich_document\n"
        "t = np.arange(16000) / 16000\n"
        "audio = (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)\n"
        "doc = {'segments': [{'id': 0, 'start': 0.0, 'end': 1.0, 'text': 'ah', 'words': []}]}\n"
        "enrich_document(doc, audio, Settings(emotion=False))\n"
        "assert doc['segments'][0]['audio_state']['status']['prosody'] == 'ok'\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_contour_follows_pitch_and_energy_within_a_segment() -> None:
    """A glide from 120 to 240 Hz over 2 s, 16 dB louder after 1 s, then 0.5 s of silence: the contour's
    steps follow the glide, the energy step and the silence, where the segment's means cannot."""
    t = np.arange(2 * SR) / SR
    phase = 2 * np.pi * (120 * t + 30 * t**2)  # instantaneous frequency 120 + 60 t
    amplitude = np.where(t < 1.0, 0.05, 0.3)
    glide = sum(amplitude / k * np.sin(k * phase) for k in range(1, 5)).astype(np.float32)
    audio = np.concatenate([glide, silence(0.5)])
    stats, _ = prosody.segment_prosody(prosody.analyse_file(audio), 0.0, 2.5, [], "", None)
    contour = stats["contour"]
    assert contour["step_s"] == prosody.CONTOUR_STEP_S == 0.1
    assert len(contour["pitch_hz"]) == len(contour["energy_db"]) == 25
    for i, hz in enumerate(contour["pitch_hz"][1:19], start=1):
        assert hz == pytest.approx(120 + 60 * (i + 0.5) * 0.1, rel=0.03), (i, contour["pitch_hz"])
    assert contour["pitch_hz"][21:] == [None] * 4  # silence has no pitch
    quiet, loud = np.median(contour["energy_db"][2:8]), np.median(contour["energy_db"][12:18])
    assert loud - quiet == pytest.approx(20 * np.log10(0.3 / 0.05), abs=1.5)
    assert contour["energy_db"][-1] == prosody.FLOOR_DB
    assert all(isinstance(v, int) for v in contour["pitch_hz"] + contour["energy_db"] if v is not None)


@pytest.mark.needs_data
def test_contour_in_the_enriched_document_of_real_speech() -> None:
    """Stage 2 writes a contour for every measured segment, step by step over the whole segment, valid
    against the shipped schema; a segment too short to measure has none."""
    import jsonschema

    from transcription.schema import json_schema

    folder = DATA / "en_read" / "librivox_sense_and_sensibility"
    wav = sorted(folder.glob("*.wav"))[0]
    audio = decode_audio(str(wav), sampling_rate=SR)
    end = audio.size / SR
    doc = {
        "language": "en",
        "segments": [
            {"id": 0, "start": 0.0, "end": end / 2, "text": "first half", "words": []},
            {"id": 1, "start": end / 2, "end": end, "text": "second half", "words": []},
            {"id": 2, "start": end, "end": end, "text": "", "words": []},
        ],
    }
    enrich_document(doc, audio, NO_EMOTION)
    schema = json_schema()
    validator = jsonschema.Draft202012Validator({"$ref": "#/$defs/audio_state", "$defs": schema["$defs"]})
    for seg in doc["segments"]:
        validator.validate(seg["audio_state"])
    for seg in doc["segments"][:2]:
        p = seg["audio_state"]["prosody"]
        c = p["contour"]
        assert (
            len(c["pitch_hz"])
            == len(c["energy_db"])
            == int(np.ceil((seg["end"] - seg["start"]) / 0.1 - 1e-9))
        )
        voiced = [hz for hz in c["pitch_hz"] if hz is not None]
        assert len(voiced) > len(c["pitch_hz"]) / 3  # read speech is mostly voiced
        assert p["pitch"]["min_hz"] - 20 <= float(np.median(voiced)) <= p["pitch"]["max_hz"] + 20
        assert max(c["energy_db"]) >= p["energy"]["rms_db"] - 1  # the loudest step is at least the mean
    assert doc["segments"][2]["audio_state"]["prosody"]["contour"] is None
