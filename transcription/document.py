"""The transcript document: built from a transcription, finished, written, and judged current or stale.

Every driver ends a document here. The per-file batch run, throughput mode and the service `build` one
from a transcription; they and `enrich` then `finish` it (Stage 2 when asked, then validation); the batch
drivers `write` it. Provenance (the decoded source's identity, the settings fingerprint, library versions)
is recorded in `meta` so that `current` can tell a later run whether the outputs still stand.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from . import __version__, languages, schema, writers
from .doc_types import Transcript
from .layout import Input, Layout, atomic_write_text

if TYPE_CHECKING:
    from .asr import AsrOptions, AsrResult, Engine
    from .audio import WavReader
    from .config import Settings


T = TypeVar("T")


class SourceChanged(Exception):
    """The input changed while it was being read: what was decoded is not what is on disk now."""


@dataclass(frozen=True)
class SourceIdentity:
    """The bytes that were decoded: their size and mtime, and their SHA-256, read around the decode."""

    size: int
    mtime_ns: int
    sha256: str


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def identify_while(path: Path, read: Callable[[], T]) -> tuple[SourceIdentity, T]:
    """Hash `path`, call `read()` (the decode) and return the identity of the bytes both saw.

    A source replaced or appended to while it is read would otherwise be recorded with the new file's
    size and the old transcript, and stay "current" for good; so a change in between is an error, and the
    input is redone once it stops changing.
    """
    before = _stat_key(path)
    sha256 = file_sha256(path)
    out = read()
    if _stat_key(path) != before:
        raise SourceChanged(f"{path.name} changed while it was read; it is redone once it stops changing")
    return SourceIdentity(before[0], before[1], sha256), out


def _stat_key(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


def config_fingerprint(settings: Settings) -> str:
    fields = {"schema_version": schema.SCHEMA_VERSION, **settings.fingerprint_fields()}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


@functools.cache  # installed versions do not change within a process; asked once per document
def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"slower_whisper": __version__}
    for dist in ("faster-whisper", "ctranslate2", "av"):
        try:
            out[dist.replace("-", "_")] = version(dist)
        except PackageNotFoundError:
            out[dist.replace("-", "_")] = None
    return out


def build(
    result: AsrResult,
    engine: Engine,
    settings: Settings,
    options: AsrOptions,
    *,
    file_label: str,
    source: SourceIdentity,
    timings: dict[str, float],
) -> Transcript:
    """A fresh Stage 1 document from one transcription and where it came from."""
    segments = [s.to_dict() for s in result.segments]
    doc: Transcript = {
        "schema_version": schema.SCHEMA_VERSION,
        "file": file_label,
        "language": result.language,
        "language_probability": None
        if result.language_probability is None
        else round(min(1.0, max(0.0, result.language_probability)), 4),
        "languages": languages.summary(segments),
        "duration": round(result.duration, 3),
        "text": " ".join(s["text"] for s in segments if s["text"]),
        "segments": segments,
        "meta": {
            "model": engine.name,
            "device": engine.device,
            "compute_type": engine.compute_type,
            **options.meta_fields(),
            "versions": dict(versions()),  # a copy: the cached one is shared
            "config_fingerprint": config_fingerprint(settings),
            "settings": settings.fingerprint_fields(),
            "source_sha256": source.sha256,
            "source_size": source.size,
            "source_mtime_ns": source.mtime_ns,
            "timings": {k: round(v, 4) for k, v in timings.items()},
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "warnings": list(result.warnings),
            "recovery": {"retried": result.retried, "recovered": result.recovered},
        },
    }
    if result.lost:
        doc["meta"]["speech_without_text"] = [{"start": a, "end": b} for a, b in result.lost]
    if options.language is None and engine.multilingual:
        doc["meta"]["language_detection"] = options.language_detection
        if options.languages:
            doc["meta"]["languages_allowed"] = list(options.languages)
    return doc


def finish(doc: Transcript, reader: WavReader, settings: Settings, *, enrich: bool) -> Transcript:
    """The end of every document path: Stage 2 when asked (a crash there marks its features failed and
    never costs the transcript), then validation against the schema and its timing invariants."""
    if enrich:
        from .enrich import enrich_or_mark_failed

        t0 = time.perf_counter()
        doc = enrich_or_mark_failed(doc, reader, settings)
        doc["meta"].setdefault("timings", {})["enrich_total"] = round(time.perf_counter() - t0, 4)
    schema.validate(doc)
    return doc


def write(layout: Layout, stem: str, doc: Transcript) -> None:
    """Text formats first, JSON last: the JSON is what marks the input as done."""
    for fmt in writers.TEXT_FORMATS:
        atomic_write_text(layout.text_path(stem, fmt), writers.render(doc, fmt))
    rttm = layout.text_path(stem, "rttm")
    if "turns" in doc:
        atomic_write_text(rttm, writers.render(doc, "rttm"))
    else:  # speakers removed or never found: no stale turns beside the new transcript
        rttm.unlink(missing_ok=True)
    atomic_write_text(layout.json_path(stem), writers.render(doc, "json"))


def current(layout: Layout, inp: Input, settings: Settings) -> Transcript | None:
    """The finished document for `inp` if its outputs match this source content and these settings."""
    try:
        doc = json.loads(layout.json_path(inp.stem).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    meta = doc.get("meta") if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or meta.get("config_fingerprint") != config_fingerprint(settings):
        return None
    if not all(layout.text_path(inp.stem, fmt).is_file() for fmt in writers.TEXT_FORMATS):
        return None
    try:
        st = inp.path.stat()
    except OSError:
        return None
    if meta.get("source_size") == st.st_size and meta.get("source_mtime_ns") == st.st_mtime_ns:
        return doc
    if meta.get("source_size") != st.st_size:
        return None  # other bytes, whatever the hash says
    # Touched but maybe unchanged: the content hash decides.
    return doc if meta.get("source_sha256") == file_sha256(inp.path) else None
