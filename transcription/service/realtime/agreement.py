"""Which partial words to show: LocalAgreement-2 (Machacek et al., "Turning Whisper into Real-Time
Transcription System", 2023).

Each partial decode transcribes the turn from its start to now. A word is shown once two consecutive
decodes agree on it and on every word before it, and it is not among the newest decode's last `HOLD_BACK`
words (the audio ends inside or just after them: they are the ones a longer decode most often changes).
Shown words are never taken back (deltas only append), so the rule trades about a decode's worth of delay
for partials that rarely change. Words are compared without case or punctuation ("Americans," agrees with
"americans"); the newer decode's spelling is shown.

Measured offline on the en_read clips played as one 157 s stream (25 turns, tiny.en, a partial decode
every second 0.5 s step): without the hold-back 3 turns had a shown word changed by the final text, with it
1, and as many words were shown.
"""

from __future__ import annotations

import re

_NOT_WORD = re.compile(r"[^\w']+")
HOLD_BACK = 2


def norm(word: str) -> str:
    return _NOT_WORD.sub("", word.lower())


def words(text: str) -> list[str]:
    return text.split()


def common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if norm(x) != norm(y):
            break
        n += 1
    return n


class LocalAgreement:
    def __init__(self) -> None:
        self.shown: list[str] = []
        self._previous: list[str] | None = None

    def update(self, hypothesis: str) -> list[str]:
        """Words newly agreed on after this decode of the turn so far (the ones to send as a delta)."""
        current = words(hypothesis)
        previous, self._previous = self._previous, current
        if previous is None:
            return []
        agreed = min(common_prefix(previous, current), len(current) - HOLD_BACK)
        n = len(self.shown)
        # Both decodes must still agree with what is shown; otherwise wait for them to come back to it.
        if agreed <= n or common_prefix(current, self.shown) < n:
            return []
        new = current[n:agreed]
        self.shown.extend(new)
        return new

    def remainder(self, final: str) -> list[str] | None:
        """The final text's words after those shown, or None when the final text revises shown words."""
        final_words = words(final)
        n = len(self.shown)
        if common_prefix(final_words, self.shown) < n:
            return None
        return final_words[n:]
