"""Scores of one live session from what its client saw, the same way for every system.

A client records an Observation each time the text on screen changes: `final` (text the system says it will
not change: our completed items, WhisperLive's completed segments, WhisperLiveKit's lines) and `shown`
(final plus whatever revisable tail is displayed). Words are tied to the reference turns by aligning them
(Levenshtein on normalised words) to the reference words heard by then (each turn's words spread evenly over
its speech), so no system's own turn or segment boundaries are trusted and a word recurring later in the
recording cannot be credited early.

- first text of a turn: first observation that shows a word aligned to the turn, minus when the turn's
  first speech sample was sent;
- final of a turn: first observation whose final text reaches the turn's last word that the session's final
  text has, minus when the turn's last speech sample was sent;
- stall: the speech (s) sent between two consecutive changes of the shown text;
- changed words: each word newly shown (past the part unchanged since the previous observation) that is
  not, at its place, the word of the session's final text.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from dataclasses import dataclass, field

from live_conversations import RefTurn

WORD_SLACK_S = 0.5


@dataclass(frozen=True)
class Observation:
    t: float  # monotonic clock of the client
    final: str
    shown: str


@dataclass
class SessionLog:
    system: str
    recording: str
    chunk_s: float
    sent: list[float] = field(default_factory=list)  # when each chunk went out
    observations: list[Observation] = field(default_factory=list)
    # ours only, where the server says where an item's audio ends: (that end in audio s, completed at)
    items: list[tuple[float, float]] = field(default_factory=list)
    error: str | None = None

    def observe(self, t: float, final: str, shown: str) -> None:
        last = self.observations[-1] if self.observations else None
        if last is None or last.final != final or last.shown != shown:
            self.observations.append(Observation(t, final, shown))


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().replace("i.e.", "ie")
    text = re.sub(r"[^\w\s']", " ", text)
    text = re.sub(r"'(?!\w)|(?<!\w)'", " ", text)
    return " ".join(text.split())


def words(text: str) -> list[str]:
    return normalize(text).split()


def align(hyp: list[str], ref: list[str]) -> list[tuple[int | None, bool]]:
    """For each hyp word: the ref index it stands for (None: inserted) and whether it is that word."""
    from rapidfuzz.distance import Levenshtein

    out: list[tuple[int | None, bool]] = [(None, False)] * len(hyp)
    for tag, h0, h1, r0, r1 in Levenshtein.opcodes(hyp, ref):
        if tag in ("equal", "replace"):
            for k in range(min(h1 - h0, r1 - r0)):
                out[h0 + k] = (r0 + k, tag == "equal")
    return out


def sent_at(log: SessionLog, audio_s: float) -> float:
    return log.sent[min(len(log.sent) - 1, int(audio_s / log.chunk_s + 1e-9))]


def audio_sent_by(log: SessionLog, t: float) -> float:
    return bisect.bisect_right(log.sent, t) * log.chunk_s


@dataclass
class TurnScores:
    first_text: list[float] = field(default_factory=list)
    final: list[float] = field(default_factory=list)
    no_text: int = 0  # turns never shown
    no_final: int = 0  # turns whose words never became final
    stalls: list[float] = field(default_factory=list)
    shown_words: int = 0
    changed_words: int = 0
    item_final: list[float] = field(default_factory=list)
    live_text: str = ""


def _ref(turns: tuple[RefTurn, ...]) -> tuple[list[str], list[int], list[float]]:
    """Reference words, the turn of each, and when each is spoken: spread evenly over its turn's speech (the
    clips carry no word times), so a word cannot be credited before it could have been heard."""
    ref, owner, spoken = [], [], []
    for k, turn in enumerate(turns):
        w = words(turn.text)
        ref += w
        owner += [k] * len(w)
        spoken += [turn.start_s + (turn.end_s - turn.start_s) * (i + 0.5) / len(w) for i in range(len(w))]
    return ref, owner, spoken


def score(log: SessionLog, turns: tuple[RefTurn, ...]) -> TurnScores:
    out = TurnScores()
    if not log.sent:  # the session never started
        out.no_text = out.no_final = len(turns)
        return out
    ref, owner, spoken = _ref(turns)
    last_final = log.observations[-1].final if log.observations else ""
    out.live_text = log.observations[-1].shown if log.observations else ""
    first: dict[int, float] = {}
    final_at: dict[int, float] = {}
    # the last word of each turn that the session's final text carries
    last_word = {}
    for r, _ in align(words(last_final), ref):
        if r is not None:
            last_word[owner[r]] = r
    for obs in log.observations:
        # the words heard so far (a little slack for uneven speech), aligned to nothing later
        n = bisect.bisect_right(spoken, audio_sent_by(log, obs.t) + WORD_SLACK_S)
        for r, _ in align(words(obs.shown), ref[:n]):
            if r is not None and owner[r] not in first:
                first[owner[r]] = obs.t
        reached = max((r for r, _ in align(words(obs.final), ref[:n]) if r is not None), default=-1)
        for k, r in last_word.items():
            if k not in final_at and reached >= r:
                final_at[k] = obs.t
    for k, turn in enumerate(turns):
        if not words(turn.text):
            continue
        if k in first:
            out.first_text.append(first[k] - sent_at(log, turn.start_s))
        else:
            out.no_text += 1
        if k in final_at:
            out.final.append(final_at[k] - sent_at(log, turn.end_s))
        else:
            out.no_final += 1
    out.stalls = stalls(log, turns)
    out.shown_words, out.changed_words = changed_words(log, last_final)
    out.item_final = [done - sent_at(log, end) for end, done in log.items]
    return out


def stalls(log: SessionLog, turns: tuple[RefTurn, ...]) -> list[float]:
    """Seconds of speech sent between consecutive changes of the shown text (and from the first speech)."""
    speech = [(sent_at(log, t.start_s), sent_at(log, t.end_s)) for t in turns]
    if not speech:
        return []
    marks = [speech[0][0]] + [o.t for o in log.observations if o.t > speech[0][0]] + [log.sent[-1]]
    out = []
    for a, b in zip(marks, marks[1:], strict=False):
        out.append(sum(max(0.0, min(b, e) - max(a, s)) for s, e in speech))
    return out


def changed_words(log: SessionLog, final: str) -> tuple[int, int]:
    target = words(final)
    shown = changed = 0
    previous: list[str] = []
    for obs in log.observations:
        now = words(obs.shown)
        same = 0
        while same < min(len(now), len(previous)) and now[same] == previous[same]:
            same += 1
        placed = align(now, target)
        for i in range(same, len(now)):
            shown += 1
            changed += not placed[i][1]
        previous = now
    return shown, changed


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wer(refs: list[str], hyps: list[str]) -> float:
    import jiwer

    return float(jiwer.wer([normalize(r) for r in refs], [normalize(h) or "<empty>" for h in hyps]))
