"""One file from its source to its finished document: decode it to the normalised WAV, then transcribe,
find speakers (when asked), and finish the document (Stage 2 when enabled, validation).

The per-file batch run (decode on its decode thread, the rest on the caller's) and the service (the whole
of it on a worker thread) use these; throughput mode transcribes through the packer instead and joins the
same document path at `document.build`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import audio, document, speakers
from .asr import AsrOptions, AsrResult, Engine
from .config import Settings

# What turns a normalised WAV into text: `Engine.transcribe`, or the service's shared packer.
Transcriber = Callable[[audio.WavReader, AsrOptions], AsrResult]


@dataclass(frozen=True)
class Decoded:
    """A source decoded to its WAV: audio length, time taken, the identity of the decoded bytes, and the
    source itself (a stereo call's channels are read from it)."""

    duration: float
    seconds: float
    source: document.SourceIdentity
    path: Path | None = None


def decode(src: Path, wav: Path) -> Decoded:
    t0 = time.perf_counter()
    identity, duration = document.identify_while(src, lambda: audio.normalize(src, wav))
    return Decoded(duration, time.perf_counter() - t0, identity, src)


def transcribe_and_finish(
    engine: Engine,
    settings: Settings,
    decoded: Decoded,
    wav: Path,
    *,
    file_label: str,
    options: AsrOptions,
    enrich: bool,
    transcriber: Transcriber | None = None,
    known_speakers: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The finished document for a decoded file (Stage 2 too when `enrich`); with `settings.diarize`,
    speakers are found beside the transcription (named after `known_speakers`' reference clips where they
    match)."""
    reader = audio.WavReader(wav)
    diarizing = speakers.start(settings, wav, decoded.path, known_speakers) if settings.diarize else None
    t0 = time.perf_counter()
    try:
        result = (transcriber or engine.transcribe)(reader, options)
    except BaseException:
        if diarizing is not None:
            diarizing.cancel()
        raise
    timings = {"decode": decoded.seconds, "transcribe": time.perf_counter() - t0}
    doc = document.build(
        result, engine, settings, options, file_label=file_label, source=decoded.source, timings=timings
    )
    if diarizing is not None:
        speakers.add(doc, diarizing, settings)
    return document.finish(doc, reader, settings, enrich=enrich)
