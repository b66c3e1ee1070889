"""The loss detector: lost speech and loops are found, decoded again, and what stays lost is reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import DATA

from transcription import recovery
from transcription.schema import Segment, Word


def _seg(start: float, end: float, text: str = "hello there", language: str | None = "en") -> Segment:
    """A segment with evenly spread words over [start, end]."""
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


def test_a_loop_is_replaced_only_by_a_better_decode() -> None:
    loop = _seg(0.0, 6.0, "Thank you. " * 8)
    better = recovery.recover(
        [(0.0, 6.0)], [loop], lambda a, b: [_seg(0.2, 5.8, "we met at the station")], 6.0
    )
    assert [s.text for s in better.segments] == ["we met at the station"]
    worse = recovery.recover([(0.0, 6.0)], [loop], lambda a, b: [_seg(0.2, 5.8, "Thank you. " * 9)], 6.0)
    assert worse.segments == [loop] and worse.recovered == 0


def test_find_lost_margins_joins_and_partly_covered_speech() -> None:
    # Speech with words over it: nothing lost.
    assert recovery.find_lost([(1.0, 4.0)], [_seg(1.0, 4.0, "one two three four five six")]) == []
    # 3 s of speech without any word: one stretch.
    assert recovery.find_lost([(1.0, 4.0)], []) == [(1.0, 4.0)]
    # Words far away do not cover it; words within WORD_MARGIN_S do.
    assert recovery.find_lost([(5.0, 8.0)], [_seg(0.0, 2.0)]) == [(5.0, 8.0)]
    assert recovery.find_lost([(1.0, 4.0)], [_seg(0.0, 0.6), _seg(3.9, 4.5)]) == [
        (pytest.approx(1.1), pytest.approx(3.4))
    ]
    # Two 1.0 s pieces 0.8 s apart (closer than JOIN_S): one stretch of 2 s of speech.
    assert recovery.find_lost([(1.0, 2.0), (2.8, 3.8)], []) == [(1.0, 3.8)]
    # The same pieces 1.5 s apart are two short gaps (a breath, a filler word): not lost.
    assert recovery.find_lost([(1.0, 2.0), (3.5, 4.5)], []) == []
    # Speech only partly covered: what is left of it.
    assert recovery.find_lost([(0.0, 5.0)], [_seg(0.0, 1.0, "hi")]) == [(1.5, 5.0)]
    # A segment without word times covers its whole range.
    bare = Segment(0, 1.0, 4.0, "text without words", -0.2, 0.01, [], "en")
    assert recovery.find_lost([(1.0, 4.0)], [bare]) == []


def test_loops_by_ratio_or_repeats() -> None:
    assert recovery.is_loop("the the the the the the the the")
    assert recovery.is_loop("I don't know. I don't know. I don't know. I don't know.")
    assert recovery.is_loop("Thank you. " * 20)  # compression ratio above Whisper's 2.4
    assert recovery.compression_ratio("Thank you. " * 20) > recovery.LOOP_RATIO
    assert not recovery.is_loop("And so my fellow Americans, ask not what your country can do for you.")
    assert not recovery.is_loop("the the the")  # fewer than LOOP_REPEATS
    assert not recovery.is_loop("")


def test_recover_retries_the_padded_stretch_and_keeps_its_language() -> None:
    calls: list[tuple[float, float]] = []

    def retry(start: float, end: float) -> list[Segment]:  # stands in for the model
        calls.append((start, end))
        return [_seg(start + 0.25, end - 0.25, "Der Lappen liegt auf dem Eisschrank", "de")]

    kept = _seg(0.0, 2.0, "hello there")
    out = recovery.recover([(0.0, 2.0), (3.0, 6.0)], [kept], retry, duration=7.0)
    assert calls == [(3.0 - recovery.RETRY_PAD_S, 6.0 + recovery.RETRY_PAD_S)]
    assert (out.retried, out.recovered, out.lost) == (1, 1, [])
    assert [s.text for s in out.segments] == ["hello there", "Der Lappen liegt auf dem Eisschrank"]
    assert out.segments[1].language == "de"


def test_recover_reports_what_stays_lost() -> None:
    def retry(start: float, end: float) -> list[Segment]:
        return []

    out = recovery.recover([(0.0, 2.0), (29.0, 54.5)], [_seg(0.0, 2.0)], retry, duration=60.0)
    assert (out.retried, out.recovered) == (1, 0)
    assert out.lost == [(29.0, 54.5)]
    assert recovery.lost_warning(29.0, 54.5) == "speech without text at 29.0–54.5 s"
    assert [s.text for s in out.segments] == ["hello there"]  # nothing invented

    # A retry that only gives an empty or looping text recovers nothing either.
    def useless(start: float, end: float) -> list[Segment]:
        blank = Segment(0, start, end, " ", -1.0, 0.5, [], "en")
        return [blank, _seg(start, end, "the the the the the the")]

    out = recovery.recover([(3.0, 6.0)], [], useless, duration=7.0)
    assert (out.retried, out.recovered, out.lost) == (1, 0, [(3.0, 6.0)])


def test_a_loop_that_loops_again_keeps_its_text() -> None:
    loop = _seg(0.0, 4.0, "the the the the the the the the")

    def retry(start: float, end: float) -> list[Segment]:
        return [_seg(0.0, 4.0, "the cat sat on the mat today")]

    out = recovery.recover([(0.0, 4.0)], [loop], retry, duration=5.0)
    assert (out.retried, out.recovered, out.lost) == (1, 1, [])
    assert [s.text for s in out.segments] == ["the cat sat on the mat today"]

    # A retry that loops again keeps the original (the text is there; nothing is lost).
    out = recovery.recover([(0.0, 4.0)], [loop], lambda a, b: [loop], duration=5.0)
    assert (out.retried, out.recovered) == (1, 0)
    assert [s.text for s in out.segments] == [loop.text]


def _concluded(speech: list[tuple[float, float]], segments: list[Segment], retry, seconds: float):
    """A recording's end as every decoder ends it (`FileRun.conclude`), with `segments` as its decode."""
    from transcription.asr import AsrOptions
    from transcription.window_plan import FileRun, Source

    run = FileRun(Source(np.zeros(int(seconds * 16_000), np.float32)), AsrOptions(language="en"), None, False)
    run.speech = speech
    run.add(segments)
    return run.conclude(lambda read, options: retry)


def test_a_transcription_warns_of_the_speech_that_stays_lost() -> None:
    segs = [_seg(0.0, 3.0, "hello there my friend")]
    nothing = _concluded([(0.0, 3.0), (4.0, 7.0)], segs, lambda a, b: [], 8.0)
    assert nothing.lost == [(4.0, 7.0)] and (nothing.retried, nothing.recovered) == (1, 0)
    assert nothing.warnings == ["speech without text at 4.0–7.0 s"]
    far = _concluded([(0.0, 2.0), (29.0, 54.5)], [_seg(0.0, 2.0)], lambda a, b: [], 60.0)
    assert far.warnings == ["speech without text at 29.0–54.5 s"]

    def finds(start: float, end: float) -> list[Segment]:
        return [_seg(start + 0.25, end - 0.25, "Der Lappen liegt auf dem Eisschrank", "de")]

    found = _concluded([(0.0, 2.0), (3.0, 6.0)], [_seg(0.0, 2.0)], finds, 7.0)
    assert (found.retried, found.recovered, found.lost, found.warnings) == (1, 1, [], [])
    assert [s.text for s in found.segments] == ["hello there", "Der Lappen liegt auf dem Eisschrank"]


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
