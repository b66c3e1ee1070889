"""The transcript document: typed records, the shipped JSON Schema, and the timing invariants."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar

from .doc_types import SegmentDoc, Transcript, WordDoc

SCHEMA_VERSION = 1
SCHEMA_FILE = "transcript.schema.json"
_EPS = 1e-6


@dataclass
class Word:
    word: str
    start: float
    end: float
    probability: float

    def to_dict(self) -> WordDoc:
        return {
            "word": self.word,
            "start": _r(self.start),
            "end": _r(self.end),
            "probability": round(min(1.0, max(0.0, float(self.probability))), 4),
        }


@dataclass
class Segment:
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    words: list[Word] = field(default_factory=list)
    language: str | None = None  # the language it was decoded in

    def to_dict(self) -> SegmentDoc:
        out: SegmentDoc = {
            "id": self.id,
            "start": _r(self.start),
            "end": _r(self.end),
            "text": self.text,
            "avg_logprob": round(float(self.avg_logprob), 4),
            "no_speech_prob": round(min(1.0, max(0.0, float(self.no_speech_prob))), 4),
        }
        if self.language is not None:
            out["language"] = self.language
        out["words"] = [w.to_dict() for w in self.words]
        return out


def _r(t: float) -> float:
    return round(float(t), 3)


@functools.cache
def json_schema() -> dict[str, Any]:
    return json.loads(resources.files("transcription").joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


class TimingError(ValueError):
    """A document breaks a timing invariant (overlap, word outside its segment, end after the audio)."""


def validate(doc: Transcript) -> None:
    """Raise jsonschema.ValidationError or TimingError unless `doc` is a valid transcript."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator().iter_errors(doc))
    if error is not None:
        raise error
    check_timing(doc)
    check_speakers(doc)


@functools.cache
def _validator() -> Any:
    # Built once: `jsonschema.validate` re-checks the schema itself on every call (60 ms a document).
    import jsonschema

    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def check_timing(doc: Transcript) -> None:
    duration = float(doc["duration"])
    previous_end = 0.0
    for seg in doc["segments"]:
        start, end = seg["start"], seg["end"]
        if not (0 <= start <= end <= duration + _EPS):
            raise TimingError(f"segment {seg['id']} [{start}, {end}] outside [0, {duration}]")
        if start < previous_end - _EPS:
            raise TimingError(f"segment {seg['id']} starts at {start} before the previous end {previous_end}")
        previous_end = end
        for w in seg["words"]:
            if not (start - _EPS <= w["start"] <= w["end"] <= end + _EPS):
                raise TimingError(
                    f"word {w['word']!r} [{w['start']}, {w['end']}] outside segment {seg['id']}"
                )


class SpeakerError(ValueError):
    """A document's speaker labels disagree with its `speakers` list or its turns leave the audio."""


def check_speakers(doc: Transcript) -> None:
    duration = float(doc["duration"])
    for t in doc.get("turns", []):
        if not (0 <= t["start"] <= t["end"] <= duration + _EPS):
            raise SpeakerError(f"turn of {t['speaker']} [{t['start']}, {t['end']}] outside [0, {duration}]")
    known = {s["id"] for s in doc.get("speakers", [])}
    for seg in doc["segments"]:
        for item in (seg, *seg["words"]):
            label = item.get("speaker")
            if label is not None and label not in known:
                raise SpeakerError(f"segment {seg['id']}: speaker {label!r} is not among the speakers")


def sanitize(segments: list[Segment], duration: float) -> list[Segment]:
    """Clamp times to the audio, remove overlaps, keep words inside their segment, and number them.

    Whisper can emit a final timestamp past the end of the audio, or a segment that starts before the previous
    one ended (when windows are joined); outputs must never show either.
    """
    out: list[Segment] = []
    previous_end = 0.0
    for seg in segments:
        start = min(max(seg.start, previous_end, 0.0), duration)
        end = min(max(seg.end, start), duration)
        words = []
        for w in seg.words:
            ws = min(max(w.start, start), end)
            we = min(max(w.end, ws), end)
            words.append(Word(w.word, ws, we, w.probability))
        text = seg.text.strip()
        if not any(ch.isalnum() for ch in text):
            continue  # "", "...", "-": Whisper's marks on silence and noise, never speech
        out.append(
            Segment(seg.id, start, end, text, seg.avg_logprob, seg.no_speech_prob, words, seg.language)
        )
        previous_end = end
    # Rounding to milliseconds must not re-create an overlap or push a word out.
    for seg in out:
        seg.start, seg.end = _r(seg.start), _r(seg.end)
        for w in seg.words:
            w.start = min(max(_r(w.start), seg.start), seg.end)
            w.end = min(max(_r(w.end), w.start), seg.end)
    for a, b in zip(out, out[1:], strict=False):
        if b.start < a.end:
            b.start = a.end
            b.end = max(b.end, b.start)
            for w in b.words:
                w.start = max(w.start, b.start)
                w.end = max(w.end, w.start)
    return renumber(out)


_Seg = TypeVar("_Seg", Segment, SegmentDoc)


def renumber(segments: list[_Seg]) -> list[_Seg]:
    """A segment's id is its place in the document (0, 1, ...): given again whenever segments are dropped,
    split or joined."""
    for n, seg in enumerate(segments):
        if isinstance(seg, Segment):
            seg.id = n
        else:
            seg["id"] = n
    return segments
