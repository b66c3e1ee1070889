"""Syllable counts from written words, across scripts, for speaking-rate estimates.

Each script gets the rule its writing system supports:
- alphabets with written vowels (Latin, Greek, Cyrillic, Armenian, Georgian): one syllable per run of
  vowel letters (diacritics stripped, so "é" and "ё" count as vowels);
- syllabic scripts (Han, kana, Hangul, Ethiopic, Yi): one syllable per character (small kana and the
  length mark excepted);
- Brahmic abugidas (Devanagari, Bengali, Tamil, ...): one syllable per letter, minus each virama that
  cancels an inherent vowel;
- digits: one syllable per digit (an underestimate for most spoken numbers).
Scripts whose vowels are usually unwritten (Arabic, Hebrew) or whose syllables need a dictionary (Thai,
Lao, Khmer, Myanmar) give ``None``: the caller reports the rate as unmeasured instead of guessing.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from functools import lru_cache

_VOWELS = frozenset(
    "aeiouyæœøɑɛɪɔʊəɨʉıɐɒʌɜɞɯɤ"  # Latin (after diacritics are stripped)
    "αεηιουω"  # Greek
    "аеиоуыэюяіїєөүәұ"  # Cyrillic
    "աեէըիոօւ"  # Armenian ("ու" is one vowel: both letters are in the set, so the run counts once)
    "აეიოუ"  # Georgian
)
_ALPHABETS = frozenset({"LATIN", "GREEK", "CYRILLIC", "ARMENIAN", "GEORGIAN"})
_ABUGIDAS = frozenset(
    {
        "DEVANAGARI",
        "BENGALI",
        "GURMUKHI",
        "GUJARATI",
        "ORIYA",
        "TAMIL",
        "TELUGU",
        "KANNADA",
        "MALAYALAM",
        "SINHALA",
    }
)
_SYLLABIC = frozenset({"CJK", "HIRAGANA", "KATAKANA", "HANGUL", "ETHIOPIC", "YI"})
_UNSUPPORTED = frozenset(
    {"ARABIC", "HEBREW", "SYRIAC", "THAANA", "NKO", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN", "MONGOLIAN"}
)
# Kana that only modify the previous syllable (small vowels, small ya/yu/yo, sokuon) and the length mark.
_KANA_MODIFIERS = frozenset("ぁぃぅぇぉゃゅょゎっァィゥェォャュョヮッヵヶー")
# Languages that drop the final inherent vowel of a Devanagari word ("kamal", not "kamala").
_SCHWA_DELETION = frozenset({"hi", "mr", "ne"})


class UnsupportedScript(ValueError):
    """The word is written in a script whose syllables cannot be counted from its letters."""

    def __init__(self, script: str) -> None:
        super().__init__(f"syllables cannot be counted from {script.title()} script letters")
        self.script = script


@lru_cache(maxsize=4096)
def _char_class(ch: str) -> tuple[str, str]:
    """(script, role) of one character; role is vowel, consonant, syllable, virama, sign, digit, other."""
    if ch.isdigit():
        return "DIGIT", "digit"
    category = unicodedata.category(ch)
    try:
        name = unicodedata.name(ch)
    except ValueError:
        return "UNKNOWN", "other"
    script = name.split(" ", 1)[0]
    if script in _ALPHABETS and category.startswith("L"):
        base = unicodedata.normalize("NFD", ch)[0].lower()
        return script, "vowel" if base in _VOWELS else "consonant"
    if script in _SYLLABIC and category.startswith("L"):
        if ch in _KANA_MODIFIERS:
            return script, "sign"
        return script, "syllable"
    if script in _ABUGIDAS:
        if "VIRAMA" in name:
            return script, "virama"
        if category == "Lo":
            return script, "syllable"
        return script, "sign"  # dependent vowel signs and other marks replace or modify a nucleus
    if category.startswith("L"):
        return script, "unsupported"
    return script, "other"


def count_word(word: str, language: str | None = None) -> int:
    """Syllables in one written word; raises UnsupportedScript when its script gives no count."""
    word = unicodedata.normalize("NFC", word)
    count = 0
    in_vowel_run = False
    last_role = ""
    scripts: set[str] = set()
    for ch in word:
        script, role = _char_class(ch)
        if role == "unsupported" or script in _UNSUPPORTED:
            raise UnsupportedScript(script)
        if role == "vowel":
            if not in_vowel_run:
                count += 1
            in_vowel_run = True
        else:
            in_vowel_run = False
        if role in ("syllable", "digit"):
            count += 1
        elif role == "virama":
            count -= 1
        if role != "other":
            scripts.add(script)
            last_role = role
    if language == "en" and scripts == {"LATIN"}:
        count -= _english_silent_e(word)
    if language in _SCHWA_DELETION and "DEVANAGARI" in scripts and last_role == "syllable" and count > 1:
        count -= 1
    return max(count, 0)


def _english_silent_e(word: str) -> int:
    """1 when a final "e" is silent ("made", "time"); not for consonant + "le" ("table") or "ee"/"ie"."""
    w = "".join(c for c in word.lower() if c.isalpha())
    if len(w) < 3 or not w.endswith("e"):
        return 0
    if w[-2] in "aeiouy" or (w.endswith("le") and w[-3] not in "aeiouy"):
        return 0
    vowel_runs = sum(1 for i, c in enumerate(w) if c in "aeiouy" and (i == 0 or w[i - 1] not in "aeiouy"))
    return 1 if vowel_runs > 1 else 0


def count_words(words: Iterable[str], language: str | None = None) -> int:
    """Total syllables; raises UnsupportedScript if any word's script gives no count."""
    return sum(count_word(w, language) for w in words)
