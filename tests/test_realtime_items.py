"""A long live turn is committed as several items, and its text keeps moving (issue 22), against a real
server on loopback with tiny.en and a real WebSocket client.

LJSpeech clips are spoken as one turn (their own silences trimmed, 0.3 s between them: under the 500 ms
that ends a turn, over the 200 ms pause that ends an item once it holds 2 s), at real-time pace. One session
is played once for the module; each test reads what it sent back.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import numpy as np
import pytest
import service_support as support
from conftest import normalize_text, wer
from service_support import Server
from test_realtime import (
    COMPLETED,
    DELTA,
    LJ,
    RATE,
    connect,
    events_until,
    of,
    offline_text,
    pcm24,
    send_at_real_time,
)

pytestmark = [pytest.mark.timeout(300), pytest.mark.needs_data]

CLIPS = [LJ / "LJ001-0004.wav", LJ / "LJ001-0006.wav", LJ / "LJ001-0008.wav", LJ / "LJ001-0002.wav"]
COMMITTED = "input_audio_buffer.committed"


@pytest.fixture(scope="module")
def items_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = support.make_server(
        tmp_path_factory.mktemp("items"), "items", SLOWER_WHISPER_API_KEY="live-key", ENABLE_EMOTION="false"
    )
    yield from support.serve_module(server)


def trimmed(pcm: np.ndarray) -> np.ndarray:
    """The clip without its leading and trailing silence."""
    loud = np.nonzero(np.abs(pcm.astype(np.int32)) > 600)[0]
    return pcm[max(0, loud[0] - RATE // 20) : loud[-1] + RATE // 20]


def one_turn() -> np.ndarray:
    gap = np.zeros(int(0.3 * RATE), dtype="<i2")
    pieces = [np.zeros(RATE // 2, dtype="<i2")]
    for clip in CLIPS:
        pieces += [trimmed(pcm24(clip)), gap]
    pieces.append(np.zeros(RATE * 2, dtype="<i2"))
    return np.concatenate(pieces)


async def _speak(server: Server) -> list[dict]:
    speech = one_turn()
    async with connect(server) as ws:
        await ws.recv()  # created
        await ws.send(
            json.dumps(
                {
                    "type": "transcription_session.update",
                    "session": {
                        "input_audio_transcription": {"model": "whisper-1", "language": "en"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                    },
                }
            )
        )

        speaking = asyncio.ensure_future(send_at_real_time(ws, speech))

        def finished(ev: list[dict]) -> bool:  # the turn ended and every item committed has completed
            stopped, committed = of(ev, "input_audio_buffer.speech_stopped"), of(ev, COMMITTED)
            ended = bool(stopped) and bool(committed) and committed[-1]["item_id"] == stopped[-1]["item_id"]
            return speaking.done() and ended and len(of(ev, COMPLETED)) == len(committed)

        events = await events_until(ws, finished, timeout=150)
        await speaking
        return events


@pytest.fixture(scope="module")
def events(items_server: Server) -> list[dict]:
    return asyncio.run(_speak(items_server))


def test_a_long_turn_is_committed_as_several_items_that_read_as_the_speech(
    items_server: Server, events: list[dict]
) -> None:
    assert len(of(events, "input_audio_buffer.speech_started")) == 1
    assert len(of(events, "input_audio_buffer.speech_stopped")) == 1
    committed, completed = of(events, COMMITTED), of(events, COMPLETED)
    assert len(committed) >= 2, [e["type"] for e in events if e["type"] != DELTA]
    assert [c["item_id"] for c in committed] == [c["item_id"] for c in completed]  # in commit order
    offline = " ".join(offline_text(items_server, clip) for clip in CLIPS)
    live = " ".join(c["transcript"] for c in completed)
    assert wer([offline], [live]) <= 0.15, live
    # Only the last item ends the turn; the items' audio follows on, in session time.
    assert [c["slower_whisper"]["end_of_turn"] for c in completed] == [False] * (len(completed) - 1) + [True]
    for before, after in zip(completed, completed[1:], strict=False):
        assert before["slower_whisper"]["end_ms"] == after["slower_whisper"]["start_ms"]
    for c in completed:
        assert c["slower_whisper"]["start_ms"] < c["slower_whisper"]["end_ms"]
        assert c["usage"]["seconds"] > 0
    # A word the cut went through is the earlier item's only (decode.repeated_at_seam): an item begins with
    # the word the one before it ended with only where the speech says it twice.
    said = " ".join(normalize_text(offline))
    for before, after in zip(completed, completed[1:], strict=False):
        last, first = normalize_text(before["transcript"])[-1:], normalize_text(after["transcript"])[:1]
        assert not first or first != last or f"{last[0]} {first[0]}" in said, (before, after)


def test_an_item_after_a_mid_turn_commit_has_a_new_id_chained_to_the_one_before(events: list[dict]) -> None:
    committed = of(events, COMMITTED)
    ids = [c["item_id"] for c in committed]
    assert len(ids) >= 2 and len(set(ids)) == len(ids)
    assert of(events, "input_audio_buffer.speech_started")[0]["item_id"] == ids[0]
    assert of(events, "input_audio_buffer.speech_stopped")[0]["item_id"] == ids[-1]
    assert committed[0]["previous_item_id"] is None
    for before, after in zip(committed, committed[1:], strict=False):
        assert after["previous_item_id"] == before["item_id"]
    # Every item's events carry its own id: its deltas come before its commit, its completion after.
    position = {id(e): i for i, e in enumerate(events)}
    for c in committed:
        mine = [e for e in events if e.get("item_id") == c["item_id"]]
        kinds = [e["type"] for e in mine if e["type"] not in (DELTA, "input_audio_buffer.speech_started")]
        assert kinds[-2:] == [COMMITTED, COMPLETED] or kinds[-3:] == [
            "input_audio_buffer.speech_stopped",
            COMMITTED,
            COMPLETED,
        ], kinds
        assert all(
            position[id(d)] < position[id(c)]
            for d in mine
            if d["type"] == DELTA and d["slower_whisper"]["tail"]
        )


def test_deltas_append_stable_words_and_a_tail_that_moves_while_speech_goes_on(events: list[dict]) -> None:
    committed = {c["item_id"]: c for c in of(events, COMMITTED)}
    position = {id(e): i for i, e in enumerate(events)}
    moving = stable_early = 0
    for item_id, commit in committed.items():
        deltas = [d for d in of(events, DELTA) if d["item_id"] == item_id]
        assert all("tail" in d["slower_whisper"] for d in deltas)
        before_commit = [d for d in deltas if position[id(d)] < position[id(commit)]]
        tails = [d["slower_whisper"]["tail"] for d in before_commit]
        moving += sum(a != b for a, b in zip(tails, tails[1:], strict=False))
        # Words become stable while the item is spoken, and each tail follows them as written.
        stable_early += any(d["delta"].strip() for d in before_commit)
        appended = ""
        for d in deltas:
            appended += d["delta"]
            tail = d["slower_whisper"]["tail"]
            assert not (appended and tail) or tail.startswith(" "), (appended, tail)
    assert stable_early, "no words became stable while the turn was spoken"
    assert moving >= 2, "the tail did not change while the speech went on"


def test_the_completed_transcript_is_the_items_text(items_server: Server, events: list[dict]) -> None:
    """`completed` has the item's whole text; where the deltas continue it, their sum is that text."""
    completed = of(events, COMPLETED)
    agreeing = 0
    for c in completed:
        deltas = [d for d in of(events, DELTA) if d["item_id"] == c["item_id"]]
        appended = "".join(d["delta"] for d in deltas)
        assert c["transcript"].strip() and isinstance(c["slower_whisper"]["end_of_turn"], bool)
        assert deltas and all("tail" in d["slower_whisper"] for d in deltas)  # a client showed a tail
        if appended == c["transcript"]:
            agreeing += 1
            assert deltas[-1]["slower_whisper"]["tail"] == ""  # nothing is left to revise
    assert agreeing >= len(completed) - 1


def test_an_item_cut_at_a_pause_keeps_the_decode_started_in_the_pause() -> None:
    """A pause that cuts the item keeps the speculative decode started in it as the item's final: the cut
    goes out as the speech resumes, with the very audio `Paused` gave (to 160 ms into the pause, as a turn's
    end), and no `Resumed` drops it. A length cut hears up to CONTEXT_S of the next item. No partial of the
    item cut reaches past the cut (that speech is the next item's)."""
    from transcription.service.realtime.protocol import TurnDetection
    from transcription.service.realtime.turns import (
        CONTEXT_S,
        Cut,
        LiveAudio,
        Partial,
        Paused,
        Resumed,
        Started,
        Stopped,
    )

    gap = np.zeros(int(0.3 * 16_000), dtype=np.float32)
    pieces = [np.zeros(8_000, dtype=np.float32)]
    for clip in CLIPS:
        pieces += [trimmed(pcm24(clip, 16_000)).astype(np.float32) / 32768.0, gap]
    samples = np.concatenate([*pieces, np.zeros(32_000, dtype=np.float32)])
    live, fed, seen = LiveAudio(TurnDetection()), 0, []
    for i in range(0, samples.shape[0], 1_600):
        chunk = samples[i : i + 1_600]
        fed += chunk.shape[0]
        seen += [(fed, a) for a in live.feed(chunk)]
    cuts = [(k, a) for k, (_, a) in enumerate(seen) if isinstance(a, Cut)]
    assert len(cuts) >= 2 and sum(isinstance(a, Stopped) for _, a in seen) == 1, [type(a) for _, a in seen]
    assert any(c.speculated for _, c in cuts)
    for k, cut in cuts:
        if not cut.speculated:
            assert cut.audio.end is not None
            assert 0 < cut.audio.samples.shape[0] - cut.audio.end <= int(CONTEXT_S * 16_000)
            continue
        before = [a for _, a in seen[:k] if isinstance(a, (Paused, Resumed, Cut, Started))]
        paused = before[-1]
        assert isinstance(paused, Paused), before[-1]  # the pause's decode was never dropped
        assert cut.audio.end is None and cut.audio.start == paused.audio.start
        assert np.array_equal(cut.audio.samples, paused.audio.samples)
    start = None
    for _, a in seen:
        if isinstance(a, Started):
            start = a.start
        elif isinstance(a, Cut):
            start = a.at
        elif isinstance(a, Partial):
            assert start is not None
            ends_at = next((c.at for _, c in cuts if c.at > start), None)
            assert ends_at is None or start + a.audio.shape[0] <= ends_at


def test_speech_after_a_pause_gets_its_first_partial_as_a_new_turn_does() -> None:
    """Speech resuming after a pause (a quick answer, often) is decoded FIRST_PARTIAL_S into it, as a turn's
    start is, not when the item's partial cadence falls: that came a few frames in, before any of its words
    could be heard, and its first text waited for the next one."""
    from transcription.service.realtime.protocol import TurnDetection
    from transcription.service.realtime.turns import FIRST_PARTIAL_S, Cut, LiveAudio, Partial, Paused, Resumed
    from transcription.service.realtime.vad import FRAME

    pause = np.zeros(int(0.45 * 16_000), dtype=np.float32)  # under the 500 ms that ends the turn
    speech = [trimmed(pcm24(clip, 16_000)).astype(np.float32) / 32768.0 for clip in CLIPS[:3]]
    samples = np.concatenate([np.zeros(8_000, np.float32), speech[0], pause, speech[1], pause, speech[2]])
    live, fed, seen = LiveAudio(TurnDetection()), 0, []
    for i in range(0, samples.shape[0], FRAME):  # a frame at a time: each action's place is exact
        fed += samples[i : i + FRAME].shape[0]
        seen += [(fed, a) for a in live.feed(samples[i : i + FRAME])]
    resumed = [k for k, (_, a) in enumerate(seen) if isinstance(a, (Cut, Resumed))]
    assert len(resumed) >= 2, [type(a).__name__ for _, a in seen]  # the two pauses, and any in a clip
    delays = []
    for k in resumed:
        after = next(a for a in seen[k + 1 :] if isinstance(a[1], (Partial, Paused)))
        if isinstance(after[1], Partial):  # (not when the speaker paused again before it)
            delays.append((after[0] - seen[k][0]) / 16_000)
    assert len(delays) >= 2
    assert all(FIRST_PARTIAL_S <= d < FIRST_PARTIAL_S + 2 * FRAME / 16_000 for d in delays), delays
