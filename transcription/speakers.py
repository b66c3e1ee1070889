"""Speakers on a transcript: run the diarizer beside transcription, then attach its turns to the document.

Diarization is Stage 1's last step and adds to a finished transcript without changing its text: every
word gets the speaker whose turn covers it most, segments are split where the speaker changes, and the
document gets `speakers` and `turns`. What was split is recorded (`meta.diarization.splits`) so that
speakers redone with other settings start again from the segments the engine produced. The settings
that change speakers are recorded with them (`Settings.diarization_fields`), apart from the transcript's
fingerprint: changing them redoes the speakers only, never the transcription.
"""

from __future__ import annotations

import bisect
import functools
import logging
import re
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from . import hardware, schema
from .audio import WavReader
from .doc_types import Meta, SegmentDoc, Transcript, TurnDoc, WordDoc

if TYPE_CHECKING:
    from .config import Settings
    from .diarize import Diarization, Diarizer

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_NAME_CHARS = 64


class DiarizationFailed(RuntimeError):
    """Speakers could not be found for a file; its transcript is kept and the speakers are redone later."""


def diarizer(settings: Settings) -> Diarizer:
    """The process's diarizer for these settings (loaded once; a missing model or package is exit 2)."""
    from . import diarize

    return diarize.load(settings)


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=hardware.diarization_workers(), thread_name_prefix="diarize")


def start(
    settings: Settings, wav: Path, source: Path | None, known: Mapping[str, np.ndarray] | None = None
) -> Future[tuple[Diarization, float]]:
    """Diarize a normalised WAV on the diarization pool, overlapping transcription; the future gives the
    result and the seconds it took."""
    for name in known or {}:
        check_name(name)
    engine = diarizer(settings)  # loaded here, on the caller's thread: a load error is the caller's
    return _pool().submit(_run, engine, settings, wav, source, dict(known or {}))


def _run(
    engine: Diarizer, settings: Settings, wav: Path, source: Path | None, known: dict[str, np.ndarray]
) -> tuple[Diarization, float]:
    from . import diarize

    t0 = time.perf_counter()
    result = engine.diarize(WavReader(wav), diarize.Constraints.from_settings(settings), source=source)
    if known:
        result = diarize.name_speakers(result, known, engine)
    return result, time.perf_counter() - t0


def add(doc: Transcript, job: Future[tuple[Diarization, float]], settings: Settings) -> Transcript:
    """Attach a finished diarization to `doc`, or record its failure (the transcript is kept either way)."""
    try:
        result, seconds = job.result()
    except Exception as exc:  # noqa: BLE001 - a failed diarization must not cost the transcript
        log.error("diarization failed", extra={"file": doc.get("file"), "error": str(exc)}, exc_info=exc)
        mark_failed(doc, settings, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        return doc
    attach(doc, result, settings, seconds)
    return doc


def attach(doc: Transcript, result: Diarization, settings: Settings, seconds: float) -> None:
    """Speakers on every word and segment, segments split at speaker changes, `speakers` and `turns`."""
    unsplit(doc)
    turns: list[TurnDoc] = sorted(
        ({"speaker": t.speaker, "start": round(t.start, 3), "end": round(t.end, 3)} for t in result.turns),
        key=lambda t: (t["start"], t["end"]),
    )
    duration = float(doc["duration"])
    turns = [
        {**t, "start": min(t["start"], duration), "end": min(t["end"], duration)}
        for t in turns
        if t["end"] > t["start"] and t["start"] < duration
    ]
    timeline = _Timeline(turns)
    splits: list[list[int]] = []
    segments: list[SegmentDoc] = []
    for seg in doc["segments"]:
        pieces = _split(seg, timeline)
        if len(pieces) > 1:
            splits.append(list(range(len(segments), len(segments) + len(pieces))))
        segments.extend(pieces)
    doc["segments"] = schema.renumber(segments)
    doc["turns"] = turns
    doc["speakers"] = [
        {"id": s, "total_s": round(_talk_time(turns, s), 3)}
        for s in first_appearance(t["speaker"] for t in turns)
    ]
    meta = doc["meta"]
    meta["diarization"] = {
        "status": "ok",
        "method": result.method,
        "settings": settings.diarization_fields(),
        "splits": splits,
    }
    meta.setdefault("timings", {})["diarize"] = round(seconds, 4)
    _warn(meta, result.warnings)


def mark_failed(doc: Transcript, settings: Settings, error: str) -> None:
    strip(doc)
    doc["meta"]["diarization"] = {
        "status": "failed",
        "error": error,
        "settings": settings.diarization_fields(),
    }
    _warn(doc["meta"], [f"diarization failed: {error}"])


def _warn(meta: Meta, lines: list[str]) -> None:
    """This diarization's warnings in place of an earlier one's."""
    kept = [w for w in meta.get("warnings", []) if not w.startswith("speakers:")]
    meta["warnings"] = kept + [f"speakers: {line}" for line in lines]


def failure(doc: Transcript) -> DiarizationFailed | None:
    """The error that fails this document's input when its diarization failed (the transcript is kept)."""
    info = doc.get("meta", {}).get("diarization")
    if isinstance(info, dict) and info.get("status") == "failed":
        return DiarizationFailed(f"speakers could not be found: {info.get('error') or 'diarization failed'}")
    return None


def current(doc: Transcript, settings: Settings) -> bool:
    """Whether `doc` carries speakers found with these settings."""
    info = doc.get("meta", {}).get("diarization")
    return (
        isinstance(info, dict)
        and info.get("status") == "ok"
        and info.get("settings") == settings.diarization_fields()
        and "speakers" in doc
    )


def strip(doc: Transcript) -> None:
    """Remove speakers (and the splits they caused) from a document."""
    unsplit(doc)
    doc.pop("speakers", None)
    doc.pop("turns", None)
    for seg in doc["segments"]:
        seg.pop("speaker", None)
        for w in seg["words"]:
            w.pop("speaker", None)
    doc["meta"].pop("diarization", None)


def unsplit(doc: Transcript) -> None:
    """Join segments that an earlier diarization split, back into the engine's segments.

    Their Stage 2 state is dropped: it described the pieces, and Stage 2 redoes what is missing.
    """
    info = doc.get("meta", {}).get("diarization")
    groups = info.get("splits") if isinstance(info, dict) else None
    if not groups:
        return
    segments = doc["segments"]
    first_of = {g[0]: g for g in groups if g and all(0 <= i < len(segments) for i in g)}
    joined = {i for g in first_of.values() for i in g}
    out: list[SegmentDoc] = []
    for i, seg in enumerate(segments):
        if i in first_of:
            parts = [segments[j] for j in first_of[i]]
            merged: SegmentDoc = {k: v for k, v in parts[0].items() if k not in ("audio_state", "speaker")}
            merged["end"] = parts[-1]["end"]
            merged["words"] = [w for p in parts for w in p["words"]]
            merged["text"] = " ".join(p["text"] for p in parts if p["text"])
            out.append(merged)
        elif i not in joined:
            out.append(seg)
    doc["segments"] = schema.renumber(out)
    info["splits"] = []


def _split(seg: SegmentDoc, timeline: _Timeline) -> list[SegmentDoc]:
    """One segment as one piece per run of same-speaker words (the segment's own span without words)."""
    words = seg["words"]
    if not words:
        return [{**seg, "speaker": timeline.speaker_of(seg["start"], seg["end"])}]
    for w in words:
        w["speaker"] = timeline.speaker_of(w["start"], w["end"])
    runs: list[list[WordDoc]] = [[words[0]]]
    for w in words[1:]:
        if w["speaker"] == runs[-1][-1]["speaker"]:
            runs[-1].append(w)
        else:
            runs.append([w])
    if len(runs) == 1:
        return [{**seg, "speaker": words[0]["speaker"]}]
    pieces = []
    for n, run in enumerate(runs):
        piece: SegmentDoc = {k: v for k, v in seg.items() if k != "audio_state"}
        piece["start"] = seg["start"] if n == 0 else run[0]["start"]
        piece["end"] = seg["end"] if n == len(runs) - 1 else run[-1]["end"]
        piece["words"] = run
        piece["text"] = "".join(w["word"] for w in run).strip()
        piece["speaker"] = run[0]["speaker"]
        pieces.append(piece)
    return pieces


class _Timeline:
    """Turns sorted by start, searchable in log time: a 2-hour call has thousands of turns and words."""

    def __init__(self, turns: list[TurnDoc]) -> None:
        self.turns = turns
        self.starts = [t["start"] for t in turns]
        self.latest: list[int] = []  # latest[i]: the turn ending last among turns[: i + 1]
        for i, t in enumerate(turns):
            if not self.latest or t["end"] > turns[self.latest[-1]]["end"]:
                self.latest.append(i)
            else:
                self.latest.append(self.latest[-1])

    def speaker_of(self, start: float, end: float) -> str | None:
        """The speaker whose turns overlap [start, end] most; else the nearest turn's; None without turns."""
        if not self.turns:
            return None
        hi = bisect.bisect_left(self.starts, end)  # turns[hi:] start at or after `end`
        overlap: dict[str, float] = {}
        i = hi - 1
        while i >= 0 and self.turns[self.latest[i]]["end"] > start:
            t = self.turns[i]
            shared = min(end, t["end"]) - max(start, t["start"])
            if shared > 0:
                overlap[t["speaker"]] = overlap.get(t["speaker"], 0.0) + shared
            i -= 1
        if overlap:
            return max(overlap, key=lambda s: overlap[s])
        # In a gap between turns (or a zero-length word): the turn ending last before it, or the next one.
        near = [self.turns[self.latest[hi - 1]]] if hi > 0 else []
        near += self.turns[hi : hi + 1]
        middle = (start + end) / 2
        best = min(near, key=lambda t: max(t["start"] - middle, middle - t["end"], 0.0))
        return str(best["speaker"])


def first_appearance(labels: Iterable[T]) -> list[T]:
    """Each speaker once, in the order of `labels` (given in time order): the order speakers are listed in."""
    return list(dict.fromkeys(labels))


def _talk_time(turns: list[TurnDoc], speaker: str) -> float:
    """Seconds `speaker` talks: the union of their turns."""
    total, reach = 0.0, 0.0
    for t in (t for t in turns if t["speaker"] == speaker):
        start = max(t["start"], reach)
        if t["end"] > start:
            total += t["end"] - start
        reach = max(reach, t["end"])
    return total


class NameTaken(ValueError):
    """A known speaker's name that reads as a generated id: it would merge its voice with an unnamed one."""


# The diarizer's ids for voices no reference names (SPEAKER_00, ...), in any case and with a space or a
# hyphen for the underscore: RTTM and most readers would not tell them apart.
_GENERATED_ID = re.compile(r"speaker[\s_-]*\d+", re.IGNORECASE)


def clean_name(raw: str) -> str:
    """A known speaker's name as it may appear in every output: one line, no markup, bounded, and never
    one of the ids given to unnamed voices."""
    name = " ".join("".join(ch if ch.isprintable() else " " for ch in raw).split())
    name = name.replace("<", "").replace(">", "").replace("&", "and").strip()
    if not name:
        raise ValueError("a speaker name must have visible characters")
    name = name[:MAX_NAME_CHARS]
    check_name(name)
    return name


def check_name(name: str) -> None:
    if _GENERATED_ID.fullmatch(name):
        raise NameTaken(
            "names like SPEAKER_00 are the ids of unnamed voices; a reference named so would merge two voices"
        )
