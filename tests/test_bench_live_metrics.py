"""The live benchmark's scoring (benchmarks/live_metrics.py) over small hand-written event logs: pure
functions, no server, no model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from live_conversations import RefTurn  # noqa: E402
from live_metrics import SessionLog, align, changed_words, score, stalls  # noqa: E402

TURNS = (
    RefTurn(0.0, 2.0, "ask not what your country", "a"),
    RefTurn(3.0, 5.0, "can do for you", "b"),
)


def log_of(observations: list[tuple[float, str, str]], seconds: float = 8.0) -> SessionLog:
    # chunk k (0.1 s of audio) was sent at 100 + 0.1 * (k + 1): real-time pace from t = 100
    log = SessionLog("x", "r", 0.1, sent=[100 + 0.1 * (k + 1) for k in range(int(seconds * 10))])
    for t, final, shown in observations:
        log.observe(100 + t, final, shown)
    return log


def test_align_marks_matches_substitutions_and_insertions() -> None:
    placed = align(["ask", "knot", "uh", "what"], ["ask", "not", "what"])
    assert placed[0] == (0, True)
    assert placed[1] == (1, False)
    assert placed[3] == (2, True)
    assert placed[2] == (None, False)


def test_first_text_and_final_per_turn_from_send_times() -> None:
    log = log_of(
        [
            (0.9, "", "Ask"),  # a tail counts as first text
            (2.6, "Ask not what your country.", "Ask not what your country."),
            (3.8, "Ask not what your country.", "Ask not what your country. Can"),
            (6.0, "Ask not what your country. Can do for you.", "Ask not what your country. Can do for you."),
        ]
    )
    s = score(log, TURNS)
    # turn 0 starts at audio 0.0 (chunk 0 sent at 100.1); turn 1 at 3.0 (chunk 30 sent at 103.1)
    assert s.first_text == pytest.approx([0.8, 0.7])
    # turn 0 ends at 2.0 (chunk 20 sent at 102.1), turn 1 at 5.0 (chunk 50 sent at 105.1)
    assert s.final == pytest.approx([0.5, 0.9])
    assert s.no_text == s.no_final == 0
    assert s.live_text.endswith("for you.")


def test_text_of_a_turn_not_yet_started_is_not_credited_to_it() -> None:
    # "can" shown at 2.5 s is a guess inside turn 0's time: turn 1 (from 3.0 s) has not started
    log = log_of([(2.5, "", "ask not what your country can"), (4.0, "", "ask not what your country can do")])
    s = score(log, TURNS)
    assert s.first_text[1] == pytest.approx(104.0 - 103.1)
    assert s.no_final == 2  # nothing was ever final


def test_stalls_count_speech_sent_between_changes() -> None:
    log = log_of([(1.0, "", "ask"), (4.5, "", "ask not what your country can")])
    got = stalls(log, TURNS)
    # speech 0-2 s and 3-5 s of audio; changes at 1.0 and 4.5: 1.0 s, then 1.0 + 1.5 s, then 0.5 s
    assert got == pytest.approx([0.9, 2.5, 0.5], abs=0.11)


def test_changed_words_are_shown_words_the_final_does_not_keep() -> None:
    log = log_of(
        [
            (1.0, "", "ask knot"),
            (1.5, "", "ask not what"),
            (2.5, "ask not what your country", "ask not what your country"),
        ]
    )
    shown, changed = changed_words(log, "ask not what your country")
    # shown: ask, knot | not, what | your, country; only "knot" is not in the final at its place
    assert (shown, changed) == (6, 1)


def test_a_phrase_said_twice_is_final_for_its_second_turn_only_once_heard() -> None:
    turns = (RefTurn(0.0, 2.0, "ask not what", "a"), RefTurn(3.0, 5.0, "ask not what", "b"))
    log = log_of(
        [
            (2.5, "ask not what", "ask not what"),
            (5.5, "ask not what ask not what", "ask not what ask not what"),
        ]
    )
    s = score(log, turns)
    assert s.final == pytest.approx([102.5 - 102.1, 105.5 - 105.1])
