"""An item's live text: stable words, sent once and never taken back, and a tail that each decode revises.

Each partial decode transcribes the item from its start to now. Its words are first lined up after the
stable words (`after_stable`): a decode that now hears a stable word differently ("one" then "once") is
not a reason to wait, its words after that place are still the new tail. Of the tail, the words two
consecutive decodes agree on (LocalAgreement-2, Machacek et al., "Turning Whisper into Real-Time
Transcription System", 2023), except the newest decode's last `HOLD_BACK` (the audio ends inside or just
after them: they are the ones a longer decode most often changes), become stable. So the shown text is
`stable + tail`, it changes with every decode that hears something new, and only the tail is ever
revised. Words are compared without case or punctuation ("Americans," agrees with "americans"); the newer
decode's spelling is kept.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

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


def after_stable(hypothesis: list[str], stable: list[str]) -> int:
    """Where the words after the stable ones begin in `hypothesis`: after them when it repeats them, else
    after its words lined up with the last stable word it shares (the stable words after that one
    counted as changed one for one)."""
    if common_prefix(hypothesis, stable) == len(stable):
        return len(stable)
    matcher = SequenceMatcher(a=[norm(w) for w in stable], b=[norm(w) for w in hypothesis], autojunk=False)
    blocks = [b for b in matcher.get_matching_blocks() if b.size]
    if not blocks:
        return min(len(stable), len(hypothesis))
    last = blocks[-1]
    unmatched = len(stable) - (last.a + last.size)
    return min(len(hypothesis), last.b + last.size + unmatched)


class ItemText:
    def __init__(self) -> None:
        self.stable: list[str] = []
        self.tail: list[str] = []
        self._previous: list[str] | None = None  # the previous decode's words after the stable ones

    def update(self, hypothesis: str) -> list[str]:
        """Take a decode of the item so far: the words that became stable (to send as a delta); `tail`
        is then its words after them."""
        current = words(hypothesis)
        rest = current[after_stable(current, self.stable) :]
        previous = self._previous
        agreed = 0 if previous is None else max(0, min(common_prefix(previous, rest), len(rest) - HOLD_BACK))
        new = rest[:agreed]
        self.stable.extend(new)
        self.tail = rest[agreed:]
        self._previous = self.tail
        return new

    @property
    def shown(self) -> str:
        return " ".join(self.stable + self.tail)

    def remainder(self, final: str) -> list[str] | None:
        """The final text's words after the stable ones, or None when the final text revises them."""
        final_words = words(final)
        n = len(self.stable)
        if common_prefix(final_words, self.stable) < n:
            return None
        return final_words[n:]
