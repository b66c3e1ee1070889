"""The loss detector: lost speech and loops are found, decoded again, and what stays lost is reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import DATA

from transcription import recovery
from transcription.schema import Segment, Word


def _seg(start: float, end: float, text: str, language: str = "en") -> Segment:
    words = text.split()
    step = (end - start) / max(1, len(words))
    timed = [Word(" " + w, start + i * step, start + (i + 1) * step, 0.9) for i, w in enumerate(words)]
    return Segment(0, start, end, text, -0.2, 0.01, timed, language)


def test_speech_with_words_is_not_lost() -> None:
    assert recovery.find_lost([(0.0, 5.0)], [_seg(0.2, 4.8, "one two three four five six")]) == []


def test_speech_without_words_is_lost_and_short_pieces_join() -> None:
    segs = [_seg(0.0, 3.0, "hello there my friend")]
    # 3 s of speech after the words: lost; a 1.2 s piece alone is not
    assert recovery.find_lost([(0.0, 3.0), (4.0, 7.0)], segs) == [(4.0, 7.0)]
    assert recovery.find_lost([(0.0, 3.0), (4.0, 5.2)], segs) == []
    # two 1.2 s pieces 0.8 s apart count together: a dropped part of two short sentences
    assert recovery.find_lost([(0.0, 3.0), (4.0, 5.2), (6.0, 7.2)], segs) == [(4.0, 7.2)]


def test_loops_are_found_and_sentences_are_not() -> None:
    assert recovery.is_loop("Thank you. Thank you. Thank you. Thank you. Thank you.")
    assert recovery.is_loop("the the the the")
    assert recovery.is_loop("I'm going to go to the store, " * 6)
    assert not recovery.is_loop("And so my fellow Americans, ask not what your country can do for you.")
    assert not recovery.is_loop("very very good")


def test_recover_keeps_what_the_retry_finds_and_reports_the_rest() -> None:
    segs = [_seg(0.0, 3.0, "hello there my friend")]
    calls: list[tuple[float, float]] = []

    def finds_german(start: float, end: float) -> list[Segment]:
        calls.append((start, end))
        return [_seg(start + 0.3, end - 0.3, "Der Lappen liegt auf dem Eisschrank", "de")]

    found = recovery.recover([(0.0, 3.0), (4.0, 7.0)], segs, finds_german, 8.0)
    assert calls == [(3.75, 7.25)]  # the stretch, padded
    assert found.lost == [] and (found.retried, found.recovered) == (1, 1)
    assert [s.language for s in found.segments] == ["en", "de"]

    nothing = recovery.recover([(0.0, 3.0), (4.0, 7.0)], segs, lambda a, b: [], 8.0)
    assert nothing.lost == [(4.0, 7.0)] and (nothing.retried, nothing.recovered) == (1, 0)
    assert nothing.warnings == ["speech without text at 4.0–7.0 s"]


def test_a_loop_is_replaced_only_by_a_better_decode() -> None:
    loop = _seg(0.0, 6.0, "Thank you. " * 8)
    better = recovery.recover(
        [(0.0, 6.0)], [loop], lambda a, b: [_seg(0.2, 5.8, "we met at the station")], 6.0
    )
    assert [s.text for s in better.segments] == ["we met at the station"]
    worse = recovery.recover([(0.0, 6.0)], [loop], lambda a, b: [_seg(0.2, 5.8, "Thank you. " * 9)], 6.0)
    assert worse.segments == [loop] and worse.recovered == 0


@pytest.mark.slow
def test_speech_dropped_by_a_wrong_language_comes_back(data: Path) -> None:
    """Detected once (English) on an English-then-German recording, Whisper drops or translates the German;
    the loss detector decodes the dropped stretch again in its own language."""
    from faster_whisper.audio import decode_audio

    from transcription.asr import AsrOptions, Engine
    from transcription.config import load_settings

    clips = [DATA / "en_read/jfk/jfk.flac", *sorted((DATA / "emotion/emodb_de").glob("*.wav"))]
    pause = np.zeros(12_800, np.float32)
    audio = np.concatenate([x for c in clips for x in (decode_audio(str(c), 16_000), pause)])
    settings = load_settings({"model": "base", "device": "cpu"}, environ={"HF_HUB_OFFLINE": "1"})
    engine = Engine.load(settings)
    options = AsrOptions.from_settings(settings, language_detection="file")
    result = engine.transcribe(audio, options)
    german = [s for s in result.segments if s.start >= 11.0]
    text = " ".join(s.text for s in german).lower()
    assert result.retried >= 1 and result.recovered >= 1
    assert {s.language for s in german} == {"de"}, [(s.language, s.text) for s in german]
    assert "lappen" in text and "mittwoch" in text
    # With detection per chunk nothing is lost in the first place.
    per_chunk = engine.transcribe(audio, AsrOptions.from_settings(settings))
    assert per_chunk.retried == 0 and not per_chunk.lost
    assert {s.language for s in per_chunk.segments} == {"en", "de"}
