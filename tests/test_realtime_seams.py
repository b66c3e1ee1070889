"""A word across a mid-turn cut is kept by both items' decodes (decode.own_words keeps a word stretched over
the cut); the later item drops its copy (issue 22). The word times are those the live benchmark's replay
measured at such cuts (tiny.en, read speech): each copy spans the same audio give or take 40 ms."""

from __future__ import annotations

from transcription.schema import Word
from transcription.service.realtime.decode import TurnResult, repeated_at_seam


def w(word: str, start: float, end: float) -> Word:
    return Word(word, start, end, 0.9)


BEFORE = [w(" a", 39.61, 39.80), w(" very", 39.80, 40.24), w(" rather", 40.24, 40.50)]


def test_a_word_decoded_in_both_items_at_a_cut_is_dropped_from_the_later_one() -> None:
    after = [w(" rather", 40.27, 40.69), w(" old", 40.69, 41.02)]
    assert repeated_at_seam(BEFORE, after) == 1
    # Case and punctuation aside: "man," then "Man." is one word.
    assert repeated_at_seam([w(" man,", 13.82, 14.46)], [w(" Man.", 13.78, 14.46), w(" I", 14.6, 14.7)]) == 1


def test_several_words_decoded_in_both_items_are_dropped_together() -> None:
    after = [w(" very", 39.82, 40.22), w(" rather", 40.25, 40.52), w(" old", 40.69, 41.02)]
    assert repeated_at_seam(BEFORE, after) == 2


def test_a_word_said_twice_is_kept() -> None:
    # The same word again, after the first one: two stretches of audio.
    assert repeated_at_seam(BEFORE, [w(" rather", 40.55, 40.90)]) == 0
    # Barely touching the first one (Whisper stretched the second back a little) is still a second word.
    assert repeated_at_seam(BEFORE, [w(" rather", 40.45, 40.90)]) == 0


def test_another_word_over_the_same_audio_is_kept() -> None:
    # The next item's first word begins before the last one ended, as at most cuts: not the same word.
    assert repeated_at_seam(BEFORE, [w(" when", 40.40, 40.70)]) == 0
    # Nothing before it (a turn's first item) and nothing after (an empty item).
    assert repeated_at_seam([], [w(" rather", 40.27, 40.69)]) == 0
    assert repeated_at_seam(BEFORE, []) == 0


def test_the_item_without_its_first_words_reads_as_the_rest() -> None:
    words = [w(" rather", 0.0, 0.42), w(" old,", 0.42, 0.75), w(" said", 0.9, 1.1), w(" he.", 1.1, 1.3)]
    segment = {"id": 0, "start": 0.0, "end": 1.3, "text": "rather old, said he.", "words": []}
    segment["words"] = [x.to_dict() for x in words]
    turn = TurnResult("rather old, said he.", "en", 1.4, words, audio_state={"prosody": {}}, segment=segment)
    rest = turn.without_first(1)
    assert rest.text == "old, said he."
    assert [x.word for x in rest.words] == [" old,", " said", " he."]
    assert rest.segment is not None
    assert rest.segment["text"] == "old, said he." and rest.segment["start"] == 0.42
    assert [x["word"] for x in rest.segment["words"]] == [" old,", " said", " he."]
    assert turn.without_first(0) is turn
    assert turn.without_first(4).text == ""
